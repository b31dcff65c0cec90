"""Train: choose dataset, model, label budget, epochs, seed and device; train in the background and watch it live."""

from __future__ import annotations

import streamlit as st
import torch

from pages import _charts, _ui
from ssvae_core import jobs, validate
from ssvae_core.errors import DataError
from ssvae_core.models import ModelConfig
from ssvae_core.reproduce import recipe_settings
from ssvae_core.train import TrainConfig

PRESETS = [100, 600, 1000, 3000]
DEFAULTS = TrainConfig()
KEEP = "session"  # settings survive switching pages


def _init(key: str, value) -> None:
    """Give a widget key its first value (so widgets are created without a `value=`)."""
    if key not in st.session_state:
        st.session_state[key] = value


def _preset_chosen() -> None:
    """Copy a clicked preset N into the number input."""
    if st.session_state.get("tr_preset") is not None:
        st.session_state["tr_labels"] = int(st.session_state["tr_preset"])


def _labels_typed() -> None:
    """Highlight the preset that matches a typed N (or none)."""
    n = st.session_state.get("tr_labels")
    st.session_state["tr_preset"] = n if n in PRESETS else None


def _use_digits() -> None:
    """Switch the dataset to the offline digits."""
    st.session_state["tr_dataset"] = "digits"


def _use_recipe() -> None:
    """Fill epochs, learning rates, KL warm-up, hidden sizes (and M1+M2's M1 stage) with `reproduce`'s recipe at N."""
    r = recipe_settings(st.session_state["tr_model"], st.session_state.get("tr_labels"))
    r["hidden"] = ",".join(map(str, r["hidden"]))  # the text field's form
    st.session_state.update({f"tr_{name}": value for name, value in r.items()})  # widget keys are tr_ + setting


# widget key → field of validate.problems (TrainConfig names; "hidden" as typed)
FIELDS = {"tr_dataset": "dataset", "tr_model": "kind", "tr_labels": "labels", "tr_epochs": "epochs",
          "tr_m1_epochs": "m1_epochs", "tr_seed": "seed", "tr_lr": "lr", "tr_lr_final": "lr_final",
          "tr_kl_warmup": "kl_warmup", "tr_m1_lr": "m1_lr", "tr_m1_lr_final": "m1_lr_final",
          "tr_m1_kl_warmup": "m1_kl_warmup", "tr_z": "z_dim", "tr_hidden": "hidden", "tr_batch": "batch_size"}
LABELS = {"labels": "N", "epochs": "Epochs", "seed": "Seed", "lr": "Learning rate", "lr_final": "Final learning rate",
          "kl_warmup": "KL warm-up", "batch_size": "Batch size", "z_dim": "z size", "hidden": "Hidden layer sizes",
          "m1_epochs": "M1 epochs", "m1_lr": "M1 learning rate", "m1_lr_final": "M1 final rate",
          "m1_kl_warmup": "M1 KL warm-up"}  # as the widgets name them
ADVANCED = ("lr", "lr_final", "kl_warmup", "batch_size", "z_dim", "hidden", "m1_epochs", "m1_lr", "m1_lr_final",
            "m1_kl_warmup")


def _refusals() -> dict[str, str]:
    """Why each field of the form (as it stands in session state) is refused; empty when a run can start."""
    values = {field: st.session_state.get(key) for key, field in FIELDS.items()}
    return validate.problems(values, _ui.pool_smallest(values["dataset"]))


def _say(where, refused: dict[str, str], field: str) -> None:
    """Show why `field`'s value is refused, right under its widget in `where`."""
    if field in refused:
        where.markdown(f":red[:material/error: {refused[field]}]")


