"""Results: Table 1 (the paper's and ours), what unlabelled images buy (errors and learning curves), every saved
run, error vs N, confusion matrix, hardest digits, manage runs."""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from pages import _charts, _ui
from ssvae_core import generate, measured
from ssvae_core.checkpoints import delete_run
from ssvae_core.errors import CheckpointError
from ssvae_core.recipes import PAPER as PAPER_BY_KIND
from ssvae_core.train import evaluate

# Kingma et al. (2014), Table 1, by the names the paper gives its rows
PAPER = {name: PAPER_BY_KIND[kind] for kind, name in (("m1", "M1+TSVM"), ("m2", "M2"), ("m1m2", "M1+M2"))}


def _duration(seconds) -> str:
    """12 s / 4.5 min / 1.2 h."""
    if not isinstance(seconds, int | float):
        return "–"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 5400 else f"{seconds / 3600:.1f} h"


def runs_table(rows: list[dict]) -> pd.DataFrame:
    """One line per run folder: status, model, dataset, N, seed, epochs, errors, time, device, folder."""
    out = []
    for r in rows:
        ok = r["ok"]
        out.append({
            "status": ("★ shipped" if _ui.is_pretrained(r) else "ok") if ok else "⚠ broken",
            "model": _ui.model_name(r),
            "dataset": _ui.DATASET_NAMES.get(r.get("dataset"), r.get("dataset")) if r.get("dataset") else "–",
            "N": r.get("labels"), "seed": r.get("seed"), "epochs": r.get("epochs"),
            "val error %": r.get("val_error") if ok else None, "test error %": r.get("test_error") if ok else None,
            "time": _duration(r.get("seconds")), "device": r.get("device") or "–",
            "run": r["name"], "problem": (r.get("error") or "").replace(str(Path(r["path"])) + "/", ""),
        })
    return pd.DataFrame(out)


def table_1() -> pd.DataFrame:
    """Table 1 (MNIST test error %): each of our rows above the paper's counterpart, N as columns."""
    return pd.DataFrame(measured.table_rows()).rename(columns=lambda c: f"N={c}" if isinstance(c, int) else c)


def unlabelled_gain() -> None:
    """The same labelled images with and without the unlabelled ones: test error per model and label draw, and the
    learning curves of one draw."""
    n, draws = measured.GAIN_N, measured.GAIN_DRAWS
    st.subheader("What the unlabelled images buy")
    left, right = st.columns(2, gap="large")
    with left:
        st.plotly_chart(_charts.gain_figure(measured.GAIN, measured.GAIN_NAMES, draws), key="rs_gain",
                        config={"displayModeBar": False})
        st.dataframe(pd.DataFrame(measured.gain_rows()), hide_index=True, key="rs_gain_table", width="stretch",
                     column_config={c: st.column_config.NumberColumn(format="%.2f")
                                    for c in [*(f"draw {d}" for d in draws), "mean"]})
        st.caption(f"MNIST test error (%) with the same N = {n} labelled images (label draws "
                   f"{', '.join(map(str, draws))}) in every row; bars are the means, marks the draws. *Labels only* "
                   f"trains q(y|x) on those {n} images; the other models also learn from the "
                   f"{measured.GAIN_UNLABELLED:,} unlabelled training images. M2: "
                   f"{measured.NOTES['m2']}; M1 + label spreading's k and α were chosen "
                   f"on these draws' validation error. The paper's network on the labels alone (NN) had "
                   f"{PAPER_BY_KIND['supervised'][n]:.2f}%.")
    with right:
        learning_curves()


def learning_curves() -> None:
    """Validation error per epoch of labels only, M2 and M1+M2 with the same labelled images, on one axis."""
    try:
        runs = measured.curve_runs()
    except OSError:
        st.info("The learning curves' run files are not in this copy of the app.")
        return
    cfg = runs["supervised"]["config"]  # every run: the same batches, so an epoch is the same number of steps
    steps = math.ceil(measured.GAIN_UNLABELLED / cfg["batch_size"])
    st.plotly_chart(_charts.curves_figure(runs, measured.GAIN_NAMES,
                                          f"epoch ({steps} steps of {cfg['labelled_batch']} labelled images)"),
                    key="rs_curves", config={"displayModeBar": False})
    low = min(h["val_error"] for h in runs["supervised"]["history"])
    st.caption(f"Validation error after each epoch with the same N = {cfg['labels']} labelled images (label draw "
               f"{cfg['seed']}): labels alone stay above {math.floor(low)}% from the first epoch on; M2 and M1+M2, "
               f"which also see the {measured.GAIN_UNLABELLED:,} unlabelled images, go far lower. A star marks the "
               "epoch each run keeps (best on validation); the legend gives its test error. M1+M2 starts from the "
               "shipped M1, trained beforehand on the images without their labels.")


