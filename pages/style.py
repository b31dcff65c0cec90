"""Style explorer: move the style latent z with sliders and see p(x|y,z) change; one style across every class."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import streamlit as st

from pages import _ui
from ssvae_core import generate

SHOWN = 10  # sliders visible before "show all"
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
run = _ui.pick_run("sx_run")
if run is not None:
    model = run.model
    d, k = generate.z_dim(model), model.num_classes
    names = _ui.class_names(run.cfg.dataset, k)
    if st.session_state.get("sx_for") != str(run.path):  # a different model: start from z = 0
        st.session_state["sx_for"] = str(run.path)
        set_z(np.zeros(d))
    for i in range(d):
        if zkey(i) not in st.session_state:
            st.session_state[zkey(i)] = 0.0

    left, right = st.columns([5, 6], gap="large")
    with right:
        show_all = d > SHOWN and st.toggle(f"Show all {d} dimensions", key="sx_all", persist_state="session")
        st.caption(f"Style z ({d} dimensions, prior N(0, I)); sliders span ±{LIMIT:g} standard deviations."
                   + ("" if show_all or d <= SHOWN else f" The first {SHOWN} are shown."))
        shown = d if show_all else min(d, SHOWN)
        cols = st.columns(2)
        for i in range(shown):
            cols[i % 2].slider(f"z{i + 1}", -LIMIT, LIMIT, step=0.05, key=zkey(i), persist_state="session")
    z = np.array([st.session_state[zkey(i)] for i in range(d)], dtype=np.float32)
    y_now = st.session_state.get("sx_y", 0)
    if d == 2:
        with right:
            latent_map(model, 0 if y_now is None else int(y_now), names)

    with left:
        y = st.pills("Class y", list(range(k)), format_func=lambda i: names[i], key="sx_y",
                                 default=0, required=True, persist_state="session")
        img = generate.decode(model, z[None], [y])[0]
        _ui.show_image(img, width=336)
        st.caption(f"x ~ p(x | y = {names[y]}, z): the decoder's mean image at the current sliders.")
        b1, b2 = st.columns(2)
        b1.button("Random z", icon=":material/casino:", on_click=random_z, args=(d,), width="stretch",
                  help="Draw z from the prior N(0, I)")
        b2.button("Reset", icon=":material/restart_alt:", on_click=set_z, args=(np.zeros(d),), width="stretch",
                  help="All sliders back to 0, the prior mean")

    st.divider()
    g1, g2 = st.columns([3, 1], vertical_alignment="bottom")
    g1.subheader("One style, every class")
    g2.button("New styles", icon=":material/refresh:", on_click=new_styles, width="stretch")
    rng = np.random.default_rng(st.session_state.get("sx_grid_seed", 0))
    zs = np.vstack([z[None], rng.standard_normal((7, d)).astype(np.float32)])
    grid = generate.class_grid(model, zs)
    _ui.show_image(grid, width=min(1100, 56 * k))
    st.caption(f"Rows are styles z (the first row is your sliders, the others are drawn from the prior); "
               f"columns are the classes {names[0]}…{names[-1]}. Each row keeps its style across the classes, "
               "as in Figure 1 of the paper.")

