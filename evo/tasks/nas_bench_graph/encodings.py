"""Vectors of NAS-Bench-Graph architectures for a predictor: the benchmark's structural encodings and
COLE's code-LM embeddings of the rendered class, cached on disk by table key.

    adjacency   the 5 x 5 DAG (input + 4 nodes, upper triangle; node j reads link[j]) flattened, then
                each node's operation one-hot (9 operations): 10 + 36 = 46 values. Equal listings of
                one network can differ (branch order); the table key does not, the encoding may.
    path        BANANAS's path encoding (White et al. 2021): one indicator per input-to-output path,
                a path being the sequence of operations it passes (lengths 1..4; 9 + 81 + 729 + 6561 =
                7,380 features; ``structural`` keeps the columns of paths that occur). A path ends at a leaf (the cell's output sums the leaves). It depends
                only on the network, so every listing of one architecture has the same encoding.
    minilm, operator   COLE: the packaged MiniLM, or the operator LM's mean last hidden state
                (evo.search.surrogate.MiniLMEmbedder / LMEmbedder), of ``render(arch)``.

``EmbeddingCache`` stores vectors in SQLite (one row per table key), so a long embedding job can be
stopped and resumed, and later benchmarks read the vectors instead of recomputing them.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from evo.tasks.nas_bench_graph.render import render
from evo.tasks.nas_bench_graph.space import NODES, Architecture, operations

STRUCTURAL = ("adjacency", "path")


def adjacency_encoding(arch: Architecture) -> np.ndarray:
    ops = operations()
    adj = np.zeros((NODES + 1, NODES + 1), np.float32)
    for j, src in enumerate(arch.link):
        adj[src, j + 1] = 1.0
    onehot = np.zeros((NODES, len(ops)), np.float32)
    for j, op in enumerate(arch.ops):
        onehot[j, ops.index(op)] = 1.0
    return np.concatenate([adj[np.triu_indices(NODES + 1, 1)], onehot.ravel()])


def paths(arch: Architecture) -> list[tuple[str, ...]]:
    """The input-to-output paths of ``arch``, each as the operations along it (one per leaf: every node
    has one input, so the path to a leaf is unique)."""
    out = []
    for leaf in arch.leaves():
        path, node = [], leaf
        while True:
            path.append(arch.ops[node])
            if arch.link[node] == 0:
                break
            node = arch.link[node] - 1
        out.append(tuple(reversed(path)))
    return out


def path_features() -> int:
    k = len(operations())
    return sum(k ** n for n in range(1, NODES + 1))


def path_indices(arch: Architecture) -> list[int]:
    """The positions of ``arch``'s paths in the 7,380-long path encoding."""
    ops = {op: i for i, op in enumerate(operations())}
    k = len(ops)
    out = []
    for path in paths(arch):
        offset = sum(k ** n for n in range(1, len(path)))   # paths of shorter length come first
        index = 0
        for op in path:
            index = index * k + ops[op]
        out.append(offset + index)
    return out


def path_encoding(arch: Architecture) -> np.ndarray:
    vec = np.zeros(path_features(), np.float32)
    vec[path_indices(arch)] = 1.0
    return vec


def structural(name: str, archs: Sequence[Architecture]) -> np.ndarray:
    if name == "path":   # only the columns of paths that occur (the whole space x 7,380 would be 0.8 GB)
        rows = [path_indices(a) for a in archs]
        used = {c: j for j, c in enumerate(sorted({c for r in rows for c in r}))}
        X = np.zeros((len(archs), len(used)), np.float32)
        for i, r in enumerate(rows):
            X[i, [used[c] for c in r]] = 1.0
        return X
    return np.stack([adjacency_encoding(a) for a in archs])


