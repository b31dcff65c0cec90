"""Batched training (batched.py): R runs with stacked weights give the numbers of the same runs one by one.

Tolerances: a batched step computes each run's matmuls as one batched matmul instead of R separate ones, which
rounds float32 sums in another order (a relative 1e-7 per operation); a few Adam steps carry that on. On this
CPU the largest differences seen were 7e-6 in the weights and 1e-5 (relative 3e-7) in the per-epoch loss terms, so
WEIGHTS_ATOL = 5e-5 and LOSS_RTOL = 1e-5 leave ~10x margin, while a run fed another run's random numbers (another
seed) differs by far more (checked below, so the comparison can fail).
"""

from __future__ import annotations

import math

import pytest
import torch

from ssvae_core.batched import BatchedTrainer, group_runs
from ssvae_core.checkpoints import DONE, STOPPED, load_run, read_meta, run_state, save_trainer
from ssvae_core.cluster import Job
from ssvae_core.models import M1, ModelConfig
from ssvae_core.reproduce import batches
from ssvae_core.runner import run_batch_training
from ssvae_core.train import TrainConfig, Trainer, evaluate

WEIGHTS_ATOL = 5e-5
LOSS_RTOL = 1e-5
TIMING = {"seconds", "images_per_s", "eval_seconds", "batched_runs"}


def small_cfg(kind: str, seed: int = 0, init: int = 0, epochs: int = 2, **kw) -> TrainConfig:
    model = ModelConfig(kind=kind, hidden=[32], z_dim=4, m1_hidden=[32], m1_z_dim=6)
    settings = {"labels": 50, "batch_size": 200, "labelled_batch": 50, "lr": 3e-3, "lr_final": 1e-4, **kw}
    return TrainConfig(model=model, dataset="digits", seed=seed, init=init, epochs=epochs, device="cpu", **settings)


def three(kind: str, **kw) -> list[TrainConfig]:
    """Two label draws, and a second initialisation of the first."""
    return [small_cfg(kind, 0, **kw), small_cfg(kind, 1, **kw), small_cfg(kind, 0, 1, **kw)]


@pytest.fixture(scope="module")
def m1_state(digits) -> dict:
    """A fixed (untrained) M1 that every M1+M2 run starts from."""
    torch.manual_seed(123)
    return M1(digits.x_dim, small_cfg("m1m2").model, tuple(digits.image_shape)).state_dict()


def one_by_one(cfgs: list[TrainConfig], data, m1_state=None, resumes=None) -> list[Trainer]:
    out = []
    for i, cfg in enumerate(cfgs):
        t = Trainer(cfg, data, m1_state=m1_state, resume=resumes[i] if resumes else None)
        list(t.epochs())
        out.append(t)
    return out


def max_weight_diff(a: torch.nn.Module | dict, b: torch.nn.Module | dict) -> float:
    sa = a if isinstance(a, dict) else a.state_dict()
    sb = b if isinstance(b, dict) else b.state_dict()
    assert sa.keys() == sb.keys()
    return max((sa[k].double() - sb[k].double()).abs().max().item() for k in sa)


def assert_same_runs(single: Trainer, batched: Trainer, n_val: int) -> float:
    """Same history (losses to LOSS_RTOL, errors to one image), best epoch, and final weights (WEIGHTS_ATOL);
    returns the largest weight difference."""
    assert len(single.history) == len(batched.history)
    for hs, hb in zip(single.history, batched.history, strict=True):
        assert set(hs) - TIMING == set(hb) - TIMING
        for k, v in hs.items():
            if k in TIMING:
                continue
            if k.endswith("error"):  # a prediction at a near-tie may flip on other hardware: one image at most
                assert abs(v - hb[k]) <= 100.0 / n_val + 1e-9, (k, v, hb[k])
            elif isinstance(v, float):
                assert math.isclose(v, hb[k], rel_tol=LOSS_RTOL, abs_tol=LOSS_RTOL), (k, v, hb[k])
            else:
                assert v == hb[k], k
    assert single.best["epoch"] == batched.best["epoch"]
    diff = max_weight_diff(single.model, batched.model)
    assert diff <= WEIGHTS_ATOL, diff
    return diff


