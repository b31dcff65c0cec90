"""`probe`: how well an M1's latent means can be classified, with few labels and with all of them."""

import re

from ssvae_core.train import Trainer, active_units, m1_features
from tests.test_cli import cli
from tests.test_train import small_cfg


def test_probe_measures_the_features_of_a_trained_m1(digits):
    from ssvae_core.probe import probe

    trainer = Trainer(small_cfg("m1", epochs=8), digits)
    list(trainer.epochs())
    r = probe(trainer.model, digits, budgets=(50, 7, 100000), epochs=300)  # 1,197 images: 12 steps an epoch
    assert r["active"] == len(active_units(m1_features(trainer.model, digits.x_train), 0.01))
    assert set(r["knn"]) == {50}  # budgets that cannot be drawn evenly (7) or at all (100000) are skipped
    # every label beats ten per class, and both beat chance (90%) by far
    assert r["all_labels"] < r["knn"][50] < 60.0


def test_probe_command_prints_the_floor_of_an_m1_run(tmp_path):
    out = tmp_path / "m1"
    r = cli("train", "--model", "m1", "--dataset", "digits", "--labels", "50", "--epochs", "3", "--m1-hidden", "64",
            "--m1-z-dim", "8", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    r = cli("probe", str(out), "--epochs", "2")
    assert r.returncode == 0, r.stderr
    assert re.search(r"\d+ active z1 units", r.stdout) and "3-NN with 100 labels" in r.stdout
    assert re.search(r"MLP \(\d+-500-10\) with all \d+ labels, 2 epochs: [\d.]+%", r.stdout)
    bad = cli("probe", str(tmp_path / "missing"))
    assert bad.returncode == 2 and "error:" in bad.stderr