def settings() -> TrainConfig | None:
    """The settings form; a TrainConfig when Start is pressed (and the settings are usable), else None."""
    for key, value in (("tr_dataset", "mnist"), ("tr_model", "m2"), ("tr_labels", DEFAULTS.labels),
                       ("tr_preset", DEFAULTS.labels if DEFAULTS.labels in PRESETS else None),
                       ("tr_epochs", DEFAULTS.epochs), ("tr_m1_epochs", DEFAULTS.m1_epochs), ("tr_seed", 0),
                       ("tr_device", "auto"), ("tr_lr", DEFAULTS.lr), ("tr_lr_final", DEFAULTS.lr_final),
                       ("tr_kl_warmup", DEFAULTS.kl_warmup), ("tr_m1_lr", DEFAULTS.lr),
                       ("tr_m1_lr_final", DEFAULTS.lr_final), ("tr_m1_kl_warmup", DEFAULTS.kl_warmup),
                       ("tr_z", ModelConfig().z_dim),
                       ("tr_hidden", ",".join(map(str, ModelConfig().hidden))), ("tr_batch", DEFAULTS.batch_size)):
        _init(key, value)
    refused = _refusals()  # widgets hold what was typed (no clamping); Start stays off while anything is refused

    dataset = st.selectbox("Dataset", ["mnist", "digits", "svhn", "norb"], key="tr_dataset",
                           format_func=lambda d: {"mnist": "MNIST · 28×28 digits", "digits": "Digits · 8×8, offline",
                                                  "svhn": "SVHN · 32×32 colour", "norb": "small NORB · 32×32 toys"}[d],
                           persist_state=KEEP)
    problem = jobs.dataset_problem(dataset, _ui.data_root())
    if problem:
        st.warning(problem, icon=":material/folder_off:")
        st.button("Use the offline digits dataset instead", on_click=_use_digits, icon=":material/swap_horiz:")

    kind = st.segmented_control("Model", ["m2", "m1m2", "m1", "supervised"], key="tr_model",
                                format_func=_ui.MODEL_NAMES.get, required=True, persist_state=KEEP,
                                help="M2 and M1+M2 are the generative semi-supervised models; M1 (VAE + kNN) and a "
                                     "supervised MLP on the labels alone are baselines.")
    st.pills("Label budget N (the paper's settings)", PRESETS, key="tr_preset", on_change=_preset_chosen,
             persist_state=KEEP)
    labels = st.number_input("Labelled images N", step=10, key="tr_labels", on_change=_labels_typed,
                             persist_state=KEEP,
                             help="Drawn class-balanced with the seed: N must be a multiple of the number of classes.")
    _say(st, refused, "labels")
    st.button("Use the results recipe for this model", on_click=_use_recipe, icon=":material/tune:",
              help="Epochs, learning rates, KL warm-up and hidden sizes of `python -m ssvae_core reproduce` for this "
                   "model and N, which made the README's results table (M1+M2's stage: 200 epochs from N=1000 on, "
                   "else 150). On 2 CPU cores, N=100: M2 4–12% test error after 45 epochs, "
                   "about 20 minutes (one run; the README's 5.3% keeps the better of two per label draw, "
                   "chosen on validation); M1+M2 2.9% after a 150-epoch M1 and a 150-epoch M2 stage, about 26 minutes")
    c1, c2 = st.columns(2)
    epochs = c1.number_input("Epochs", step=1, key="tr_epochs", persist_state=KEEP,
                             help="M1+M2: epochs of the M2 stage")
    _say(c1, refused, "epochs")
    seed = c2.number_input("Seed", step=1, key="tr_seed", persist_state=KEEP,
                           help="Chooses the labelled images and the initialisation")
    _say(c2, refused, "seed")
    cuda = torch.cuda.is_available()
    device = st.selectbox("Device", ["auto", "cpu", "cuda"] if cuda else ["auto", "cpu"], key="tr_device",
                          persist_state=KEEP, help="auto uses the GPU when PyTorch sees one"
                          + ("" if cuda else " (none on this machine)"))
    with st.expander("Advanced", expanded=any(f in refused for f in ADVANCED)):
        a1, a2 = st.columns(2)
        lr = a1.number_input("Learning rate", step=0.01, format="%.5f", key="tr_lr", persist_state=KEEP)
        _say(a1, refused, "lr")
        lr_final = a2.number_input("Final learning rate", step=0.01, format="%.5f", key="tr_lr_final",
                                   persist_state=KEEP,
                                   help="Above 0: cosine decay from the learning rate to this over the run")
        _say(a2, refused, "lr_final")
        kl = a1.number_input("KL warm-up (epochs)", step=1.0, key="tr_kl_warmup", persist_state=KEEP,
                             help="The KL term's weight rises from 0 to 1 over these epochs (0: the plain bound "
                                  "throughout)")
        _say(a1, refused, "kl_warmup")
        batch = a2.number_input("Batch size", step=1, key="tr_batch", persist_state=KEEP)
        _say(a2, refused, "batch_size")
        z_dim = a1.number_input("z size", step=1, key="tr_z", persist_state=KEEP,
                                help="2 gives a clickable latent map in the Style explorer")
        _say(a1, refused, "z_dim")
        hidden_text = a2.text_input("Hidden layer sizes", key="tr_hidden", persist_state=KEEP,
                                    help="Comma-separated, e.g. 500 or 500,500")
        _say(a2, refused, "hidden")
        st.caption("M1 stage of M1+M2 (the VAE whose latent z1 the M2 stage models)")
        off = kind != "m1m2"
        b1, b2 = st.columns(2)
        m1_epochs = b1.number_input("M1 epochs", step=1, key="tr_m1_epochs", persist_state=KEEP, disabled=off)
        _say(b1, refused, "m1_epochs")
        m1_kl = b2.number_input("M1 KL warm-up", step=1.0, key="tr_m1_kl_warmup", persist_state=KEEP,
                                disabled=off, help="Epochs")
        _say(b2, refused, "m1_kl_warmup")
        m1_lr = b1.number_input("M1 learning rate", step=0.01, format="%.5f", key="tr_m1_lr", persist_state=KEEP,
                                disabled=off)
        _say(b1, refused, "m1_lr")
        m1_lr_final = b2.number_input("M1 final rate", step=0.01, format="%.5f", key="tr_m1_lr_final",
                                      persist_state=KEEP, disabled=off)
        _say(b2, refused, "m1_lr_final")

    mine = jobs.get_job(_ui.owner())
    busy = mine is not None and mine.active
    others = [j for j in jobs.active_jobs() if j.owner != _ui.owner()]
    if not busy and len(others) >= jobs.max_jobs():
        st.info(f"Another session is training right now and this machine runs at most {jobs.max_jobs()} "
                "run(s) at a time. You can start once it finishes.", icon=":material/hourglass_top:")
    if refused:
        st.markdown(f":red[Start is off until {'this setting is' if len(refused) == 1 else 'these settings are'} "
                    f"fixed: {', '.join(LABELS[f] for f in refused)}.]")
    start = st.button("Start training", type="primary", icon=":material/play_arrow:",
                      disabled=busy or bool(problem) or bool(refused), width="stretch")
    if not start or refused:
        return None
    model = ModelConfig(kind=kind, hidden=validate.parse_hidden(hidden_text), z_dim=int(z_dim))
    return TrainConfig(model=model, dataset=dataset, labels=int(labels), seed=int(seed), epochs=int(epochs),
                       m1_epochs=int(m1_epochs), lr=float(lr), lr_final=float(lr_final), kl_warmup=float(kl),
                       m1_lr=float(m1_lr), m1_lr_final=float(m1_lr_final), m1_kl_warmup=float(m1_kl),
                       batch_size=int(batch), device=device)