@pytest.mark.parametrize("kw", [{}, {"ema": 0.9, "kl_warmup": 1.0, "shift": 1}])
def test_batched_m2_gives_the_one_by_one_numbers(digits, kw):
    torch.set_num_threads(1)
    cfgs = three("m2", **kw)
    singles = one_by_one(cfgs, digits)
    batch = BatchedTrainer(cfgs, digits)
    for records in batch.epochs():
        assert len(records) == 3
    diffs = [assert_same_runs(s, b, len(digits.y_val)) for s, b in zip(singles, batch.runs, strict=True)]
    print(f"M2 {kw}: largest weight difference batched vs one by one {max(diffs):.2e}")
    # the comparison can fail: another run's random numbers give weights far outside the tolerance
    assert max_weight_diff(singles[1].model, batch.runs[0].model) > 100 * WEIGHTS_ATOL


@pytest.mark.parametrize("kw", [{}, {"z1_sample": False, "ema": 0.9}])
def test_batched_m1m2_stage_gives_the_one_by_one_numbers(digits, m1_state, kw):
    torch.set_num_threads(1)
    cfgs = three("m1m2", active_threshold=0.0, **kw)
    singles = one_by_one(cfgs, digits, m1_state)
    batch = BatchedTrainer(cfgs, digits, m1_state=m1_state)
    list(batch.epochs())
    diffs = [assert_same_runs(s, b, len(digits.y_val)) for s, b in zip(singles, batch.runs, strict=True)]
    print(f"M1+M2 {kw}: largest weight difference batched vs one by one {max(diffs):.2e}")
    for s, b in zip(singles, batch.runs, strict=True):
        assert b.cfg.model.z1_active == s.cfg.model.z1_active
        assert all(torch.equal(v, m1_state[k]) for k, v in b.model.m1.state_dict().items())  # M1 stays frozen
    assert max_weight_diff(singles[1].model.m2, batch.runs[0].model.m2) > 100 * WEIGHTS_ATOL


def test_runs_with_different_n_are_never_batched(digits):
    cfgs = [small_cfg("m2", 0), small_cfg("m2", 0, labels=100), small_cfg("m2", 1), small_cfg("m2", 1, labels=100),
            small_cfg("m1"), small_cfg("m2", 2, lr=1e-3)]
    assert group_runs(cfgs) == [[0, 2], [1, 3], [4], [5]]
    # reproduce's grouping: also by N, the M1 the runs start from, and M1+M2 only with a given M1
    jobs = [Job(f"/nonexistent/{i}", c, str(i)) for i, c in enumerate(cfgs)]
    assert [[j.what for j in g] for g in batches(jobs)] == [["0", "2"], ["1", "3"], ["4"], ["5"]]
    m1m2 = [Job("/nonexistent/a", small_cfg("m1m2", 0), "a", "m1-x"), Job("/nonexistent/b", small_cfg("m1m2", 1), "b",
                                                                           "m1-x"),
            Job("/nonexistent/c", small_cfg("m1m2", 2), "c", "m1-y"), Job("/nonexistent/d", small_cfg("m1m2", 3), "d")]
    assert [[j.what for j in g] for g in batches(m1m2)] == [["a", "b"], ["c"], ["d"]]
    with pytest.raises(ValueError, match="differ only in seed and init"):
        BatchedTrainer([small_cfg("m2", 0), small_cfg("m2", 1, labels=100)], digits)
    with pytest.raises(ValueError, match="one by one"):
        BatchedTrainer([small_cfg("m1", 0), small_cfg("m1", 1)], digits)


def test_a_batch_goes_on_from_any_runs_last_epoch_batched_or_one_by_one(digits):
    torch.set_num_threads(1)
    cfgs = three("m2")[:2]
    full = one_by_one(cfgs, digits)
    # one by one for an epoch, then batched from their resume states
    firsts = []
    for cfg in cfgs:
        t = Trainer(cfg, digits)
        next(t.epochs())
        firsts.append(t.resume_state)
    batch = BatchedTrainer(cfgs, digits, resumes=firsts)
    list(batch.epochs())
    for s, b in zip(full, batch.runs, strict=True):
        assert_same_runs(s, b, len(digits.y_val))
    # batched for an epoch, then one by one from each run's resume state (the same keys a Trainer writes)
    batch = BatchedTrainer(cfgs, digits)
    next(batch.epochs())
    states = [run.resume_state for run in batch.runs]
    assert set(states[0]) == set(firsts[0])
    for s, b in zip(full, one_by_one(cfgs, digits, resumes=states), strict=True):
        assert_same_runs(s, b, len(digits.y_val))
    with pytest.raises(ValueError, match="same epoch"):
        BatchedTrainer(cfgs, digits, resumes=[firsts[0], None])


