"""The throughput benchmark counts a step's FLOPs right and prints a row per model."""

import os
import subprocess
import sys

import pytest

from ssvae_core.bench import step_flops
from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig, Trainer
from tests.conftest import ROOT


def test_step_flops_of_m1_match_the_layer_sizes(digits):
    cfg = TrainConfig(model=ModelConfig(kind="m1", m1_hidden=[16], m1_z_dim=3), dataset="digits", labels=50,
                      epochs=1, device="cpu")
    trainer = Trainer(cfg, digits)
    list(trainer.epochs())
    b, d, h, z = 7, digits.x_dim, 16, 3
    layers = [(d, h), (h, 2 * z), (z, h), (h, d)]  # encoder, then decoder
    forward = sum(2 * b * i * o for i, o in layers)
    # backward: a weight gradient for every layer, an input gradient for all but the first (x needs none)
    expected = forward + forward + (forward - 2 * b * d * h)
    # M1 drops the labelled rows and learns from the b unlabelled ones, as in training
    assert step_flops(trainer, trainer.lab_idx[:5], trainer.unl_idx[:b]) == expected
    assert all(p.grad is None for p in trainer.model.parameters())


def test_bench_prints_a_row_per_model():
    out = subprocess.run([sys.executable, "-m", "ssvae_core", "bench", "--dataset", "digits", "--labels", "50",
                          "--device", "cpu"], capture_output=True, text=True, cwd=ROOT, timeout=600,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr
    rows = {r[0]: r for r in (line.split() for line in out.stdout.splitlines()) if r[:1] in (["m1"], ["m2"], ["m1m2"])}
    assert set(rows) == {"m1", "m2", "m1m2"}
    for r in rows.values():
        assert float(r[1]) > 0 and float(r[2]) > 0 and float(r[3]) > 0 and 0 < float(r[4].rstrip("%")) < 100


def test_to_target_reports_the_first_epoch_whose_validation_error_reaches_the_target(digits, monkeypatch):
    from ssvae_core import bench, recipes

    monkeypatch.setitem(recipes.RECIPE, "m2", {**recipes.RECIPE["m2"], "epochs": 3, "hidden": [32]})
    lines = []
    for target in (100.0, 0.0):  # reached at once / never
        monkeypatch.setitem(recipes.TARGETS, "m2", target)
        lines.clear()
        r = bench.to_target("m2", digits, 50, 0, "cpu", None, until_target=False, out=lines.append)
        assert len(lines) == 3 and all("val" in line and "test" in line for line in lines)
        if target:
            assert r["hit"]["epoch"] == 1 and r["hit"]["seconds"] > 0
        else:
            assert r["hit"] is None
        assert r["best_val"] <= 100 and r["epochs"] == 3
    monkeypatch.setitem(recipes.TARGETS, "m2", 100.0)
    assert bench.to_target("m2", digits, 50, 0, "cpu", None, until_target=True, out=lines.append)["wall"] > 0


def test_to_target_starts_m1m2_from_the_m1_asked_for(digits, monkeypatch, capsys):
    from ssvae_core import bench, cli
    from ssvae_core.recipes import SHIPPED_M1

    seen = []
    monkeypatch.setattr(bench, "load_dataset", lambda *a, **k: digits)
    monkeypatch.setattr(bench, "matmul_gflops", lambda device: 1.0)
    monkeypatch.setattr(bench, "to_target", lambda kind, data, labels, seed, device, m1_run, *a, **k: seen.append(
        m1_run) or {"model": kind, "seed": seed, "target": 3.33, "hit": None, "best_val": 5.0, "best_test": 5.0,
                    "epochs": 1, "wall": 1.0})
    for flags, m1 in ((["--m1-run", "runs/my-m1"], "runs/my-m1"), ([], SHIPPED_M1), (["--fresh-m1"], None)):
        seen.clear()
        assert cli.main(["bench", "--to-target", "--models", "m1m2", "--seeds", "5", *flags]) == 0
        assert seen == [m1]
        out = capsys.readouterr().out
        assert out.startswith("measured float32 matmul throughput: 1.0 GFLOP/s")  # before any training
        assert (f"m1m2 N=100 seed 5, M1 {m1}\n" if m1 else "m1m2 N=100 seed 5, from scratch (its M1 first)\n") in out
    with pytest.raises(SystemExit) as refused:
        cli.main(["bench", "--to-target", "--fresh-m1", "--m1-run", "runs/my-m1"])
    assert refused.value.code == 2  # argparse refuses the two together