@st.cache_data(max_entries=16, show_spinner="Evaluating on the test set…")
def _evaluation(path: str, mtime: float) -> dict | str:
    """Validation/test error, confusion matrix and test predictions of a run (or why it cannot be evaluated)."""
    run = _ui._load(path, mtime)
    if isinstance(run, str):
        return run
    data = _ui.dataset(run.cfg.dataset)
    if data is None:
        return (f"The {_ui.DATASET_NAMES.get(run.cfg.dataset, run.cfg.dataset)} dataset is not on this machine, so "
                "the confusion matrix cannot be computed.")
    res = evaluate(run.model, run.cfg, data)
    return {"val_error": res["val_error"], "test_error": res["test_error"], "confusion": res["confusion"],
            "test_pred": np.asarray(res["test_pred"])}


def _zip(path: str) -> bytes:
    """The run folder as a zip archive (built when the download is clicked)."""
    buf = io.BytesIO()
    root = Path(path)
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(root.rglob("*")):
            if f.is_file() and not f.name.endswith(".tmp"):
                z.write(f, Path(root.name) / f.relative_to(root))
    return buf.getvalue()


def details(row: dict) -> None:
    """Curves, confusion matrix, most-confused test images and management of one run."""
    tabs = st.tabs(["Confusion matrix", "Most confused", "Training curves", "Manage"])
    ev = _evaluation(row["path"], row["mtime"]) if row["ok"] else row["error"]
    run = _ui._load(row["path"], row["mtime"]) if row["ok"] else row["error"]
    with tabs[0]:
        if isinstance(ev, str):
            st.info(ev)
        else:
            k = len(ev["confusion"])
            names = _ui.class_names(row["dataset"], k)
            c1, c2 = st.columns([3, 2], gap="large")
            with c1:
                st.plotly_chart(_charts.confusion_figure(ev["confusion"], names), key="rs_conf",
                                config={"displayModeBar": False})
            with c2:
                st.metric("Test error (recomputed)", f"{ev['test_error']:.2f}%")
                st.metric("Validation error", f"{ev['val_error']:.2f}%")
                st.caption("Rows are the true class, columns the prediction argmax q(y|x); only the mistakes are "
                           "coloured. The diagonal counts the correct test images.")
    with tabs[1]:
        if isinstance(ev, str):
            st.info(ev)
        else:
            confused(row, ev, run)
    with tabs[2]:
        hist = run.meta.get("history", []) if not isinstance(run, str) else []
        if hist:
            st.plotly_chart(_charts.history_figure(hist), key="rs_hist", config={"displayModeBar": False})
            best = run.meta.get("best", {})
            st.caption(f"Every term of the bound per epoch as logged during training. The saved weights are those "
                       f"of epoch {best.get('epoch', '?')}, the best on validation.")
        else:
            st.info("No training history is stored with this run.")
    with tabs[3]:
        manage(row)