def test_batched_run_folders_load_like_any_run_and_a_stopped_batch_goes_on(digits, tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfgs = three("m2", epochs=3)[:2]
    outs = [tmp_path / "a", tmp_path / "b"]
    real = BatchedTrainer.epochs

    def stop_after_one(self, on_batch=None):  # as a Ctrl-C or `kill` after epoch 1 would
        for records in real(self, on_batch):
            self.stop()
            yield records

    monkeypatch.setattr(BatchedTrainer, "epochs", stop_after_one)
    metas = run_batch_training(cfgs, digits, outs, quiet=True)
    assert [run_state(m) for m in metas] == [STOPPED, STOPPED]
    assert all((o / "resume.pt").is_file() for o in outs)
    monkeypatch.setattr(BatchedTrainer, "epochs", real)
    metas = run_batch_training(cfgs, digits, outs, quiet=True, resume=True)
    assert [run_state(m) for m in metas] == [DONE, DONE]
    assert not any((o / "resume.pt").exists() for o in outs)
    full = BatchedTrainer(cfgs, digits)
    list(full.epochs())
    for out, meta, want in zip(outs, metas, full.runs, strict=True):
        run = load_run(out)
        assert run.cfg.seed == want.cfg.seed and meta == read_meta(out)
        assert [h["epoch"] for h in meta["history"]] == [1, 2, 3]
        assert meta["best"] == want.best
        assert max_weight_diff(run.model, want.best_state) == 0.0  # resumed batched == uninterrupted batched
        res = evaluate(run.model, run.cfg, digits)
        assert (res["val_error"], res["test_error"]) == (meta["best"]["val_error"], meta["best"]["test_error"])
    with pytest.raises(Exception, match="Nothing to save"):
        save_trainer(Trainer(cfgs[0], digits), tmp_path / "empty")


def test_reproduce_batched_writes_the_same_table_and_reusable_folders(tmp_path, capsys):
    from ssvae_core.cli import main

    args = ["reproduce", "--dataset", "digits", "--models", "m2,m1m2", "--labels", "50", "--seeds", "0,1",
            "--epochs", "1", "--m1-epochs", "1", "--hidden", "32", "--z-dim", "4", "--m1-hidden", "32",
            "--m1-z-dim", "8", "--device", "cpu", "--out", str(tmp_path), "--batched"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert out.count("runs together (batched)") == 2
    names = {"m1", "m2-n50-s0", "m2-n50-s1", "m1m2-n50-s0", "m1m2-n50-s1"}
    assert {p.name for p in tmp_path.iterdir()} == names
    for name in names:
        run = load_run(tmp_path / name)
        assert run_state(run.meta) == DONE
    table = out.split("model chosen on validation")[1]
    assert main(args) == 0  # finished runs are reused, and the table is the same
    again = capsys.readouterr().out
    assert again.count("finished earlier") == 4 and "runs together" not in again
    assert again.split("model chosen on validation")[1] == table
    assert main([*args, "--ray"]) == 2
    assert main([*args, "--compile"]) == 2 and "not compiled" in capsys.readouterr().out


def test_bench_batched_times_both_ways(digits, monkeypatch):
    from ssvae_core import bench, recipes

    monkeypatch.setitem(recipes.RECIPE, "m2", {**recipes.RECIPE["m2"], "hidden": [32]})
    r = bench.bench_batched("m2", digits, "cpu", 50, 2, 1)
    assert r["runs"] == 2 and r["one_by_one"] > 0 and r["batched"] > 0
    assert r["gflops_batched"] / r["gflops_one_by_one"] == pytest.approx(r["one_by_one"] / r["batched"])
