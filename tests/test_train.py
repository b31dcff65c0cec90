"""The training loop on the embedded digits set: history, stop, NaN handling, model selection."""

import math
import threading

import pytest
import torch

from ssvae_core.errors import TrainingError
from ssvae_core.models import ModelConfig
from ssvae_core.train import TrainConfig, Trainer, evaluate


def small_cfg(kind: str, epochs: int = 3, **kw) -> TrainConfig:
    model = ModelConfig(kind=kind, hidden=[64], z_dim=8, m1_hidden=[64], m1_z_dim=8)
    return TrainConfig(model=model, dataset="digits", labels=50, epochs=epochs, m1_epochs=10, device="cpu",
                       **{"lr": 3e-3, **kw})


@pytest.mark.parametrize("kind", ["supervised", "m1", "m2", "m1m2"])
def test_every_model_trains_and_beats_chance(digits, kind):
    epochs = 12 if kind == "m1m2" else 4  # M2 on M1's features starts slower on 8x8 digits
    trainer = Trainer(small_cfg(kind, epochs=epochs), digits)
    history = list(trainer.epochs())
    main = [h for h in history if h["stage"] == kind]
    assert len(main) == epochs and all(math.isfinite(h["loss"]) for h in history)
    if kind == "m1":  # M1 is chosen without labels, on its validation ELBO
        chosen = max(main, key=lambda h: h["val_elbo"])
        assert trainer.best["epoch"] == chosen["epoch"] and trainer.best["val_error"] == chosen["val_error"]
    else:
        assert trainer.best["val_error"] == min(h["val_error"] for h in main)
    assert trainer.best["val_error"] < (75.0 if kind == "m1m2" else 60.0)  # chance is 90%
    if kind == "m1m2":
        assert [h["stage"] for h in history[:10]] == ["m1"] * 10
        assert 1 <= trainer.model.active.numel() <= 8
    if kind in ("m2", "m1m2"):
        for key in ("elbo_labelled", "elbo_unlabelled", "kl_z", "log_px", "classification"):
            assert key in main[-1]
    # the returned model is the best one on validation, and evaluate() agrees with the record
    res = evaluate(trainer.model, trainer.cfg, digits)
    assert res["val_error"] == pytest.approx(trainer.best["val_error"], abs=1e-4)
    assert res["test_error"] == pytest.approx(trainer.best["test_error"], abs=1e-4)


def test_unlabelled_elbo_improves(digits):
    history = list(Trainer(small_cfg("m2", epochs=6), digits).epochs())
    assert history[-1]["elbo_unlabelled"] > history[0]["elbo_unlabelled"] + 1.0


@pytest.mark.parametrize("mode", ["dataset", "batch"])
def test_labelled_bound_weight_follows_the_objective(digits, monkeypatch, mode):
    """'dataset' weighs mean L(x,y) by N_l/N_u, as the sums in J^alpha do; 'batch' weighs it like mean U(x)."""
    from ssvae_core.models import M2

    seen = []
    real = M2.loss

    def spy(self, x_l, y_l, x_u, beta, kl_weight=1.0, lab_weight=1.0):
        seen.append((beta, lab_weight))
        return real(self, x_l, y_l, x_u, beta, kl_weight, lab_weight)

    monkeypatch.setattr(M2, "loss", spy)
    trainer = Trainer(small_cfg("m2", epochs=1, labelled_elbo=mode), digits)
    list(trainer.epochs())
    n_l, n_u = len(trainer.lab_idx), len(trainer.unl_idx)
    expected = n_l / n_u if mode == "dataset" else 1.0
    assert seen and all(w == pytest.approx(expected) for _, w in seen)
    assert all(b == pytest.approx(0.1 * len(digits.x_train) / 50) for b, _ in seen)


@pytest.mark.parametrize("kind", ["m2", "supervised", "m1"])
def test_shift_moves_the_labelled_images_of_m2_only(digits, monkeypatch, kind):
    """cfg.shift: M2's step sees its labelled images moved (and its unlabelled ones as they are); M1 and the
    supervised baseline never move theirs."""
    import ssvae_core.train as train

    moved = []
    real = train.shifted

    def spy(x, image_shape, most):
        moved.append((x.shape, tuple(image_shape), most))
        return real(x, image_shape, most)

    monkeypatch.setattr(train, "shifted", spy)
    cfg = small_cfg(kind, epochs=1, shift=1, labelled_batch=20)
    trainer = Trainer(cfg, digits)
    list(trainer.epochs())
    if kind != "m2":
        assert moved == []
        return
    steps = math.ceil(len(trainer.unl_idx) / cfg.batch_size)
    assert moved == [((20, digits.x_dim), tuple(digits.image_shape), 1)] * steps


