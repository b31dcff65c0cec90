"""Shared Streamlit helpers for the pages: checkpoint root, cached models and datasets, run picker, crisp images."""

from __future__ import annotations

import inspect
import math
import os
import sys
import types
from pathlib import Path
from urllib.parse import urlencode

import numpy as np
import streamlit as st

from ssvae_core import generate, jobs, validate
from ssvae_core.checkpoints import Run, list_runs, load_run
from ssvae_core.data import Dataset, default_data_root, load_dataset
from ssvae_core.errors import CheckpointError, DataError
from ssvae_core.recipes import DATASET_NAMES, MODEL_NAMES, SHIPPED_CLUSTERS, SHIPPED_M1

SHORT_DATASET = {"mnist": "MNIST", "digits": "Digits", "svhn": "SVHN", "norb": "NORB"}
GENERATIVE = ("m2", "m1m2")
ACTIVE_RUN = "active_run"  # session key: path of the model the generative pages use
FALLBACK_NOTE = "active_run_fallback"  # session key: why the picked model was replaced by the default


def checkpoint_root() -> Path:
    """Folder holding saved runs: $SSVAE_CHECKPOINTS, default ./checkpoints."""
    return Path(os.environ.get("SSVAE_CHECKPOINTS", "checkpoints"))


def data_root() -> Path:
    """Folder holding datasets ($SSVAE_DATA_DIR, ./data or ../shared/data)."""
    return default_data_root()


def shipped_m1(dataset: str) -> bool:
    """Whether M1+M2 on `dataset` starts from the shipped M1 (MNIST, when the shipped run is there)."""
    return dataset == "mnist" and (Path(SHIPPED_M1) / "run.json").is_file()


def shipped_clusters(dataset: str) -> bool:
    """Whether M1+M2's stage on `dataset` can start from the shipped label-free clusters (MNIST, when shipped)."""
    return dataset == "mnist" and (Path(SHIPPED_CLUSTERS) / "run.json").is_file()


def _script_frames() -> list[types.FrameType]:
    """The call stack's frames, innermost first."""
    frames, frame = [], inspect.currentframe()
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back
    return frames


def through_app() -> None:
    """Rerun through app.py when Streamlit ran this page on its own.

    Until some session has called st.navigation, Streamlit treats a `pages/` folder beside the entrypoint as a
    legacy page folder: a first visit straight to e.g. /analogies on a fresh server runs that page without
    app.py (no navigation, no wide layout). Streamlit's documented way out of that mode is a call to
    st.navigation: the page makes one, listing itself so its URL stays, and reruns through app.py.
    """
    if st.session_state.get("_through_app"):  # once per session (AppTest resets the mode before every run)
        return
    main = getattr(sys.modules.get("__main__"), "__file__", None)  # the script given to `streamlit run`
    frames = _script_frames()
    if not main or any(os.path.realpath(f.f_code.co_filename) == os.path.realpath(main) for f in frames):
        return  # app.py is running this page
    page = next((f.f_globals.get("__file__") for f in frames if f.f_code.co_name == "<module>"), None)
    if not page:
        return
    st.session_state["_through_app"] = True
    st.navigation([st.Page(lambda: None, title="ssvae", url_path="through-app", default=True), st.Page(page)],
                  position="hidden")
    st.rerun()


def header(title: str, caption: str) -> None:
    """Page title with a one-line explanation under it (after making sure app.py is running the page)."""
    through_app()
    st.title(title)
    st.caption(caption)


# ---- runs ------------------------------------------------------------------------------------

def all_runs() -> list[dict]:
    """Every run folder under the checkpoint root (newest first), broken ones included."""
    return list_runs(checkpoint_root())


def is_pretrained(row: dict) -> bool:
    """Whether a run ships with the app (lives under checkpoints/pretrained/)."""
    return "pretrained" in Path(row["path"]).parts


def generative_runs() -> list[dict]:
    """Good M2 and M1+M2 runs: shipped (pretrained) ones first, best validation error first; then newest first. Not
    label-free clusters: their classes are unnamed until a run with labels starts from them."""
    rows = [r for r in all_runs() if r["ok"] and r.get("model") in GENERATIVE and r.get("has_weights", True)
            and r.get("state", "done") in ("done", "stopped")  # not a run in progress or interrupted
            and not r.get("label_free")]

    def key(r: dict) -> tuple:
        val = r.get("val_error") if isinstance(r.get("val_error"), int | float) else math.inf
        return (not is_pretrained(r), val if is_pretrained(r) else 0.0, -r["mtime"])

    return sorted(rows, key=key)


