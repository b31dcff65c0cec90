"""M1 + label spreading: a transductive classifier on M1's latent means that uses the unlabelled images.

The counterpart of the paper's M1+TSVM. Every image's feature is z1 = E[z1|x] on M1's active units; a k-nearest-
neighbour graph joins the N labelled training images, the unlabelled rest of the training set and the validation
and test images (their labels unused), and labels spread along it (Zhou et al. 2004, scikit-learn's
LabelSpreading): F ← α·S·F + (1 − α)·Y until it settles, each image taking the class of its largest F.

python bench/spreading.py --labels 100 --seeds 0,1,2
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from ssvae_core.data import Dataset, label_split
from ssvae_core.models import M1
from ssvae_core.train import active_units, error_rate, m1_features

K_NEIGHBOURS = 20  # neighbours per image in the graph (chosen on validation, docs/experiments.md)
ALPHA = 0.99  # how much of its label an image takes from its neighbours per step (chosen on validation)


def latent_means(m1: M1, data: Dataset, threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) latent means of M1 on its active units (variance of the mean above `threshold`)."""
    m1.eval()
    z_train = m1_features(m1, data.x_train)
    active = active_units(z_train, threshold)
    return tuple(z[:, active].cpu().numpy() for z in (z_train, m1_features(m1, data.x_val),
                                                      m1_features(m1, data.x_test)))


def spread(z_train: np.ndarray, labelled: np.ndarray, y_labelled: np.ndarray, z_extra: np.ndarray,
           k: int = K_NEIGHBOURS, alpha: float = ALPHA, max_iter: int = 400) -> np.ndarray:
    """Classes of every image of [z_train; z_extra] after spreading the labels of z_train[labelled] over their kNN
    graph (a transductive fit: the predictions are those of the fitted graph, not a new model).

    All `max_iter` steps are taken (tol=0): with a small α each step changes F by little, so scikit-learn's default
    tolerance would stop after a few steps, before the labels have reached images a few neighbours away."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading  # scikit-learn loads slowly; only this classifier needs it

    z = np.concatenate([z_train, z_extra]).astype(np.float32)
    y = np.full(len(z), -1, dtype=np.int64)
    y[labelled] = y_labelled
    model = LabelSpreading(kernel="knn", n_neighbors=k, alpha=alpha, max_iter=max_iter, tol=0.0,
                           n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: reaching max_iter is the plan
        return model.fit(z, y).transduction_


def spreading_error(m1: M1, data: Dataset, n_labels: int, seed: int, k: int = K_NEIGHBOURS, alpha: float = ALPHA,
                    features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> dict:
    """Validation and test error (%) of M1 + label spreading with `n_labels` training labels drawn with `seed`
    (the same draw as training M2 with that seed); `features` reuses latent_means."""
    z_train, z_val, z_test = features if features is not None else latent_means(m1, data)
    labelled, _ = label_split(data.y_train, n_labels, data.num_classes, seed)
    lab = labelled.numpy()
    pred = spread(z_train, lab, data.y_train.cpu().numpy()[lab], np.concatenate([z_val, z_test]), k, alpha)
    n_tr, n_val = len(z_train), len(z_val)
    return {"labels": n_labels, "seed": seed, "k": k, "alpha": alpha,
            "val_error": error_rate(torch.from_numpy(pred[n_tr:n_tr + n_val]), data.y_val.cpu()),
            "test_error": error_rate(torch.from_numpy(pred[n_tr + n_val:]), data.y_test.cpu())}
