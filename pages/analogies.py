"""Analogies: infer the style z of an input (test image, upload, drawing, model sample); write every class in it."""

from __future__ import annotations

import numpy as np
import streamlit as st

from pages import _charts, _ui
from ssvae_core import generate, images, typical

SOURCES = {"test": "Test images", "upload": "Upload", "draw": "Draw", "samples": "Model samples"}
MODES = {"random": "Random", "class": "By class", "index": "By index"}  # link value → how test images are picked
MAX_INPUTS = 10
DEFAULT_RUN = "pretrained/m2-mnist-n100"  # M2 writes style straight into pixels: the clearest analogies
DEFAULTS = {"an_mode": "Random", "an_idx": "0, 1, 2, 3, 4", "an_n": 5, "an_ns": 5, "an_cls": 0, "an_seed": 0}


def apply_link(params: dict[str, str], k: int) -> None:
    """Put a shared link's inputs (source, how test images are picked, indices, count, class, seed) in the session."""
    if params.get("src") in SOURCES:
        st.session_state["an_src"] = params["src"]
    if params.get("pick") in MODES:
        st.session_state["an_mode"] = MODES[params["pick"]]
    if "idx" in params:
        st.session_state["an_idx"] = params["idx"]
    for name, key, top in (("n", "an_n", MAX_INPUTS), ("n", "an_ns", MAX_INPUTS), ("cls", "an_cls", k - 1),
                           ("seed", "an_seed", 1 << 30)):
        if params.get(name, "").isdigit() and int(params[name]) <= top:
            st.session_state[key] = max(int(params[name]), 1 if name == "n" else 0)


def link_state(src: str) -> dict:
    """The inputs of the current view, as link parameters."""
    ss = st.session_state
    if src == "test":
        mode = next(m for m, label in MODES.items() if label == ss["an_mode"])
        if mode == "index":
            return {"src": src, "pick": mode, "idx": ss["an_idx"]}
        return {"src": src, "pick": mode, "n": ss["an_n"], "seed": ss["an_seed"],
                "cls": ss["an_cls"] if mode == "class" else None}
    if src == "samples":
        return {"src": src, "n": ss["an_ns"], "seed": ss["an_seed"]}
    return {"src": src}


def shuffle() -> None:
    """New random draw of test images / model samples."""
    st.session_state["an_seed"] = int(np.random.default_rng().integers(1 << 30))


