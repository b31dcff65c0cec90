"""Our measured figures have one source (ssvae_core/measured.py): the README's results table and its line on what
the unlabelled images buy must say what it says, and its rows agree with each other where they share draws."""

from __future__ import annotations

import statistics
from pathlib import Path

from ssvae_core import measured
from ssvae_core.recipes import PAPER, PAPER_NAMES

README = (Path(__file__).resolve().parents[1] / "README.md").read_text().splitlines()


def row(start: str) -> list[str]:
    """The cells of the README table row that starts with `start`, bold and footnote marks removed."""
    line = next(line for line in README if line.startswith(start))
    return [c.strip().strip("*†\\").strip() for c in line.strip("|").split("|")[1:]]


def test_readme_table_is_measured_py():
    for kind, by_n in measured.TABLE.items():
        assert row(f"| {measured.TABLE_NAMES[kind]}, ours") == [measured.cell(*by_n[n]) for n in sorted(by_n)]
        assert row(f"| {PAPER_NAMES[kind]}, paper |") == [f"{PAPER[kind][n]:.2f}" for n in sorted(PAPER[kind])]


def test_readme_says_what_unlabelled_images_buy_as_measured_py():
    start = next(i for i, line in enumerate(README) if line.startswith("What the "))
    text = " ".join(README[start:start + 3])
    assert f"{measured.GAIN_UNLABELLED:,} unlabelled" in text and f"same {measured.GAIN_N} labels" in text
    at = 0
    for errors in measured.GAIN.values():
        at = text.index(f"{statistics.mean(errors):.2f}%", at)  # each model's mean, in the page's order


def test_rows_on_the_same_draws_agree():
    shared = [k for k in measured.GAIN if measured.TABLE_DRAWS.get(k) == measured.GAIN_DRAWS]
    assert shared  # M2 and M1+M2: the table's N = 100 cell is the mean ± std of the per-draw figures
    for kind in shared:
        mean, std = measured.TABLE[kind][measured.GAIN_N]
        errors = measured.GAIN[kind]
        assert abs(statistics.mean(errors) - mean) < 0.006 and abs(statistics.stdev(errors) - std) < 0.006


def test_table_rows_pair_ours_with_the_paper():
    rows = measured.table_rows()
    assert [r["source"] == "paper" for r in rows] == [False, True] * len(measured.TABLE)
    assert rows[0]["model"] == "M1 + label spreading" and rows[1]["model"] == "M1+TSVM"
    assert all(set(r) == {"model", "source", 100, 600, 1000, 3000} for r in rows)
    gain = measured.gain_rows()
    assert [g["model"] for g in gain] == list(measured.GAIN_NAMES.values())
    assert all(set(g) == {"model", "draw 0", "draw 1", "draw 2", "mean"} for g in gain)


def test_learning_curves_are_one_draw_at_the_stated_n():
    """The Results page's learning curves: for each model its own run at N = GAIN_N on label draw CURVES_DRAW, all
    with the same labelled images and batches (so an epoch is the same number of steps), an error after every epoch,
    and the kept epoch's test error is that draw's figure in GAIN."""
    runs = measured.curve_runs()
    assert list(runs) == ["supervised", "m2", "m1m2"]
    first = runs["supervised"]
    for kind, run in runs.items():
        cfg = run["config"]
        assert (cfg["model"]["kind"], cfg["dataset"], cfg["labels"], cfg["seed"]) == (
            kind, "mnist", measured.GAIN_N, measured.CURVES_DRAW), kind
        assert (cfg["batch_size"], cfg["labelled_batch"]) == (first["config"]["batch_size"],
                                                               first["config"]["labelled_batch"]), kind
        assert run["labelled_indices"] == first["labelled_indices"] and len(first["labelled_indices"]) == cfg["labels"]
        hist = run["history"]
        assert [h["epoch"] for h in hist] == list(range(1, cfg["epochs"] + 1)), kind
        assert all(h["stage"] == kind and "val_error" in h and "test_error" in h for h in hist), kind
        draw = measured.GAIN[kind][measured.GAIN_DRAWS.index(measured.CURVES_DRAW)]
        assert abs(run["best"]["test_error"] - draw) < 0.005, kind
