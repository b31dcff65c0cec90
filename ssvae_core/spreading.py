"""M1 + label spreading on MNIST: validation and test error of labels spread over M1's latent means.

The counterpart of the paper's M1+TSVM. Every image's feature is z1 = E[z1|x] on M1's active units; a k-nearest-
neighbour graph joins the N labelled training images and the unlabelled rest of the training set, and labels
spread along it (ssvae_core.classifiers.SpreadingClassifier). Transductive (the default, and what `train
--classifier spreading` does): the validation and test images join the graph too (their labels unused).
Inductive: they do not, and each takes the spread labels of its k nearest training images.

python bench/spreading.py --labels 100 --seeds 0,1,2
"""

from __future__ import annotations

import numpy as np
import torch

from ssvae_core.classifiers import ALPHA, K_NEIGHBOURS, SpreadingClassifier
from ssvae_core.data import Dataset, label_split
from ssvae_core.models import M1
from ssvae_core.train import active_units, error_rate, m1_features


def latent_means(m1: M1, data: Dataset, threshold: float = 0.01) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, validation, test) latent means of M1 on its active units (variance of the mean above `threshold`)."""
    m1.eval()
    z_train = m1_features(m1, data.x_train)
    active = active_units(z_train, threshold)
    return tuple(z[:, active].cpu().numpy() for z in (z_train, m1_features(m1, data.x_val),
                                                      m1_features(m1, data.x_test)))


def spreading_error(m1: M1, data: Dataset, n_labels: int, seed: int, k: int = K_NEIGHBOURS, alpha: float = ALPHA,
                    features: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
                    inductive: bool = False) -> dict:
    """Validation and test error (%) of M1 + label spreading with `n_labels` training labels drawn with `seed`
    (the same draw as training M2 with that seed); `features` reuses latent_means. Transductive (validation and
    test images in one graph with the training images, as `train --classifier spreading` does it) unless
    `inductive` (a graph of the training images only; see SpreadingClassifier)."""
    z_train, z_val, z_test = features if features is not None else latent_means(m1, data)
    labelled, unlabelled = label_split(data.y_train, n_labels, data.num_classes, seed)
    lab, y_train = labelled.numpy(), data.y_train.cpu().numpy()
    clf = SpreadingClassifier(k, alpha, transductive=not inductive)
    clf.fit(z_train[lab], y_train[lab], z_train[unlabelled.numpy()])
    pred = clf.predict(np.concatenate([z_val, z_test]))  # one graph for both (transductive)
    pred_val, pred_test = pred[:len(z_val)], pred[len(z_val):]
    return {"labels": n_labels, "seed": seed, "k": k, "alpha": alpha, "inductive": inductive,
            "val_error": error_rate(torch.from_numpy(pred_val), data.y_val.cpu()),
            "test_error": error_rate(torch.from_numpy(pred_test), data.y_test.cpu())}
