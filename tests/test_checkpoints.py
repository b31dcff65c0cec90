"""Checkpoints: round trip, atomic files, and clean refusals of truncated, foreign, mismatched or malicious files."""

import json
import os
import pickle

import pytest
import torch

from ssvae_core.checkpoints import (
    META,
    WEIGHTS,
    _sha256,
    delete_run,
    list_runs,
    load_run,
    save_trainer,
)
from ssvae_core.errors import CheckpointError
from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig, Trainer, predict


@pytest.fixture(scope="module")
def trained(digits):
    cfg = TrainConfig(model=ModelConfig(kind="m2", hidden=[32], z_dim=4), dataset="digits", labels=50, epochs=2,
                      device="cpu", lr=3e-3)
    trainer = Trainer(cfg, digits)
    list(trainer.epochs())
    return trainer


@pytest.fixture
def run_dir(tmp_path, trained):
    return save_trainer(trained, tmp_path / "checkpoints" / "run1")


def test_round_trip_gives_same_predictions_and_metadata(run_dir, trained, digits):
    run = load_run(run_dir)
    assert torch.equal(predict(run.model, digits.x_test), predict(trained.model, digits.x_test))
    assert run.cfg == trained.cfg
    assert run.meta["best"] == trained.best and len(run.meta["history"]) == 2
    assert run.meta["labelled_indices"] == trained.lab_idx.tolist()
    assert not list(run_dir.glob("*.tmp")) and not list(run_dir.glob(".*"))  # no temp files left behind


def test_half_precision_is_smaller_and_close(tmp_path, trained, digits):
    full = save_trainer(trained, tmp_path / "full")
    half = save_trainer(trained, tmp_path / "half", half=True)
    assert (half / WEIGHTS).stat().st_size < 0.6 * (full / WEIGHTS).stat().st_size
    a, b = load_run(full).model, load_run(half).model
    agree = (predict(a, digits.x_test) == predict(b, digits.x_test)).float().mean()
    assert agree > 0.97 and next(b.parameters()).dtype == torch.float32
    # the recorded error is that of the stored float16 weights
    from ssvae_core.train import evaluate

    meta = load_run(half).meta
    assert meta["best"]["test_error"] == evaluate(b, trained.cfg, digits)["test_error"]
    assert meta["best"]["float32_test_error"] == trained.best["test_error"]


def test_truncated_weights_are_rejected(run_dir):
    data = (run_dir / WEIGHTS).read_bytes()
    (run_dir / WEIGHTS).write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=WEIGHTS):
        load_run(run_dir)


def _rehash(run_dir):
    """Make run.json vouch for whatever model.pt now holds, so the loader's own checks are exercised."""
    meta = json.loads((run_dir / META).read_text())
    meta["weights"]["sha256"] = _sha256(run_dir / WEIGHTS)
    (run_dir / META).write_text(json.dumps(meta))


def test_truncated_weights_rejected_even_with_matching_hash(run_dir):
    data = (run_dir / WEIGHTS).read_bytes()
    (run_dir / WEIGHTS).write_bytes(data[:1000])
    _rehash(run_dir)
    with pytest.raises(CheckpointError, match="is damaged or cut short") as err:
        load_run(run_dir)
    assert "weights_only" not in str(err.value)


def test_wrong_architecture_is_rejected(run_dir):
    meta = json.loads((run_dir / META).read_text())
    meta["config"]["model"]["z_dim"] = 7
    (run_dir / META).write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="do not fit the architecture"):
        load_run(run_dir)


class RunsCode:
    def __reduce__(self):
        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_code_running_pickle_is_refused(run_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with open(run_dir / WEIGHTS, "wb") as f:
        pickle.dump({"encoder.net.0.weight": RunsCode()}, f)
    _rehash(run_dir)
    with pytest.raises(CheckpointError) as err:
        load_run(run_dir)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    assert str(err.value) == (f"{run_dir / WEIGHTS} is not a safe weights file (it holds Python objects other than "
                              "tensors), so it was not loaded.")
    assert "weights_only" not in str(err.value) and "Re-running" not in str(err.value)


@pytest.mark.parametrize("protocol", [2, pickle.DEFAULT_PROTOCOL])
def test_refused_pickle_never_echoes_torchs_advice(run_dir, tmp_path, monkeypatch, protocol):
    monkeypatch.chdir(tmp_path)
    (run_dir / WEIGHTS).write_bytes(pickle.dumps({"w": RunsCode()}, protocol=protocol))
    _rehash(run_dir)
    with pytest.raises(CheckpointError, match="is not a safe weights file") as err:
        load_run(run_dir)
    assert "weights_only" not in str(err.value).lower() and "torch.load" not in str(err.value)
    torch.save({"w": RunsCode()}, run_dir / WEIGHTS)  # the same inside torch's zip format
    _rehash(run_dir)
    with pytest.raises(CheckpointError, match="is not a safe weights file"):
        load_run(run_dir)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()


def test_other_unloadable_files_get_plain_reasons(run_dir):
    for data, words in [(b"\x13" + os.urandom(4999), "is not a PyTorch weights file"), (b"", "is empty or cut short"),
                        ((run_dir / WEIGHTS).read_bytes()[:3000], "is damaged or cut short")]:
        (run_dir / WEIGHTS).write_bytes(data)
        _rehash(run_dir)
        with pytest.raises(CheckpointError, match=words) as err:
            load_run(run_dir)
        assert "weights_only" not in str(err.value) and "safe" not in str(err.value)


def test_foreign_files_are_rejected(tmp_path, run_dir):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="not found"):
        load_run(tmp_path / "empty")
    (run_dir / META).write_text("{not json")
    with pytest.raises(CheckpointError, match="not JSON"):
        load_run(run_dir)
    (run_dir / META).write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not an ssvae run"):
        load_run(run_dir)


