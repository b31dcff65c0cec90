"""Train: choose dataset, model, label budget, epochs, seed and device; train in the background and watch it live."""

from __future__ import annotations

import streamlit as st
import torch

from pages import _charts, _ui
from ssvae_core import jobs, validate
from ssvae_core.checkpoints import read_meta
from ssvae_core.errors import CheckpointError, DataError
from ssvae_core.models import ModelConfig
from ssvae_core.recipes import (
    CLASSIFIER_NAMES,
    DATASET_NAMES,
    FROM_CLUSTERS,
    FROM_SCRATCH,
    MODEL_NAMES,
    RECIPE,
    SHIFTED,
    SHIPPED_CLUSTERS,
    SHIPPED_M1,
    recipe_settings,
)
from ssvae_core.train import TrainConfig

PRESETS = [100, 600, 1000, 3000]
DEFAULTS = TrainConfig()
DEFAULT_MODEL = "m1m2"  # on MNIST it starts from the shipped M1: the quickest model worth exploring
KEEP = "session"  # settings survive switching pages
CLASSIFIER_NOTES = {  # M1's classifiers in a sentence, under the choice
    "knn": "Each image takes the majority class of its 3 nearest labelled images in M1's latent space.",
    "svm": "An RBF-kernel SVM fitted on the N labelled images' latent means.",
    "spreading": "The labels spread over a graph of the labelled and unlabelled images' latent means, transductive "
                 "like the paper's M1+TSVM: the results table's M1 row.",
}


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


def _recipe_fields(model: str, labels) -> dict:
    """The recipe of `model` at N=`labels` as the form's widget values (keys tr_ + setting)."""
    # M1+M2's M1 fields only count when it trains its own M1: the recipe from scratch's
    r = recipe_settings(model, labels if isinstance(labels, int) and labels > 0 else None, "scratch")
    r["hidden"] = ",".join(map(str, r["hidden"]))  # the text field's form
    del r["ema"], r["alpha"], r["shift"]  # no fields: the recipe brings them (M2, M1+M2 from clusters)
    return {f"tr_{name}": value for name, value in r.items()}


def _use_recipe() -> None:
    """Fill epochs, learning rates, KL warm-up, hidden sizes (and M1+M2's M1 stage) with the recipe at N."""
    model, labels = st.session_state["tr_model"], st.session_state.get("tr_labels")
    st.session_state.update(_recipe_fields(model, labels))
    st.session_state["tr_recipe_for"] = (model, labels)