def start(cfg: TrainConfig) -> None:
    """Start a background run for this session, or explain why it cannot start."""
    data = _ui.dataset(cfg.dataset)  # already in memory when another page loaded it
    try:
        jobs.start_job(cfg, _ui.data_root(), jobs.new_run_dir(_ui.checkpoint_root(), cfg), _ui.owner(), data=data)
    except jobs.JobLimitError as exc:
        st.error(str(exc), icon=":material/block:")
    except DataError as exc:
        st.error(str(exc))
    else:
        st.rerun()  # redraw with Start disabled and the live panel


def _status_line(snap: dict) -> str:
    """One line: what the run is doing now."""
    cfg = snap["cfg"]
    what = (f"{_ui.MODEL_NAMES[cfg['model']['kind']]} on {_ui.DATASET_NAMES[cfg['dataset']]}, "
            f"N = {cfg['labels']}, seed {cfg['seed']}")
    if snap["phase"] in ("loading data", "preparing") or not snap["steps"]:
        if snap["phase"] == "training":
            return f"{what} · starting…"
        return f"{what} · {snap['phase']}…"
    stage = " (M1 stage)" if snap["stage"] == "m1" else ""
    return (f"{what} · epoch {len(snap['history']) + (1 if snap['status'] in jobs.ACTIVE else 0)}"
            f"/{snap['epochs_total']}{stage} · batch {snap['step']}/{snap['steps']} · {snap['elapsed']:.0f}s")


