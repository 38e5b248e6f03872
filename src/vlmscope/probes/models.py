"""The probes: logistic regression (scikit-learn) and HALP's MLP (512-256-128-1, torch).

Each probe standardises its input with the mean and standard deviation of the rows it is fitted
on, so under cross-validation the scaling is learned inside the training fold only. A fitted
probe is a handful of arrays (`tensors()`), saved as safetensors and scored without pickle.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import VlmscopeError

PROBES = ("logreg", "mlp")


class Probe:
    """Base: standardisation plus `fit(X, y)` and `score(X)` -> P(positive class) per row."""

    kind = ""

    def __init__(self, seed: int = 0):
        self.seed = seed
        self.mean: np.ndarray | None = None
        self.scale: np.ndarray | None = None

    def _standardise(self, X: np.ndarray, fit: bool = False) -> np.ndarray:
        if fit:
            self.mean = X.mean(0)
            std = X.std(0)
            self.scale = np.where(std > 1e-8, std, 1.0).astype(np.float32)
        return ((X - self.mean) / self.scale).astype(np.float32)

    def fit(self, X: np.ndarray, y: np.ndarray) -> Probe:
        raise NotImplementedError

    def score(self, X: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def tensors(self) -> dict[str, np.ndarray]:
        return {"mean": np.asarray(self.mean, np.float32), "scale": np.asarray(self.scale, np.float32)}

    def load_tensors(self, t: dict[str, np.ndarray]) -> Probe:
        self.mean, self.scale = t["mean"], t["scale"]
        return self


class LogisticProbe(Probe):
    """L2-regularised logistic regression (scikit-learn, lbfgs) on standardised features."""

    kind = "logreg"

    def __init__(self, seed: int = 0, C: float = 1.0):
        super().__init__(seed)
        self.C = C
        self.coef: np.ndarray | None = None
        self.intercept = np.zeros(1, np.float32)

    def fit(self, X, y):
        from sklearn.linear_model import LogisticRegression

        Z = self._standardise(X, fit=True)
        clf = LogisticRegression(C=self.C, max_iter=5000, random_state=self.seed).fit(Z, y)
        self.coef = clf.coef_[0].astype(np.float32)
        self.intercept = clf.intercept_.astype(np.float32)
        return self

    def score(self, X):
        z = self._standardise(X).astype(np.float64) @ self.coef.astype(np.float64) + float(self.intercept[0])
        return 1.0 / (1.0 + np.exp(-z))

    def tensors(self):
        return {**super().tensors(), "coef": self.coef, "intercept": self.intercept}

    def load_tensors(self, t):
        super().load_tensors(t)
        self.coef, self.intercept = t["coef"], t["intercept"]
        return self


class MLPProbe(Probe):
    """HALP's probe: 512-256-128-1 with ReLU, binary cross-entropy, Adam; early stopping on the
    validation loss of a stratified `val_fraction` of the training rows (best epoch kept)."""

    kind = "mlp"
    hidden = (512, 256, 128)

    def __init__(
        self,
        seed: int = 0,
        lr: float = 1e-3,
        weight_decay: float = 1e-4,
        batch_size: int = 64,
        max_epochs: int = 200,
        patience: int = 10,
        val_fraction: float = 0.15,
    ):
        super().__init__(seed)
        self.lr, self.weight_decay, self.batch_size = lr, weight_decay, batch_size
        self.max_epochs, self.patience, self.val_fraction = max_epochs, patience, val_fraction
        self.net: Any = None  # a torch Sequential once fitted (torch is imported on use)
        self.epochs_run = 0

    def _build(self, dim: int):
        import torch

        sizes = (dim, *self.hidden)
        layers: list = []
        for a, b in zip(sizes, sizes[1:]):
            layers += [torch.nn.Linear(a, b), torch.nn.ReLU()]
        return torch.nn.Sequential(*layers, torch.nn.Linear(sizes[-1], 1))

    def _split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from sklearn.model_selection import train_test_split

        idx = np.arange(len(y))
        n_val = max(2, int(round(self.val_fraction * len(y))))
        strat = y if np.bincount(y, minlength=2).min() >= 2 else None
        return train_test_split(idx, test_size=n_val, random_state=self.seed, stratify=strat)

    def fit(self, X, y):
        import torch

        y = np.asarray(y, np.int64)
        Z = self._standardise(X, fit=True)
        tr, va = self._split(y)
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # layers this small run several times faster on one thread
        try:
            self._train(Z, y, tr, va)
        finally:
            torch.set_num_threads(threads)
        return self

    def _train(self, Z: np.ndarray, y: np.ndarray, tr: np.ndarray, va: np.ndarray) -> None:
        import torch

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            self.net = self._build(Z.shape[1])
            gen = torch.Generator().manual_seed(self.seed)
            xt, yt = torch.from_numpy(Z[tr]), torch.from_numpy(y[tr]).float()
            xv, yv = torch.from_numpy(Z[va]), torch.from_numpy(y[va]).float()
            opt = torch.optim.Adam(self.net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = torch.nn.BCEWithLogitsLoss()
            best, best_state, waited = float("inf"), None, 0
            for epoch in range(self.max_epochs):
                self.net.train()
                for b in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                    opt.zero_grad()
                    loss_fn(self.net(xt[b]).squeeze(-1), yt[b]).backward()
                    opt.step()
                self.net.eval()
                with torch.no_grad():
                    val = float(loss_fn(self.net(xv).squeeze(-1), yv))
                self.epochs_run = epoch + 1
                if val < best - 1e-6:
                    best, waited = val, 0
                    best_state = {k: v.clone() for k, v in self.net.state_dict().items()}
                else:
                    waited += 1
                    if waited >= self.patience:
                        break
            self.net.load_state_dict(best_state)

    def score(self, X):
        import torch

        with torch.no_grad():
            return torch.sigmoid(self.net(torch.from_numpy(self._standardise(X))).squeeze(-1)).double().numpy()

    def tensors(self):
        return {**super().tensors(), **{f"net.{k}": v.numpy() for k, v in self.net.state_dict().items()}}

    def load_tensors(self, t):
        import torch

        super().load_tensors(t)
        self.net = self._build(len(t["mean"]))
        self.net.load_state_dict(
            {k[4:]: torch.from_numpy(np.ascontiguousarray(v)) for k, v in t.items() if k.startswith("net.")}
        )
        self.net.eval()
        return self


def make_probe(kind: str, seed: int = 0) -> Probe:
    """A fresh probe by name: ``logreg`` or ``mlp``."""
    if kind == "logreg":
        return LogisticProbe(seed)
    if kind == "mlp":
        return MLPProbe(seed)
    raise VlmscopeError(f"unknown probe {kind!r}; choose from {', '.join(PROBES)}")
