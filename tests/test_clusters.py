"""A label-free M1+M2 stage (U alone: clusters) and M1+M2 runs that start from it, their clusters named by class."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from ssvae_core.checkpoints import read_meta, save_trainer, start_m1
from ssvae_core.models import M2, ModelConfig
from ssvae_core.train import TrainConfig, Trainer, evaluate, name_clusters


def small_cfg(kind: str, epochs: int = 3, **kw) -> TrainConfig:
    model = ModelConfig(kind=kind, hidden=[64], z_dim=8, m1_hidden=[64], m1_z_dim=8)
    return TrainConfig(model=model, dataset="digits", labels=50, epochs=epochs, m1_epochs=10, device="cpu",
                       **{"lr": 3e-3, **kw})


@pytest.fixture(scope="module")
def m1_state(digits) -> dict:
    trainer = Trainer(small_cfg("m1", epochs=2), digits)
    list(trainer.epochs())
    return trainer.model.state_dict()


def test_relabel_renames_every_class_of_m2():
    """After relabel(perm), class k of q(y|x), q(z|x,y) and p(x|y,z) is the old class perm[k]."""
    torch.manual_seed(0)
    m2 = M2(12, 4, ModelConfig(kind="m2", hidden=[16], z_dim=3), likelihood="gaussian")
    x, eps = torch.randn(5, 12), torch.randn(5, 3)
    perm = torch.tensor([2, 0, 3, 1])
    onehot = lambda k: F.one_hot(torch.full((5,), int(k)), 4).float()  # noqa: E731
    logits = m2.classify(x)
    bounds = [m2.elbo_labelled(x, onehot(k), eps=eps)["elbo"] for k in range(4)]
    means = [m2.decode_x(eps, onehot(k)) for k in range(4)]
    m2.relabel(perm)
    torch.testing.assert_close(m2.classify(x), logits[:, perm])
    for k in range(4):
        torch.testing.assert_close(m2.elbo_labelled(x, onehot(k), eps=eps)["elbo"], bounds[perm[k]])
        torch.testing.assert_close(m2.decode_x(eps, onehot(k)), means[perm[k]])
    assert not torch.allclose(m2.classify(x), logits)  # a real renaming, not the identity


def test_name_clusters_finds_the_naming_the_labels_imply():
    """Each class's labelled images sit mostly in one cluster (a fifth of them elsewhere): that cluster is its name."""
    gen = torch.Generator().manual_seed(0)
    k, truth = 6, torch.tensor([4, 0, 5, 1, 3, 2])  # truth[class] = cluster
    y = torch.arange(k).repeat_interleave(10)
    cluster = truth[y].clone()
    stray = torch.rand(len(y), generator=gen) < 0.2
    cluster[stray] = torch.randint(k, (int(stray.sum()),), generator=gen)
    logits = 3.0 * F.one_hot(cluster, k).float() + torch.randn(len(y), k, generator=gen)
    assert torch.equal(name_clusters(logits, y, k), truth)


def test_label_free_stage_sees_no_label(digits, m1_state):
    """A label-free stage trains the same weights whatever its labelled images' labels say; a stage with labels does
    not. (The labelled images themselves, drawn from the labels, stay the same: only their labels change.)"""
    wrong = digits.y_train[torch.randperm(len(digits.y_train), generator=torch.Generator().manual_seed(1))]
    weights = {}
    for free in (True, False):
        for name in ("true", "wrong"):
            trainer = Trainer(small_cfg("m1m2", epochs=2, label_free=free), digits, m1_state=m1_state)
            if name == "wrong":
                trainer.data = dataclasses.replace(trainer.data, y_train=wrong)
            list(trainer.epochs())
            weights[free, name] = trainer.model.m2.state_dict()
    same = lambda a, b: all(torch.equal(a[k], b[k]) for k in a)  # noqa: E731
    assert same(weights[True, "true"], weights[True, "wrong"])
    assert not same(weights[False, "true"], weights[False, "wrong"])


