"""The command line's shared flags: data location, every training setting, and the TrainConfig they make."""

from __future__ import annotations

import argparse

from ssvae_core.classifiers import CLASSIFIERS
from ssvae_core.models import ACTIVATIONS, ModelConfig
from ssvae_core.recipes import FROM_CLUSTERS, RECIPE
from ssvae_core.train import TrainConfig


def ints(text: str) -> list[int]:
    """An argparse type: comma-separated integers, e.g. 500,500."""
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


def add_data_args(p: argparse.ArgumentParser) -> None:
    """Flags that say where the data is and which device trains: --data-dir, --no-download, --device."""
    p.add_argument("--data-dir", default=None,
                   help="data root holding MNIST/raw/ etc. (default: $SSVAE_DATA_DIR, ./data, or ../shared/data)")
    p.add_argument("--no-download", action="store_true", help="never try to download a missing dataset")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="auto: CUDA when present")


def add_train_args(p: argparse.ArgumentParser) -> None:
    """Flags shared by `train` and `reproduce`."""
    d, m = _defaults()
    p.add_argument("--epochs", type=int, default=d.epochs, help="epochs (M1+M2: of its M2 stage)")
    p.add_argument("--m1-epochs", type=int, default=d.m1_epochs, help="M1+M2: epochs of the M1 stage")
    p.add_argument("--m1-run", default=None, help="M1+M2: reuse the M1 of this m1/m1m2 run folder (of a --label-free "
                   "M1+M2 run: its clusters too, named by class with this run's labels)")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="unlabelled images per step")
    p.add_argument("--labelled-batch", type=int, default=d.labelled_batch, help="labelled images per step")
    p.add_argument("--lr", type=float, default=d.lr, help="Adam learning rate")
    p.add_argument("--lr-final", type=float, default=d.lr_final, help=">0: cosine decay of the rate to this")
    p.add_argument("--kl-warmup", type=float, default=d.kl_warmup,
                   help="epochs over which the KL term's weight rises from 0 to 1 (0: none)")
    p.add_argument("--labelled-elbo", default=d.labelled_elbo, choices=["batch", "dataset"],
                   help="weight of the labelled bound: batch = like U's batch mean, dataset = N_l/N_u as in J's sums")
    p.add_argument("--ema", type=float, default=d.ema,
                   help=">0: evaluate and keep a moving average of the weights with this decay per step, e.g. 0.999 "
                        f"(default 0; the recipe for M1+M2 from clusters or from scratch: {FROM_CLUSTERS['ema']})")
    p.add_argument("--shift", type=at_least(0), default=d.shift,
                   help="M2: move each labelled image by up to this many pixels each way, at random, every step "
                        f"(augmentation, not in the paper; default 0, the M2 recipe on MNIST: {RECIPE['m2']['shift']})")
    p.add_argument("--z1-mean", action="store_true",
                   help="M1+M2: train the M2 stage on the z1 means E[z1|x] instead of samples of q(z1|x) (the paper)")
    p.add_argument("--alpha", type=float, default=d.alpha, help="J^alpha: alpha = ALPHA * N (paper and default: 0.1; "
                   f"the recipe for M1+M2 from clusters or from scratch: {FROM_CLUSTERS['alpha']})")
    p.add_argument("--hidden", type=ints, default=m.hidden, help="M2/supervised hidden sizes, e.g. 500 or 500,500")
    p.add_argument("--z-dim", type=int, default=m.z_dim, help="latent size of M2 (z2 of M1+M2)")
    p.add_argument("--m1-hidden", type=ints, default=m.m1_hidden, help="M1 hidden sizes")
    p.add_argument("--m1-z-dim", type=int, default=m.m1_z_dim, help="latent size of M1 (z1)")
    p.add_argument("--activation", default=m.activation, choices=sorted(ACTIVATIONS))
    p.add_argument("--likelihood", default=m.likelihood, choices=["bernoulli", "gaussian"], help="p(x|.) on pixels")
    p.add_argument("--no-binarize", action="store_true", help="feed grey values instead of dynamic binarisation")
    p.add_argument("--active-threshold", type=float, default=d.active_threshold,
                   help="M1+M2: prune z1 units whose mean varies less than this (0 keeps all)")
    p.add_argument("--classifier", default=d.classifier, choices=CLASSIFIERS,
                   help="M1's classifier on latent means: 3-NN, an RBF SVM, or label spreading over the kNN graph of "
                        f"the labelled and unlabelled training images (default {d.classifier}; train --recipe: the "
                        "recipe's)")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile each training step's loss (on CUDA replayed as CUDA graphs); the first steps "
                        "wait for the compiler (about 10-60 s on a CPU). Not with reproduce --batched")
    p.add_argument("--half", action="store_true", help="store weights in float16 (half the size)")
    add_data_args(p)


def _defaults() -> tuple[TrainConfig, ModelConfig]:
    return TrainConfig(), ModelConfig()


def config_from_args(a: argparse.Namespace, kind: str, labels: int, seed: int, dataset: str,
                     init: int = 0) -> TrainConfig:
    """A TrainConfig from parsed flags."""
    model = ModelConfig(kind=kind, hidden=a.hidden, z_dim=a.z_dim, m1_hidden=a.m1_hidden, m1_z_dim=a.m1_z_dim,
                        activation=a.activation, likelihood=a.likelihood)
    return TrainConfig(model=model, dataset=dataset, labels=labels, seed=seed, epochs=a.epochs,
                       m1_epochs=a.m1_epochs, batch_size=a.batch_size, labelled_batch=a.labelled_batch, lr=a.lr,
                       lr_final=a.lr_final, kl_warmup=a.kl_warmup, labelled_elbo=a.labelled_elbo,
                       alpha=a.alpha, ema=a.ema, shift=a.shift, z1_sample=not a.z1_mean, binarize=not a.no_binarize,
                       m1_lr=getattr(a, "m1_lr", None),
                       m1_lr_final=getattr(a, "m1_lr_final", None), m1_kl_warmup=getattr(a, "m1_kl_warmup", None),
                       active_threshold=a.active_threshold, classifier=a.classifier, device=a.device, init=init,
                       compile=a.compile, label_free=getattr(a, "label_free", False))


# the settings a recipe fixes; parsers that take a recipe default them to None
RECIPE_FLAGS = ("epochs", "lr", "lr_final", "kl_warmup", "hidden", "ema", "alpha", "shift", "m1_epochs", "m1_lr",
                "m1_lr_final", "m1_kl_warmup", "classifier")


def fill(a: argparse.Namespace, values: dict | None) -> argparse.Namespace:
    """Give every recipe flag left at None its value from `values` (a recipe), else the TrainConfig default."""
    d, m = _defaults()
    plain = {"epochs": d.epochs, "lr": d.lr, "lr_final": d.lr_final, "kl_warmup": d.kl_warmup, "hidden": m.hidden,
             "ema": d.ema, "alpha": d.alpha, "shift": d.shift,
             "m1_epochs": d.m1_epochs, "m1_lr": d.m1_lr, "m1_lr_final": d.m1_lr_final, "m1_kl_warmup": d.m1_kl_warmup,
             "classifier": d.classifier}
    for k in RECIPE_FLAGS:
        if getattr(a, k, None) is None:
            setattr(a, k, (values or plain).get(k, plain[k]))
    return a
