"""M1's classifiers on latent means: 3-nearest-neighbours, an RBF SVM, and label spreading, which uses the
unlabelled images too (Zhou et al. 2004, scikit-learn's LabelSpreading): F ← α·S·F + (1 − α)·Y over a kNN graph
of labelled and unlabelled points until it settles, each point taking the class of its largest F."""

from __future__ import annotations

import warnings

import numpy as np

CLASSIFIERS = ("knn", "svm", "spreading")  # TrainConfig.classifier's values
K_NEIGHBOURS = 20  # neighbours per image in the graph (chosen on validation, docs/experiments.md)
ALPHA = 0.99  # how much of its label an image takes from its neighbours per step (chosen on validation)


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


class SpreadingClassifier:
    """M1's classifier that uses the unlabelled images: labels spread over the kNN graph of labelled and unlabelled
    latent means (fit), and a new point takes the summed spread labels of its k nearest graph points (predict).

    predict() is inductive: the graph is the one fitted, the query points do not join it, so a point's class does
    not depend on what else is asked (scikit-learn's LabelSpreading.predict). `spread` is the transductive variant
    that puts the query points into the graph too (bench/spreading.py); docs/experiments.md compares the two."""

    def __init__(self, k: int = K_NEIGHBOURS, alpha: float = ALPHA, max_iter: int = 400):
        """A classifier with k neighbours per point, clamping factor alpha and max_iter spreading steps."""
        self.k, self.alpha, self.max_iter = k, alpha, max_iter
        self.model = None

    def fit(self, z: np.ndarray, y: np.ndarray, z_unlabelled: np.ndarray) -> SpreadingClassifier:
        """Spread the labels `y` of the points `z` over the kNN graph of z and `z_unlabelled`; self."""
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.semi_supervised import LabelSpreading  # scikit-learn loads slowly

        points = np.concatenate([z, z_unlabelled]).astype(np.float32)
        targets = np.concatenate([np.asarray(y, dtype=np.int64), np.full(len(z_unlabelled), -1, dtype=np.int64)])
        self.model = LabelSpreading(kernel="knn", n_neighbors=min(self.k, len(points) - 1), alpha=self.alpha,
                                    max_iter=self.max_iter, tol=0.0, n_jobs=1)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: reaching max_iter is the plan
            self.model.fit(points, targets)
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        """The class of each row of `z`: the largest summed spread label of its k nearest fitted points."""
        if self.model is None:
            raise RuntimeError("SpreadingClassifier.predict before fit")
        return self.model.predict(np.asarray(z, dtype=np.float32))



def fit_latent_classifier(kind: str, z: np.ndarray, y: np.ndarray, z_unlabelled: np.ndarray | None = None):
    """M1's classifier fitted on labelled latent means `z`, `y`: 3-NN, an RBF SVM, or label spreading (which also
    needs the unlabelled means `z_unlabelled`)."""
    if kind == "spreading":
        if z_unlabelled is None:
            raise ValueError("label spreading needs the unlabelled latent means too (z_unlabelled)")
        return SpreadingClassifier().fit(z, y, z_unlabelled)
    from sklearn.neighbors import KNeighborsClassifier  # scikit-learn loads slowly; only M1 needs it
    from sklearn.svm import SVC

    if kind == "svm":
        return SVC(C=10.0, gamma="scale").fit(z, y)
    if kind != "knn":
        raise ValueError(f"unknown M1 classifier {kind!r}; one of {', '.join(CLASSIFIERS)}")
    return KNeighborsClassifier(n_neighbors=min(3, len(y))).fit(z, y)