def test_label_free_run_reports_its_clusters_named_with_its_labels(digits, m1_state):
    """Its recorded errors are those of its clusters named by class with the run's labelled images (what a run started
    on it begins with), and evaluate() finds the same; unnamed, the cluster indices would be near chance."""
    trainer = Trainer(small_cfg("m1m2", epochs=6, label_free=True), digits, m1_state=m1_state)
    history = list(trainer.epochs())
    assert trainer.best["epoch"] == len(history)  # nothing label-free to choose by: the last epoch
    res = evaluate(trainer.model, trainer.cfg, digits)
    assert res["val_error"] == pytest.approx(trainer.best["val_error"], abs=1e-4)
    assert res["test_error"] == pytest.approx(trainer.best["test_error"], abs=1e-4)
    raw = evaluate(trainer.model, dataclasses.replace(trainer.cfg, label_free=False), digits)
    assert res["val_error"] <= raw["val_error"]


def test_a_run_started_on_clusters_names_them_with_its_own_labels(digits, m1_state, tmp_path):
    """Start an M1+M2 run from a label-free run whose clusters are known classes in a shuffled order: naming them
    with the run's labels undoes the shuffle exactly, and the run takes the start's stage shape."""
    cfg = small_cfg("m1m2", epochs=0, label_free=True)
    cfg.model.hidden, cfg.model.z_dim = [48], 5
    clusters = Trainer(cfg, digits, m1_state=m1_state)
    list(clusters.epochs())  # builds the M1+M2 on the given M1; no epoch
    model, lab = clusters.model, clusters.lab_idx
    opt = torch.optim.Adam(model.m2.classifier.parameters(), lr=1e-2)
    for _ in range(3000):  # a q(y|z1) that knows the labelled images' classes
        if (model.classify(digits.x_train[lab]).argmax(-1) == digits.y_train[lab]).all():
            break
        loss = F.cross_entropy(model.classify(digits.x_train[lab]), digits.y_train[lab])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert (model.classify(digits.x_train[lab]).argmax(-1) == digits.y_train[lab]).all()
    named = {k: v.clone() for k, v in model.m2.state_dict().items()}
    model.m2.relabel(torch.tensor([3, 7, 0, 9, 1, 5, 8, 2, 6, 4]))  # cluster k: the class perm[k]
    clusters.best_state = model.state_dict()
    save_trainer(clusters, tmp_path / "free")

    cfg = small_cfg("m1m2", epochs=0)  # the flags' stage shape (64, 8) gives way to the start's (48, 5)
    state, fields = start_m1(cfg, str(tmp_path / "free"))
    assert (cfg.model.hidden, cfg.model.z_dim, fields["m1_run"]) == ([48], 5, str(tmp_path / "free"))
    run = Trainer(cfg, digits, m1_state=state)
    list(run.epochs())
    for k, v in run.model.m2.state_dict().items():
        torch.testing.assert_close(v, named[k])
    assert torch.equal(run.model.active, model.active)


def test_reproduce_starts_m1m2_from_clusters_and_reuses_what_it_trained(digits, m1_state, tmp_path, monkeypatch,
                                                                         capsys):
    """`reproduce --m1-run CLUSTERS` trains M1+M2 from the clusters with their sizes (the flags' give way), batched or
    not, and a second call reuses those runs instead of refusing them as trained with other settings."""
    from ssvae_core.cli import main

    cfg = small_cfg("m1m2", epochs=1, label_free=True)
    cfg.model.hidden, cfg.model.z_dim = [48], 5
    clusters = Trainer(cfg, digits, m1_state=m1_state)
    list(clusters.epochs())
    save_trainer(clusters, tmp_path / "free")
    monkeypatch.setattr("ssvae_core.reproduce.load_dataset", lambda *a, **k: digits)
    args = ["reproduce", "--dataset", "digits", "--models", "m1m2", "--labels", "50", "--seeds", "0,1", "--epochs",
            "1", "--hidden", "32", "--z-dim", "4", "--device", "cpu", "--m1-run", str(tmp_path / "free"),
            "--out", str(tmp_path / "table")]
    assert main([*args, "--batched"]) == 0
    first = capsys.readouterr().out
    for seed in (0, 1):
        meta = read_meta(tmp_path / "table" / f"m1m2-n50-s{seed}")
        model = meta["config"]["model"]
        assert (model["hidden"], model["z_dim"], model["m1_hidden"]) == ([48], 5, [64])
        assert meta["m1_run"] == str(tmp_path / "free") and not meta["config"]["label_free"]
    assert main(args) == 0
    second = capsys.readouterr().out
    assert second.count("finished earlier") == 2 and "other settings" not in second
    assert first.split("model chosen on validation")[1] == second.split("model chosen on validation")[1]