def from_test(data, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Test images chosen at random, by class, or by index; (rows, captions)."""
    mode = st.radio("Pick", list(MODES.values()), horizontal=True, key="an_mode",
                    persist_state="session", label_visibility="collapsed")
    n_test = len(data.y_test)
    rng = np.random.default_rng(st.session_state.get("an_seed", 0))
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    if mode == "By index":
        text = c1.text_input(f"Test image indices (0–{n_test - 1}, comma-separated)", key="an_idx",
                             persist_state="session")
        try:
            idx = [int(t) for t in text.replace(" ", "").split(",") if t]
        except ValueError:
            st.error("Indices must be whole numbers separated by commas, e.g. 0, 7, 42.")
            return np.zeros((0, 1), np.float32), []
        bad = [i for i in idx if not 0 <= i < n_test]
        if bad:
            st.error(f"No test image {bad[0]}: indices run from 0 to {n_test - 1}.")
            return np.zeros((0, 1), np.float32), []
        idx = idx[:MAX_INPUTS]
    else:
        n = c1.slider("Number of inputs", 1, MAX_INPUTS, key="an_n", persist_state="session")
        c2.button("Shuffle", icon=":material/shuffle:", on_click=shuffle, width="stretch")
        pool = np.arange(n_test)
        if mode == "By class":
            cls = st.segmented_control("Class", list(range(len(names))), format_func=lambda i: names[i],
                                       key="an_cls", required=True, persist_state="session")
            pool = np.flatnonzero(data.y_test.numpy() == cls)
        idx = rng.choice(pool, size=min(n, len(pool)), replace=False).tolist()
    x = data.x_test[idx].numpy()
    return x, [f"test #{i} · label {names[int(data.y_test[i])]}" for i in idx]


def from_upload(shape) -> tuple[np.ndarray, list[str]]:
    """Uploaded image files, each checked and turned into model input; bad ones get an error, not a crash."""
    files = st.file_uploader("Images of digits (PNG, JPEG, BMP, GIF…) — dark on light or light on dark",
                             accept_multiple_files=True, key="an_files")
    rows, captions = [], []
    for f in (files or [])[:MAX_INPUTS]:
        try:
            rows.append(images.preprocess_upload(f.getvalue(), shape))
            captions.append(f.name)
        except ValueError as exc:
            st.error(f"**{f.name}**: {exc}", icon=":material/broken_image:")
    if not files:
        st.caption("Images are converted like MNIST: grey, white ink on black, cropped to the ink, fitted in a "
                   "20×20 box and centred by mass in 28×28.")
    return (np.stack(rows) if rows else np.zeros((0, 1), np.float32)), captions


def from_canvas(shape) -> tuple[np.ndarray, list[str]]:
    """A digit drawn with the mouse on a canvas."""
    try:
        from streamlit_drawable_canvas import st_canvas
    except Exception as exc:  # the component is optional
        st.warning(f"The drawing canvas is not available here ({type(exc).__name__}); upload an image instead.")
        return np.zeros((0, 1), np.float32), []
    c1, c2 = st.columns([2, 3])
    with c1:
        stroke = st.slider("Pen width", 8, 40, 22, key="an_pen", persist_state="session")
        result = st_canvas(stroke_width=stroke, stroke_color="#ffffff", background_color="#000000",
                           height=280, width=280, drawing_mode="freedraw", key="an_canvas", display_toolbar=True)
    with c2:
        st.caption("Draw one digit, large and centred, then release the mouse. Use the bin icon under the "
                   "canvas to clear it.")
    data = None if result is None else result.image_data
    if data is None or np.asarray(data)[..., 3].max() == 0:
        return np.zeros((0, 1), np.float32), []
    try:
        return images.preprocess_canvas(np.asarray(data), shape)[None], ["your drawing"]
    except ValueError as exc:
        st.info(str(exc))
        return np.zeros((0, 1), np.float32), []


def from_model(model, names: list[str]) -> tuple[np.ndarray, list[str]]:
    """Inputs sampled from the model itself (for when no dataset is on this machine)."""
    c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
    n = c1.slider("Number of inputs", 1, MAX_INPUTS, key="an_ns", persist_state="session")
    c2.button("Shuffle", icon=":material/shuffle:", on_click=shuffle, width="stretch", key="an_shuffle_s")
    x, y = generate.sample_inputs(model, n, seed=st.session_state.get("an_seed", 0))
    return x, [f"sample of class {names[int(c)]}" for c in y]


@st.cache_data(max_entries=8, show_spinner="Measuring the ELBO of test images…")
def test_elbos(path: str, mtime: float, dataset: str) -> np.ndarray | None:
    """ELBOs of the first typical.REFERENCE test images under the run at `path` (None without the dataset)."""
    data = _ui.dataset(dataset)
    if data is None:
        return None
    return typical.elbo(_ui._load(path, mtime).model, data.x_test[:typical.REFERENCE].numpy(), samples=2)


def typicality(model, x: np.ndarray, reference: np.ndarray | None) -> tuple[list[str], np.ndarray]:
    """(a line per input: its ELBO and where it falls among the test images', whether it is far below them)."""
    bounds = typical.elbo(model, x, samples=2)
    if reference is None:
        return [f"ELBO {b:.0f} nats (the test set is not here to compare)" for b in bounds], np.zeros(len(x), bool)
    pct = typical.percentile(bounds, reference)
    lines = []
    for b, p in zip(bounds, pct, strict=True):
        where = "below every one" if p == 0 else f"above {p:.1f}%"
        lines.append(f"ELBO {b:.0f} nats, {where} of {len(reference):,} test images")
    return lines, typical.atypical(bounds, reference)


def show_grid(model, x: np.ndarray, captions: list[str], names: list[str], reference: np.ndarray | None) -> None:
    """Row per input: the input, its style written as every class (K columns), q(y|x) as bars, and how typical the
    input is for the model (its ELBO among the test images'), with a warning when it is far outside."""
    shape = generate.model_image_shape(model)
    h = shape[1]
    grid = generate.analogy_grid(model, x)
    probs = generate.qy(model, x)
    typ, odd = typicality(model, x, reference)
    inputs = images.to_images(x, shape)
    k = model.num_classes
    st.session_state["an_grid_shape"] = (len(x), (grid.shape[1] + 1) // (shape[2] + 1))
    st.caption(f"Analogy grid: {len(x)} input{'s' if len(x) != 1 else ''} × {k} classes. Each row infers the "
               "style z from the input (with y = argmax q(y|x)) and decodes it with every class y.")
    spec = [0.8, 0.8 * k, 3.2]
    scale = max(1, round(56 / shape[2]))  # about 56-pixel tiles, integer nearest-neighbour upscaling
    head = st.columns(spec, vertical_alignment="bottom")
    head[0].markdown("**input**")
    cell = (shape[2] + 1) * scale  # one tile plus its gap, in screen pixels
    labels = "".join(f"<div style='width:{cell}px;text-align:center;font-weight:600'>{n}</div>" for n in names)
    head[1].markdown(f"<div style='display:flex'>{labels}</div>", unsafe_allow_html=True)
    head[2].markdown("**q(y | x)**")
    for i in range(len(x)):
        row = grid[i * (h + 1): i * (h + 1) + h]
        c = st.columns(spec, vertical_alignment="center")
        with c[0]:
            _ui.show_image(inputs[i], width=scale * shape[2])
        with c[1]:
            _ui.show_image(row, width=scale * row.shape[1])
        with c[2]:
            top = int(probs[i].argmax())
            st.caption(f"{captions[i] if i < len(captions) else ''} → **{names[top]}** ({probs[i, top]:.0%}) · "
                       f"{typ[i]}")
            if odd[i]:
                st.warning(f"Unlike anything the model was trained on: its ELBO is more than {typical.FAR:g} "
                           "standard deviations below the test images' median, so the model could hardly have "
                           f"written it, and q(y|x) = {probs[i, top]:.0%} for {names[top]} and its style mean "
                           "little.", icon=":material/help:")
            st.plotly_chart(_charts.qy_bar(probs[i], names, height=96), key=f"an_qy_{i}",
                            config={"displayModeBar": False})
    full = generate.analogy_grid(model, x, with_inputs=True)
    st.download_button("Download the grid (PNG)", lambda: images.to_png_bytes(full, 8), file_name="analogies.png",
                       mime="image/png", icon=":material/download:")


def interpolation(model, x: np.ndarray, names: list[str]) -> None:
    """The path between two inputs' styles at a fixed class, and between two classes at one input's style."""
    st.subheader("Interpolation")
    k, n = model.num_classes, len(x)
    z, y = generate.infer_z(model, x)
    c = st.columns(4)
    a = c[0].selectbox("From input", range(n), format_func=lambda i: f"row {i + 1}", key="an_ia")
    b = c[1].selectbox("To input", range(n), index=min(1, n - 1), format_func=lambda i: f"row {i + 1}", key="an_ib")
    yf = c[2].selectbox("Class y (fixed)", range(k), index=int(y[a]), format_func=lambda i: names[i], key="an_iy")
    yt = c[3].selectbox("…or to class, at row's style", range(k), index=(int(y[a]) + 1) % k,
                        format_func=lambda i: names[i], key="an_iyt")
    width = 8 * 56
    _ui.show_image(generate.tile(generate.interpolate_z(model, z[a], z[b], yf), 1, 8), width=width)
    st.caption(f"z from row {a + 1}'s style to row {b + 1}'s in 8 steps, decoded with y = {names[yf]}.")
    _ui.show_image(generate.tile(generate.interpolate_y(model, z[a], int(y[a]), yt), 1, 8), width=width)
    st.caption(f"Row {a + 1}'s style z fixed; y moves from {names[int(y[a])]} to {names[yt]} "
               "(a weighted mix of the two one-hot codes).")


_ui.header("Analogies", "Take the style of one image — slant, thickness, size — and write every digit in it. "
                        "M2 infers y with q(y|x), then the style z with q(z|x,y), and decodes z with each class.")
link = _ui.url_params("analogies")
run = _ui.pick_run("an_run", link.get("model"), prefer=DEFAULT_RUN)
if run is not None:
    model = run.model
    shape = generate.model_image_shape(model)
    names = _ui.class_names(run.cfg.dataset, model.num_classes)
    data = _ui.dataset(run.cfg.dataset)
    for key, value in DEFAULTS.items():
        st.session_state.setdefault(key, value)
    apply_link(link, model.num_classes)
    share_slot = st.container()
    options = list(SOURCES) if data is not None else ["upload", "draw", "samples"]
    if data is None:
        st.caption(f"The {_ui.DATASET_NAMES.get(run.cfg.dataset)} test set is not on this machine, so inputs come "
                   "from uploads, drawings or the model's own samples.")
    if st.session_state.get("an_src") not in options:
        st.session_state["an_src"] = options[0]
    src = st.segmented_control("Inputs", options, format_func=SOURCES.get, key="an_src", required=True)
    with st.container(border=True):
        if src == "test":
            x, captions = from_test(data, names)
        elif src == "upload":
            x, captions = from_upload(shape)
        elif src == "draw":
            x, captions = from_canvas(shape)
        else:
            x, captions = from_model(model, names)
    if run.cfg.model.kind == "m1m2":
        st.info("In M1+M2 most of the style already lives in M1's features z1; M2's z2 only holds what the class "
                "leaves unexplained of z1, and a new class is decoded through the mean of p(z1|y,z2). So its "
                "analogies carry less of the input's style than M2's, whose z writes the pixels directly (see "
                "*Which units matter* on the Style explorer: fewer nats per unit in z2).", icon=":material/info:")
    if len(x):
        show_grid(model, x, captions, names, test_elbos(str(run.path), _ui.active_row()["mtime"], run.cfg.dataset))
    elif src in ("upload", "draw"):
        st.info("Add an image above to see its analogies.", icon=":material/draw:")
    if len(x) >= 1:
        interpolation(model, x, names)
    _ui.share_link({"model": _ui.run_param(str(run.path)), **link_state(src)}, share_slot)
    if src in ("upload", "draw"):
        share_slot.caption("Uploads and drawings stay in this browser: the link opens this page with the same model "
                           "and source, without your images.")
