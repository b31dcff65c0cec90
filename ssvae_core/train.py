"""One training loop for every model: a small config, per-epoch history, stop between batches, best-on-validation."""

from __future__ import annotations

import copy
import math
import threading
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch
from torch import nn

from ssvae_core.classifiers import fit_latent_classifier
from ssvae_core.data import Dataset, label_split, shifted
from ssvae_core.errors import TrainingError
from ssvae_core.models import M1, M1M2, ModelConfig, build_model
from ssvae_core.recipes import ALPHA


@dataclass
class TrainConfig:
    """Everything that defines a run; saved beside its weights."""

    model: ModelConfig = field(default_factory=ModelConfig)
    dataset: str = "mnist"
    labels: int = 100  # label budget N, balanced over classes
    seed: int = 0  # the label draw; also seeds weights, batch order and binarisation noise
    init: int = 0  # >0: another initialisation (weights, batch order, noise) for the same label draw
    epochs: int = 10  # M2 / supervised / M1 epochs (M1+M2: epochs of its M2 stage)
    m1_epochs: int = 10  # M1+M2: epochs of the M1 stage (unless a trained M1 is given)
    batch_size: int = 100  # unlabelled images per step
    labelled_batch: int = 100  # labelled images per step (every batch sees labels)
    lr: float = 3e-4
    lr_final: float = 0.0  # >0: cosine decay from lr to lr_final over the run
    kl_warmup: float = 0.0  # epochs over which the KL weight rises linearly from 0 to 1 (0: the plain bound)
    m1_lr: float | None = None  # M1+M2: learning rate of its M1 stage (None: lr)
    m1_lr_final: float | None = None  # M1+M2: final (cosine) rate of its M1 stage (None: lr_final)
    m1_kl_warmup: float | None = None  # M1+M2: KL warm-up epochs of its M1 stage (None: kl_warmup)
    labelled_elbo: str = "dataset"  # "batch": mean L(x,y) weighs like mean U(x); "dataset": times N_l/N_u, as in J
    ema: float = 0.0  # >0: evaluate and keep an exponential moving average of the weights, this decay per step
    shift: int = 0  # M2: each step moves every labelled image by up to this many pixels each way, at random
    z1_sample: bool = True  # M1+M2: train M2 on z1 ~ q(z1|x) (the paper); False: on the means E[z1|x] (as at test)
    alpha: float = ALPHA  # J^alpha with alpha = 0.1 * N: beta = alpha * N_total / N_labelled per labelled example
    binarize: bool = True  # dynamic binarisation for Bernoulli pixel models
    active_threshold: float = 0.01  # M1+M2: z1 units whose mean varies less than this are pruned
    classifier: str = "knn"  # M1: "knn", "svm" or "spreading" (labels spread over labelled + unlabelled means)
    device: str = "auto"
    compile: bool = False  # torch.compile each step's loss (on CUDA as CUDA graphs: the step never waits on the host)
    label_free: bool = False  # M1+M2: the stage learns U alone, no label reaches it; its classes are clusters, named
    # with the run's labels only to report errors (a start for M1+M2 runs with labels: `--m1-run` on it)

    @classmethod
    def from_dict(cls, d: dict) -> TrainConfig:
        """Inverse of dataclasses.asdict, ignoring unknown keys."""
        d = dict(d)
        model = ModelConfig(**{k: v for k, v in d.pop("model", {}).items() if k in ModelConfig.__dataclass_fields__})
        return cls(model=model, **{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def to_dict(self) -> dict:
        return asdict(self)


def flush_denormals() -> None:
    """Treat denormal floats as zero on the CPU, where they take a slow path (docs/experiments.md). The flag is per
    thread, and torch's worker threads copy it when they are created, so call this at the start of a thread, before
    its first torch operation."""
    torch.set_flush_denormal(True)


def adam(params: list[torch.Tensor], lr: float) -> torch.optim.Adam:
    """Adam on `params`, its update of all of them in one fused kernel a step (the same update as the loop of
    torch's default on the CPU, without its per-tensor work)."""
    return torch.optim.Adam(params, lr=lr, fused=True)


@torch.no_grad()
def ema_update(averaged: nn.Module, model: nn.Module, decay: float) -> None:
    """Polyak averaging: theta_avg <- decay * theta_avg + (1 - decay) * theta, for the trained parameters."""
    pairs = [(a, p) for a, p in zip(averaged.parameters(), model.parameters(), strict=True) if p.requires_grad]
    torch._foreach_lerp_([a for a, _ in pairs], [p for _, p in pairs], 1.0 - decay)  # all tensors in one call


def resolve_device(name: str = "auto") -> torch.device:
    """'auto' picks CUDA when present, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda was asked for, but PyTorch sees no CUDA GPU here; use --device cpu or auto.")
    return torch.device(name)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch: int = 2000) -> torch.Tensor:
    """argmax_y q(y|x) for every row of x, in batches."""
    model.eval()
    out = torch.cat([model.classify(x[i:i + batch]).argmax(-1) for i in range(0, len(x), batch)])
    model.train()
    return out


@torch.no_grad()
def predict_generative(model: nn.Module, x: torch.Tensor, samples: int = 4, batch: int = 1000) -> torch.Tensor:
    """argmax_y L(x,y), L averaged over `samples` draws of z (fixed seed): the class the generative model itself
    prefers. U(x) pulls q(y|x) towards it, so its error shows how much p(x|y,z) uses y (M2, M1+M2)."""
    model.eval()
    with torch.random.fork_rng(devices=[x.device] if x.is_cuda else []):
        torch.manual_seed(0)
        out = torch.cat([sum(model.elbo_every_class(x[i:i + batch])["elbo"] for _ in range(samples)).argmax(-1)
                         for i in range(0, len(x), batch)])
    model.train()
    return out


@torch.no_grad()
def m1_features(m1: M1, x: torch.Tensor, batch: int = 5000) -> torch.Tensor:
    """Latent means of M1 for every row of x."""
    return torch.cat([m1.features(x[i:i + batch]) for i in range(0, len(x), batch)])


def m1_classifier(m1: M1, kind: str, data: Dataset, lab_idx: torch.Tensor, unl_idx: torch.Tensor):
    """M1's classifier `kind` fitted on the latent means of the labelled training images `lab_idx` (label
    spreading: and of the unlabelled ones, `unl_idx`)."""
    z_l = m1_features(m1, data.x_train[lab_idx]).cpu().numpy()
    z_u = m1_features(m1, data.x_train[unl_idx]).cpu().numpy() if kind == "spreading" else None
    return fit_latent_classifier(kind, z_l, data.y_train[lab_idx].cpu().numpy(), z_u)


def m1_predict(m1: M1, clf, data: Dataset) -> tuple[torch.Tensor, torch.Tensor]:
    """Classes `clf` gives the validation and test images from M1's latent means, asked in one call (label
    spreading puts them into one graph together)."""
    z_val, z_test = (m1_features(m1, x).cpu().numpy() for x in (data.x_val, data.x_test))
    pred = torch.as_tensor(clf.predict(np.concatenate([z_val, z_test])))
    return pred[:len(z_val)], pred[len(z_val):]


def error_rate(pred: torch.Tensor | np.ndarray, y: torch.Tensor) -> float:
    """Percentage of wrong predictions."""
    pred = torch.as_tensor(pred, device=y.device)
    return 100.0 * (pred != y).float().mean().item()


def active_units(z: torch.Tensor, threshold: float) -> torch.Tensor:
    """Indices of the z1 units whose posterior means `z` (one row per image) vary by more than `threshold` (Burda
    et al.)."""
    var = z.var(0)
    idx = torch.nonzero(var > threshold).flatten()
    return idx if len(idx) else torch.arange(len(var), device=var.device)


def name_clusters(logits: torch.Tensor, y: torch.Tensor, k: int) -> torch.Tensor:
    """The one-to-one naming of clusters by classes that makes the labelled images likeliest: perm[class] = cluster,
    maximising sum_i log q(y = perm[y_i] | x_i) over the labelled images (Hungarian algorithm)."""
    from scipy.optimize import linear_sum_assignment  # scipy comes with scikit-learn; only this needs it

    log_q = torch.log_softmax(logits.float(), -1).cpu()
    cost = torch.stack([-log_q[y.cpu() == c].sum(0) for c in range(k)])  # cost[class, cluster]
    return torch.as_tensor(linear_sum_assignment(cost.numpy())[1])


def is_stage_start(state: dict | None) -> bool:
    """Whether an M1+M2 run's given M1 state is a whole label-free M1+M2 (its M1, active units and clusters)."""
    return state is not None and "active" in state


