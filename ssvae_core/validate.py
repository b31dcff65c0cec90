"""Training settings checked before a run starts: each field's problem in plain words; no Streamlit."""

from __future__ import annotations

import math

import torch

NUM_CLASSES = {"mnist": 10, "digits": 10, "svhn": 10, "norb": 5}
# Images of the smallest class in each dataset's training pool (train minus validation), for when the dataset is
# not in memory. MNIST (digit 5) and digits (class 2) are exact for the standard files; SVHN (digit 9) and small
# NORB (every class) are counts over the whole training file, upper bounds on the pool after validation is split off.
SMALLEST_CLASS = {"mnist": 4506, "digits": 109, "svhn": 4659, "norb": 4860}
DATASET_NAMES = {"mnist": "MNIST", "digits": "Digits", "svhn": "SVHN", "norb": "small NORB"}

# field: (label shown to the user, lowest, highest, whole numbers only)
RANGES: dict[str, tuple[str, float, float, bool]] = {
    "epochs": ("Epochs", 1, 3000, True),
    "m1_epochs": ("M1 epochs", 1, 3000, True),
    "seed": ("The seed", 0, 2**31 - 1, True),
    "lr": ("The learning rate", 1e-6, 1.0, False),
    "lr_final": ("The final learning rate", 0.0, 1.0, False),
    "kl_warmup": ("The KL warm-up", 0.0, 3000.0, False),
    "m1_lr": ("M1's learning rate", 1e-6, 1.0, False),
    "m1_lr_final": ("M1's final rate", 0.0, 1.0, False),
    "m1_kl_warmup": ("M1's KL warm-up", 0.0, 3000.0, False),
    "batch_size": ("The batch size", 10, 5000, True),
    "z_dim": ("The z size", 1, 512, True),
}
M1_FIELDS = ("m1_epochs", "m1_lr", "m1_lr_final", "m1_kl_warmup")  # used by M1+M2 only


def smallest_class(y_train: torch.Tensor, num_classes: int) -> int:
    """Images of the rarest class among the training labels `y_train` (0 if a class is missing)."""
    return int(torch.bincount(y_train.reshape(-1).long().cpu(), minlength=num_classes)[:num_classes].min())


def parse_hidden(text: str) -> list[int]:
    """'500' or '500, 500' → [500] / [500, 500]; ValueError with a plain-words message on anything else."""
    tokens = [t for t in str(text).replace(" ", "").split(",") if t]
    if not tokens:
        raise ValueError("Enter at least one hidden layer size, e.g. 500 or 500,500.")
    try:
        sizes = [int(t) for t in tokens]
    except ValueError:
        raise ValueError(f"Hidden layer sizes are whole numbers separated by commas, e.g. 500 or 500,500; "
                         f"\"{text}\" is not.") from None
    if min(sizes) < 1:
        raise ValueError("Each hidden layer needs at least 1 unit.")
    return sizes


def _number(v: float) -> str:
    """A number as a user would type it: 3,000 / 0.0001 / 2.5."""
    if isinstance(v, int) or (isinstance(v, float) and v.is_integer()):
        return f"{int(v):,}"
    text = f"{v:.8f}".rstrip("0").rstrip(".")
    return text if float(text) != 0 else f"{v:g}"


def _range_problem(field: str, value) -> str:
    """Why `value` does not fit `field`'s range ('' if it does)."""
    label, lo, hi, whole = RANGES[field]
    if value is None or (isinstance(value, str) and not value.strip()):
        return f"{label} is empty: enter a number."
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return f"{label} must be a number."
    if whole and not float(value).is_integer():
        return f"{label} must be a whole number; {_number(value)} is not."
    if not lo <= value <= hi:
        return f"{label} must be from {_number(lo)} to {_number(hi)}; {_number(value)} is outside that range."
    return ""


def labels_problem(n, dataset: str, smallest: int | None = None) -> str:
    """Why N labelled images cannot be drawn class-balanced from `dataset`'s training pool ('' if they can)."""
    k = NUM_CLASSES.get(dataset, 10)
    if n is None:
        return "N is empty: enter a number of labelled images."
    if isinstance(n, bool) or not isinstance(n, int | float) or not math.isfinite(n) or not float(n).is_integer():
        return "N must be a whole number of labelled images."
    n = int(n)
    if n < k:
        return f"N must be at least {k}: every one of the {k} classes needs at least one labelled image."
    if n % k:
        lower, upper = n // k * k, (n // k + 1) * k
        return (f"N must be a multiple of {k}, so that each of the {k} classes gets the same number of labels: "
                f"try {lower:,} or {upper:,}.")
    smallest = SMALLEST_CLASS.get(dataset) if smallest is None else smallest
    if smallest is not None and n // k > smallest:
        name = DATASET_NAMES.get(dataset, dataset)
        return (f"The {name} training pool has only {smallest:,} images of its rarest class, so N can be at most "
                f"{k * smallest:,} ({smallest:,} for each of the {k} classes); {n:,} would need {n // k:,} per "
                "class.")
    return ""


def problems(settings: dict, smallest: int | None = None) -> dict[str, str]:
    """Each refused field of the Train form's `settings` (TrainConfig names; `hidden` as typed, `kind` the
    model) mapped to why, in plain words; empty when a run can start. `smallest`: images of the rarest class in
    the training pool, if known from the loaded dataset (else SMALLEST_CLASS)."""
    out: dict[str, str] = {}
    problem = labels_problem(settings.get("labels"), settings.get("dataset", "mnist"), smallest)
    if problem:
        out["labels"] = problem
    for field in RANGES:
        if field in M1_FIELDS and settings.get("kind") != "m1m2":
            continue  # not used by this model
        if field in settings:
            problem = _range_problem(field, settings[field])
            if problem:
                out[field] = problem
    if "hidden" in settings:
        try:
            parse_hidden(settings["hidden"])
        except ValueError as exc:
            out["hidden"] = str(exc)
    return out
