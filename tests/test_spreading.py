"""M1 + label spreading: labels spread over the kNN graph of M1's latent means, unlabelled images included."""

import numpy as np
import pytest

from ssvae_core import spreading
from ssvae_core.classifiers import SpreadingClassifier, fit_latent_classifier, spread
from ssvae_core.train import Trainer, evaluate
from tests.test_train import small_cfg


def two_moons(n: int = 400, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two interleaved half circles: a shape a nearest-labelled-point rule gets wrong and spreading gets right."""
    from sklearn.datasets import make_moons

    return make_moons(n, noise=0.05, random_state=seed)


def test_spread_follows_the_unlabelled_structure():
    z, y = two_moons()
    lab = np.array([int(np.flatnonzero(y == 0)[0]), int(np.flatnonzero(y == 1)[0])])  # one label per class
    pred = spread(z[:300], lab, y[lab], z[300:], k=7, alpha=0.2)
    assert pred.shape == (400,)
    assert (pred == y).mean() > 0.97
    knn = fit_latent_classifier("knn", z[lab], y[lab]).predict(z)  # labelled points only
    assert (knn == y).mean() < 0.9


def test_spreading_error_on_a_small_m1(digits):
    trainer = Trainer(small_cfg("m1", epochs=8), digits)
    list(trainer.epochs())
    feats = spreading.latent_means(trainer.model, digits)
    assert [len(f) for f in feats] == [len(digits.y_train), len(digits.y_val), len(digits.y_test)]
    assert feats[0].shape[1] == feats[2].shape[1] <= trainer.model.z_dim
    r = spreading.spreading_error(trainer.model, digits, 50, 0, features=feats)
    assert r["labels"] == 50 and r["seed"] == 0
    assert 0.0 <= r["test_error"] < 60.0 and 0.0 <= r["val_error"] < 60.0  # chance is 90%
    again = spreading.spreading_error(trainer.model, digits, 50, 0)
    assert again["test_error"] == r["test_error"]  # deterministic: the same draw, the same graph


def test_spreading_classifier_uses_the_unlabelled_points_and_predicts_new_ones():
    z, y = two_moons(500, seed=1)
    lab = np.array([int(np.flatnonzero(y == 0)[0]), int(np.flatnonzero(y == 1)[0])])
    rest = np.setdiff1d(np.arange(400), lab)  # the unlabelled points; 400..499 are new
    made = fit_latent_classifier("spreading", z[lab], y[lab], z[rest])
    assert isinstance(made, SpreadingClassifier) and made.transductive  # the defaults: k = 20, α = 0.99
    clf = SpreadingClassifier(k=7, alpha=0.2).fit(z[lab], y[lab], z[rest])  # a graph that suits two moons
    assert (clf.predict(z[400:]) == y[400:]).mean() > 0.97  # the new points join the graph
    whole = spread(z[:400], lab, y[lab], z[400:], k=clf.k, alpha=clf.alpha)  # the same graph, other order
    assert (clf.predict(z[400:]) == whole[400:]).mean() > 0.97
    inductive = SpreadingClassifier(k=10, alpha=0.99, transductive=False).fit(z[lab], y[lab], z[rest])
    assert (inductive.predict(z[400:]) == y[400:]).mean() > 0.97  # by their nearest graph points
    alone = SpreadingClassifier(k=1).fit(z[lab], y[lab], z[:0]).predict(z[400:])  # no unlabelled points: 1-NN
    assert (alone == y[400:]).mean() < 0.9
    with pytest.raises(ValueError, match="unlabelled"):
        fit_latent_classifier("spreading", z[lab], y[lab])


def test_m1_trains_with_label_spreading(digits):
    trainer = Trainer(small_cfg("m1", epochs=2, classifier="spreading"), digits)
    history = list(trainer.epochs())
    assert isinstance(trainer.latent_classifier, SpreadingClassifier)
    knn = Trainer(small_cfg("m1", epochs=2), digits)
    list(knn.epochs())
    assert [h["val_elbo"] for h in history] == [h["val_elbo"] for h in knn.history]  # the same M1 either way
    # each epoch is scored by 3-NN (cheap); label spreading runs once, on the kept M1, and gives the run's errors
    assert [h["classifier"] for h in history] == ["knn", "knn"]
    assert [h["test_error"] for h in history] == [h["test_error"] for h in knn.history]
    assert trainer.best["classifier"] == "spreading" and knn.best["classifier"] == "knn"
    assert 0.0 <= trainer.best["test_error"] < 60.0  # chance is 90%
    assert trainer.best["test_error"] != knn.best["test_error"]
    res = evaluate(trainer.model, trainer.cfg, digits)  # a saved run is evaluated with its own classifier
    assert res["test_error"] == trainer.best["test_error"] and res["val_error"] == trainer.best["val_error"]