def sub_state(state: dict, prefix: str) -> dict:
    """The entries of a state dict under `prefix` (e.g. "m2."), the prefix taken off."""
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def m1_part(state: dict) -> dict:
    """The M1 weights of a given M1 state: itself, or the M1 inside a label-free M1+M2 state."""
    return sub_state(state, "m1.") if is_stage_start(state) else state


@torch.no_grad()
def cluster_names(model: nn.Module, x_lab: torch.Tensor, y_lab: torch.Tensor) -> torch.Tensor:
    """perm[class] = the cluster of an M1+M2's q(y|z1) that the labelled images x_lab, y_lab name by that class."""
    return name_clusters(model.classify(x_lab), y_lab, model.num_classes)


def lr_at(cfg: TrainConfig, step: int, total_steps: int) -> float:
    """The learning rate at optimisation step `step` (0-based) of `total_steps`: a cosine from cfg.lr down to
    cfg.lr_final over the run, or cfg.lr throughout when lr_final is 0."""
    if cfg.lr_final <= 0:
        return cfg.lr
    frac = step / max(1, total_steps)
    return cfg.lr_final + 0.5 * (cfg.lr - cfg.lr_final) * (1 + math.cos(math.pi * frac))


def kl_weight_at(cfg: TrainConfig, step: int, steps_per_epoch: int) -> float:
    """The KL term's weight in step `step` (0-based): rising linearly from 0 to 1 over cfg.kl_warmup epochs."""
    if cfg.kl_warmup <= 0:
        return 1.0
    return min(1.0, (step + 1) / (cfg.kl_warmup * steps_per_epoch))