def test_the_recipe_from_clusters_or_scratch_is_the_same_in_train_reproduce_and_bench(digits, m1_state, tmp_path,
                                                                                     train_configs, monkeypatch,
                                                                                     capsys):
    """`train --recipe` and `bench --to-target` from a clusters run take the recipe from clusters (FROM_CLUSTERS on
    top of M1+M2's), with a fresh M1 the recipe from scratch (FROM_SCRATCH); `reproduce`, whose M1+M2 runs start from
    a trained M1 or from clusters, takes the plain recipe or the one from clusters; a flag given still wins."""
    import argparse

    from ssvae_core import bench, cli, reproduce
    from ssvae_core.recipes import FROM_CLUSTERS, FROM_SCRATCH, recipe_settings

    clusters = Trainer(small_cfg("m1m2", epochs=0, label_free=True), digits, m1_state=m1_state)
    list(clusters.epochs())
    clusters.best_state = clusters.model.state_dict()
    save_trainer(clusters, tmp_path / "free")
    free = str(tmp_path / "free")
    for start, extra in (("clusters", FROM_CLUSTERS), ("scratch", FROM_SCRATCH)):
        assert extra and all(recipe_settings("m1m2", 100, start)[k] == v for k, v in extra.items())
        assert recipe_settings("m1m2", 100, start) != recipe_settings("m1m2", 100)
    assert recipe_settings("m2", 100, "scratch") == recipe_settings("m2", 100)  # starts are M1+M2's alone
    fixed = sorted({*FROM_CLUSTERS, *FROM_SCRATCH})  # what the starts change: the average, alpha, the M1's length

    def of_train(*flags: str) -> dict:
        assert cli.main(["train", "--model", "m1m2", "--labels", "100", "--recipe", "--out", "/nonexistent",
                         *flags]) == 0
        return {k: getattr(train_configs["cfg"], k) for k in fixed}

    parser = argparse.ArgumentParser()
    reproduce.add_parser(parser.add_subparsers())
    a = parser.parse_args(["reproduce"])
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(cfg, data, m1_state=None, resume=None):
        seen.update({k: getattr(cfg, k) for k in fixed})
        raise Stop

    monkeypatch.setattr(bench, "Trainer", fake_trainer)
    for m1_run, start in ((free, "clusters"), (None, "scratch")):
        expected = {k: recipe_settings("m1m2", 100, start)[k] for k in fixed}
        assert of_train(*(["--m1-run", m1_run] if m1_run else ["--fresh-m1"])) == expected
        with pytest.raises(Stop):
            bench.to_target("m1m2", digits, 100, 0, "cpu", m1_run, True)
        assert seen == expected
    for start in ("clusters", "m1"):  # reproduce's stages: the stage settings as train's from the same start
        from_reproduce = reproduce._with_recipe(a, "m1m2", 100, start)
        assert {k: getattr(from_reproduce, k) for k in ("ema", "alpha")} == {
            k: recipe_settings("m1m2", 100, start)[k] for k in ("ema", "alpha")}
    assert recipe_settings("m1m2", 100, "m1")["ema"] == 0  # from a trained M1: the results table's recipe
    assert of_train("--m1-run", free, "--ema", "0.5", "--alpha", "0.2")["alpha"] == 0.2
    assert of_train("--fresh-m1", "--m1-epochs", "7")["m1_epochs"] == 7
    said = capsys.readouterr().out  # train names the recipe's start and what it changes
    assert f"trained first, {FROM_SCRATCH['m1_epochs']} epochs" in said and "The recipe from scratch averages" in said
    assert "The recipe from clusters averages" in said and f"--alpha {FROM_CLUSTERS['alpha']}" in said
