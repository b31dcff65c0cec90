"""Runs on disk: a folder with model.pt (a plain state dict) and run.json (config, data, history, errors), written
after every epoch, with resume.pt (the last epoch's full state: weights, optimiser, random state) while the run can
still go on.

Writes are atomic (temp file + rename); loads use torch.load(weights_only=True) and are checked
against run.json (hash, keys, shapes), so a truncated, foreign or malicious file gives a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
import socket
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssvae_core.errors import CheckpointError
from ssvae_core.models import build_model
from ssvae_core.train import TrainConfig, evaluate

FORMAT = "ssvae-run"
VERSION = 1
WEIGHTS, META, RESUME = "model.pt", "run.json", "resume.pt"
TRAINING, STOPPED, DONE, FAILED, INTERRUPTED = "training", "stopped", "done", "failed", "interrupted"


@dataclass
class Run:
    """A loaded run: the model (eval mode) and its metadata."""

    path: Path
    model: nn.Module
    cfg: TrainConfig
    meta: dict


def _atomic_write(path: Path, write) -> None:
    """Write through a temporary file in the same folder, then rename over `path`."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_DIGESTS: dict[tuple[str, int, int], str] = {}  # (weights path, mtime_ns, size) → sha256 of the file
_LOADS: dict[tuple[str, int, int], dict[str, list[int]] | str] = {}  # same key → tensor shapes, or why it won't load
_CACHE_LIMIT = 512  # file versions remembered before the caches start over


def _version(path: Path) -> tuple[str, int, int]:
    """A key that changes whenever the file at `path` is rewritten: (resolved path, mtime in ns, size)."""
    stat = path.stat()
    return (str(path.resolve()), stat.st_mtime_ns, stat.st_size)


def _remember(cache: dict, key: tuple, value):
    """Store `value` under `key` in `cache` (emptied first when full) and return it."""
    if len(cache) >= _CACHE_LIMIT:
        cache.clear()
    cache[key] = value
    return value


def _looks_pickled(path: Path) -> bool:
    """Whether a file starts like a pickle stream (PROTO opcode) or a zip archive, the two forms torch.save writes."""
    with open(path, "rb") as f:
        head = f.read(4)
    return head.startswith(b"PK\x03\x04") or (len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5)


def _read_weights(weights: Path) -> dict[str, torch.Tensor]:
    """The state dict in `weights`, loaded with weights_only=True (no code runs); CheckpointError in plain words."""
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:  # torch refused it; its message advises weights_only=False, which we never echo
        if _looks_pickled(weights):
            raise CheckpointError(f"{weights} is not a safe weights file (it holds Python objects other than "
                                  "tensors), so it was not loaded.") from None
        raise CheckpointError(f"{weights} is not a PyTorch weights file (its bytes are in no format torch saves), "
                              "so it was not loaded.") from None
    except Exception as exc:  # empty, truncated or damaged, unreadable, random bytes, …
        if weights.is_file() and weights.stat().st_size and not _looks_pickled(weights):
            # what torch trips on then depends on the stray bytes; the answer does not
            raise CheckpointError(f"{weights} is not a PyTorch weights file (its bytes are in no format torch saves), "
                                  "so it was not loaded.") from None
        if isinstance(exc, EOFError):
            raise CheckpointError(f"{weights} is empty or cut short, so it was not loaded.") from None
        if "zip archive" in str(exc):
            raise CheckpointError(f"{weights} is damaged or cut short (its zip archive cannot be read), so it was "
                                  "not loaded.") from None
        first = str(exc).split("\n")[0].split(". ")[0][:200]
        reason = type(exc).__name__ + (f": {first}" if first and "weights_only" not in first else "")
        raise CheckpointError(f"{weights} could not be read ({reason}), so it was not loaded.") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights}: expected a state dict of tensors.")
    return state


def _weights_shapes(weights: Path) -> dict[str, list[int]] | str:
    """Tensor shapes in `weights`, or why it cannot be loaded; loaded once per (path, mtime, size)."""
    key = _version(weights)
    if key not in _LOADS:
        try:
            shapes = {k: list(v.shape) for k, v in _read_weights(weights).items()}
        except CheckpointError as exc:
            shapes = str(exc)
        _remember(_LOADS, key, shapes)
    return _LOADS[key]


