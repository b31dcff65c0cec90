"""Plotly figures shared by the pages: training curves, q(y|x) bars, confusion matrix, error vs N, learning
curves side by side."""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
from plotly.subplots import make_subplots

# (history key, panel title); the bounds are logged with the paper's sign (higher is better)
TERMS = [
    ("loss", "Loss J<sup>α</sup> (per batch)"),
    ("elbo_labelled", "Labelled bound −L(x,y)"),
    ("elbo_unlabelled", "Unlabelled bound −U(x)"),
    ("log_px", "Reconstruction log p(x|·)"),
    ("kl_z", "KL(q(z|·) ‖ p(z))"),
    ("classification", "Classification −log q(y|x)"),
    ("entropy", "Entropy H(q(y|x))"),
]
STAGE_COLOURS = {"m1": "#9ca3af", "m2": "#4f46e5", "m1m2": "#4f46e5", "supervised": "#0891b2"}
MODEL_COLOURS = {"m2": "#4f46e5", "m1m2": "#db2777", "m1": "#059669", "supervised": "#0891b2", "m1tsvm": "#d97706"}


def history_figure(history: list[dict], height: int = 430) -> go.Figure:
    """Small multiples: every bound term per epoch, and validation/test error, for each training stage."""
    present = [(k, t) for k, t in TERMS if any(k in h for h in history)]
    has_err = any("val_error" in h for h in history)
    panels = present + ([("error", "Error rate (%)")] if has_err else [])
    cols = 4
    rows = max(1, -(-len(panels) // cols))
    fig = make_subplots(rows=rows, cols=cols, subplot_titles=[t for _, t in panels] or [""],
                        horizontal_spacing=0.06, vertical_spacing=0.2 if rows > 1 else 0.1)
    stages = list(dict.fromkeys(h["stage"] for h in history))
    for i, (key, _) in enumerate(panels):
        r, c = divmod(i, cols)
        for stage in stages:
            recs = [h for h in history if h["stage"] == stage]
            name = "M1 stage" if stage == "m1" and len(stages) > 1 else "training"
            if key == "error":
                for split, dash, colour in (("val_error", "solid", "#4f46e5"), ("test_error", "dot", "#db2777")):
                    pts = [(h["epoch"], h[split]) for h in recs if split in h]
                    if pts:
                        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                                 name=split.replace("_error", "").replace("val", "validation"),
                                                 line={"dash": dash, "color": colour}, marker={"size": 5},
                                                 legendgroup=split, showlegend=True), row=r + 1, col=c + 1)
                continue
            pts = [(h["epoch"], h[key]) for h in recs if key in h]
            if not pts:
                continue
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines+markers",
                                     name=name, legendgroup=stage, showlegend=False,
                                     line={"color": STAGE_COLOURS.get(stage, "#4f46e5")}, marker={"size": 5},
                                     hovertemplate="epoch %{x}: %{y:.3f}<extra>" + name + "</extra>"),
                          row=r + 1, col=c + 1)
    fig.update_annotations(font_size=12)
    last = max((h["epoch"] for h in history), default=1)
    fig.update_xaxes(title_text=None, tickmode="linear", tick0=0, dtick=max(1, -(-last // 5)),
                     range=[0.5, max(last, 2) + 0.5])
    fig.update_layout(height=height if rows > 1 else height // 2 + 40, margin={"l": 10, "r": 10, "t": 30, "b": 10},
                      legend={"orientation": "h", "y": -0.08, "x": 0.75}, hovermode="closest")
    return fig


def qy_bar(p: np.ndarray, names: list[str], height: int = 110) -> go.Figure:
    """Bar chart of one input's class probabilities q(y|x), the argmax highlighted."""
    top = int(np.argmax(p))
    colours = ["#4f46e5" if i == top else "#c7cbe8" for i in range(len(p))]
    fig = go.Figure(go.Bar(x=names, y=p, marker_color=colours, hovertemplate="q(y=%{x}|x) = %{y:.3f}<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 0, "r": 0, "t": 2, "b": 20}, bargap=0.15,
                      yaxis={"range": [0, 1], "showticklabels": False, "gridcolor": "#eef0f6", "tickvals": [0.5, 1]},
                      xaxis={"type": "category", "tickfont": {"size": 10}, "tickangle": 0})
    return fig


def confusion_figure(confusion: list[list[int]], names: list[str]) -> go.Figure:
    """Heatmap of the test confusion matrix (rows: true class, columns: predicted), off-diagonal emphasised."""
    m = np.asarray(confusion, dtype=float)
    shown = m.copy()
    np.fill_diagonal(shown, np.nan)  # colour the mistakes; the diagonal is written as text
    text = [[f"{int(v)}" for v in row] for row in m]
    fig = go.Figure(go.Heatmap(z=shown, x=names, y=names, text=text, texttemplate="%{text}", colorscale="Reds",
                               showscale=False, hovertemplate="true %{y} → predicted %{x}: %{text}<extra></extra>"))
    fig.update_layout(height=420, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": "predicted", "type": "category", "side": "top"},
                      yaxis={"title": "true", "type": "category", "autorange": "reversed"})
    return fig


def error_vs_n_figure(runs: list[dict], paper: dict[str, dict[int, float]] | None,
                      names: dict[str, str], ours: dict[str, dict[int, float]] | None = None,
                      our_names: dict[str, str] | None = None) -> go.Figure:
    """Test error against the label budget N (log x): saved runs as points, the paper's numbers as dashed lines,
    our measured means (`ours`, by model kind, named by `our_names`) as solid lines."""
    fig = go.Figure()
    for kind, pts in (ours or {}).items():
        name = (our_names or names).get(kind, kind)
        ns = sorted(pts)
        fig.add_trace(go.Scatter(x=ns, y=[pts[n] for n in ns], mode="lines+markers", name=f"ours: {name}",
                                 line={"color": MODEL_COLOURS.get(kind, "#6b7280"), "width": 1.5},
                                 marker={"symbol": "diamond", "size": 7}, opacity=0.75,
                                 hovertemplate="N=%{x}: %{y:.2f}%<extra>ours: " + name + "</extra>"))
    if paper:
        for model, pts in paper.items():
            ns = sorted(pts)
            fig.add_trace(go.Scatter(x=ns, y=[pts[n] for n in ns], mode="lines+markers", name=f"paper {model}",
                                     line={"dash": "dash", "color": MODEL_COLOURS.get(_key(model), "#6b7280")},
                                     marker={"symbol": "circle-open", "size": 8}, opacity=0.75))
    for kind in dict.fromkeys(r["model"] for r in runs):
        mine = [r for r in runs if r["model"] == kind]
        fig.add_trace(go.Scatter(x=[r["labels"] for r in mine], y=[r["test_error"] for r in mine], mode="markers",
                                 name=f"saved: {names.get(kind, kind)}", text=[r["name"] for r in mine],
                                 marker={"size": 11, "color": MODEL_COLOURS.get(kind, "#111827"),
                                         "line": {"width": 1, "color": "white"}},
                                 hovertemplate="N=%{x}: %{y:.2f}%<br>%{text}<extra></extra>"))
    fig.update_layout(height=360, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"type": "log", "title": "labelled examples N", "tickvals": [100, 300, 600, 1000, 3000]},
                      yaxis={"title": "test error (%)", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.25})
    return fig


def gain_figure(errors: dict[str, tuple[float, ...]], names: dict[str, str], draws: tuple[int, ...],
                height: int = 280) -> go.Figure:
    """Horizontal bars of each model's mean test error (named with it on the axis), with one mark per label draw."""
    kinds = list(errors)[::-1]  # the first model on top
    means = [float(np.mean(errors[k])) for k in kinds]
    labels = [f"{names[k]} · {m:.2f}%" for k, m in zip(kinds, means, strict=True)]
    fig = go.Figure(go.Bar(y=labels, x=means, orientation="h", showlegend=False, opacity=0.8,
                           marker_color=[MODEL_COLOURS.get(k, "#6b7280") for k in kinds],
                           hovertemplate="%{y}: mean %{x:.2f}%<extra></extra>"))
    for i, d in enumerate(draws):
        fig.add_trace(go.Scatter(y=labels, x=[errors[k][i] for k in kinds], mode="markers", name=f"draw {d}",
                                 marker={"size": 8, "color": "#111827", "symbol": ["circle", "square", "diamond",
                                                                                     "x", "cross"][i % 5]},
                                 hovertemplate="draw " + str(d) + ": %{x:.2f}%<extra></extra>"))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, bargap=0.35,
                      xaxis={"title": "test error (%)", "rangemode": "tozero"},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def curves_figure(runs: dict[str, dict], names: dict[str, str], x_title: str = "epoch",
                  height: int = 330) -> go.Figure:
    """Validation error per epoch of each run (run.json dicts by model kind) on one shared epoch axis; a star marks
    the epoch each run keeps, whose test error the legend gives."""
    fig, top = go.Figure(), 0.0
    for kind, run in runs.items():
        pts = [(h["epoch"], h["val_error"]) for h in run["history"] if "val_error" in h]
        top = max([top, *(p[1] for p in pts)])
        best, colour = run["best"], MODEL_COLOURS.get(kind, "#6b7280")
        name = f"{names[kind]} · test {best['test_error']:.2f}%"
        fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="lines", name=name,
                                 legendgroup=kind, line={"color": colour, "width": 2},
                                 hovertemplate="epoch %{x}: validation %{y:.2f}%<extra>" + names[kind] + "</extra>"))
        fig.add_trace(go.Scatter(x=[best["epoch"]], y=[best["val_error"]], mode="markers", legendgroup=kind,
                                 showlegend=False, marker={"size": 10, "color": colour, "symbol": "star",
                                                           "line": {"width": 1, "color": "white"}},
                                 hovertemplate=f"kept: epoch %{{x}}, validation %{{y:.2f}}%, test "
                                               f"{best['test_error']:.2f}%<extra>{names[kind]}</extra>"))
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10},
                      xaxis={"title": x_title, "rangemode": "tozero"},
                      yaxis={"title": "validation error (%)", "range": [0, top * 1.15]},
                      legend={"orientation": "h", "y": -0.3})
    return fig


def _key(paper_name: str) -> str:
    """Colour key of a paper model name ('M1+M2' → 'm1m2')."""
    return {"M2": "m2", "M1+M2": "m1m2", "M1+TSVM": "m1tsvm"}.get(paper_name, paper_name.lower())


def activity_figure(activity: np.ndarray, threshold: float, height: int = 240) -> go.Figure:
    """Bars of each z unit's activity (mean KL of q(z_j|x,y) in nats), most active first; inactive units grey."""
    a = np.asarray(activity, dtype=float)
    order = np.argsort(-a, kind="stable")
    names = [f"z{i + 1}" for i in order]
    colours = ["#4f46e5" if a[i] >= threshold else "#d1d5db" for i in order]
    fig = go.Figure(go.Bar(x=names, y=a[order], marker_color=colours,
                           hovertemplate="%{x}: mean KL %{y:.3f} nats<extra></extra>"))
    fig.add_hline(y=threshold, line={"dash": "dot", "color": "#9ca3af", "width": 1})
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 10, "b": 10}, bargap=0.15,
                      yaxis={"title": "mean KL (nats)", "rangemode": "tozero"},
                      xaxis={"type": "category", "tickfont": {"size": 9}, "tickangle": -90 if len(a) > 20 else 0})
    return fig
