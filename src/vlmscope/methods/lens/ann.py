"""Nearest-neighbour indexes over unit vectors (cosine = inner product), built with FAISS.

Small corpora get an exact ``IndexFlatIP``. Above a size threshold an ``IndexIVFFlat`` is used:
k-means cells trained on a sample, vectors added in streamed batches, and ``nprobe`` (cells
visited per query) chosen as the smallest power of two whose recall@10 against exact search on
held-out queries reaches a target. That measured recall is returned with the index so it can be
written beside it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import numpy as np

from ...errors import VlmscopeError

APPROX_ABOVE = 200_000  # vectors; below this an exact flat index is fast enough
TARGET_RECALL = 0.95


def faiss_module():
    """FAISS, or a one-line error saying which extra installs it."""
    try:
        import faiss
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise VlmscopeError("the contextual lens needs faiss: pip install 'vlmscope[lens]' (faiss-cpu)") from e
    return faiss


def normalize(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm, float32 (a zero row stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=-1, keepdims=True)
    return np.ascontiguousarray(x / np.maximum(n, 1e-12))


def n_cells(n: int) -> int:
    """IVF cells for n vectors: about 4 sqrt(n), a power of two, at least 16."""
    return max(16, 2 ** round(math.log2(4 * math.sqrt(max(n, 1)))))


def exact_search(batches: Callable[[], Iterable[np.ndarray]], queries: np.ndarray, k: int):
    """Exact top-k inner products of `queries` over a corpus streamed in batches (never all in
    memory): (scores [q, k], ids [q, k]) with ids counted across batches."""
    faiss = faiss_module()
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), k), -np.inf, dtype=np.float32)
    best_i = np.full((len(q), k), -1, dtype=np.int64)
    base = 0
    for x in batches():
        flat = faiss.IndexFlatIP(q.shape[1])
        flat.add(np.ascontiguousarray(x, dtype=np.float32))
        s, i = flat.search(q, min(k, len(x)))
        s, i = np.concatenate([best_s, s], 1), np.concatenate([best_i, np.where(i >= 0, i + base, -1)], 1)
        order = np.argsort(-s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(s, order, 1), np.take_along_axis(i, order, 1)
        base += len(x)
    return best_s, best_i


def recall_at(found: np.ndarray, truth: np.ndarray) -> float:
    """Mean fraction of each query's true top-k ids that the approximate search returned."""
    k = truth.shape[1]
    return float(np.mean([len(set(f[:k]) & set(t)) / k for f, t in zip(found, truth)]))


def build(
    batches: Callable[[], Iterable[np.ndarray]],
    dim: int,
    n: int,
    approx_above: int = APPROX_ABOVE,
    calib_queries: np.ndarray | None = None,
    target: float = TARGET_RECALL,
    seed: int = 0,
    nlist: int | None = None,
) -> tuple[object, dict]:
    """An index over the unit vectors yielded by `batches()` (called once per pass), and a dict
    describing it: ``kind`` (flat / ivf), and for ivf ``nlist``, ``nprobe``, ``recall_at_10``.

    `calib_queries` (unit vectors not in the corpus) calibrate ``nprobe``; by default 500 corpus
    vectors with noise added."""
    faiss = faiss_module()
    if n <= approx_above:
        index = faiss.IndexFlatIP(dim)
        for x in batches():
            index.add(np.ascontiguousarray(x, dtype=np.float32))
        return index, {"kind": "flat", "vectors": int(index.ntotal), "recall_at_10": 1.0}
    nlist = nlist or n_cells(n)
    rng = np.random.default_rng(seed)
    want = min(n, 40 * nlist)
    keep = np.sort(rng.choice(n, size=want, replace=False))
    samples, base = [], 0
    for x in batches():  # sample without holding the corpus
        sel = keep[(keep >= base) & (keep < base + len(x))] - base
        samples.append(np.asarray(x[sel], dtype=np.float32))
        base += len(x)
    train = np.ascontiguousarray(np.concatenate(samples))
    quantizer = faiss.IndexFlatIP(dim)
    index = faiss.IndexIVFFlat(quantizer, dim, nlist, faiss.METRIC_INNER_PRODUCT)
    index.cp.spherical = True
    index.train(train)
    for x in batches():
        index.add(np.ascontiguousarray(x, dtype=np.float32))
    if calib_queries is None:
        pick = train[rng.choice(len(train), size=min(500, len(train)), replace=False)]
        calib_queries = normalize(pick + rng.normal(0, 0.5 / math.sqrt(dim), pick.shape).astype(np.float32))
    _, truth = exact_search(batches, calib_queries, 10)
    nprobe, recall = choose_nprobe(index, calib_queries, truth, target)
    index.nprobe = nprobe
    return index, {
        "kind": "ivf",
        "vectors": int(index.ntotal),
        "nlist": nlist,
        "nprobe": nprobe,
        "recall_at_10": recall,
        "recall_queries": int(len(calib_queries)),
        "target_recall": target,
    }


def choose_nprobe(index, queries: np.ndarray, truth: np.ndarray, target: float = TARGET_RECALL) -> tuple[int, float]:
    """Smallest power-of-two nprobe whose recall@10 on `queries` reaches `target`."""
    nprobe = 1
    while True:
        index.nprobe = nprobe
        _, found = index.search(np.ascontiguousarray(queries, dtype=np.float32), truth.shape[1])
        r = recall_at(found, truth)
        if r >= target or nprobe >= index.nlist:
            return nprobe, r
        nprobe = min(2 * nprobe, index.nlist)
