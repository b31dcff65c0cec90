"""Train R runs of one model kind at once, their weights stacked along a leading "run" dimension.

Runs that differ only in their label draw (seed) or initialisation (init) take steps of the same shapes at the same
learning rates, so one vmapped forward and backward (torch.func.functional_call over the stacked weights) and one
Adam step on the stacked tensors serve all R runs: on a GPU, where these small MLPs are bound by kernel launches,
one launch does the work of R. Adam is elementwise, so Adam on the stacked tensors is R separate Adams.

Each run still draws its own random numbers from its own generator state (seeded seed + 10,000 * init, as a
Trainer seeds it), in a one-by-one Trainer's order: initial weights, each epoch's batch order, each step's labelled
rows, binarisation of the unlabelled then the labelled images and M2's shift of these (M1+M2: the z1 noise instead),
then the z noise the loss uses, which is passed into the loss (models.reparameterise's `eps`). So run r follows its
one-by-one run up to float rounding of batched matmuls (tests/test_batched.py). These draws stay a few small per-run
operations a step.

Batched: M2, and M1+M2's own stage on a given M1 shared by every run (frozen; q(z1|x) is computed once for all).
M1, the supervised baseline and an M1+M2 that trains its own M1 go one by one (`can_batch`).

Each run is an ordinary Trainer that is not driven by its own loop: it holds the run's config, label split, history,
best epoch and weights, and after every epoch a resume_state like the one its own loop would hold, so
checkpoints.save_progress / save_trainer write it as any run folder, and a batch stopped after an epoch goes on
batched or one by one. Differences from one by one: a run's "seconds" per epoch (and its wall_seconds) is its share,
1/R, of the batch's time; a stop inside an epoch drops that partial epoch for every run, even the first.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ssvae_core.data import Dataset, shifted
from ssvae_core.errors import TrainingError
from ssvae_core.models import M1, M1M2, build_model
from ssvae_core.train import (
    Stage,
    TrainConfig,
    Trainer,
    adam,
    flush_denormals,
    kl_weight_at,
    lr_at,
    m1_part,
    resolve_device,
)

BATCHED_KINDS = ("m2", "m1m2")  # M1 and the supervised baseline train one by one
VARYING = ("seed", "init")  # the only settings that may differ between the runs of one batch


def can_batch(cfg: TrainConfig, has_m1: bool) -> bool:
    """Whether a run can train in a batch: M2, or M1+M2 starting from a given M1 (`has_m1`)."""
    return cfg.model.kind == "m2" or (cfg.model.kind == "m1m2" and has_m1)


def batch_key(cfg: TrainConfig) -> str:
    """What every run of a batch shares: all its settings but the label draw and the initialisation (so the
    model, sizes, N, hence the pool and steps per epoch, and the learning-rate schedule are equal)."""
    return json.dumps({k: v for k, v in cfg.to_dict().items() if k not in VARYING}, sort_keys=True)


def group_runs(cfgs: list[TrainConfig], has_m1: list[bool] | None = None, also: list | None = None) -> list[list[int]]:
    """Indices of `cfgs` grouped into batches of runs with equal batch_key (and equal `also[i]`, e.g. the M1 they
    start from and the epoch they resume at), in first-seen order; a run that cannot be batched (can_batch, with
    `has_m1[i]`) is a group of its own."""
    groups: dict[tuple, list[int]] = {}
    for i, cfg in enumerate(cfgs):
        key = (batch_key(cfg), repr(also[i]) if also else "") if can_batch(cfg, bool(has_m1 and has_m1[i])) else (i,)
        groups.setdefault(key, []).append(i)
    return list(groups.values())


class RunRandom:
    """One run's random state (CPU, and CUDA when it trains there), made torch's own while that run draws."""

    def __init__(self, device: torch.device, cpu: torch.Tensor | None = None, cuda: torch.Tensor | None = None):
        """The given states, or torch's current ones (right after the run's model was built from its seed)."""
        self.device = device
        self.cpu = torch.get_rng_state() if cpu is None else cpu
        self.cuda = None
        if device.type == "cuda":
            self.cuda = torch.cuda.get_rng_state(device) if cuda is None else cuda

    @contextmanager
    def drawing(self) -> Iterator[None]:
        """Make this run's state torch's default generators' state, and keep where the draws left it."""
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state(self.cuda, self.device)
        try:
            yield
        finally:
            self.cpu = torch.get_rng_state()
            if self.cuda is not None:
                self.cuda = torch.cuda.get_rng_state(self.device)


