"""Command line: python -m ssvae_core {train,eval,export,list,bench,probe,reproduce} ..."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from ssvae_core.data import DATASETS, default_data_root, load_dataset
from ssvae_core.errors import CheckpointError, DataError, TrainingError
from ssvae_core.models import ACTIVATIONS, MODELS, ModelConfig


def _ints(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",") if t.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None


def at_least(low: int):
    """An argparse type: an integer >= low, else a message naming the bound."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    return parse


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-dir", default=None,
                   help="data root holding MNIST/raw/ etc. (default: $SSVAE_DATA_DIR, ./data, or ../shared/data)")
    p.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `reproduce`."""
    d, m = _defaults()
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs (M1+M2: of its M2 stage)")
    p.add_argument("--m1-epochs", type=int, default=d.m1_epochs, help="M1+M2: epochs of the M1 stage")
    p.add_argument("--m1-run", default=None, help="M1+M2: reuse the M1 of this m1/m1m2 run folder")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="unlabelled images per step")
    p.add_argument("--labelled-batch", type=int, default=d.labelled_batch, help="labelled images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr-final", type=float, default=d.lr_final, help=">0: cosine decay of the rate to this")
    p.add_argument("--kl-warmup", type=float, default=d.kl_warmup,
                   help="epochs over which the KL term's weight rises from 0 to 1 (0: none)")
    p.add_argument("--labelled-elbo", default=d.labelled_elbo, choices=["batch", "dataset"],
                   help="weight of the labelled bound: batch = like U's batch mean, dataset = N_l/N_u as in J's sums")
    p.add_argument("--ema", type=float, default=d.ema,
                   help=">0: evaluate and keep a moving average of the weights with this decay per step, e.g. 0.999")
    p.add_argument("--alpha", type=float, default=d.alpha, help="J^alpha: alpha = ALPHA * N (paper: 0.1)")
    p.add_argument("--hidden", type=_ints, default=m.hidden, help="M2/supervised hidden sizes, e.g. 500 or 500,500")
    p.add_argument("--z-dim", type=int, default=m.z_dim, help="latent size of M2 (z2 of M1+M2)")
    p.add_argument("--m1-hidden", type=_ints, default=m.m1_hidden, help="M1 hidden sizes")
    p.add_argument("--m1-z-dim", type=int, default=m.m1_z_dim, help="latent size of M1 (z1)")
    p.add_argument("--activation", default=m.activation, choices=sorted(ACTIVATIONS))
    p.add_argument("--likelihood", default=m.likelihood, choices=["bernoulli", "gaussian"], help="p(x|.) on pixels")
    p.add_argument("--no-binarize", action="store_true", help="feed grey values instead of dynamic binarisation")
    p.add_argument("--active-threshold", type=float, default=d.active_threshold,
                   help="M1+M2: prune z1 units whose mean varies less than this (0 keeps all)")
    p.add_argument("--classifier", default=d.classifier, choices=["knn", "svm"], help="M1's classifier")
    p.add_argument("--half", action="store_true", help="store weights in float16 (half the size)")
    _add_data_args(p)


def _defaults():
    from ssvae_core.train import TrainConfig

    return TrainConfig(), ModelConfig()


def config_from_args(a: argparse.Namespace, kind: str, labels: int, seed: int, dataset: str, init: int = 0):
    """A TrainConfig from parsed flags."""
    from ssvae_core.train import TrainConfig

    model = ModelConfig(kind=kind, hidden=a.hidden, z_dim=a.z_dim, m1_hidden=a.m1_hidden, m1_z_dim=a.m1_z_dim,
                        activation=a.activation, likelihood=a.likelihood)
    return TrainConfig(model=model, dataset=dataset, labels=labels, seed=seed, epochs=a.epochs,
                       m1_epochs=a.m1_epochs, batch_size=a.batch_size, labelled_batch=a.labelled_batch, lr=a.lr,
                       lr_final=a.lr_final, kl_warmup=a.kl_warmup, labelled_elbo=a.labelled_elbo,
                       alpha=a.alpha, ema=a.ema, binarize=not a.no_binarize, m1_lr=getattr(a, "m1_lr", None),
                       m1_lr_final=getattr(a, "m1_lr_final", None), m1_kl_warmup=getattr(a, "m1_kl_warmup", None),
                       active_threshold=a.active_threshold, classifier=a.classifier, device=a.device, init=init)


def run_training(cfg, data, out: Path, m1_run: str | None = None, half: bool = False, quiet: bool = False) -> dict:
    """Train one run with a progress bar and a line per epoch; save the best model in `out`; return run.json."""
    from tqdm import tqdm

    from ssvae_core.checkpoints import m1_from_run, read_meta, save_trainer
    from ssvae_core.train import Trainer

    m1_state, extra = None, {}
    if m1_run and cfg.model.kind == "m1m2":
        m1, fields = m1_from_run(m1_run)
        m1_state = m1.state_dict()
        for k in ("m1_hidden", "m1_z_dim", "activation"):
            setattr(cfg.model, k, fields[k])
        extra["m1_run"] = fields["path"]
    trainer = Trainer(cfg, data, m1_state=m1_state)
    bar = tqdm(total=0, unit="batch", leave=False, disable=quiet, dynamic_ncols=True)

    def on_batch(step: int, steps: int) -> None:
        if bar.total != steps:
            bar.reset(total=steps)
        bar.update(step - bar.n)

    def on_term(signum, frame) -> None:  # `kill PID` on a server: stop between batches and save
        print("Terminated: stopping after this batch and saving the best model so far.", file=sys.stderr)
        trainer.stop()

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_term)
    try:
        for rec in trainer.epochs(on_batch=on_batch):
            errs = f" val {rec['val_error']:.2f}% test {rec['test_error']:.2f}%" if "val_error" in rec else ""
            tqdm.write(f"[{rec['stage']}] epoch {rec['epoch']:3d}  loss {rec['loss']:9.3f}{errs}  "
                       f"{rec['seconds']:.1f}s ({rec['images_per_s']:.0f} img/s)", file=sys.stdout)
    except KeyboardInterrupt:
        trainer.stopped = True
        print("Interrupted: saving the best model so far.", file=sys.stderr)
    finally:
        bar.close()
    save_trainer(trainer, out, half=half, extra=extra)
    return read_meta(out)


def cmd_train(a: argparse.Namespace) -> int:
    from ssvae_core.checkpoints import wall

    cfg = config_from_args(a, a.model, a.labels, a.seed, a.dataset, a.init)
    data = load_dataset(a.dataset, a.data_dir, download=not a.no_download)
    out = Path(a.out or f"checkpoints/{a.model}-{a.dataset}-n{a.labels}-s{a.seed}" + (f"-i{a.init}" if a.init else ""))
    print(f"Training {a.model} on {a.dataset} with {a.labels} labels (seed {a.seed}) -> {out}")
    meta = run_training(cfg, data, out, m1_run=a.m1_run, half=a.half)
    b, seconds = meta["best"], wall(meta)[0]
    print(f"Saved {out}: best epoch {b['epoch']}  validation error {b['val_error']:.2f}%  "
          f"test error {b['test_error']:.2f}%  ({seconds:.0f}s on {meta['device']})")
    return 0


def cmd_eval(a: argparse.Namespace) -> int:
    from ssvae_core.checkpoints import load_run
    from ssvae_core.train import evaluate, resolve_device

    run = load_run(a.run_dir, device=resolve_device(a.device))
    data = load_dataset(run.cfg.dataset, a.data_dir, download=not a.no_download)
    res = evaluate(run.model, run.cfg, data, generative=True)
    recorded = run.meta.get("best", {}).get("test_error")
    print(f"{a.run_dir}: {run.cfg.model.kind} on {run.cfg.dataset}, {run.cfg.labels} labels, seed {run.cfg.seed}")
    print(f"validation error {res['val_error']:.2f}%   test error {res['test_error']:.2f}%"
          + (f"   (recorded at training: {recorded:.2f}%)" if recorded is not None else ""))
    if "generative_val_error" in res:
        print(f"argmax_y L(x,y), the generative model's own choice of class: validation error "
              f"{res['generative_val_error']:.2f}% (U(x) pulls q(y|x) towards it; near 90% means p(x|y,z) ignores y)")
    print("confusion matrix (rows: true class, columns: predicted):")
    for i, row in enumerate(res["confusion"]):
        print(f"  {i}: " + " ".join(f"{v:5d}" for v in row))
    return 0


def cmd_list(a: argparse.Namespace) -> int:
    from ssvae_core.checkpoints import list_runs

    rows = list_runs(a.root)
    if not rows:
        print(f"No runs under {a.root}/ yet: train one with `python -m ssvae_core train`.")
    for r in rows:
        if not r["ok"]:
            print(f"{r['path']}: BROKEN ({r['error']})")
            continue
        te = f"{r['test_error']:.2f}%" if r["test_error"] is not None else "-"
        print(f"{r['path']}: {r['model']} {r['dataset']} N={r['labels']} seed={r['seed']} "
              f"epochs={r['epochs']} test error {te}")
    return 0


def cmd_export(a: argparse.Namespace) -> int:
    from ssvae_core.checkpoints import export_run, read_meta

    data = load_dataset(read_meta(a.run_dir)["config"]["dataset"], a.data_dir, download=not a.no_download)
    meta = export_run(a.run_dir, a.dest, data, half=not a.float32)
    print(f"Exported {a.run_dir} -> {a.dest} ({'float32' if a.float32 else 'float16'} weights): "
          f"validation error {meta['best']['val_error']:.2f}%  test error {meta['best']['test_error']:.2f}%")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssvae_core",
                                     description="Semi-supervised VAEs (Kingma et al. 2014).")
    sub = parser.add_subparsers(dest="cmd", required=True)

    p = sub.add_parser("train", help="train one model and save it as a run folder")
    p.add_argument("--model", default="m2", choices=MODELS)
    p.add_argument("--dataset", default="mnist", choices=DATASETS)
    p.add_argument("--labels", type=int, default=100, help="label budget N (a multiple of the number of classes)")
    p.add_argument("--seed", type=int, default=0, help="seed of the label draw and of training")
    p.add_argument("--init", type=at_least(0), default=0, help=">0: another initialisation for the same label draw")
    p.add_argument("--out", default=None, help="run folder (default checkpoints/MODEL-DATASET-nN-sSEED[-iINIT])")
    add_train_args(p)
    for flag in ("lr", "lr-final", "kl-warmup"):
        p.add_argument(f"--m1-{flag}", type=float, default=None,
                       help=f"M1+M2: --{flag} of its M1 stage (default: --{flag})")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("eval", help="test error and confusion matrix of a saved run")
    p.add_argument("run_dir")
    _add_data_args(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("export", help="copy a run (e.g. into checkpoints/pretrained/) with float16 weights")
    p.add_argument("run_dir")
    p.add_argument("dest")
    p.add_argument("--float32", action="store_true", help="keep float32 weights")
    _add_data_args(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("list", help="list saved runs")
    p.add_argument("--root", default="checkpoints")
    p.set_defaults(func=cmd_list)

    from ssvae_core import bench, probe, reproduce

    bench.add_parser(sub)
    probe.add_parser(sub)
    reproduce.add_parser(sub)

    a = parser.parse_args(argv)
    if getattr(a, "data_dir", None) is None and hasattr(a, "data_dir"):
        a.data_dir = str(default_data_root())
    from ssvae_core.train import flush_denormals

    flush_denormals()  # before the first torch operation starts torch's worker threads
    try:
        return a.func(a)
    except (DataError, CheckpointError, TrainingError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