def test_kl_warmup_lets_the_posterior_move_away_from_the_prior(digits):
    """With the KL weight near 0 (a very long warm-up) q(z|x) is free to move, so its KL grows."""
    plain = list(Trainer(small_cfg("m1", epochs=3), digits).epochs())
    warm = list(Trainer(small_cfg("m1", epochs=3, kl_warmup=1e6), digits).epochs())
    assert warm[-1]["kl_z"] > 2 * plain[-1]["kl_z"]


def test_m1m2_trains_its_m1_stage_with_its_own_rate_and_warm_up(digits, monkeypatch):
    """m1_lr, m1_lr_final and m1_kl_warmup drive the M1 stage; lr, lr_final and kl_warmup the M2 stage."""
    from ssvae_core.models import M1, M2

    weights = {"m1": [], "m2": []}
    real_m1, real_m2 = M1.loss, M2.loss
    monkeypatch.setattr(M1, "loss", lambda self, x_l, y_l, x_u, beta, kl_weight=1.0, lab_weight=1.0: (
        weights["m1"].append(kl_weight), real_m1(self, x_l, y_l, x_u, beta, kl_weight, lab_weight))[1])
    monkeypatch.setattr(M2, "loss", lambda self, x_l, y_l, x_u, beta, kl_weight=1.0, lab_weight=1.0: (
        weights["m2"].append(kl_weight), real_m2(self, x_l, y_l, x_u, beta, kl_weight, lab_weight))[1])
    cfg = small_cfg("m1m2", epochs=2, lr=2e-3, lr_final=1e-3, m1_lr=5e-3, m1_lr_final=4e-3, m1_kl_warmup=2.0)
    cfg.m1_epochs = 2
    history = list(Trainer(cfg, digits).epochs())
    m1_lr = [h["lr"] for h in history if h["stage"] == "m1"]
    m2_lr = [h["lr"] for h in history if h["stage"] == "m1m2"]
    assert all(4e-3 <= r <= 5e-3 for r in m1_lr) and all(1e-3 <= r <= 2e-3 for r in m2_lr)
    assert weights["m1"][0] < 0.1 and weights["m1"][-1] == pytest.approx(1.0)  # M1 warmed its KL up
    assert weights["m2"] and all(w == 1.0 for w in weights["m2"])  # the M2 stage did not (kl_warmup 0)
    plain = small_cfg("m1m2", epochs=1, lr=2e-3)  # unset: the M1 stage follows lr
    plain.m1_epochs = 1
    assert [h["lr"] for h in Trainer(plain, digits).epochs()] == pytest.approx([2e-3, 2e-3])


def test_m1_stage_of_m1m2_keeps_its_best_validation_elbo(digits, monkeypatch):
    """M1+M2 goes on from the M1 epoch with the highest validation ELBO, not the last one."""
    cfg = small_cfg("m1m2", epochs=1)
    cfg.m1_epochs = 4
    trainer = Trainer(cfg, digits)
    scores = iter([-50.0, -10.0, -30.0, -40.0])  # epoch 2 is the best
    saved = {}

    def fake_val_elbo(m1):
        saved[len(saved) + 1] = {k: v.clone() for k, v in m1.state_dict().items()}
        return next(scores)

    monkeypatch.setattr(trainer, "_val_elbo", fake_val_elbo)
    list(trainer.epochs())
    for k, v in trainer.model.m1.state_dict().items():
        assert torch.equal(v, saved[2][k])


def test_stop_between_batches_keeps_best(digits):
    trainer = Trainer(small_cfg("m2", epochs=50), digits)
    seen = []

    def on_batch(step, steps):
        seen.append(step)
        if len(trainer.history) == 2 and step == 3:
            trainer.stop()

    history = list(trainer.epochs(on_batch=on_batch))
    # the partial third epoch is named as such, and neither recorded nor kept: two epochs had finished
    assert len(history) == 2 and all(h["complete"] for h in history) and trainer.stopped
    assert trainer.partial == {"stage": "m2", "epoch": 3, "batches": 3, "steps": max(seen)}
    assert trainer.best_state is not None and trainer.best["epoch"] <= 2
    assert trainer.resume_state["epoch"] == 2  # a resume goes on from the last finished epoch