def panel(job: jobs.Job) -> None:
    """Progress bar, metrics, live curves of every bound term and the error, samples, and Stop."""
    snap = job.snapshot()
    live = snap["status"] in jobs.ACTIVE
    top = st.columns([4, 1], vertical_alignment="bottom")
    if live:
        top[0].progress(snap["progress"], text=_status_line(snap))
        if top[1].button("Stop", icon=":material/stop:", key="tr_stop", width="stretch",
                         disabled=snap["status"] == jobs.STOPPING,
                         help="End after the current batch and keep the best checkpoint"):
            job.stop()
            snap = job.snapshot()
        if snap["status"] == jobs.STOPPING:
            st.caption("Stopping after the current batch; the best checkpoint will be saved…")
    else:
        icon = {"done": ":material/check_circle:", "stopped": ":material/stop_circle:",
                "failed": ":material/error:"}[snap["status"]]
        text = snap["message"] or f"Run {snap['status']}."
        if snap["status"] == jobs.FAILED:
            st.error(snap["error"] + (f" {snap['message']}" if snap["message"] else ""), icon=icon)
        elif snap["saved"]:
            st.success(text, icon=icon)
        else:
            st.warning(text, icon=icon)
        if snap["saved"]:
            l1, l2, l3 = st.columns(3)
            l1.page_link("pages/style.py", label="Explore its styles", icon=":material/tune:")
            l2.page_link("pages/analogies.py", label="Make analogies", icon=":material/compare_arrows:")
            l3.page_link("pages/results.py", label="Compare results", icon=":material/leaderboard:")

    hist = snap["history"]
    scored = [h for h in hist if "val_error" in h]
    m = st.columns(4)
    m[0].metric("Epochs done", f"{len(hist)} / {snap['epochs_total'] or '–'}")
    if scored:
        last, prev = scored[-1], scored[-2] if len(scored) > 1 else None
        m[1].metric("Validation error", f"{last['val_error']:.2f}%",
                    delta=f"{last['val_error'] - prev['val_error']:+.2f}" if prev else None, delta_color="inverse")
        m[2].metric("Test error", f"{last['test_error']:.2f}%",
                    delta=f"{last['test_error'] - prev['test_error']:+.2f}" if prev else None, delta_color="inverse")
    else:
        m[1].metric("Validation error", "–")
        m[2].metric("Test error", "–")
    m[3].metric("Images / s", f"{hist[-1]['images_per_s']:,.0f}" if hist else "–")

    if hist:
        st.plotly_chart(_charts.history_figure(hist), key=f"tr_curves_{job.id}_{len(hist)}",
                        config={"displayModeBar": False})
    elif live:
        st.caption("The curves appear after the first epoch.")
    if snap["sample"] is not None:
        _ui.show_image(snap["sample"], width=520)
        st.caption("Samples from the current model after the last epoch: rows are fixed styles z, columns the "
                   "classes y (M1: unconditional samples).")


@st.fragment(run_every=1.5)
def live_panel() -> None:
    """The panel, refreshed every 1.5 s while this session's run is going."""
    job = jobs.get_job(_ui.owner())
    if job is None:
        return
    panel(job)
    if not job.active:
        st.rerun(scope="app")  # re-enable Start and stop polling


_ui.header("Train", "Pick a dataset, a model and how many labels it may see. Training runs in the background — "
                    "you can switch pages and come back; Stop keeps the best checkpoint (chosen on validation).")
left, right = st.columns([1, 2.2], gap="large")
with left, st.container(border=True):
    cfg = settings()
    if cfg is not None:
        start(cfg)
with right:
    job = jobs.get_job(_ui.owner())
    if job is None:
        with st.container(border=True):
            st.markdown("#### No run in this session yet")
            st.write("Choose the settings on the left and press **Start training**. You will see a progress bar, "
                     "every term of the bound per epoch, validation and test error, and samples from the model "
                     "as it learns.")
            st.caption("Tip: *Digits · 8×8* with N = 100 trains in well under a minute on a CPU; MNIST M2 takes "
                       "roughly a minute per epoch on a CPU and a few seconds on a GPU.")
    elif job.active:
        live_panel()
    else:
        panel(job)