def confused(row: dict, ev: dict, run) -> None:
    """The most frequent (true → predicted) mistakes and the test images behind them."""
    data = _ui.dataset(row["dataset"])
    conf = np.asarray(ev["confusion"])
    k = len(conf)
    names = _ui.class_names(row["dataset"], k)
    off = [(int(conf[i, j]), i, j) for i in range(k) for j in range(k) if i != j and conf[i, j] > 0]
    if not off or data is None:
        st.success("No mistakes on the test set.")
        return
    off.sort(reverse=True)
    pairs = off[:12]
    if st.session_state.get("rs_pair", 0) >= len(pairs):
        st.session_state["rs_pair"] = 0
    pick = st.selectbox("Mistake", range(len(pairs)), key="rs_pair",
                        format_func=lambda p: f"true {names[pairs[p][1]]} → predicted {names[pairs[p][2]]} "
                                              f"({pairs[p][0]} images)")
    _, t, p = pairs[pick]
    y = data.y_test.numpy()
    idx = np.flatnonzero((y == t) & (ev["test_pred"] == p))[:24]
    x = data.x_test[idx].numpy()
    shape = tuple(run.meta["data"]["image_shape"])
    imgs = generate.to_images(x, shape)
    cols = 12
    rows = -(-len(imgs) // cols)
    pad = np.ones((rows * cols - len(imgs), *imgs.shape[1:]), dtype=np.float32)
    grid = generate.tile(np.concatenate([imgs, pad]), rows, cols, pad=1)
    _ui.show_image(grid, width=min(900, 64 * cols))
    st.caption(f"Test images of class {names[t]} that the model calls {names[p]} (up to 24). The most common "
               "confusions are listed first.")


def manage(row: dict) -> None:
    """Download the run folder as a zip, or delete it (not the shipped runs)."""
    c1, c2 = st.columns(2)
    with c1:
        st.download_button("Download run (.zip)", data=lambda: _zip(row["path"]), file_name=f"{row['name']}.zip",
                           mime="application/zip", icon=":material/download:", key="rs_dl", width="stretch")
        st.caption(f"Folder `{row['path']}`: weights (model.pt) and run.json with the config and history.")
    with c2:
        shipped = _ui.is_pretrained(row)
        with st.popover("Delete run", icon=":material/delete:", disabled=shipped, width="stretch",
                        help="Shipped models cannot be deleted here" if shipped else None):
            st.write(f"Delete **{row['name']}** for good?")
            if st.button("Yes, delete it", type="primary", key="rs_del"):
                try:
                    delete_run(row["path"], _ui.checkpoint_root())
                except CheckpointError as exc:
                    st.error(str(exc))
                else:
                    st.toast(f"Deleted {row['name']}.", icon=":material/delete:")
                    st.rerun()


_ui.header("Results", "Your saved runs, our Table 1 beside the paper's (MNIST test error with N labels), what the "
                      "unlabelled images buy, and a closer look at any one run.")
link = _ui.url_params("results")
rows = sorted(_ui.all_runs(), key=lambda r: bool(r.get("label_free")))  # clusters last: no classes of their own
share_slot = st.container()
st.subheader("Saved runs")
if rows:
    table = runs_table(rows)
    if not table["problem"].any():
        table = table.drop(columns="problem")
    st.dataframe(table, hide_index=True, key="rs_table",
                 column_config={"val error %": st.column_config.NumberColumn(format="%.2f"),
                                "test error %": st.column_config.NumberColumn(format="%.2f"),
                                "problem": st.column_config.TextColumn(width="large")})
    broken = sum(not r["ok"] for r in rows)
    st.caption(f"{len(rows)} run folder{'s' if len(rows) != 1 else ''} under `{_ui.checkpoint_root()}/`, newest "
               "first" + (" (label-free clusters last)" if any(r.get("label_free") for r in rows) else "")
               + "; errors are those of the epoch that was best on validation"
               + (f". {broken} broken — see *problem*." if broken else "."))
else:
    st.info(f"No saved runs under `{_ui.checkpoint_root()}/` yet.")
    st.page_link("pages/train.py", label="Train one", icon=":material/model_training:")

good = [r for r in rows if r["ok"] and isinstance(r.get("test_error"), int | float)
        and not r.get("label_free")]  # label-free clusters learnt no class from N labels
datasets = list(dict.fromkeys(["mnist"] + [r["dataset"] for r in good]))
if link.get("ds") in datasets:
    st.session_state["rs_ds"] = link["ds"]
st.session_state.setdefault("rs_ds", "mnist")
st.subheader("Table 1: the paper and ours")
left, right = st.columns([5, 2], gap="large")
with left:
    st.dataframe(table_1(), hide_index=True, key="rs_table1", width="stretch",
                 column_config={"model": st.column_config.TextColumn(width="medium")})
with right:
    st.caption("MNIST test error (%) with N labelled images: ours (mean ± std over three label draws, each model "
               "chosen on validation error) above Kingma et al. (2014). M1+TSVM is M1's features with a "
               f"transductive SVM; ours spreads the labels over M1's latent means ({measured.NOTES['m1']}). "
               f"M2: {measured.NOTES['m2']}.")
st.subheader("Test error against N")
left, right = st.columns([5, 2], gap="large")
with left:
    ds = st.segmented_control("Dataset", datasets, format_func=lambda d: _ui.DATASET_NAMES.get(d, d), key="rs_ds",
                              required=True, label_visibility="collapsed")
    mine = [r for r in good if r["dataset"] == ds]
    ours = {k: {n: ms[0] for n, ms in v.items()} for k, v in measured.TABLE.items()} if ds == "mnist" else None
    st.plotly_chart(_charts.error_vs_n_figure(mine, PAPER if ds == "mnist" else None, _ui.MODEL_NAMES, ours,
                                              measured.TABLE_NAMES),
                    key="rs_vsn", config={"displayModeBar": False})
with right:
    st.caption(("Points are the saved runs; dashed lines the paper's numbers, solid lines our means from the "
                "table. " if ds == "mnist" else
                "Points are the saved runs (the paper reports MNIST only here). ") + "The x axis is logarithmic."
               + ("" if mine else f" No finished {_ui.DATASET_NAMES.get(ds, ds)} runs yet."))
unlabelled_gain()

if rows:
    st.subheader("One run up close")
    wanted = [i for i, r in enumerate(rows) if link.get("run") in (_ui.run_param(r["path"]), r["name"])]
    if wanted:
        st.session_state["rs_run"] = wanted[0]
        if link.get("mistake", "").isdigit():
            st.session_state["rs_pair"] = int(link["mistake"])
    elif link.get("run"):
        st.warning(f"The link asks for the run **{link['run']}**, which is not here.", icon=":material/link_off:")
    if st.session_state.get("rs_run", 0) >= len(rows):
        st.session_state["rs_run"] = 0
    pick = st.selectbox("Run", range(len(rows)), format_func=lambda i: _ui.run_label(rows[i]), key="rs_run")
    chosen = rows[pick]
    if not chosen["ok"]:
        st.error(f"This run is broken: {chosen['error']}", icon=":material/broken_image:")
    details(chosen)
_ui.share_link({"ds": ds, "run": _ui.run_param(chosen["path"]) if rows else None,
                "mistake": st.session_state.get("rs_pair") or None}, share_slot)