class EmbeddingCache:
    """SQLite file of (embedder, table key) -> float32 vector, plus the seconds each batch took."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.db = sqlite3.connect(self.path)
        self.db.execute("CREATE TABLE IF NOT EXISTS vectors (embedder TEXT, key INTEGER, vector BLOB, "
                        "PRIMARY KEY (embedder, key))")
        self.db.execute("CREATE TABLE IF NOT EXISTS batches (embedder TEXT, count INTEGER, seconds REAL, "
                        "chars INTEGER, at REAL)")
        self.db.commit()

    def keys(self, embedder: str) -> set[int]:
        return {k for (k,) in self.db.execute("SELECT key FROM vectors WHERE embedder = ?", (embedder,))}

    def get(self, embedder: str, keys: Iterable[int]) -> dict[int, np.ndarray]:
        want = set(int(k) for k in keys)
        out = {}
        for k, blob in self.db.execute("SELECT key, vector FROM vectors WHERE embedder = ?", (embedder,)):
            if k in want:
                out[k] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put(self, embedder: str, vectors: dict[int, np.ndarray], seconds: float, chars: int) -> None:
        self.db.executemany("INSERT OR REPLACE INTO vectors VALUES (?, ?, ?)",
                            [(embedder, int(k), np.asarray(v, np.float32).tobytes()) for k, v in vectors.items()])
        self.db.execute("INSERT INTO batches VALUES (?, ?, ?, ?, ?)", (embedder, len(vectors), seconds, chars, time.time()))
        self.db.commit()

    def cost(self, embedder: str) -> dict:
        n, s, c = self.db.execute("SELECT SUM(count), SUM(seconds), SUM(chars) FROM batches WHERE embedder = ?",
                                  (embedder,)).fetchone()
        return {"embedded": int(n or 0), "seconds": float(s or 0.0),
                "seconds_per_architecture": (s / n) if n else None, "mean_chars": (c / n) if n else None}

    def close(self) -> None:
        self.db.close()


def embed_into(cache: EmbeddingCache, embedder, name: str, archs: Sequence[Architecture], batch: int = 32,
               log=print) -> None:
    """Embed the rendered class of every ``arch`` the cache lacks for ``name``, ``batch`` at a time,
    committing each batch (stop and rerun to resume)."""
    have = cache.keys(name)
    todo = [a for a in archs if a.key() not in have]
    log(f"{name}: {len(archs) - len(todo)} cached, {len(todo)} to embed")
    for start in range(0, len(todo), batch):
        chunk = todo[start:start + batch]
        texts = [render(a) for a in chunk]
        t0 = time.perf_counter()
        vectors = embedder.embed(texts)
        seconds = time.perf_counter() - t0
        cache.put(name, {a.key(): v for a, v in zip(chunk, vectors)}, seconds, sum(map(len, texts)))
        log(f"{name}: {start + len(chunk)}/{len(todo)} ({seconds / len(chunk):.3f} s/architecture)")


ENCODINGS = ("adjacency", "path", "minilm", "operator")
OPERATOR_NAME = "operator:packaged:gemma3-270m:mean"   # benchmarks/nas_bench_graph_embed.py's cache name


def encode(name: str, archs: Sequence[Architecture], cache: EmbeddingCache = None) -> np.ndarray:
    """The feature rows of ``archs`` under encoding ``name``; COLE's come from ``cache`` and must all be
    there (embed them first). Columns constant over ``archs`` are dropped: most of the 7,380 paths never
    occur in a subset, and a constant feature tells a predictor nothing."""
    if name in STRUCTURAL:
        X = structural(name, archs)
    else:
        stored = {"minilm": "minilm", "operator": OPERATOR_NAME}[name]
        if cache is None:
            raise ValueError(f"encoding {name!r} needs the embedding cache")
        got = cache.get(stored, [a.key() for a in archs])
        missing = sum(a.key() not in got for a in archs)
        if missing:
            raise ValueError(f"{missing} of {len(archs)} architectures have no {stored} embedding in {cache.path}: "
                             f"run benchmarks/nas_bench_graph_embed.py --embedder {name} first")
        X = np.stack([got[a.key()] for a in archs])
    return X[:, X.std(0) > 0]