def _follow_recipe() -> None:
    """When the model or N changes while the settings are still the recipe's, fill in the new one's recipe."""
    model, labels = st.session_state["tr_model"], st.session_state.get("tr_labels")
    before = st.session_state.get("tr_recipe_for")
    if before is None or tuple(before) == (model, labels):
        return
    if all(st.session_state.get(k) == v for k, v in _recipe_fields(*before).items()):
        _use_recipe()


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
    # the defaults are the results recipe: Start without touching anything trains a model worth exploring
    for key, value in (("tr_dataset", "mnist"), ("tr_model", DEFAULT_MODEL), ("tr_labels", DEFAULTS.labels),
                       ("tr_preset", DEFAULTS.labels if DEFAULTS.labels in PRESETS else None), ("tr_seed", 0),
                       ("tr_device", "auto"), ("tr_z", ModelConfig().z_dim), ("tr_batch", DEFAULTS.batch_size),
                       *_recipe_fields(DEFAULT_MODEL, DEFAULTS.labels).items(),
                       ("tr_classifier", recipe_settings("m1")["classifier"]),
                       ("tr_recipe_for", (DEFAULT_MODEL, DEFAULTS.labels))):
        _init(key, value)
    _follow_recipe()
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
                                format_func=MODEL_NAMES.get, required=True, persist_state=KEEP,
                                help="M2 and M1+M2 are the generative semi-supervised models; M1 (a VAE, then a "
                                     "classifier on its latent means) and a supervised MLP on the labels alone are "
                                     "baselines.")
    st.pills("Label budget N (the paper's settings)", PRESETS, key="tr_preset", on_change=_preset_chosen,
             persist_state=KEEP)
    labels = st.number_input("Labelled images N", step=10, key="tr_labels", on_change=_labels_typed,
                             persist_state=KEEP,
                             help="Drawn class-balanced with the seed: N must be a multiple of the number of classes.")
    _say(st, refused, "labels")
    st.button("Use the results recipe for this model", on_click=_use_recipe, icon=":material/tune:",
              help="Epochs, learning rates, KL warm-up and hidden sizes (M1: its classifier) of the recipe behind "
                   "the results table for this model and N (the same as `python -m ssvae_core train --recipe`; "
                   "M1+M2's M1 stage, which trains only for a fresh M1: the recipe from scratch's). The form starts "
                   "with it and follows the model and N until you change a setting.")
    if kind == "m2":
        st.caption(f"The M2 recipe keeps a moving average of its weights (decay {RECIPE['m2']['ema']} a step)"
                   + (f" and moves each labelled image by up to {RECIPE['m2']['shift']} pixels at random every step, "
                      "an augmentation the paper does not use" if dataset in SHIFTED else "") + ".")
    if kind == "m1m2" and _ui.shipped_m1(dataset):
        st.checkbox("Train a fresh M1 first", key="tr_fresh_m1", persist_state=KEEP,
                    help="Off: the M2 stage starts from the shipped M1 (the recipe's, trained on the unlabelled "
                         "images only), so only the stage trains. On: the M1 stage below trains first; the recipe "
                         f"from scratch gives it {FROM_SCRATCH['m1_epochs']} epochs and, like the recipe from "
                         "clusters, has the stage keep a moving average of its weights and weigh the labels' "
                         "classification term less.")
        if _ui.shipped_clusters(dataset) and not st.session_state.get("tr_fresh_m1"):
            st.checkbox("Start the stage from the shipped clusters (faster)", key="tr_clusters", persist_state=KEEP,
                        help="On: the M2 stage starts from one trained on the unlabelled images alone, on the same "
                             "M1 (its ten clusters, z2 of 10), the clusters named by class with your labels. With "
                             "100 labels it passed the paper's 3.33% after 21-31 epochs instead of 80-118 (label draws "
                             "5-7, docs/experiments.md). Its hidden size (500) and z size (10) replace the fields "
                             "below, and, as the recipe from clusters does, the run keeps a moving average of its "
                             "weights and weighs the labels' classification term less "
                             f"(alpha {FROM_CLUSTERS['alpha']}).")
    classifier = DEFAULTS.classifier  # only M1 uses one
    if kind == "m1":
        classifier = st.selectbox("M1's classifier", list(CLASSIFIER_NAMES), key="tr_classifier",
                                  format_func=CLASSIFIER_NAMES.get, persist_state=KEEP,
                                  help="What turns M1's latent means into classes. The first two learn from the N "
                                       "labelled images only; label spreading also uses the unlabelled ones and the "
                                       "validation and test images (not their labels), one graph over all of them. "
                                       "It takes about a minute on MNIST, so it runs once, on the M1 kept at the "
                                       "end; the curves after each epoch are 3-NN's.")
        st.caption(CLASSIFIER_NOTES[classifier])
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
    from_shipped = kind == "m1m2" and _ui.shipped_m1(dataset) and not st.session_state.get("tr_fresh_m1")
    clusters = from_shipped and _ui.shipped_clusters(dataset) and bool(st.session_state.get("tr_clusters"))
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
        sizes = read_meta(SHIPPED_CLUSTERS)["config"]["model"] if clusters else {}  # what the clusters keep
        z_dim = a1.number_input("z size" + (f" (clusters: {sizes['z_dim']})" if clusters else ""), step=1, key="tr_z",
                                persist_state=KEEP, disabled=clusters,
                                help="M2's z (M1+M2: z2); 2 gives a clickable latent map in the Style explorer. "
                                     "M1 and M1+M2's M1 keep z1 of 50")
        _say(a1, refused, "z_dim")
        hidden_text = a2.text_input("Hidden layer sizes" + (f" (clusters: {','.join(map(str, sizes['hidden']))})"
                                                            if clusters else ""),
                                    key="tr_hidden", persist_state=KEEP, disabled=clusters,
                                    help="Comma-separated, e.g. 500 or 500,500: the MLPs of M2, of M1+M2's M2 stage "
                                         "and of the supervised baseline. M1 and M1+M2's M1 keep the paper's 500,500")
        _say(a2, refused, "hidden")
        st.caption("M1 stage of M1+M2 (the VAE whose latent z1 the M2 stage models)"
                   + (": not trained, the run starts from the shipped M1" if from_shipped else
                      f": trained first, then the M2 stage averages its weights (alpha {FROM_SCRATCH['alpha']}), as "
                      "the recipe from scratch has it"
                      if kind == "m1m2" else "")
                   + (", and its M2 stage from the shipped clusters, whose hidden size and z size it keeps"
                      if clusters else ""))
        off = kind != "m1m2" or from_shipped
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

    busy = len(jobs.active_jobs()) >= jobs.max_jobs()
    if busy:
        st.info(f"A run is training right now (on the right) and this machine runs at most {jobs.max_jobs()} "
                "at a time. Stop it, or start once it finishes.", icon=":material/hourglass_top:")
    if refused:
        st.markdown(f":red[Start is off until {'this setting is' if len(refused) == 1 else 'these settings are'} "
                    f"fixed: {', '.join(LABELS[f] for f in refused)}.]")
    start = st.button("Start training", type="primary", icon=":material/play_arrow:",
                      disabled=busy or bool(problem) or bool(refused), width="stretch")
    if not start or refused:
        return None
    model = ModelConfig(kind=kind, hidden=validate.parse_hidden(hidden_text), z_dim=int(z_dim))
    # M1+M2's start: shipped clusters, the shipped M1, or its own M1 (for other models the plain recipe either way)
    r = recipe_settings(kind, int(labels), "clusters" if clusters else "m1" if from_shipped else "scratch", dataset)
    m1 = ({k: r[k] for k in ("m1_epochs", "m1_lr", "m1_lr_final", "m1_kl_warmup")} if from_shipped  # fields off
          else {"m1_epochs": int(m1_epochs), "m1_lr": float(m1_lr), "m1_lr_final": float(m1_lr_final),
                "m1_kl_warmup": float(m1_kl)})
    return TrainConfig(model=model, dataset=dataset, labels=int(labels), seed=int(seed), epochs=int(epochs),
                       lr=float(lr), lr_final=float(lr_final), kl_warmup=float(kl), batch_size=int(batch),
                       classifier=classifier, device=device, ema=r["ema"], alpha=r["alpha"], shift=r["shift"],
                       **m1)


