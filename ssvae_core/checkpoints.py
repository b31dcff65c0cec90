"""Runs on disk: a folder with model.pt (a plain state dict) and run.json (config, data, history, errors).

Writes are atomic (temp file + rename); loads use torch.load(weights_only=True) and are checked
against run.json (hash, keys, shapes), so a truncated, foreign or malicious file gives a clear error.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ssvae_core.errors import CheckpointError
from ssvae_core.models import build_model
from ssvae_core.train import TrainConfig

FORMAT = "ssvae-run"
VERSION = 1
WEIGHTS, META = "model.pt", "run.json"


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


def save_run(run_dir: str | Path, model: nn.Module, cfg: TrainConfig, info: dict, half: bool = False) -> Path:
    """Save weights (float16 if `half`) and run.json into `run_dir`; returns the folder."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    _atomic_write(run_dir / WEIGHTS, lambda f: torch.save(state, f))
    meta = {
        "format": FORMAT, "version": VERSION, "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "torch": torch.__version__, "config": cfg.to_dict(), **info,
        "weights": {"file": WEIGHTS, "sha256": _sha256(run_dir / WEIGHTS), "half": half,
                    "shapes": {k: list(v.shape) for k, v in state.items()}},
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
    weights = run_dir / meta.get("weights", {}).get("file", WEIGHTS)
    if not weights.is_file():
        raise CheckpointError(f"{weights}: weights file missing.")
    expected = meta["weights"].get("sha256")
    if expected and _sha256(weights) != expected:
        raise CheckpointError(f"{weights}: contents do not match run.json (truncated or altered file).")
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, foreign pickle, code-running pickle (refused by weights_only)
        raise CheckpointError(f"{weights}: not a loadable weights file ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0][:200]}).") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{weights}: expected a state dict of tensors.")
    try:
        cfg = TrainConfig.from_dict(meta["config"])
        data = meta["data"]
        model = build_model(cfg.model, int(data["x_dim"]), int(data["num_classes"]))
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
    """Every run folder under `root` (newest first): its summary, or its error if run.json is broken."""
    root = Path(root)
    rows = []
    for meta_path in root.glob(f"**/{META}"):
        row = {"path": str(meta_path.parent), "name": meta_path.parent.name, "mtime": meta_path.stat().st_mtime}
        try:
            meta = read_meta(meta_path.parent)
            cfg = meta["config"]
            row.update(ok=True, model=cfg["model"]["kind"], dataset=cfg["dataset"], labels=cfg["labels"],
                       seed=cfg["seed"], epochs=meta.get("epochs"), z_dim=cfg["model"].get("z_dim"),
                       val_error=meta.get("best", {}).get("val_error"),
                       test_error=meta.get("best", {}).get("test_error"),
                       seconds=wall(meta)[0], device=meta.get("device"), error="")
        except (CheckpointError, KeyError, TypeError) as exc:
            row.update(ok=False, error=str(exc))
        rows.append(row)
    return sorted(rows, key=lambda r: -r["mtime"])


def delete_run(run_dir: str | Path, root: str | Path = "checkpoints") -> None:
    """Remove a run folder, refusing anything outside `root` or without run.json."""
    run_dir, root = Path(run_dir).resolve(), Path(root).resolve()
    if root not in run_dir.parents or not (run_dir / META).is_file():
        raise CheckpointError(f"{run_dir}: not a run folder under {root}; nothing deleted.")
    shutil.rmtree(run_dir)


def save_trainer(trainer, run_dir: str | Path, half: bool = False, extra: dict | None = None) -> Path:
    """Save a Trainer's best model (chosen on validation) with its history as a run folder."""
    if trainer.model is None or trainer.best_state is None:
        raise CheckpointError("Nothing to save: the run finished no epoch.")
    trainer.model.load_state_dict(trainer.best_state)
    d = trainer.data
    best = dict(trainer.best)
    if half:  # record the errors of the weights actually stored, not of their float32 originals
        from ssvae_core.train import evaluate

        trainer.model.load_state_dict({k: v.half().float() if v.is_floating_point() else v
                                       for k, v in trainer.best_state.items()})
        res = evaluate(trainer.model, trainer.cfg, d)
        best.update(val_error=res["val_error"], test_error=res["test_error"],
                    float32_val_error=trainer.best["val_error"], float32_test_error=trainer.best["test_error"])
    main = [h for h in trainer.history if h["stage"] != "m1" or trainer.cfg.model.kind == "m1"]
    info = {
        "data": {"name": d.name, "x_dim": d.x_dim, "num_classes": d.num_classes, "image_shape": list(d.image_shape)},
        "history": trainer.history, "best": best, "epochs": len(main),
        "train_seconds": sum(h["seconds"] for h in trainer.history), "wall_seconds": trainer.wall_seconds,
        "device": str(trainer.device),
        "stopped": trainer.stopped, "labelled_indices": trainer.lab_idx.cpu().tolist(), **(extra or {}),
    }
    return save_run(run_dir, trainer.model, trainer.cfg, info, half=half)


def m1_from_run(run_dir: str | Path) -> tuple[nn.Module, dict]:
    """The M1 of an m1 or m1m2 run (to reuse in M1+M2 or probe), and its ModelConfig fields, dataset and path."""
    run = load_run(run_dir)
    kind = run.cfg.model.kind
    if kind not in ("m1", "m1m2"):
        raise CheckpointError(f"{run_dir}: a {kind} run holds no M1; pass an m1 or m1m2 run.")
    m1 = run.model if kind == "m1" else run.model.m1
    fields = {k: getattr(run.cfg.model, k) for k in ("m1_hidden", "m1_z_dim", "activation")}
    return m1, {**fields, "dataset": run.cfg.dataset, "path": str(run_dir)}


def export_run(src: str | Path, dst: str | Path, data, half: bool = True) -> dict:
    """Copy a run to `dst` (float16 weights if `half`), re-evaluating the stored weights on `data`."""
    from ssvae_core.train import evaluate

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
