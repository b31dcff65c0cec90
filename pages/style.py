"""Style explorer: move the style latent z with sliders and see p(x|y,z) change; one style across every class."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages import _charts, _ui
from ssvae_core import activity, generate

SHOWN = 10  # sliders visible before "show all": the most active units
LIMIT = 3.0  # slider range: ±3 standard deviations of the prior


def zkey(i: int) -> str:
    """Session key of z dimension i's slider."""
    return f"sx_z{i}"


def set_z(values: np.ndarray) -> None:
    """Put `values` into every z slider (works before the sliders are drawn)."""
    for i, v in enumerate(values):
        st.session_state[zkey(i)] = float(np.clip(round(float(v) * 20) / 20, -LIMIT, LIMIT))


def random_z(d: int) -> None:
    """Draw z from the prior N(0, I) into the sliders."""
    set_z(np.random.default_rng().standard_normal(d))


def new_styles() -> None:
    """Draw a fresh set of rows for the style grid."""
    st.session_state["sx_grid_seed"] = int(np.random.default_rng().integers(1 << 30))


def map_clicked(d: int) -> None:
    """Latent map click: move z to the clicked point."""
    points = st.session_state.get("sx_map", {}).get("selection", {}).get("points", [])
    if points:
        set_z(np.array([points[0]["x"], points[0]["y"]])[:d])


@st.cache_data(max_entries=8, show_spinner="Measuring what each z unit does…")
def unit_activity(path: str, mtime: float, dataset: str) -> tuple[np.ndarray, str]:
    """(activity per z unit, what it was measured on) of the run at `path`: see activity.measure."""
    run = _ui._load(path, mtime)
    data = _ui.dataset(dataset)
    return activity.measure(run.model, None if data is None else data.x_val.numpy())


def z_param(z: np.ndarray) -> str:
    """The non-zero sliders as a link parameter, e.g. '41:1.25,24:-0.5' (units numbered from 1, as labelled)."""
    return ",".join(f"{i + 1}:{v:g}" for i, v in enumerate(z) if v != 0)


def z_from_param(text: str, d: int) -> np.ndarray | None:
    """The style z written by z_param (None if it does not parse or names a unit outside 1..d)."""
    z = np.zeros(d, np.float32)
    try:
        for part in filter(None, text.split(",")):
            unit, value = part.split(":")
            if not 1 <= int(unit) <= d:
                return None
            z[int(unit) - 1] = float(value)
    except ValueError:
        return None
    return z


def apply_link(params: dict[str, str], d: int, k: int) -> None:
    """Put a shared link's class, sliders, traversed unit and grid styles into the session (none: no link)."""
    if not params:
        return
    z = z_from_param(params.get("z", ""), d)
    if z is not None:
        set_z(z)
    if params.get("y", "").isdigit() and int(params["y"]) < k:
        st.session_state["sx_y"] = int(params["y"])
    if params.get("unit", "").isdigit() and 1 <= int(params["unit"]) <= d:
        st.session_state["sx_unit"] = int(params["unit"]) - 1
    if params.get("styles", "").isdigit():
        st.session_state["sx_grid_seed"] = int(params["styles"])


def unit_label(i: int, kl: float) -> str:
    """Slider label of unit i with its activity, e.g. 'z41 · KL 1.20'."""
    return f"z{i + 1} · KL {kl:.2f}" + ("" if kl >= activity.ACTIVE_KL else " · inactive")


def latent_map(model, y: int, k_names: list[str]) -> None:
    """Clickable map of the 2-D latent space for class y, with the current z marked."""
    n, extent = 15, LIMIT
    grid, _ = generate.latent_map(model, y, extent=extent, n=n)
    h = grid.shape[0]
    ticks = np.linspace(-extent, extent, n)
    fig = go.Figure()
    fig.add_trace(go.Heatmap(z=grid[::-1], x=np.linspace(-extent - extent / n, extent + extent / n, grid.shape[1]),
                             y=np.linspace(-extent - extent / n, extent + extent / n, h), colorscale="gray",
                             showscale=False, hoverinfo="skip"))
    zx, zy = np.meshgrid(ticks, ticks)
    fig.add_trace(go.Scatter(x=zx.ravel(), y=zy.ravel(), mode="markers", marker={"size": 14, "opacity": 0.01},
                             hovertemplate="z = (%{x:.2f}, %{y:.2f})<extra>click to use</extra>", showlegend=False))
    cur = [st.session_state.get(zkey(0), 0.0), st.session_state.get(zkey(1), 0.0)]
    fig.add_trace(go.Scatter(x=[cur[0]], y=[cur[1]], mode="markers", showlegend=False, hoverinfo="skip",
                             marker={"size": 16, "color": "rgba(0,0,0,0)", "line": {"width": 3, "color": "#f43f5e"}}))
    fig.update_layout(height=430, width=450, margin={"l": 10, "r": 10, "t": 10, "b": 10}, clickmode="event+select",
                      xaxis={"title": "z₁", "range": [-extent * 1.08, extent * 1.08], "showgrid": False},
                      yaxis={"title": "z₂", "range": [-extent * 1.08, extent * 1.08], "showgrid": False,
                             "scaleanchor": "x"}, dragmode=False)
    st.plotly_chart(fig, key="sx_map", on_select=lambda: map_clicked(2), selection_mode="points", width="content",
                    config={"displayModeBar": False})
    st.caption(f"Latent map: the whole 2-D style space decoded for class {k_names[y]}. Click a digit to move z "
               "there; the red ring marks the sliders.")


_ui.header("Style explorer", "M2 separates what a digit is (the class y) from how it is written (the style z). "
                             "Fix y and move z — or keep z and change y.")
