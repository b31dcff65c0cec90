"""The reproduction script trains the grid once, resumes finished runs, and prints the table."""

import subprocess
import sys

from tests.conftest import ROOT


def test_reproduce_trains_then_resumes(tmp_path):
    args = [sys.executable, "-m", "ssvae_core", "reproduce", "--dataset", "digits", "--models", "m2,m1m2",
            "--labels", "50", "--seeds", "0,1", "--epochs", "2", "--m1-epochs", "2", "--hidden", "32",
            "--z-dim", "4", "--m1-hidden", "32", "--m1-z-dim", "8", "--device", "cpu", "--out", str(tmp_path)]
    first = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("done in") == 4 and "== M1 (shared" in first.stdout
    assert {p.name for p in tmp_path.iterdir()} == {"m1", "m2-n50-s0", "m2-n50-s1", "m1m2-n50-s0", "m1m2-n50-s1"}
    second = subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert second.returncode == 0, second.stderr
    assert second.stdout.count("finished earlier") == 4 and "done in" not in second.stdout
    table = second.stdout.split("model chosen on validation")[1]
    assert "M2" in table and "M1+M2" in table and "11.97" not in table  # N=50 has no paper figure
    # the same table both times: resuming reads the recorded results
    assert first.stdout.split("model chosen on validation")[1] == table