def run_problem(run_dir: str | Path, meta: dict) -> str:
    """Why the run in `run_dir` (with run.json `meta`) cannot be used, or '' if it can: an error recorded in
    run.json, a missing weights file, a sha256 unlike run.json's, weights torch will not load, or shapes unlike
    run.json's. The hash and the load are computed once per (path, mtime, size) of the weights file."""
    if meta.get("error"):
        return f"Training recorded an error: {meta['error']}"
    if run_state(meta) in (TRAINING, INTERRUPTED) and meta.get("weights", {}) is None:
        return ""  # no epoch of its own model yet (e.g. in M1+M2's M1 stage): not broken, just not usable yet
    if run_state(meta) == TRAINING:
        return ""  # its files are being rewritten every epoch; checked once it ends
    weights = Path(run_dir) / (meta.get("weights") or {}).get("file", WEIGHTS)
    if not weights.is_file():
        return f"{weights}: weights file missing."
    expected = (meta.get("weights") or {}).get("sha256")
    if expected:
        key = _version(weights)
        digest = _DIGESTS[key] if key in _DIGESTS else _remember(_DIGESTS, key, _sha256(weights))
        if digest != expected:
            return f"{weights}: contents do not match run.json (truncated or altered file)."
    shapes = _weights_shapes(weights)
    if isinstance(shapes, str):
        return shapes
    recorded = (meta.get("weights") or {}).get("shapes")
    if isinstance(recorded, dict) and recorded != shapes:
        return f"{weights}: the tensors in it differ from those run.json lists."
    return ""


def save_run(run_dir: str | Path, model: nn.Module, cfg: TrainConfig, info: dict, half: bool = False) -> Path:
    """Save weights (float16 if `half`) and run.json into `run_dir`; returns the folder."""
    return save_state(run_dir, model.state_dict(), cfg, info, half)