def model_name(row: dict) -> str:
    """The model's name for a list_runs row ("–" if unknown), label-free clusters said so."""
    name = MODEL_NAMES.get(row.get("model"), row.get("model")) if row.get("model") else "–"
    return name + (" clusters (label-free)" if row.get("label_free") else "")


def run_label(row: dict) -> str:
    """Short human name of a run, e.g. 'M2 · MNIST · N=100 · seed 0 · 4.94% test error'."""
    if not row.get("ok"):
        return f"{row['name']} (broken)"
    err = row.get("test_error")
    err_txt = f" · {err:.2f}% test error" if isinstance(err, int | float) else ""
    tag = "★ " if is_pretrained(row) else ""
    return (f"{tag}{model_name(row)} · {DATASET_NAMES.get(row['dataset'], row['dataset'])}"
            f" · N={row['labels']} · seed {row['seed']}{err_txt} — {row['name']}")


@st.cache_resource(max_entries=6, show_spinner="Loading model…")
def _load(path: str, mtime: float) -> Run | str:
    """The run at `path` (cache key includes its mtime), or the error message."""
    try:
        return load_run(path, device="cpu")
    except CheckpointError as exc:
        return str(exc)


def load(row: dict) -> Run | None:
    """The loaded run for a list_runs row, or None after showing why it cannot be loaded."""
    run = _load(row["path"], row["mtime"])
    if isinstance(run, str):
        st.error(f"This checkpoint is broken and cannot be loaded: {run}")
        return None
    return run


def broken_generative_runs() -> list[dict]:
    """M2 and M1+M2 run folders that cannot be used (see checkpoints.run_problem), newest first."""
    return [r for r in all_runs() if not r["ok"] and r.get("model") in GENERATIVE]


def active_row() -> dict | None:
    """The run the generative pages use: the session's choice if it is still there and usable, else the default
    (a choice that has broken since it was made is dropped, with a notice saying so)."""
    rows = generative_runs()
    chosen = st.session_state.get(ACTIVE_RUN)
    for r in rows:
        if r["path"] == chosen:
            return r
    broken = next((r for r in all_runs() if r["path"] == chosen and not r["ok"]), None)
    if broken is not None:
        del st.session_state[ACTIVE_RUN]
        instead = f"the app uses {run_label(rows[0])} instead" if rows else "no other model is available"
        st.session_state[FALLBACK_NOTE] = (f"The model you picked, {broken['name']}, is broken, so {instead}. "
                                           f"Why: {broken['error']}")
        st.toast(f"The model you picked, {broken['name']}, is broken; {instead}.", icon=":material/broken_image:")
    return rows[0] if rows else None


def fallback_note() -> None:
    """Say that the model picked earlier broke and the default took its place (until another model is picked)."""
    note = st.session_state.get(FALLBACK_NOTE)
    if note:
        st.warning(note, icon=":material/broken_image:")


def broken_note() -> None:
    """List the saved M2 / M1+M2 runs left out of the picker because they are broken, with the reason."""
    broken = broken_generative_runs()
    for r in broken[:3]:
        st.caption(f":material/broken_image: Left out, broken: **{r['name']}** — {r['error']}")
    if len(broken) > 3:
        st.caption(f"…and {len(broken) - 3} more broken runs; see the Results page.")


PICKED = "active_run_picked"  # session key: the user chose a model (a page's preferred default no longer applies)


def pick_run(key: str, wanted: str | None = None, prefer: str | None = None) -> Run | None:
    """Model picker (shared across pages); the loaded run, or None after showing the 'train one' state.

    `wanted` (a link's run name, see run_param) picks that run when it is here and usable; `prefer` is the page's
    default run name until the user picks a model."""
    rows = generative_runs()
    if prefer and not wanted and not st.session_state.get(PICKED):
        row = next((r for r in rows if run_param(r["path"]) == prefer), None)
        if row is not None:
            st.session_state[ACTIVE_RUN] = st.session_state[key] = row["path"]
    if wanted:
        row = next((r for r in rows if wanted in (run_param(r["path"]), r["name"])), None)
        if row is None:
            st.warning(f"The link asks for the model **{wanted}**, which is not here (or not usable); showing "
                       "another one.", icon=":material/link_off:")
        else:
            st.session_state[ACTIVE_RUN] = st.session_state[key] = row["path"]
    current = active_row()
    if not rows:
        fallback_note()
        no_model_state()
        broken_note()
        return None
    paths = [r["path"] for r in rows]
    labels = {r["path"]: run_label(r) for r in rows}

    def remember() -> None:
        """Make the picked run the session's model for every page."""
        st.session_state[ACTIVE_RUN] = st.session_state[key]
        st.session_state[PICKED] = True
        st.session_state.pop(FALLBACK_NOTE, None)

    if st.session_state.get(key) not in paths:
        st.session_state[key] = current["path"]
    fallback_note()
    path = st.selectbox("Model", paths, format_func=labels.get, key=key, on_change=remember,
                        help="Saved M2 and M1+M2 runs that load; ★ marks the models shipped with the app.")
    st.session_state[ACTIVE_RUN] = path
    broken_note()
    return load(next(r for r in rows if r["path"] == path))