def test_stop_inside_the_first_epoch_keeps_that_partial_epoch_and_says_so(digits):
    trainer = Trainer(small_cfg("m2", epochs=5), digits)

    def on_batch(step, steps):
        if step == 2:
            trainer.stop()

    history = list(trainer.epochs(on_batch=on_batch))
    assert len(history) == 1 and not history[0]["complete"] and history[0]["batches"] == 2
    assert trainer.partial["batches"] == 2 and trainer.best_state is not None
    assert trainer.resume_state is None  # nothing finished to go on from


def test_nan_loss_stops_with_message_and_keeps_last_good_state(digits, monkeypatch):
    trainer = Trainer(small_cfg("supervised", epochs=3), digits)
    it = trainer.epochs()
    next(it)
    good = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    original = trainer.model.loss
    calls = {"n": 0}

    def poisoned(*a, **kw):
        calls["n"] += 1
        out = original(*a, **kw)
        if calls["n"] == 3:
            out["loss"] = out["loss"] * float("nan")
        return out

    monkeypatch.setattr(trainer.model, "loss", poisoned)
    with pytest.raises(TrainingError, match="NaN|nan"):
        next(it)
    for k, v in trainer.model.state_dict().items():
        assert torch.equal(v, good[k])


def test_seed_makes_runs_repeatable(digits):
    a = [h["loss"] for h in Trainer(small_cfg("m2", epochs=2), digits).epochs()]
    b = [h["loss"] for h in Trainer(small_cfg("m2", epochs=2), digits).epochs()]
    assert a == b


def test_another_init_trains_other_weights_on_the_same_label_draw(digits):
    first, other = Trainer(small_cfg("m2", epochs=1), digits), Trainer(small_cfg("m2", epochs=1, init=1), digits)
    assert torch.equal(first.lab_idx, other.lab_idx)  # the same labelled images
    a, b = list(first.epochs()), list(other.epochs())
    assert a[0]["loss"] != b[0]["loss"]
    assert not torch.equal(first.best_state["classifier.0.weight"], other.best_state["classifier.0.weight"])


def test_config_round_trips_through_dict():
    cfg = small_cfg("m1m2", lr_final=1e-4)
    assert TrainConfig.from_dict(cfg.to_dict()) == cfg


def test_generative_prediction_is_the_class_the_decoder_explains_best():
    """A decoder that draws class c as block c of the pixels and ignores z: argmax_y L(x,y) recovers every class."""
    from ssvae_core.models import M2
    from ssvae_core.train import predict, predict_generative

    torch.manual_seed(0)
    k, block = 3, 4
    model = M2(k * block, k, ModelConfig(hidden=[], z_dim=2))
    with torch.no_grad():
        w = model.decoder[0].weight  # pixels × (z, y)
        w.zero_()
        model.decoder[0].bias.fill_(-6.0)
        for c in range(k):
            w[c * block:(c + 1) * block, 2 + c] = 12.0
    y = torch.arange(k).repeat(20)
    x = torch.zeros(len(y), k * block)
    for i, c in enumerate(y):
        x[i, c * block:(c + 1) * block] = 1.0
    assert torch.equal(predict_generative(model, x), y)
    assert not torch.equal(predict(model, x), y)  # q(y|x) is untrained: only the generative choice is right


def test_training_thread_flushes_denormals_to_zero(digits):
    """Denormal floats are slow on the CPU; a training thread treats them as zero (the flag is per thread)."""
    seen = {}

    def train_then_look():
        torch.set_flush_denormal(False)  # a new thread copies its creator's flag, which other tests may have set
        tiny = torch.tensor([1e-39])  # below float32's smallest normal, 1.2e-38
        seen["before"] = (tiny * 1.0).item()
        list(Trainer(small_cfg("supervised", epochs=1), digits).epochs())
        seen["after"] = (tiny * 1.0).item()

    t = threading.Thread(target=train_then_look)
    t.start()
    t.join()
    assert seen["before"] > 0 and seen["after"] == 0.0