def start(cfg: TrainConfig) -> None:
    """Start a background run, or explain why it cannot start."""
    data = _ui.dataset(cfg.dataset)  # already in memory when another page loaded it
    m1_run = None
    if cfg.model.kind == "m1m2" and not st.session_state.get("tr_fresh_m1") and _ui.shipped_m1(cfg.dataset):
        m1_run = SHIPPED_M1
        if st.session_state.get("tr_clusters") and _ui.shipped_clusters(cfg.dataset):
            m1_run = SHIPPED_CLUSTERS
    try:
        job = jobs.start_job(cfg, _ui.data_root(), jobs.new_run_dir(_ui.checkpoint_root(), cfg), data=data,
                             m1_run=m1_run)
    except jobs.JobLimitError as exc:
        st.error(str(exc), icon=":material/block:")
    except DataError as exc:
        st.error(str(exc))
    else:
        st.session_state["tr_job"] = job.id
        st.rerun()  # redraw with the live panel


def resume(run_dir: str) -> None:
    """Go on with an interrupted or stopped run in the background, or explain why it cannot."""
    try:
        meta_dataset = TrainConfig.from_dict(read_meta(run_dir)["config"]).dataset
        job = jobs.resume_job(run_dir, _ui.data_root(), data=_ui.dataset(meta_dataset))
    except (jobs.JobLimitError, CheckpointError, DataError) as exc:
        st.error(str(exc), icon=":material/block:")
    else:
        st.session_state["tr_job"] = job.id
        st.rerun()


def _status_line(snap: dict) -> str:
    """One line: what the run is doing now."""
    cfg = snap["cfg"]
    what = (f"{MODEL_NAMES[cfg['model']['kind']]} on {DATASET_NAMES[cfg['dataset']]}, "
            f"N = {cfg['labels']}, seed {cfg['seed']}" + (" (resumed)" if snap["resumed"] else ""))
    if snap["phase"] in ("loading data", "preparing") or not snap["steps"]:
        if snap["phase"] == "training":
            return f"{what} · starting…"
        return f"{what} · {snap['phase']}…"
    m1_stage = snap["stage"] == "m1" and cfg["model"]["kind"] == "m1m2"
    done = sum(1 for h in snap["history"] if h.get("complete", True))
    line = (f"{what} · epoch {done + (1 if snap['status'] in jobs.ACTIVE else 0)}"
            f"/{snap['epochs_total']}{' (M1 stage)' if m1_stage else ''} · batch {snap['step']}/{snap['steps']}"
            f" · {snap['elapsed']:.0f}s")
    if snap["seconds_left"] is not None:
        line += f" · {_about(snap['seconds_left'])} left" + (" in the M1 stage" if m1_stage else "")
    return line


def _about(seconds: float) -> str:
    """A rough duration in words: 'under a minute', 'about 7 min', 'about 1.5 h'."""
    if seconds < 60:
        return "under a minute"
    if seconds < 90 * 60:
        return f"about {round(seconds / 60)} min"
    return f"about {seconds / 3600:.1f} h"


def _open(run_dir: str, page: str) -> None:
    """Make `run_dir` the model in use on every page and go to `page`."""
    st.session_state[_ui.ACTIVE_RUN] = run_dir
    for key in ("sx_run", "an_run"):  # the pickers re-read the model in use
        st.session_state.pop(key, None)
    st.switch_page(page)


