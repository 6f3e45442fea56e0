"""Checks of a child triplet function before any training (Haiku, eager, on tiny random inputs).

The contract (task docs, conf/task/clrs.yaml): ``get_triplet_msgs(z, edge_fts, graph_fts,
nb_triplet_fts, out_size)`` with z (B, N, 2H), edge_fts (B, N, N, H), graph_fts (B, H) returns finite
triplet messages (B, N, N, out_size), each batch row computed from its own inputs only.
``check_triplet_fn`` raises ``ChildFailure``: BUILD_ERROR (wrong signature, raises), SHAPE_ERROR
(wrong shape, non-finite values) or BATCH_DEPENDENCE.
"""

from __future__ import annotations

import inspect

import numpy as np

from evo.outcome import BATCH_DEPENDENCE, BUILD_ERROR, SHAPE_ERROR, ChildFailure
from evo.tasks.child import build_failure

ARGS = ("z", "edge_fts", "graph_fts", "nb_triplet_fts", "out_size")
TOLERANCE = 1e-4


def check_signature(fn) -> None:
    if not callable(fn):
        raise ChildFailure(BUILD_ERROR, f"get_triplet_msgs is a {type(fn).__name__}, not a function")
    try:
        inspect.signature(fn).bind(*ARGS)
    except TypeError as e:
        raise ChildFailure(BUILD_ERROR, f"get_triplet_msgs cannot be called as get_triplet_msgs({', '.join(ARGS)}): {e}") from None
    except ValueError:  # no signature (a builtin): let the call below decide
        pass


def check_triplet_fn(fn, hidden: int, nb_triplet_fts: int, nodes: int = 5, batch: int = 3, seed: int = 0) -> None:
    import haiku as hk
    import jax

    check_signature(fn)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((batch, nodes, 2 * hidden)).astype(np.float32)
    e = rng.standard_normal((batch, nodes, nodes, hidden)).astype(np.float32)
    g = rng.standard_normal((batch, hidden)).astype(np.float32)
    f = hk.transform(lambda z, e, g: fn(z, e, g, nb_triplet_fts, hidden))
    try:
        params = f.init(jax.random.PRNGKey(seed), z, e, g)
        out = f.apply(params, None, z, e, g)
    except Exception as exc:  # noqa: BLE001 - whatever the child's code raises is its build error
        raise build_failure(exc, "get_triplet_msgs on (B=3, N=5) inputs") from None
    expected = (batch, nodes, nodes, hidden)
    shape = getattr(out, "shape", None)
    if shape != expected:
        raise ChildFailure(SHAPE_ERROR, f"get_triplet_msgs returned {type(out).__name__} of shape {shape}, "
                                        f"expected (B, N, N, out_size) = {expected}")
    out = np.asarray(out)
    if not np.all(np.isfinite(out)):
        raise ChildFailure(SHAPE_ERROR, "get_triplet_msgs returned non-finite values on random inputs")
    alone = np.asarray(f.apply(params, None, z[:1], e[:1], g[:1]))
    if np.max(np.abs(alone - out[:1])) > TOLERANCE * max(1.0, float(np.max(np.abs(out)))):
        raise ChildFailure(BATCH_DEPENDENCE, "the messages of one graph change with the other graphs of the batch")