def save_state(run_dir: str | Path, state: dict | None, cfg: TrainConfig, info: dict, half: bool = False) -> Path:
    """Save a state dict (float16 if `half`; None: no weights yet) and run.json into `run_dir`, each atomically,
    the weights first so run.json never names weights that are not there."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    weights = None
    if state is not None:
        state = {k: v.detach().cpu() for k, v in state.items()}
        if half:
            state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
        _atomic_write(run_dir / WEIGHTS, lambda f: torch.save(state, f))
        weights = {"file": WEIGHTS, "sha256": _sha256(run_dir / WEIGHTS), "half": half,
                   "shapes": {k: list(v.shape) for k, v in state.items()}}
    meta = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": torch.__version__, "config": cfg.to_dict(), **info, "weights": weights,
    }
    _atomic_write(run_dir / META, lambda f: f.write(json.dumps(meta, indent=1).encode()))
    return run_dir


def read_meta(run_dir: str | Path) -> dict:
    """run.json of a run folder, checked to be ours."""
    path = Path(run_dir) / META
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; a run folder holds {META} and {WEIGHTS}.")
    try:
        meta = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: unreadable or not JSON ({exc}).") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an ssvae run (no \"format\": \"{FORMAT}\").")
    if meta.get("version", 0) > VERSION:
        raise CheckpointError(f"{path}: written by a newer ssvae (format version {meta['version']}).")
    return meta


def wall(meta: dict) -> tuple[float | None, bool]:
    """A run's seconds of training and per-epoch evaluation, and whether it recorded them (runs saved before
    wall_seconds existed recorded the training steps only; None if neither is recorded)."""
    return (meta["wall_seconds"], True) if "wall_seconds" in meta else (meta.get("train_seconds"), False)


def load_run(run_dir: str | Path, device: str | torch.device = "cpu") -> Run:
    """Load a run saved on any device onto `device`, validated against its run.json."""
    run_dir = Path(run_dir)
    meta = read_meta(run_dir)
    if meta.get("weights", {}) is None:
        raise CheckpointError(f"{run_dir}: no weights yet (the run has not finished an epoch of its own model).")
    weights = run_dir / meta.get("weights", {}).get("file", WEIGHTS)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing.")
    expected = meta["weights"].get("sha256")
    if expected and _sha256(weights) != expected:
        raise CheckpointError(f"{weights}: contents do not match run.json (truncated or altered file).")
    state = _read_weights(weights)  # truncated zip, foreign pickle, code-running pickle: a plain refusal
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        data = meta["data"]
        shape = tuple(data["image_shape"]) if data.get("image_shape") else None
        model = build_model(cfg.model, int(data["x_dim"]), int(data["num_classes"]), shape)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{run_dir / META}: config cannot build a model ({exc}).") from None
    want = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    got = {k: tuple(v.shape) for k, v in state.items()}
    if want != got:
        missing, extra = sorted(set(want) - set(got)), sorted(set(got) - set(want))
        wrong = sorted(k for k in set(want) & set(got) if want[k] != got[k])
        raise CheckpointError(f"{weights}: weights do not fit the architecture in run.json "
                              f"(missing {missing[:3]}, unexpected {extra[:3]}, wrong shape {wrong[:3]}).")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()})
    return Run(run_dir, model.to(device).eval(), cfg, meta)


def list_runs(root: str | Path = "checkpoints") -> list[dict]:
    """Every run folder under `root` (newest first): its summary, and ok=False with the reason when run.json is
    broken or records an error, or the weights are missing, altered or not loadable (see run_problem). `mtime` is
    that of the newer of run.json and the weights file."""
    root = Path(root)
    rows = []
    for meta_path in root.glob(f"**/{META}"):
        weights = meta_path.parent / WEIGHTS
        mtime = max(meta_path.stat().st_mtime, weights.stat().st_mtime if weights.is_file() else 0.0)
        row = {"path": str(meta_path.parent), "name": meta_path.parent.name, "mtime": mtime}
        try:
            meta = read_meta(meta_path.parent)
            cfg = meta["config"]
            row.update(ok=True, model=cfg["model"]["kind"], dataset=cfg["dataset"], labels=cfg["labels"],
                       seed=cfg["seed"], epochs=meta.get("epochs"), z_dim=cfg["model"].get("z_dim"),
                       val_error=meta.get("best", {}).get("val_error"),
                       test_error=meta.get("best", {}).get("test_error"),
                       seconds=wall(meta)[0], device=meta.get("device"), error="", state=run_state(meta),
                       has_weights=meta.get("weights", {}) is not None,
                       label_free=bool(cfg.get("label_free")),
                       resumable=(meta_path.parent / RESUME).is_file())
            problem = run_problem(meta_path.parent, meta)
            if problem:
                row.update(ok=False, error=problem)
        except (CheckpointError, KeyError, TypeError, AttributeError, OSError) as exc:
            row.update(ok=False, error=str(exc))
        rows.append(row)
    return sorted(rows, key=lambda r: -r["mtime"])


def delete_run(run_dir: str | Path, root: str | Path = "checkpoints") -> None:
    """Remove a run folder, refusing anything outside `root` or without run.json."""
    run_dir, root = Path(run_dir).resolve(), Path(root).resolve()
    if root not in run_dir.parents or not (run_dir / META).is_file():
        raise CheckpointError(f"{run_dir}: not a run folder under {root}; nothing deleted.")
    shutil.rmtree(run_dir)


def _trainer_info(trainer, state: str, extra: dict | None) -> dict:
    """run.json's fields for a Trainer's run in `state` (training, stopped, done or failed)."""
    d = trainer.data
    main = [h for h in trainer.history if h["stage"] != "m1" or trainer.cfg.model.kind == "m1"]
    info = {
        "data": {"name": d.name, "x_dim": d.x_dim, "num_classes": d.num_classes, "image_shape": list(d.image_shape)},
        "history": trainer.history, "best": dict(trainer.best), "epochs": len(main),
        "train_seconds": sum(h["seconds"] for h in trainer.history), "wall_seconds": trainer.wall_seconds,
        "device": str(trainer.device), "state": state, "stopped": state != DONE, "partial": trainer.partial,
        "labelled_indices": trainer.lab_idx.cpu().tolist(), **(extra or {}),
    }
    if state == TRAINING:
        info.update(pid=os.getpid(), host=socket.gethostname())
    return info


def save_progress(trainer, run_dir: str | Path, extra: dict | None = None) -> Path:
    """After an epoch: resume.pt (the state to go on from), the best weights so far and run.json (state
    'training'), each written atomically, so a crash loses at most the epoch in progress."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if trainer.resume_state is not None:
        _atomic_write(run_dir / RESUME, lambda f: torch.save(trainer.resume_state, f))
    return save_state(run_dir, trainer.best_state, trainer.cfg, _trainer_info(trainer, TRAINING, extra))