def panel(job: jobs.Job) -> None:
    """Progress bar, metrics, live curves of every bound term and the error, samples, and Stop."""
    snap = job.snapshot()
    live = snap["status"] in jobs.ACTIVE
    top = st.columns([4, 1], vertical_alignment="bottom")
    if live:
        top[0].progress(snap["progress"], text=_status_line(snap))
        if top[1].button("Stop", icon=":material/stop:", key=f"tr_stop_{job.id}", width="stretch",
                         disabled=snap["status"] == jobs.STOPPING,
                         help="End after the current batch; the run folder keeps the best epoch, and Resume goes "
                              "on from the last finished one"):
            job.stop()
            snap = job.snapshot()
        if snap["status"] == jobs.STOPPING:
            st.caption("Stopping after the current batch; the best checkpoint will be saved…")
        st.caption(f"Saved after every epoch to `{snap['run_dir']}`: a crash or a restart loses at most the epoch in "
                   "progress.")
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
            generative = snap["cfg"]["model"]["kind"] in _ui.GENERATIVE
            l1.button("Explore its styles", icon=":material/tune:", key=f"tr_style_{job.id}", disabled=not generative,
                      on_click=_open, args=(snap["run_dir"], "pages/style.py"), width="stretch")
            l2.button("Make analogies", icon=":material/compare_arrows:", key=f"tr_an_{job.id}",
                      disabled=not generative, on_click=_open, args=(snap["run_dir"], "pages/analogies.py"),
                      width="stretch")
            l3.page_link("pages/results.py", label="Compare results", icon=":material/leaderboard:")

    hist = snap["history"]
    scored = [h for h in hist if "val_error" in h]
    m = st.columns(4)
    done = sum(1 for h in hist if h.get("complete", True))
    m[0].metric("Epochs done", f"{done} / {snap['epochs_total'] or '–'}")
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
def live_panel(job_id: str) -> None:
    """A running job's panel, refreshed every 1.5 s until it ends."""
    job = jobs.get_job(job_id)
    if job is None:
        return
    if not job.active:  # the app's rerun draws the finished panel once, outside this fragment
        st.rerun(scope="app")  # re-enable Start and stop polling
    panel(job)


def interrupted() -> None:
    """Run folders that can go on from their last finished epoch (interrupted by a crash or restart, or stopped),
    each with a Resume button."""
    rows = jobs.interrupted_runs(_ui.checkpoint_root())
    if not rows:
        return
    busy = len(jobs.active_jobs()) >= jobs.max_jobs()
    with st.container(border=True):
        st.markdown("#### Runs that can go on")
        st.caption("Interrupted (the app or the machine stopped while they trained) or stopped: Resume goes on from "
                   "the last finished epoch, exactly as if never interrupted.")
        for r in rows:
            c1, c2 = st.columns([4, 1], vertical_alignment="center")
            epochs = f"{r['epochs']} epoch{'s' if r['epochs'] != 1 else ''}"
            c1.markdown(f"**{MODEL_NAMES.get(r['model'], r['model'])}** on {DATASET_NAMES.get(r['dataset'])}, "
                        f"N = {r['labels']}, seed {r['seed']} · {r['state']} after {epochs} · `{r['name']}`")
            if c2.button("Resume", key=f"tr_resume_{r['name']}", icon=":material/play_arrow:", disabled=busy,
                         width="stretch", help="The machine is busy; wait for the run above" if busy else None):
                resume(r["path"])


_ui.header("Train", "Pick a dataset, a model and how many labels it may see. Training runs in the background and "
                    "belongs to the app, not to this tab: reload, open another tab or switch pages and it is still "
                    "here. Every epoch is saved; Stop keeps the best checkpoint (chosen on validation).")
left, right = st.columns([1, 2.2], gap="large")
with left, st.container(border=True):
    cfg = settings()
    if cfg is not None:
        start(cfg)
with right:
    running = jobs.active_jobs()
    for job in running:
        with st.container(border=True):
            live_panel(job.id)
    if not running:
        mine = jobs.get_job(st.session_state.get("tr_job", "")) or next(iter(jobs.all_jobs()), None)
        if mine is not None:
            with st.container(border=True):
                panel(mine)
    interrupted()
    if not running and not jobs.all_jobs() and not jobs.interrupted_runs(_ui.checkpoint_root()):
        with st.container(border=True):
            st.markdown("#### No run yet")
            st.write("Choose the settings on the left and press **Start training**. You will see a progress bar, "
                     "every term of the bound per epoch, validation and test error, and samples from the model "
                     "as it learns.")
            st.caption("Tip: *Digits · 8×8* is a small offline dataset for a quick first try.")