def test_ema_update_moves_each_trained_weight_towards_the_model():
    from torch import nn

    from ssvae_core.train import ema_update

    model, averaged = nn.Linear(3, 2), nn.Linear(3, 2)
    model.bias.requires_grad_(False)  # frozen weights are left alone
    before_w, before_b = averaged.weight.detach().clone(), averaged.bias.detach().clone()
    ema_update(averaged, model, 0.9)
    assert torch.allclose(averaged.weight, 0.9 * before_w + 0.1 * model.weight.detach())
    assert torch.equal(averaged.bias, before_b)


def test_ema_keeps_the_averaged_weights_and_leaves_training_unchanged(digits):
    """--ema evaluates and saves the moving average; the raw weights train exactly as without it."""
    plain = list(Trainer(small_cfg("m2", epochs=3), digits).epochs())
    trainer = Trainer(small_cfg("m2", epochs=3, ema=0.99), digits)
    averaged = list(trainer.epochs())
    assert [h["loss"] for h in averaged] == [h["loss"] for h in plain]
    assert [h["raw_val_error"] for h in averaged] == [h["val_error"] for h in plain]
    assert [h["val_error"] for h in averaged] != [h["val_error"] for h in plain]
    assert trainer.best["val_error"] == min(h["val_error"] for h in averaged)  # chosen on the averaged weights
    res = evaluate(trainer.model, trainer.cfg, digits)  # ...and those are the weights kept
    assert res["val_error"] == pytest.approx(trainer.best["val_error"], abs=1e-4)


def test_wall_seconds_cover_training_and_evaluation(digits):
    trainer = Trainer(small_cfg("m2", epochs=2), digits)
    history = list(trainer.epochs())
    assert all(h["eval_seconds"] > 0 for h in history)
    assert trainer.wall_seconds >= sum(h["seconds"] + h["eval_seconds"] for h in history) > 0


def test_m1m2_stage_encodes_validation_and_test_images_once_per_run(digits, monkeypatch):
    """M1 is frozen in the M2 stage, so its z1 means of the evaluation images are computed once, not every epoch;
    the errors recorded from them are those evaluate() finds from the images."""
    from ssvae_core.models import GaussianHead

    m1_trainer = Trainer(small_cfg("m1", epochs=1), digits)
    list(m1_trainer.epochs())
    m1_state = m1_trainer.model.state_dict()
    real = GaussianHead.forward
    calls = []

    def spy(self, h):
        if h.shape[-1] == digits.x_dim:  # the M1 encoder (the stage's own encoder sees z1 and y)
            calls.append(len(h))
        return real(self, h)

    monkeypatch.setattr(GaussianHead, "forward", spy)
    counts = []
    for epochs in (1, 4):
        calls.clear()
        trainer = Trainer(small_cfg("m1m2", epochs=epochs), digits, m1_state=m1_state)
        list(trainer.epochs())
        counts.append(sorted(calls))
        res = evaluate(trainer.model, trainer.cfg, digits)
        assert res["val_error"] == pytest.approx(trainer.best["val_error"], abs=1e-4)
        assert res["test_error"] == pytest.approx(trainer.best["test_error"], abs=1e-4)
    assert counts[0] == counts[1]
    assert len(digits.x_val) in counts[0] and len(digits.x_test) in counts[0]


def test_m1m2_stage_can_train_on_z1_means_instead_of_samples(digits, monkeypatch):
    """--z1-mean: M2's loss sees E[z1|x] (the first half of the cached q(z1|x) rows); by default, samples of it."""
    from ssvae_core.models import M2

    m1_trainer = Trainer(small_cfg("m1", epochs=1), digits)
    list(m1_trainer.epochs())
    seen = []
    real = M2.loss
    monkeypatch.setattr(M2, "loss", lambda self, x_l, *a, **k: (seen.append(x_l), real(self, x_l, *a, **k))[1])
    for z1_sample in (True, False):
        seen.clear()
        cfg = small_cfg("m1m2", epochs=1, z1_sample=z1_sample)
        trainer = Trainer(cfg, digits, m1_state=m1_trainer.model.state_dict())
        it = trainer.epochs()
        next(it)
        q = trainer.q_z1_train(trainer.model)
        means = {tuple(r.tolist()) for r in q.chunk(2, -1)[0][trainer.lab_idx]}
        assert all((tuple(r.tolist()) in means) != z1_sample for r in seen[0])