def save_trainer(trainer, run_dir: str | Path, half: bool = False, extra: dict | None = None,
                 state: str | None = None) -> Path:
    """Save a Trainer's best model (chosen on validation) with its history as a run folder: state 'done', or
    'stopped' (keeping resume.pt, so it can go on) when the trainer was stopped."""
    if trainer.model is None or trainer.best_state is None:
        raise CheckpointError("Nothing to save: the run finished no epoch.")
    state = state or (STOPPED if trainer.stopped else DONE)
    run_dir = Path(run_dir)
    info = _trainer_info(trainer, state, extra)
    if half:  # record the errors of the weights actually stored, not of their float32 originals
        trainer.model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                       for k, v in trainer.best_state.items()})
        res = evaluate(trainer.model, trainer.cfg, trainer.data)
        info["best"].update(val_error=res["val_error"], test_error=res["test_error"],
                            float32_val_error=trainer.best["val_error"], float32_test_error=trainer.best["test_error"])
    trainer.model.load_state_dict(trainer.best_state)
    if state == STOPPED and trainer.resume_state is not None:
        run_dir.mkdir(parents=True, exist_ok=True)
        _atomic_write(run_dir / RESUME, lambda f: torch.save(trainer.resume_state, f))
    out = save_state(run_dir, trainer.best_state, trainer.cfg, info, half=half)
    if state == DONE:
        (run_dir / RESUME).unlink(missing_ok=True)
    return out


def run_state(meta: dict) -> str:
    """done, stopped, failed, training (its process is alive) or interrupted (its process is gone: killed, crashed,
    the machine restarted); runs saved before per-epoch checkpoints: done or stopped."""
    state = meta.get("state") or (STOPPED if meta.get("stopped") else DONE)
    if state != TRAINING:
        return state
    if meta.get("host") != socket.gethostname():
        return TRAINING  # another machine's process: cannot tell from here
    try:
        os.kill(int(meta["pid"]), 0)
    except ProcessLookupError:
        return INTERRUPTED
    except (PermissionError, KeyError, TypeError, ValueError, OverflowError):
        pass
    return TRAINING


def load_resume(run_dir: str | Path) -> dict:
    """The state a run goes on from (resume.pt), checked to be a plain state from this run's config."""
    path = Path(run_dir) / RESUME
    if not path.is_file():
        raise CheckpointError(f"{run_dir}: nothing to resume from (no {RESUME}: the run finished, or never finished "
                              "an epoch).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a loadable resume file ({type(exc).__name__}).") from None
    need = {"stage", "epoch", "model", "optimizer", "rng", "history", "best", "stage_best"}
    if not isinstance(state, dict) or not need <= set(state):
        raise CheckpointError(f"{path}: not a resume state of an ssvae run.")
    return state


