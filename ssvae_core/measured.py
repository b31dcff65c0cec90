"""Our measured MNIST test errors, one source for the README's results table and the Results page.

Every figure is a run in docs/experiments.md (its command and output); the model of each run was chosen on
validation error, and M1 + label spreading's k and α on the validation error of label draws 0–2.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from ssvae_core.recipes import PAPER, PAPER_NAMES

# model: {N: (mean, std) of the test error (%) over three label draws}
TABLE = {
    "m1m2": {100: (2.93, 0.06), 600: (2.52, 0.17), 1000: (2.37, 0.14), 3000: (2.14, 0.05)},
    "m2": {100: (5.23, 0.85), 600: (2.98, 0.18), 1000: (2.59, 0.08), 3000: (2.62, 0.22)},
    "m1": {100: (7.21, 0.16), 600: (4.35, 0.30), 1000: (3.90, 0.07), 3000: (3.42, 0.09)},
}
TABLE_NAMES = {"m1m2": "M1+M2", "m2": "M2", "m1": "M1 + label spreading"}  # our rows; the paper's: PAPER_NAMES
TABLE_DRAWS = {"m1m2": (0, 1, 2), "m2": (0, 1, 2), "m1": (3, 4, 5)}  # the label draws behind each row
NOTES = {"m2": "one run per label draw, 15 epochs, a moving average of its weights, its labelled images moved by up to "
               "2 pixels each step (not in the paper)",
         "m1": "the shipped label-free M1; k = 20, α = 0.99 chosen on validation of draws 0–2, reported on 3–5"}

# What the unlabelled images buy: test error (%) per label draw at the same N and the same labelled images
GAIN_N = 100
GAIN_DRAWS = (0, 1, 2)
GAIN_UNLABELLED = 50_000 - GAIN_N  # MNIST's training images (the paper's split) less the labelled ones
GAIN = {
    "supervised": (22.15, 26.20, 23.63),  # q(y|x) on the 100 labelled images alone (the supervised recipe)
    "m1": (7.30, 7.23, 9.31),  # the shipped M1 + label spreading (k, α chosen on these draws' validation)
    "m2": (5.17, 4.41, 6.10),  # one run per draw, as in TABLE
    "m1m2": (2.90, 2.90, 3.00),
}
GAIN_NAMES = {"supervised": "Labels only (supervised)", "m1": "M1 + label spreading", "m2": "M2", "m1m2": "M1+M2"}

# The same comparison epoch by epoch, on one label draw (the shipped models'): each run's run.json, whose history
# holds its validation and test error after every epoch; paths from the repository root (docs/experiments.md)
CURVES_DRAW = 1
CURVES = {
    "supervised": "docs/curves/supervised-mnist-n100-s1.json",  # that run's run.json, its weights not shipped
    "m2": "docs/curves/m2-mnist-n100-s1.json",  # that run's run.json (the recipe's), its weights not shipped
    "m1m2": "checkpoints/pretrained/m1m2-mnist-n100/run.json",
}
REPO = Path(__file__).resolve().parents[1]


def cell(mean: float, std: float) -> str:
    """A table cell: '2.93 ± 0.06'."""
    return f"{mean:.2f} ± {std:.2f}"


def table_rows() -> list[dict]:
    """Our rows and the paper's, paired (M1 + label spreading beside M1+TSVM): model, source, one cell per N."""
    rows = []
    for kind in ("m1", "m2", "m1m2"):
        rows.append({"model": TABLE_NAMES[kind], "source": f"ours (draws {_draws(TABLE_DRAWS[kind])})",
                     **{n: cell(*ms) for n, ms in TABLE[kind].items()}})
        rows.append({"model": PAPER_NAMES[kind], "source": "paper", **{n: f"{v:.2f}" for n, v in PAPER[kind].items()}})
    return rows


def gain_rows() -> list[dict]:
    """One row per model of the 'what unlabelled images buy' comparison: test error per draw and their mean."""
    return [{"model": GAIN_NAMES[k], **{f"draw {d}": e for d, e in zip(GAIN_DRAWS, errs, strict=True)},
             "mean": round(statistics.mean(errs), 2)} for k, errs in GAIN.items()]


def curve_runs(root: Path = REPO) -> dict[str, dict]:
    """The run.json behind each learning curve of CURVES, by model (OSError when a file is not there)."""
    return {kind: json.loads((root / path).read_text()) for kind, path in CURVES.items()}


def _draws(draws: tuple[int, ...]) -> str:
    """'0–2' for consecutive draws, else '0, 3, 7'."""
    if list(draws) == list(range(draws[0], draws[-1] + 1)) and len(draws) > 2:
        return f"{draws[0]}–{draws[-1]}"
    return ", ".join(str(d) for d in draws)