def test_list_runs_shows_good_and_broken(tmp_path, trained):
    root = tmp_path / "checkpoints"
    save_trainer(trained, root / "good")
    bad = save_trainer(trained, root / "bad")
    (bad / META).write_text("garbage")
    rows = {r["name"]: r for r in list_runs(root)}
    assert rows["good"]["ok"] and rows["good"]["model"] == "m2" and rows["good"]["labels"] == 50
    assert rows["good"]["seconds"] == trained.wall_seconds > 0  # training and evaluation, as a user waited
    assert not rows["bad"]["ok"] and "not JSON" in rows["bad"]["error"]


def test_list_runs_validates_the_weights(tmp_path, trained):
    root = tmp_path / "checkpoints"
    good = save_trainer(trained, root / "good")
    random_bytes = save_trainer(trained, root / "random")
    (random_bytes / WEIGHTS).write_bytes(b"\x13" + os.urandom(19999))  # not the 2-byte start of a pickle or zip
    _rehash(random_bytes)  # run.json vouches for the random bytes: the hash check passes, loading does not
    altered = save_trainer(trained, root / "altered")
    (altered / WEIGHTS).write_bytes((altered / WEIGHTS).read_bytes()[:-10])
    missing = save_trainer(trained, root / "missing")
    (missing / WEIGHTS).unlink()
    failed = save_trainer(trained, root / "failed")
    meta = json.loads((failed / META).read_text())
    meta["error"] = "The loss became NaN."
    (failed / META).write_text(json.dumps(meta))
    rows = {r["name"]: r for r in list_runs(root)}
    assert rows["good"]["ok"] and rows["good"]["error"] == ""
    assert not rows["random"]["ok"] and "is not a PyTorch weights file" in rows["random"]["error"]
    assert not rows["altered"]["ok"] and "do not match run.json" in rows["altered"]["error"]
    assert not rows["missing"]["ok"] and "missing" in rows["missing"]["error"]
    assert not rows["failed"]["ok"] and "The loss became NaN." in rows["failed"]["error"]
    # a run that breaks after it was listed is seen at the next listing
    (good / WEIGHTS).write_bytes(b"\x80\x02junk")
    row = next(r for r in list_runs(root) if r["name"] == "good")
    assert not row["ok"] and "contents do not match" in row["error"]


def test_random_bytes_are_never_taken_for_weights(tmp_path):
    """Whatever torch's unpickler trips on in random bytes (which varies with the bytes), the message is the same."""
    import random

    from ssvae_core.checkpoints import _read_weights

    gen = random.Random(0)
    path = tmp_path / WEIGHTS
    messages = set()
    for _ in range(200):
        data = bytes(gen.getrandbits(8) for _ in range(gen.choice([1, 7, 300, 5000])))
        if data[:1] in (b"\x80", b"P"):  # could be the start of a pickle or zip archive: another message
            continue
        path.write_bytes(data)
        with pytest.raises(CheckpointError) as err:
            _read_weights(path)
        messages.add(str(err.value))
    assert messages == {f"{path} is not a PyTorch weights file (its bytes are in no format torch saves), so it was "
                        "not loaded."}


def test_list_runs_hashes_and_loads_each_file_version_once(tmp_path, trained, monkeypatch):
    from ssvae_core import checkpoints

    root = tmp_path / "checkpoints"
    run = save_trainer(trained, root / "good")
    calls = {"sha": 0, "load": 0}
    sha, load = checkpoints._sha256, checkpoints.torch.load

    def counting_sha(path):
        calls["sha"] += 1
        return sha(path)

    def counting_load(*args, **kw):
        calls["load"] += 1
        return load(*args, **kw)

    monkeypatch.setattr(checkpoints, "_sha256", counting_sha)
    monkeypatch.setattr(checkpoints.torch, "load", counting_load)
    for _ in range(3):
        assert list_runs(root)[0]["ok"]
    assert calls == {"sha": 1, "load": 1}
    stat = (run / WEIGHTS).stat()
    os.utime(run / WEIGHTS, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # a new version of the file
    assert list_runs(root)[0]["ok"]
    assert calls == {"sha": 2, "load": 2}


def test_delete_only_inside_root(tmp_path, run_dir):
    root = run_dir.parent
    with pytest.raises(CheckpointError):
        delete_run(tmp_path, root)
    delete_run(run_dir, root)
    assert not run_dir.exists()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_loads_on_cpu_and_back(tmp_path, digits):
    cfg = TrainConfig(model=ModelConfig(kind="m2", hidden=[32], z_dim=4), dataset="digits", labels=50, epochs=1,
                      device="cuda")
    trainer = Trainer(cfg, digits)
    list(trainer.epochs())
    run = load_run(save_trainer(trainer, tmp_path / "gpu"), device="cpu")
    assert next(run.model.parameters()).device.type == "cpu"
    assert next(load_run(tmp_path / "gpu", device="cuda").model.parameters()).is_cuda