def m1_from_run(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """The M1 of an m1 or m1m2 run (to reuse in M1+M2 or probe), and its ModelConfig fields, dataset and path."""
    run = load_run(run_dir)
    kind = run.cfg.model.kind
    if kind not in ("m1", "m1m2"):
        raise CheckpointError(f"{run_dir}: a {kind} run holds no M1; pass an m1 or m1m2 run.")
    m1 = run.model if kind == "m1" else run.model.m1
    fields = {k: getattr(run.cfg.model, k) for k in ("m1_hidden", "m1_z_dim", "activation")}
    return m1, {**fields, "dataset": run.cfg.dataset, "path": str(run_dir)}


def holds_clusters(run_dir: str | Path | None) -> bool:
    """Whether a run folder is a label-free M1+M2, whose clusters can start an M1+M2 run's stage (not when it holds no
    run.json: loading it says so; not for None)."""
    if run_dir is None or not (Path(run_dir) / META).is_file():
        return False
    config = read_meta(run_dir)["config"]
    return config.get("model", {}).get("kind") == "m1m2" and bool(config.get("label_free"))


def stage_start(m1_run: str | Path | None) -> str:
    """Where an M1+M2 run with `m1_run` starts its stage, as recipes.STARTS names it: 'scratch' (none: it trains its
    own M1 first), 'clusters' (a label-free M1+M2 run) or 'm1'."""
    return "scratch" if m1_run is None else "clusters" if holds_clusters(m1_run) else "m1"


CLUSTERS_SHAPE = ("m1_hidden", "m1_z_dim", "activation", "hidden", "z_dim")  # what a stage from clusters takes


def take_clusters_shape(cfg: TrainConfig, run_dir: str | Path) -> None:
    """Set cfg's M1 and stage sizes to those of the label-free M1+M2 run (clusters) in `run_dir`."""
    model = read_meta(run_dir)["config"]["model"]
    for k in CLUSTERS_SHAPE:
        setattr(cfg.model, k, model[k])


def start_m1(cfg: TrainConfig, m1_run: str | None) -> tuple[dict | None, dict]:
    """For an M1+M2 run starting from the M1 of `m1_run`: that M1's state and the run.json fields recording where
    it came from; cfg's M1 shape is set to match. From a label-free M1+M2 run: its whole state (M1, active units,
    clusters, which the stage starts from), cfg's stage shape set to match too. (None, {}) for other runs or
    without `m1_run`."""
    if not m1_run or cfg.model.kind != "m1m2":
        return None, {}
    if holds_clusters(m1_run):  # its clusters start the stage too: take its M1's shape and its stage's
        take_clusters_shape(cfg, m1_run)
        return load_run(m1_run).model.state_dict(), {"m1_run": str(m1_run)}
    m1, fields = m1_from_run(m1_run)
    for k in ("m1_hidden", "m1_z_dim", "activation"):
        setattr(cfg.model, k, fields[k])
    return m1.state_dict(), {"m1_run": fields["path"]}


def kept_on_resume(meta: dict) -> dict:
    """The run.json fields a resumed run carries over from its first start (where its M1 came from)."""
    return {k: meta[k] for k in ("m1_run",) if k in meta}


def export_run(src: str | Path, dst: str | Path, data, half: bool = True) -> dict:
    """Copy a run to `dst` (float16 weights if `half`), re-evaluating the stored weights on `data`."""
    run = load_run(src)
    if half:
        run.model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                   for k, v in run.model.state_dict().items()})
    res = evaluate(run.model, run.cfg, data)
    info = {k: v for k, v in run.meta.items() if k not in ("format", "version", "created", "torch", "config",
                                                           "weights")}
    best = dict(info.get("best", {}))
    best.setdefault("float32_val_error", best.get("val_error"))
    best.setdefault("float32_test_error", best.get("test_error"))
    best.update(val_error=res["val_error"], test_error=res["test_error"])
    info.update(best=best, exported_from=str(src))
    save_run(dst, run.model, run.cfg, info, half=half)
    return read_meta(dst)


def export_m1(src: str | Path, dst: str | Path, data, half: bool = True) -> dict:
    """Copy the M1 of an M1+M2 run to `dst` as an m1 run (float16 weights if `half`), with the 3-NN errors on its
    latent means at the source run's label draw."""
    m1, fields = m1_from_run(src)
    run = load_run(src)
    cfg = TrainConfig.from_dict(run.meta["config"])
    cfg.model.kind, cfg.model.z1_active, cfg.epochs = "m1", 0, cfg.m1_epochs
    if half:
        m1.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in m1.state_dict().items()})
    res = evaluate(m1, cfg, data)
    info = {"data": run.meta["data"], "history": [], "epochs": cfg.m1_epochs, "device": run.meta.get("device"),
            "state": DONE, "stopped": False, "exported_from": str(src), "source_m1_run": run.meta.get("m1_run"),
            "best": {"val_error": res["val_error"], "test_error": res["test_error"], "epoch": cfg.m1_epochs}}
    save_run(dst, m1, cfg, info, half=half)
    return read_meta(dst)
