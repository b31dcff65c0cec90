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
    graph (a transductive fit: the predictions are those of the fitted graph, not a new model)."""
    z = np.concatenate([z_train, z_extra]).astype(np.float32)
    y = np.full(len(z), -1, dtype=np.int64)
    y[labelled] = y_labelled
    return _label_spreading(z, y, k, alpha, max_iter).transduction_


class SpreadingClassifier:
    """M1's classifier that uses the unlabelled images: labels spread over the kNN graph of the labelled and
    unlabelled latent means.

    Transductive (the default, like the paper's M1+TSVM): predict(z) spreads the labels over one graph of the
    fitted points and the query points z together and returns the query points' classes, so ask for all of them
    in one call (one fit per call; a point's class depends on the others asked with it). Inductive
    (transductive=False): fit() spreads over the fitted points once, and predict(z) gives each query point the
    summed spread labels of its k nearest fitted points (scikit-learn's LabelSpreading.predict)."""

    def __init__(self, k: int = K_NEIGHBOURS, alpha: float = ALPHA, max_iter: int = 400, transductive: bool = True):
        """A classifier with k neighbours per point, clamping factor alpha and max_iter spreading steps."""
        self.k, self.alpha, self.max_iter, self.transductive = k, alpha, max_iter, transductive
        self.points: np.ndarray | None = None  # the labelled points first, then the unlabelled ones
        self.y: np.ndarray | None = None
        self.model = None  # inductive: the fitted LabelSpreading

    def fit(self, z: np.ndarray, y: np.ndarray, z_unlabelled: np.ndarray) -> SpreadingClassifier:
        """Keep the labelled points `z`, `y` and the unlabelled `z_unlabelled` (inductive: and spread over them now);
        self."""
        self.points = np.concatenate([z, z_unlabelled]).astype(np.float32)
        self.y = np.asarray(y, dtype=np.int64)
        if not self.transductive:
            self.model = _label_spreading(self.points, self._targets(0), self.k, self.alpha, self.max_iter)
        return self

    def predict(self, z: np.ndarray) -> np.ndarray:
        """The class of each row of `z`: its own after spreading over the graph with z in it (transductive), else
        the largest summed spread label of its k nearest fitted points."""
        if self.points is None:
            raise RuntimeError("SpreadingClassifier.predict before fit")
        z = np.asarray(z, dtype=np.float32)
        if not self.transductive:
            return self.model.predict(z)
        model = _label_spreading(np.concatenate([self.points, z]), self._targets(len(z)), self.k, self.alpha,
                                 self.max_iter)
        return model.transduction_[len(self.points):]

    def _targets(self, extra: int) -> np.ndarray:
        """The labels of the fitted points and `extra` query points, -1 where unlabelled."""
        out = np.full(len(self.points) + extra, -1, dtype=np.int64)
        out[:len(self.y)] = self.y
        return out


def _label_spreading(points: np.ndarray, targets: np.ndarray, k: int, alpha: float, max_iter: int):
    """scikit-learn's LabelSpreading (kNN kernel) fitted on `points` with `targets` (-1: unlabelled), all
    `max_iter` steps taken (tol=0): with a small α each step changes F by little, so the default tolerance would
    stop after a few steps, before the labels have reached images a few neighbours away."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.semi_supervised import LabelSpreading  # scikit-learn loads slowly; only this classifier needs it

    model = LabelSpreading(kernel="knn", n_neighbors=min(k, len(points) - 1), alpha=alpha, max_iter=max_iter,
                           tol=0.0, n_jobs=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # tol=0: reaching max_iter is the plan
        return model.fit(points, targets)


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