def no_model_state() -> None:
    """The 'no model yet' notice with a link to the Train page."""
    with st.container(border=True):
        st.markdown("#### No model yet: train one")
        st.write("This page needs a trained M2 or M1+M2 model. Train one on the **Train** page — the offline "
                 "*digits* dataset is small and needs no download — or put a run folder under "
                 f"`{checkpoint_root()}/`.")
        st.page_link("pages/train.py", label="Go to Train", icon=":material/model_training:")


# ---- shareable views ------------------------------------------------------------------------

def url_params(page: str) -> dict[str, str]:
    """The URL's query parameters the first time `page` runs in this session (e.g. from a shared link), else {}."""
    flag = f"_url_read_{page}"
    if st.session_state.get(flag):
        return {}
    st.session_state[flag] = True
    return st.query_params.to_dict()


def run_param(path: str) -> str:
    """A run's name in links: its folder relative to the checkpoint root, e.g. 'pretrained/m2-mnist-n100'."""
    try:
        return Path(path).resolve().relative_to(checkpoint_root().resolve()).as_posix()
    except ValueError:
        return Path(path).name


def view_url(params: dict) -> str:
    """The full URL of this page with `params` as its query string."""
    base = st.context.url or ""
    return f"{base}?{urlencode(params)}" if params else base


def share_link(params: dict, slot=None) -> str:
    """Put the view's state in the URL (st.query_params) and show the link to it with a copy button; the link."""
    clean = {k: str(v) for k, v in params.items() if v is not None and v != ""}
    if st.query_params.to_dict() != clean:
        st.query_params.from_dict(clean)
    url = view_url(clean)
    with slot if slot is not None else st.container():
        st.caption(":material/link: Link to this view (copy it with the icon on the right):")
        st.code(url, language=None, wrap_lines=True)
    return url


# ---- data ------------------------------------------------------------------------------------

_POOL_SMALLEST: dict[tuple[str, str], int] = {}  # (dataset, root) → images of its rarest training class, once loaded


@st.cache_resource(max_entries=2, show_spinner="Loading dataset…")
def _dataset(name: str, root: str) -> Dataset | str:
    """The dataset `name` from `root` (CPU tensors), or the error message."""
    try:
        data = load_dataset(name, root, download=False)
    except DataError as exc:
        return str(exc)
    _POOL_SMALLEST[(name, root)] = validate.smallest_class(data.y_train, data.num_classes)
    return data


def pool_smallest(name: str) -> int | None:
    """Images of the rarest class in the training pool of dataset `name` if this process has loaded it, else None."""
    return _POOL_SMALLEST.get((name, str(data_root().resolve())))


def dataset(name: str) -> Dataset | None:
    """The dataset if its files are on this machine, else None (no download is attempted)."""
    root = data_root()
    if jobs.dataset_problem(name, root):
        return None
    data = _dataset(name, str(root.resolve()))
    return data if isinstance(data, Dataset) else None


def class_names(dataset_name: str, k: int) -> list[str]:
    """Display names of the classes (digits, or NORB's categories)."""
    return generate.CLASS_NAMES.get(dataset_name, [str(i) for i in range(k)])[:k]


# ---- images ----------------------------------------------------------------------------------

def show_image(img: np.ndarray, width: int, caption: str | None = None) -> bytes:
    """Show a [0, 1] image about `width` pixels wide, upscaled by nearest neighbour; returns its PNG bytes."""
    scale = max(1, round(width / img.shape[1]))
    png = generate.to_png_bytes(img, scale)
    st.image(png, caption=caption, width=img.shape[1] * scale, output_format="PNG")
    return png


def style() -> None:
    """App-wide CSS: crisp (pixelated) image scaling, tighter top padding."""
    st.markdown(
        """<style>
        [data-testid="stImage"] img, [data-testid="stFullScreenFrame"] img { image-rendering: pixelated; }
        .block-container { padding-top: 2.2rem; }
        </style>""",
        unsafe_allow_html=True,
    )