def _not_finite(loss: torch.Tensor, epoch: int, stage: str, where: str) -> None:
    """Raise the TrainingError for a loss that became NaN or infinite."""
    raise TrainingError(f"The loss became {loss.item()} at epoch {epoch}, {where} ({stage}); the state of the last "
                        "finished epoch was kept. Try a lower learning rate (--lr).")


@dataclass
class Stage:
    """One stage's training state (M1+M2 has an M1 stage, then its own): all a per-epoch checkpoint must hold."""

    name: str  # "m1", "m2", "m1m2" or "supervised"
    model: nn.Module
    opt: torch.optim.Optimizer
    averaged: nn.Module | None  # the moving average of the weights (cfg.ema > 0), else None
    epoch: int = 0  # epochs finished
    updates: int = 0  # optimiser steps taken
    best_score: float = math.inf  # M1: -validation ELBO; the others: validation error
    best_state: dict | None = None

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are evaluated and kept: the moving average if there is one."""
        return self.averaged if self.averaged is not None else self.model


def _cpu(state: dict) -> dict:
    """A detached CPU copy of a state dict."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}


class Trainer:
    """Trains one run; iterate `epochs()` for per-epoch history; `stop()` ends it between batches.

    After every finished epoch `resume_state` holds everything needed to go on from there exactly (weights,
    optimiser, random state, best so far, history); `Trainer(cfg, data, resume=state)` goes on from it.
    """

    def __init__(self, cfg: TrainConfig, data: Dataset, m1_state: dict | None = None, resume: dict | None = None):
        self.cfg = copy.deepcopy(cfg)
        self.device = resolve_device(cfg.device)
        self.data = data.to(self.device)
        self.lab_idx, self.unl_idx = label_split(data.y_train, cfg.labels, data.num_classes, cfg.seed)
        self.lab_idx, self.unl_idx = self.lab_idx.to(self.device), self.unl_idx.to(self.device)
        self.m1_state = m1_state
        self.history: list[dict] = []
        self.best: dict = {"val_error": math.inf, "test_error": math.inf, "epoch": 0}
        self.best_state: dict | None = None
        self.model: nn.Module | None = None
        self.latent_classifier = None  # M1 only
        self.resume_state: dict | None = resume  # after each finished epoch: see class docstring
        self.partial: dict | None = None  # a stop inside an epoch: {"epoch", "batches", "steps", "stage"}
        self._resume = resume
        self._x_val_bin: torch.Tensor | None = None
        self._z1_eval: tuple[torch.Tensor, torch.Tensor] | None = None  # M1+M2: z1 means of validation, test
        self._t_start = time.perf_counter()
        self.wall_seconds = 0.0  # training and per-epoch evaluation, from the start of epochs() (resumes add up)
        self._stop = threading.Event()
        self._compiled: dict[str, Callable] = {}  # stage → its compiled batch_terms (cfg.compile)
        self.stopped = False
        if resume is not None:
            self.history = list(resume["history"])
            self.best = dict(resume["best"])
            # the run's best so far is its own stage's best (the M1 stage of M1+M2 has none yet)
            self.best_state = resume["stage_best"] if resume["stage"] == self.cfg.model.kind else None
            self.wall_seconds = float(resume["wall_seconds"])
            self.cfg.model.z1_active = int(resume.get("z1_active", self.cfg.model.z1_active))

    @property
    def kept_partial(self) -> bool:
        """Whether the model kept is a partial epoch: stopped inside the first epoch of the run's own model (then
        that epoch is recorded, marked incomplete; else a partial epoch is dropped)."""
        return self.partial is not None and bool(self.history) and not self.history[-1]["complete"]

    def stop(self) -> None:
        """Ask the run to end after the current batch; the best state so far is kept."""
        self._stop.set()

    # ---- the loop -------------------------------------------------------------------------
    def epochs(self, on_batch: Callable[[int, int], None] | None = None) -> Iterator[dict]:
        """Run training, yielding one history record per finished epoch (M1+M2: M1 stage first)."""
        self._t_start = time.perf_counter() - self.wall_seconds
        torch.manual_seed(self.cfg.seed + 10_000 * self.cfg.init)  # init 0: the seed itself, as before
        flush_denormals()
        kind, resume = self.cfg.model.kind, self._resume
        if kind == "m1m2" and (resume is None or resume["stage"] == "m1"):
            m1 = M1(self.data.x_dim, self.cfg.model, tuple(self.data.image_shape)).to(self.device)
            if self.m1_state is not None:
                m1.load_state_dict(m1_part(self.m1_state))
            else:
                m1_best = yield from self._fit(m1, self.cfg.m1_epochs, "m1", on_batch)
                if m1_best is not None:
                    m1.load_state_dict(m1_best)  # the M1 epoch with the best validation ELBO
            if self._stop.is_set():
                return
            self.model = self.stage_model(m1)
        else:  # a fresh run, or a resume in the run's own stage (M1+M2: its M1 and active units are in the state)
            self.model = build_model(self.cfg.model, self.data.x_dim, self.data.num_classes,
                                     tuple(self.data.image_shape)).to(self.device)
            if kind == "m1m2":
                self.model.m1.requires_grad_(False)
        yield from self._fit(self.model, self.cfg.epochs, kind, on_batch)
        if self.best_state is not None:
            self.model.load_state_dict(self.best_state)
            if kind == "m1":  # the kept M1 with the run's own classifier (label spreading: only here)
                errs = self._evaluate_m1(self.model, self.cfg.classifier)
                self.best.update(val_error=errs["val_error"], test_error=errs["test_error"],
                                 classifier=self.cfg.classifier)
        self.wall_seconds = time.perf_counter() - self._t_start

    def _fit(self, model: nn.Module, n_epochs: int, stage: str, on_batch) -> Generator[dict, None, dict | None]:
        """Train one stage, yielding its finished epochs; return the state of its best epoch (M1: highest validation
        ELBO, label-free; others: lowest validation error)."""
        cfg = self.stage_config(stage)
        st = self._stage(model, stage, cfg)
        pool = self.stage_pool(stage)
        steps = math.ceil(len(pool) / cfg.batch_size)
        q_z1 = self.q_z1_train(model) if stage == "m1m2" else None
        while st.epoch < n_epochs:
            epoch = st.epoch + 1
            last_good = _cpu(model.state_dict())
            t0 = time.perf_counter()
            try:
                sums, done = self.run_epoch(st, cfg, pool, steps, n_epochs, q_z1, on_batch)
            except TrainingError:
                model.load_state_dict(last_good)
                raise
            if done == 0:  # stopped before this epoch's first batch
                self.stopped = True
                break
            if done < steps and (st.best_state is not None or stage != cfg.model.kind):
                # stopped inside an epoch after a finished one: the partial epoch is not kept
                model.load_state_dict(last_good)
                self.partial = {"stage": stage, "epoch": epoch, "batches": done, "steps": steps}
                self.stopped = True
                break
            rec = {k: float(v) / done for k, v in sums.items()}
            seconds = time.perf_counter() - t0
            rec.update(stage=stage, epoch=epoch, seconds=seconds, images_per_s=done * cfg.batch_size / seconds,
                       lr=st.opt.param_groups[0]["lr"], complete=done == steps)
            if done < steps:  # the run has no finished epoch: this partial one is all there is
                rec.update(batches=done, steps=steps)
                self.partial = {"stage": stage, "epoch": epoch, "batches": done, "steps": steps}
            t_eval = time.perf_counter()
            rec.update(self._evaluate(st.evaluated, stage))
            if st.averaged is not None:  # the raw weights too, to see what the averaging gains
                rec.update({f"raw_{k}": v for k, v in self._evaluate(model, stage).items()})
            rec["eval_seconds"] = time.perf_counter() - t_eval
            st.epoch = epoch
            self.choose_best(st, rec)
            self.history.append(rec)
            self.wall_seconds = time.perf_counter() - self._t_start
            if done < steps:
                self.stopped = True
                yield rec
                break
            self.resume_state = self.checkpoint(st)
            yield rec
        return st.best_state

    def _stage(self, model: nn.Module, stage: str, cfg: TrainConfig) -> Stage:
        """A fresh stage for `model`, or the interrupted one this Trainer resumes (weights, optimiser, random state)."""
        params = [p for p in model.parameters() if p.requires_grad]
        st = Stage(stage, model, adam(params, cfg.lr), self._averaged(model) if cfg.ema > 0 else None)
        r = self._resume
        if r is not None and r["stage"] == stage:
            model.load_state_dict(r["model"])
            st.opt.load_state_dict(r["optimizer"])
            if st.averaged is not None:
                st.averaged.load_state_dict(r["averaged"])
            st.epoch, st.updates, st.best_score = int(r["epoch"]), int(r["updates"]), float(r["best_score"])
            st.best_state = r["stage_best"]
            torch.set_rng_state(r["rng"])
            if self.device.type == "cuda" and r.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(r["cuda_rng"], self.device)
            self._resume = None
        return st

    def stage_model(self, m1: M1, active: torch.Tensor | None = None) -> M1M2:
        """M1+M2 on the trained `m1`, frozen, with its active z1 units (`active`, else those of a clusters start, else
        measured on the training images); a clusters start in m1_state also starts the stage (named clusters)."""
        start = self.m1_state if is_stage_start(self.m1_state) else None
        if active is None:
            active = (start["active"].to(self.device) if start is not None
                      else active_units(m1_features(m1, self.data.x_train), self.cfg.active_threshold))
        self.cfg.model.z1_active = len(active)
        model = M1M2(self.data.x_dim, self.data.num_classes, self.cfg.model, tuple(self.data.image_shape))
        model = model.to(self.device)
        model.m1.load_state_dict(m1.state_dict())
        model.active.copy_(active)
        if start is not None:
            self.start_from_clusters(model, start)
        model.m1.requires_grad_(False)
        return model

    def start_from_clusters(self, model: M1M2, start: dict) -> None:
        """Load a label-free M1+M2's stage into `model` and, unless this run is label-free too, name its clusters by
        classes with this run's labelled images (their z1 means)."""
        model.m2.load_state_dict(sub_state(start, "m2."))
        if not self.cfg.label_free:
            model.m2.relabel(self.cluster_names(model).to(self.device))

    def cluster_names(self, model: M1M2) -> torch.Tensor:
        """perm[class] = the cluster of q(y|z1) that this run's labelled images name by that class."""
        return cluster_names(model, self.data.x_train[self.lab_idx], self.data.y_train[self.lab_idx])

    def stage_pool(self, stage: str) -> torch.Tensor:
        """The training images a stage's epoch runs over: all of them for M1, the unlabelled ones otherwise (for a
        label-free stage too: the same batches as a stage with labels)."""
        return torch.arange(len(self.data.x_train), device=self.device) if stage == "m1" else self.unl_idx

    def run_epoch(self, st: Stage, cfg: TrainConfig, pool: torch.Tensor, steps: int, n_epochs: int,
                  q_z1: torch.Tensor | None, on_batch) -> tuple[dict[str, torch.Tensor], int]:
        """One pass over `pool` in shuffled batches, each a step of Adam on J^alpha (M1: its ELBO); returns the
        summed loss terms and the number of batches done (fewer after stop())."""
        model, stage = st.model, st.name
        # beta weighs the batch mean of -log q(y|x) against the batch mean of U: 0.1*N/N_l per labelled example
        beta = cfg.alpha * len(self.data.x_train) / cfg.labels
        lab_weight = len(self.lab_idx) / max(1, len(self.unl_idx)) if cfg.labelled_elbo == "dataset" else 1.0
        if cfg.label_free and stage == "m1m2":  # U alone: the labelled rows' terms weigh 0, no label reaches a step
            beta, lab_weight = 0.0, 0.0
        total_steps = max(1, steps * n_epochs)
        sums: dict[str, torch.Tensor] = {}
        check_each_step = self.device.type == "cpu"  # on a GPU, a per-step check would wait for the device
        perm = pool[torch.randperm(len(pool), device=self.device)]
        done = 0
        for step in range(steps):
            if self._stop.is_set():
                break
            at = st.epoch * steps + step  # steps taken in this stage before this one
            for g in st.opt.param_groups:
                g["lr"] = lr_at(cfg, at, total_steps)
            if cfg.compile and self.device.type == "cuda":
                torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs are no longer read
            u = perm[step * cfg.batch_size:(step + 1) * cfg.batch_size]
            li = self.lab_idx[torch.randint(len(self.lab_idx), (cfg.labelled_batch,), device=self.device)]
            terms = self.step_terms(stage)(model, stage, li, u, q_z1, beta, self._kl(kl_weight_at(cfg, at, steps)),
                                           lab_weight)
            if check_each_step and not torch.isfinite(terms["loss"]):
                _not_finite(terms["loss"], st.epoch + 1, stage, f"batch {step + 1}")
            st.opt.zero_grad(set_to_none=True)
            terms["loss"].backward()
            st.opt.step()
            st.updates += 1
            if st.averaged is not None:
                ema_update(st.averaged, model, min(cfg.ema, (1 + st.updates) / (10 + st.updates)))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            done += 1
            if on_batch:
                on_batch(step + 1, steps)
        if not check_each_step and "loss" in sums and not torch.isfinite(sums["loss"]):
            _not_finite(sums["loss"], st.epoch + 1, stage, "a batch")
        return sums, done

    def choose_best(self, st: Stage, rec: dict) -> bool:
        """Keep the evaluated weights if this epoch scores best so far (M1: validation ELBO; else validation
        error); returns whether it did."""
        score = -rec["val_elbo"] if st.name == "m1" else rec["val_error"]
        if st.name == "m1m2" and self.cfg.label_free:  # nothing label-free to choose by: the last epoch
            score = -st.epoch
        if score >= st.best_score:
            return False
        st.best_score = score
        st.best_state = {k: v.detach().clone() for k, v in st.evaluated.state_dict().items()}
        if st.name == self.cfg.model.kind:  # the run's own model, not the M1 stage of M1+M2
            self.best = {"val_error": rec["val_error"], "test_error": rec["test_error"], "epoch": rec["epoch"]}
            self.best_state = st.best_state
        return True

    def checkpoint(self, st: Stage) -> dict:
        """Everything needed to go on exactly after the epoch just finished (CPU tensors and plain values)."""
        return {
            "stage": st.name, "epoch": st.epoch, "updates": st.updates, "best_score": st.best_score,
            "model": _cpu(st.model.state_dict()), "optimizer": copy.deepcopy(st.opt.state_dict()),
            "averaged": _cpu(st.averaged.state_dict()) if st.averaged is not None else None,
            "stage_best": _cpu(st.best_state) if st.best_state is not None else None,
            "best": dict(self.best),
            "history": copy.deepcopy(self.history), "wall_seconds": self.wall_seconds,
            "z1_active": self.cfg.model.z1_active, "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        }

    def stage_config(self, stage: str) -> TrainConfig:
        """The run's settings for one stage: M1+M2's M1 stage takes its own m1_lr, m1_lr_final, m1_kl_warmup."""
        if stage != "m1" or self.cfg.model.kind != "m1m2":
            return self.cfg
        own = {"lr": self.cfg.m1_lr, "lr_final": self.cfg.m1_lr_final, "kl_warmup": self.cfg.m1_kl_warmup}
        return replace(self.cfg, **{k: v for k, v in own.items() if v is not None})

    @staticmethod
    def _averaged(model: nn.Module) -> nn.Module:
        """A frozen copy of `model` to hold the moving average of its weights."""
        averaged = copy.deepcopy(model)
        averaged.requires_grad_(False)
        return averaged

    def q_z1_train(self, model: M1M2) -> torch.Tensor:
        """M1+M2: q(z1|x) of every training image, computed once per run (M1 is frozen); z1 is sampled per step."""
        x = self.data.x_train
        return torch.cat([model.q_z1(x[i:i + 5000]) for i in range(0, len(x), 5000)])

    def binarizes(self, stage: str) -> bool:
        """Dynamic binarisation of the pixels: Bernoulli pixel models only, never the supervised baseline."""
        return self.cfg.binarize and self.cfg.model.likelihood == "bernoulli" and stage != "supervised"

    def shifts(self, stage: str) -> bool:
        """Whether a step moves its labelled images (cfg.shift): M2's, on pixels; never M1's or the baseline's."""
        return self.cfg.shift > 0 and stage == "m2"

    def step_terms(self, stage: str) -> Callable[..., dict[str, torch.Tensor]]:
        """batch_terms, or with cfg.compile its torch.compile'd form for `stage` (compiled on first use; on CUDA in
        "reduce-overhead" mode, so a step is replayed as CUDA graphs without waiting on the host)."""
        if not self.cfg.compile:
            return self.batch_terms
        if stage not in self._compiled:
            mode = "reduce-overhead" if self.device.type == "cuda" else None
            self._compiled[stage] = torch.compile(self.batch_terms, mode=mode, dynamic=False)
        return self._compiled[stage]

    def _kl(self, weight: float) -> float | torch.Tensor:
        """The KL weight as passed to a step: a float, or with cfg.compile a 0-d tensor (a compiled step would
        be recompiled for every new float during a KL warm-up)."""
        return torch.tensor(weight, device=self.device) if self.cfg.compile else weight

    def batch_terms(self, model: nn.Module, stage: str, li: torch.Tensor, u: torch.Tensor, q_z1: torch.Tensor | None,
                    beta: float, kl_weight: float = 1.0, lab_weight: float = 1.0) -> dict[str, torch.Tensor]:
        """The loss terms of one step on labelled rows `li` and unlabelled rows `u` of the training set: J^alpha
        (paper eq. 9) on binarised pixels or, for M1+M2, on z1 sampled from its q(z1|x) rows `q_z1`; M1: its ELBO."""
        data = self.data
        y_l = data.y_train[li]
        if q_z1 is not None:
            if not self.cfg.z1_sample:  # the z1 means, as at test time: no sampling noise
                return model.m2.loss(q_z1[li].chunk(2, -1)[0], y_l, q_z1[u].chunk(2, -1)[0], beta, kl_weight,
                                     lab_weight)
            return model.loss_z1(q_z1[li], y_l, q_z1[u], beta, kl_weight, lab_weight)
        x_u, x_l = data.x_train[u], data.x_train[li]
        if stage == "m1":
            x_l, y_l = x_l[:0], y_l[:0]
        if self.binarizes(stage):
            x_u, x_l = torch.bernoulli(x_u), torch.bernoulli(x_l)
        if self.shifts(stage):
            x_l = shifted(x_l, data.image_shape, self.cfg.shift)
        return model.loss(x_l, y_l, x_u, beta, kl_weight, lab_weight)

    def _evaluate(self, model: nn.Module, stage: str) -> dict:
        if stage == "m1":
            return {**self._evaluate_m1(model), "val_elbo": self._val_elbo(model)}
        d = self.data
        if stage == "m1m2":  # M1 is frozen: classify the z1 means of validation and test, computed once
            if self._z1_eval is None:
                self._z1_eval = tuple(m1_features(model.m1, x)[:, model.active] for x in (d.x_val, d.x_test))
            m2 = model.m2
            if self.cfg.label_free:  # its clusters named by class with this run's labels, as a run started on it is
                m2 = copy.deepcopy(m2)
                m2.relabel(self.cluster_names(model).to(self.device))
            model, (x_val, x_test) = m2, self._z1_eval
        else:
            x_val, x_test = d.x_val, d.x_test
        return {"val_error": error_rate(predict(model, x_val), d.y_val),
                "test_error": error_rate(predict(model, x_test), d.y_test)}

    @torch.no_grad()
    def _val_elbo(self, m1: M1) -> float:
        """Mean ELBO of the validation images (binarised once, with a fixed seed), the label-free M1 criterion."""
        if self._x_val_bin is None:
            x = self.data.x_val
            gen = torch.Generator(device=x.device).manual_seed(1234)
            self._x_val_bin = torch.bernoulli(x, generator=gen) if self.binarizes("m1") else x
        m1.eval()
        elbo = torch.cat([m1.elbo(self._x_val_bin[i:i + 2000])["elbo"] for i in range(0, len(self._x_val_bin), 2000)])
        m1.train()
        return elbo.mean().item()

    def _evaluate_m1(self, m1: M1, kind: str | None = None) -> dict:
        """Errors of an M1 classifier `kind` on its latent means; by default the epoch's classifier: the run's, but
        3-NN for a label-spreading run (spreading runs once, on the kept M1)."""
        d = self.data
        kind = kind or ("knn" if self.cfg.classifier == "spreading" else self.cfg.classifier)
        self.latent_classifier = m1_classifier(m1, kind, d, self.lab_idx, self.unl_idx)
        pred_val, pred_test = m1_predict(m1, self.latent_classifier, d)
        errs = {"val_error": error_rate(pred_val, d.y_val), "test_error": error_rate(pred_test, d.y_test)}
        errs["classifier"] = kind
        return errs


def evaluate(model: nn.Module, cfg: TrainConfig, data: Dataset, generative: bool = False) -> dict:
    """Validation and test error of a trained model, the test confusion matrix and test predictions
    (generative=True, M2 and M1+M2: also the validation error of argmax_y L(x,y))."""
    device = next(model.parameters()).device
    data = data.to(device)
    if cfg.model.kind == "m1":
        lab, unl = label_split(data.y_train.cpu(), cfg.labels, data.num_classes, cfg.seed)
        clf = m1_classifier(model, cfg.classifier, data, lab.to(device), unl.to(device))
        pred_val, pred_test = m1_predict(model, clf, data)
    else:
        if cfg.label_free:  # a label-free M1+M2: its clusters named by class with the run's labels
            lab = label_split(data.y_train.cpu(), cfg.labels, data.num_classes, cfg.seed)[0].to(device)
            model = copy.deepcopy(model)
            model.m2.relabel(cluster_names(model, data.x_train[lab], data.y_train[lab]).to(device))
        pred_val, pred_test = predict(model, data.x_val).cpu(), predict(model, data.x_test).cpu()
    y_test = data.y_test.cpu()
    k = data.num_classes
    confusion = torch.bincount(y_test * k + pred_test, minlength=k * k).view(k, k)  # rows: true, cols: predicted
    out = {"val_error": error_rate(pred_val, data.y_val.cpu()), "test_error": error_rate(pred_test, y_test),
           "confusion": confusion.tolist(), "test_pred": pred_test}
    if generative and hasattr(model, "elbo_every_class"):
        out["generative_val_error"] = error_rate(predict_generative(model, data.x_val), data.y_val)
    return out