link = _ui.url_params("style")
run = _ui.pick_run("sx_run", link.get("model"))
if run is not None:
    model = run.model
    d, k = generate.z_dim(model), model.num_classes
    names = _ui.class_names(run.cfg.dataset, k)
    kl, measured_on = unit_activity(str(run.path), _ui.active_row()["mtime"], run.cfg.dataset)
    order = activity.unit_order(kl)
    n_active = len(activity.active_units(kl))
    if st.session_state.get("sx_for") != str(run.path):  # a different model: start from z = 0
        st.session_state["sx_for"] = str(run.path)
        set_z(np.zeros(d))
        st.session_state["sx_unit"] = int(order[0])
    apply_link(link, d, k)
    for i in range(d):
        if zkey(i) not in st.session_state:
            st.session_state[zkey(i)] = 0.0
    if st.session_state.get("sx_y") is None:
        st.session_state["sx_y"] = 0
    share_slot = st.container()

    left, right = st.columns([5, 6], gap="large")
    with right:
        show_all = d > SHOWN and st.toggle(f"Show all {d} dimensions", key="sx_all", persist_state="session")
        st.caption(f"Style z ({d} dimensions, prior N(0, I)); sliders span ±{LIMIT:g} standard deviations, the most "
                   f"active units first ({n_active} of {d} are active). KL is each unit's activity: the mean "
                   f"KL(q(z_j|x,y) ‖ N(0, 1)) over {measured_on}, y = argmax q(y|x)."
                   + ("" if show_all or d <= SHOWN else f" The first {SHOWN} are shown."))
        shown = order if show_all else order[:SHOWN]
        cols = st.columns(2)
        for pos, i in enumerate(shown):
            cols[pos % 2].slider(unit_label(int(i), float(kl[i])), -LIMIT, LIMIT, step=0.05, key=zkey(int(i)),
                                 persist_state="session")
    z = np.array([st.session_state[zkey(i)] for i in range(d)], dtype=np.float32)
    y_now = st.session_state.get("sx_y", 0)
    if d == 2:
        with right:
            latent_map(model, 0 if y_now is None else int(y_now), names)

    with left:
        y = st.pills("Class y", list(range(k)), format_func=lambda i: names[i], key="sx_y",
                     required=True, persist_state="session")
        img = generate.decode(model, z[None], [y])[0]
        _ui.show_image(img, width=336)
        st.caption(f"x ~ p(x | y = {names[y]}, z): the decoder's mean image at the current sliders.")
        b1, b2 = st.columns(2)
        b1.button("Random z", icon=":material/casino:", on_click=random_z, args=(d,), width="stretch",
                  help="Draw z from the prior N(0, I)")
        b2.button("Reset", icon=":material/restart_alt:", on_click=set_z, args=(np.zeros(d),), width="stretch",
                  help="All sliders back to 0, the prior mean")

    st.divider()
    a1, a2 = st.columns([3, 2], gap="large")
    with a1:
        st.subheader("Which units matter")
        st.plotly_chart(_charts.activity_figure(kl, activity.ACTIVE_KL), key="sx_activity",
                        config={"displayModeBar": False})
    with a2:
        st.markdown(f"**{n_active} of {d} units are active.** A unit's activity is how far its posterior "
                    "q(z_j|x,y) moves from the prior N(0, 1), on average over the inputs: the KL term of the bound, "
                    "one unit at a time.")
        st.markdown("The bound charges every unit a KL cost for carrying information about x. Units that do not "
                    "pay for themselves in reconstruction are switched off: q(z_j|x,y) = N(0, 1) for every x, "
                    f"KL ≈ 0 (grey, under the dotted line at {activity.ACTIVE_KL:g} nats). The decoder learns to "
                    "ignore them, so their sliders do nothing. This is called *inactive units* or *posterior "
                    "collapse*; the few active units hold all of the style.")

    st.subheader("Traverse one unit")
    t1, t2 = st.columns([1, 3], gap="large")
    with t1:
        unit = st.selectbox("Unit", [int(i) for i in order], key="sx_unit",
                            format_func=lambda i: unit_label(i, float(kl[i])))
        st.caption(f"Each row is a class y; the columns set z{unit + 1} to "
                   f"{', '.join(f'{v:g}' for v in activity.TRAVERSE)} with the other units at your sliders. "
                   f"Mean pixel change from −3 to +3 for class {names[y]}: "
                   f"{activity.pixel_change(model, unit, y, z):.3f}.")
    with t2:
        walk = activity.traversal(model, unit, z)
        _ui.show_image(walk, width=max(1, round(48 / generate.model_image_shape(model)[2])) * walk.shape[1])

    st.divider()
    g1, g2 = st.columns([3, 1], vertical_alignment="bottom")
    g1.subheader("One style, every class")
    g2.button("New styles", icon=":material/refresh:", on_click=new_styles, width="stretch")
    seed = st.session_state.get("sx_grid_seed", 0)
    rng = np.random.default_rng(seed)
    zs = np.vstack([z[None], rng.standard_normal((7, d)).astype(np.float32)])
    grid = generate.class_grid(model, zs)
    _ui.show_image(grid, width=min(1100, 56 * k))
    st.caption(f"Rows are styles z (the first row is your sliders, the others are drawn from the prior); "
               f"columns are the classes {names[0]}…{names[-1]}. Each row keeps its style across the classes, "
               "as in Figure 1 of the paper.")
    _ui.share_link({"model": _ui.run_param(str(run.path)), "y": y, "z": z_param(z), "unit": unit + 1,
                    "styles": seed or None}, share_slot)