class _LossCall(nn.Module):
    """A model with one of its loss methods as forward, for torch.func.functional_call."""

    def __init__(self, model: nn.Module, method: str):
        """Call model.<method> on forward."""
        super().__init__()
        self.model, self.method = model, method

    def forward(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        """The loss terms of model.<method>(*args, **kwargs)."""
        return getattr(self.model, self.method)(*args, **kwargs)


def trained_part(model: nn.Module) -> nn.Module:
    """The module whose weights are trained and stacked: M1+M2's M2 (its M1 is frozen), else the model."""
    return model.m2 if isinstance(model, M1M2) else model


class BatchedTrainer:
    """Trains R runs of one model kind with stacked weights; iterate `epochs()` for each epoch's R history
    records; `runs` are the R per-run Trainers (config, history, best, best_state, resume_state) to save."""

    def __init__(self, cfgs: list[TrainConfig], data: Dataset, m1_state: dict | None = None,
                 resumes: list[dict] | None = None):
        """The runs of `cfgs` (differing only in seed and init) built as their Trainers would build them, from
        `m1_state` for M1+M2, or going on from `resumes` (their resume states, all at the same epoch)."""
        if not cfgs:
            raise ValueError("A batch needs at least one run.")
        if len({batch_key(c) for c in cfgs}) > 1:
            raise ValueError("Runs of one batch must differ only in seed and init (same model, sizes, N, schedule).")
        resumes = resumes or [None] * len(cfgs)
        if not can_batch(cfgs[0], m1_state is not None or all(r is not None for r in resumes)):
            raise ValueError(f"{cfgs[0].model.kind} runs train one by one (batched: M2, M1+M2 on a given M1).")
        positions = {None if r is None else (r["stage"], int(r["epoch"]), int(r["updates"])) for r in resumes}
        if len(positions) > 1 or any(p is not None and p[0] != cfgs[0].model.kind for p in positions):
            raise ValueError("Resumed runs of one batch must all be at the same epoch of their own stage.")
        self.device = resolve_device(cfgs[0].device)
        data = data.to(self.device)  # one copy on the device, shared by every run
        self.runs = [Trainer(c, data, m1_state=m1_state, resume=r) for c, r in zip(cfgs, resumes, strict=True)]
        self.cfg, self.kind, self.data = self.runs[0].cfg, cfgs[0].model.kind, data
        self._stop = threading.Event()
        self.stopped = False
        self.partial: dict | None = None  # a stop inside an epoch: {"epoch", "batches", "steps"} (that epoch dropped)
        self._active: torch.Tensor | None = None  # M1+M2: the shared M1's active units, found once
        self.randoms = [self._start(run, m1_state, r) for run, r in zip(self.runs, resumes, strict=True)]
        self.params, _ = stack_module_state([trained_part(run.model) for run in self.runs])
        self.opt = adam(list(self.params.values()), self.cfg.lr)
        self.averaged = {k: v.detach().clone() for k, v in self.params.items()} if self.cfg.ema > 0 else None
        first = resumes[0]
        self.epoch, self.updates = (0, 0) if first is None else (int(first["epoch"]), int(first["updates"]))
        if first is not None:
            self._load_stacked(resumes)
        self.stages = [self._stage(run, r) for run, r in zip(self.runs, resumes, strict=True)]
        self._loss = self._batched_loss()

    # ---- setting up: each run as its one-by-one Trainer starts ---------------------------------------------
    def _start(self, run: Trainer, m1_state: dict | None, resume: dict | None) -> RunRandom:
        """Build run's model from its own seed with the draws its Trainer makes (M1+M2: a throw-away M1 first, then
        the whole M1+M2, the given M1 loaded into it), or load its resume state; returns its random state after."""
        cfg, d = run.cfg, run.data
        torch.manual_seed(cfg.seed + 10_000 * cfg.init)
        if cfg.model.kind == "m1m2" and resume is None:
            m1 = M1(d.x_dim, cfg.model, tuple(d.image_shape)).to(self.device)
            m1.load_state_dict(m1_part(m1_state))
            run.model = run.stage_model(m1, self._active)  # the same M1 for every run: its active units once
            self._active = run.model.active
        else:
            run.model = build_model(cfg.model, d.x_dim, d.num_classes, tuple(d.image_shape)).to(self.device)
            if cfg.model.kind == "m1m2":
                run.model.m1.requires_grad_(False)
        if resume is None:
            return RunRandom(self.device)
        run.model.load_state_dict(resume["model"])
        return RunRandom(self.device, resume["rng"], resume.get("cuda_rng"))

    def _load_stacked(self, resumes: list[dict]) -> None:
        """Stack the runs' resumed optimiser states (and moving averages) into the batch's."""
        states = [r["optimizer"] for r in resumes]
        stacked = {"param_groups": copy.deepcopy(states[0]["param_groups"]), "state": {}}
        for i, s in states[0]["state"].items():
            stacked["state"][i] = {k: v if k == "step" else torch.stack([st["state"][i][k] for st in states])
                                   for k, v in s.items()}
        self.opt.load_state_dict(stacked)
        if self.averaged is not None:
            prefix = "m2." if self.kind == "m1m2" else ""
            for k, v in self.averaged.items():
                v.copy_(torch.stack([r["averaged"][prefix + k] for r in resumes]))

    def _stage(self, run: Trainer, resume: dict | None) -> Stage:
        """The run's Stage as Trainer.choose_best reads it (its best so far; the shared optimiser)."""
        averaged = None
        if self.averaged is not None:
            averaged = Trainer._averaged(run.model)
        st = Stage(self.kind, run.model, self.opt, averaged, self.epoch, self.updates)
        if resume is not None:
            st.best_score, st.best_state = float(resume["best_score"]), resume["stage_best"]
        return st

    def _batched_loss(self) -> Callable[..., dict[str, torch.Tensor]]:
        """J^alpha of every run at once: the loss its Trainer calls (M2.loss; M1+M2: loss_z1, or M2's loss on the
        z1 means), vmapped over the stacked weights, inputs and noise."""
        model = self.runs[0].model
        if self.kind == "m1m2" and self.cfg.z1_sample:
            call, prefix = _LossCall(copy.deepcopy(model).to("meta"), "loss_z1"), "model.m2."
        else:
            call, prefix = _LossCall(copy.deepcopy(trained_part(model)).to("meta"), "loss"), "model."

        def one(params: dict, x_l: torch.Tensor, y_l: torch.Tensor, x_u: torch.Tensor, eps: tuple,
                beta: float, kl_weight: float, lab_weight: float) -> dict[str, torch.Tensor]:
            """One run's loss terms, on its slice of everything."""
            named = {prefix + k: v for k, v in params.items()}
            return functional_call(call, named, (x_l, y_l, x_u, beta, kl_weight, lab_weight), {"eps": eps})

        return vmap(one, in_dims=(0, 0, 0, 0, 0, None, None, None))

    # ---- the loop ----------------------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask every run to end after the current batch (the epoch in progress is dropped)."""
        self._stop.set()

    def epochs(self, on_batch: Callable[[int, int], None] | None = None) -> Iterator[list[dict]]:
        """Train every run, yielding the R history records of each finished epoch; at the end each run's model
        holds its best weights."""
        flush_denormals()
        cfg, runs = self.cfg, self.runs
        t_mark = time.perf_counter()
        steps = math.ceil(len(runs[0].unl_idx) / cfg.batch_size)
        q_z1 = runs[0].q_z1_train(runs[0].model) if self.kind == "m1m2" else None  # one M1: the same for all
        while self.epoch < cfg.epochs:
            t0 = time.perf_counter()
            sums, done = self.run_epoch(steps, q_z1, on_batch)
            sums = {k: v.cpu() for k, v in sums.items()}  # waits for the device: the epoch's time is all in
            if done < steps:
                self.stopped = True
                if done:
                    self.partial = {"epoch": self.epoch + 1, "batches": done, "steps": steps}
                break
            seconds = (time.perf_counter() - t0) / len(runs)  # each run's share of the batch's training time
            self.epoch += 1
            self._sync()
            opt_state = self.opt.state_dict()
            records = [self._record(r, sums, done, seconds) for r in range(len(runs))]
            now = time.perf_counter()
            for r, run in enumerate(runs):
                run.wall_seconds += (now - t_mark) / len(runs)
                run.resume_state = self.checkpoint(r, opt_state)
            t_mark = now
            yield records
        for run in runs:
            run.stopped = self.stopped
            if self.partial is not None:
                run.partial = {"stage": self.kind, **self.partial}
            if run.best_state is not None:
                run.model.load_state_dict(run.best_state)

    def run_epoch(self, steps: int, q_z1: torch.Tensor | None,
                  on_batch: Callable[[int, int], None] | None) -> tuple[dict[str, torch.Tensor], int]:
        """One pass of every run over its own shuffle of the unlabelled pool, each step one Adam step of all runs
        on their J^alpha; returns each term summed over the steps (a vector over runs) and the steps done."""
        cfg, runs = self.cfg, self.runs
        beta = cfg.alpha * len(self.data.x_train) / cfg.labels
        lab_weight = len(runs[0].lab_idx) / max(1, len(runs[0].unl_idx)) if cfg.labelled_elbo == "dataset" else 1.0
        total_steps = max(1, steps * cfg.epochs)
        check_each_step = self.device.type == "cpu"
        perms = []
        for run, rnd in zip(runs, self.randoms, strict=True):
            with rnd.drawing():
                perms.append(run.unl_idx[torch.randperm(len(run.unl_idx), device=self.device)])
        sums: dict[str, torch.Tensor] = {}
        done = 0
        for step in range(steps):
            if self._stop.is_set():
                break
            at = self.epoch * steps + step
            for g in self.opt.param_groups:
                g["lr"] = lr_at(cfg, at, total_steps)
            drawn = [self._draw(r, p[step * cfg.batch_size:(step + 1) * cfg.batch_size], q_z1)
                     for r, p in enumerate(perms)]
            x_l, y_l, x_u, eps = (_stack([d[i] for d in drawn]) for i in range(4))
            terms = self._loss(self.params, x_l, y_l, x_u, eps, beta, kl_weight_at(cfg, at, steps), lab_weight)
            if check_each_step and not torch.isfinite(terms["loss"]).all():
                self._not_finite(terms["loss"], f"batch {step + 1}")
            self.opt.zero_grad(set_to_none=True)
            terms["loss"].sum().backward()  # the runs share no weights: each slice gets its own run's gradient
            self.opt.step()
            self.updates += 1
            if self.averaged is not None:
                self._average(min(cfg.ema, (1 + self.updates) / (10 + self.updates)))
            for k, v in terms.items():
                sums[k] = sums.get(k, 0.0) + v.detach()
            done += 1
            if on_batch:
                on_batch(step + 1, steps)
        if not check_each_step and "loss" in sums and not torch.isfinite(sums["loss"]).all():
            self._not_finite(sums["loss"], "a batch")
        return sums, done

    def _draw(self, r: int, u: torch.Tensor, q_z1: torch.Tensor | None) -> tuple:
        """Run r's inputs to one step on unlabelled rows `u`, drawn from its own random state in its one-by-one
        order: labelled rows, binarised pixels, M2's shifted labelled images (M1+M2: rows of q(z1|x), z1 noise), then
        the z noise of the loss."""
        run, cfg, d = self.runs[r], self.cfg, self.data
        with self.randoms[r].drawing():
            li = run.lab_idx[torch.randint(len(run.lab_idx), (cfg.labelled_batch,), device=self.device)]
            y_l, noise = d.y_train[li], []
            if q_z1 is not None:
                x_l, x_u = q_z1[li], q_z1[u]
                if cfg.z1_sample:
                    noise = [self._normal(len(li), x_l.shape[-1] // 2), self._normal(len(u), x_u.shape[-1] // 2)]
                else:  # the z1 means, as at test time: no z1 noise
                    x_l, x_u = x_l.chunk(2, -1)[0], x_u.chunk(2, -1)[0]
            else:
                x_u, x_l = d.x_train[u], d.x_train[li]
                if run.binarizes(self.kind):
                    x_u, x_l = torch.bernoulli(x_u), torch.bernoulli(x_l)
                if run.shifts(self.kind):
                    x_l = shifted(x_l, d.image_shape, cfg.shift)
            z_dim, k = cfg.model.z_dim, d.num_classes
            noise += [self._normal(len(li), z_dim), self._normal(k * len(u), z_dim)]  # L(x,y), then U(x) class-major
        return x_l, y_l, x_u, tuple(noise)

    def _normal(self, rows: int, cols: int) -> torch.Tensor:
        """rows × cols standard normal draws, as randn_like of a rows × cols float tensor on the device draws."""
        return torch.randn(rows, cols, device=self.device)

    @torch.no_grad()
    def _average(self, decay: float) -> None:
        """The moving average of every run's weights: avg <- decay * avg + (1 - decay) * weights (train.ema_update)."""
        names = list(self.averaged)
        torch._foreach_lerp_([self.averaged[k] for k in names], [self.params[k] for k in names], 1.0 - decay)

    def _not_finite(self, losses: torch.Tensor, where: str) -> None:
        """Raise the TrainingError for the runs whose loss became NaN or infinite."""
        bad = [f"seed {run.cfg.seed} init {run.cfg.init}" for run, ok in
               zip(self.runs, torch.isfinite(losses).tolist(), strict=True) if not ok]
        raise TrainingError(f"The loss became {losses.tolist()} at epoch {self.epoch + 1}, {where} (batched "
                            f"{self.kind}; not finite for {', '.join(bad)}); each run kept its last finished epoch. "
                            "Try a lower learning rate (--lr).")

    @torch.no_grad()
    def _sync(self) -> None:
        """Copy each run's slice of the stacked weights (and of their moving average) into its own modules."""
        for r, (run, st) in enumerate(zip(self.runs, self.stages, strict=True)):
            for name, p in trained_part(run.model).named_parameters():
                p.copy_(self.params[name][r])
            if st.averaged is not None:
                for name, p in trained_part(st.averaged).named_parameters():
                    p.copy_(self.averaged[name][r])

    def _record(self, r: int, sums: dict[str, torch.Tensor], done: int, seconds: float) -> dict:
        """Run r's history record of the epoch just finished, as its Trainer writes it; it keeps the weights if
        they are its best on validation (Trainer.choose_best)."""
        run, st, cfg = self.runs[r], self.stages[r], self.cfg
        rec = {k: float(v[r]) / done for k, v in sums.items()}
        rec.update(stage=self.kind, epoch=self.epoch, seconds=seconds, images_per_s=done * cfg.batch_size / seconds,
                   lr=self.opt.param_groups[0]["lr"], complete=True, batched_runs=len(self.runs))
        t_eval = time.perf_counter()
        if r > 0 and self.kind == "m1m2":  # the shared M1's z1 means of validation and test: computed once
            run._z1_eval = self.runs[0]._z1_eval
        rec.update(run._evaluate(st.evaluated, self.kind))
        if st.averaged is not None:
            rec.update({f"raw_{k}": v for k, v in run._evaluate(run.model, self.kind).items()})
        rec["eval_seconds"] = time.perf_counter() - t_eval
        st.epoch, st.updates = self.epoch, self.updates
        run.choose_best(st, rec)
        run.history.append(rec)
        return rec

    def checkpoint(self, r: int, opt_state: dict) -> dict:
        """Run r's state after the epoch just finished, as its own Trainer.checkpoint writes it (its slice of the
        optimiser state, its random state), so the run goes on batched or one by one."""
        run, st = self.runs[r], self.stages[r]
        own = {i: {k: v.detach().to("cpu", copy=True) if k == "step" else v[r].detach().to("cpu", copy=True)
                   for k, v in s.items()} for i, s in opt_state["state"].items()}
        cpu = lambda sd: {k: v.detach().to("cpu", copy=True) for k, v in sd.items()}  # noqa: E731
        return {
            "stage": self.kind, "epoch": self.epoch, "updates": self.updates, "best_score": st.best_score,
            "model": cpu(run.model.state_dict()),
            "optimizer": {"state": own, "param_groups": copy.deepcopy(opt_state["param_groups"])},
            "averaged": cpu(st.averaged.state_dict()) if st.averaged is not None else None,
            "stage_best": cpu(st.best_state) if st.best_state is not None else None,
            "best": dict(run.best), "history": copy.deepcopy(run.history), "wall_seconds": run.wall_seconds,
            "z1_active": run.cfg.model.z1_active, "rng": self.randoms[r].cpu.clone(),
            "cuda_rng": self.randoms[r].cuda.clone() if self.randoms[r].cuda is not None else None,
        }


def _stack(parts: list) -> torch.Tensor | tuple:
    """The runs' tensors (or tuples of tensors) stacked along a new leading run dimension."""
    if isinstance(parts[0], tuple):
        return tuple(torch.stack(p) for p in zip(*parts, strict=True))
    return torch.stack(parts)
