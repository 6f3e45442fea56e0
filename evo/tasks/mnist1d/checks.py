"""Checks run on a child model before it is trained (cheap: a few jitted forward passes on random data).

``check_model`` raises ``ChildFailure`` with BUILD_ERROR (init fails, unsupported variables),
SHAPE_ERROR (wrong output shape or dtype, non-finite output, fails on another batch size) or
BATCH_DEPENDENCE (an output row depends on other rows of the batch). The last one matters because
such a model can still have the right output shape: ``nn.Conv`` on a (batch, 40) array without a
channel axis treats the batch as the spatial axis and convolves across examples.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from evo.outcome import BATCH_DEPENDENCE, BUILD_ERROR, MEMORY, SHAPE_ERROR, ChildFailure
from evo.tasks.child import build_failure, describe
from evo.tasks.mnist1d.train import INIT_BATCH, RUN_ONCE, init_variables

BATCH = INIT_BATCH  # so that training reuses this init compilation
ALLOWED_COLLECTIONS = ("params", "intermediates")  # intermediates: `sow` is a no-op at apply time
TOLERANCE = 1e-3  # max |difference| allowed, relative to max(1, max |logit|)


def check_model(model, num_inputs: int = 40, num_classes: int = 10, seed: int = 0) -> None:
    """Raise ChildFailure unless ``model`` maps (batch, num_inputs) to finite (batch, num_classes)
    logits with every output row depending only on its own input row."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((BATCH, num_inputs)).astype(np.float32)
    # Jitted, as in training, with cheap compiler options: eager init/apply took 3-10 s per seed
    # model here, this ~1 s; and a child that only works eagerly (Python `if` on a traced value)
    # fails here rather than in training.
    try:
        variables = init_variables(model, jax.random.key(seed), jnp.asarray(x))
    except Exception as e:  # noqa: BLE001 - any error in the child's code is a build error
        raise build_failure(e, "Model.init") from None

    extra = sorted(set(variables) - set(ALLOWED_COLLECTIONS))
    if extra:
        raise ChildFailure(BUILD_ERROR, f"mutable variable collections {extra} are not supported "
                                        "(no batch statistics or other state: params only)")
    params = variables.get("params", {})
    for path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if not jnp.issubdtype(jnp.result_type(leaf), jnp.floating):
            raise ChildFailure(BUILD_ERROR, f"parameter {jax.tree_util.keystr(path)} has dtype "
                                            f"{jnp.result_type(leaf)}, not floating point")

    forward = jax.jit(model.apply, compiler_options=RUN_ONCE)

    def apply(xb: np.ndarray, what: str) -> np.ndarray:
        try:
            out = forward({"params": params}, jnp.asarray(xb))
        except Exception as e:  # noqa: BLE001
            failure = build_failure(e, "Model.apply")
            if failure.status == MEMORY:
                raise failure from None
            status = BUILD_ERROR if xb.shape[0] == BATCH else SHAPE_ERROR
            raise ChildFailure(status, f"Model.apply on {what} raised {describe(e)}") from None
        if not hasattr(out, "shape") or not hasattr(out, "dtype"):
            raise ChildFailure(SHAPE_ERROR, f"output is a {type(out).__name__}, not an array")
        expected = (xb.shape[0], num_classes)
        if tuple(out.shape) != expected:
            raise ChildFailure(SHAPE_ERROR, f"output shape {tuple(out.shape)} for input "
                                            f"{tuple(xb.shape)} ({what}), expected {expected}")
        if not jnp.issubdtype(out.dtype, jnp.floating):
            raise ChildFailure(SHAPE_ERROR, f"output dtype {out.dtype} is not floating point")
        out = np.asarray(out, np.float32)
        if not np.isfinite(out).all():
            raise ChildFailure(SHAPE_ERROR, f"output has non-finite values ({what})")
        return out

    out = apply(x, f"a batch of {BATCH}")
    atol = TOLERANCE * max(1.0, float(np.abs(out).max()))

    def same(a: np.ndarray, b: np.ndarray) -> bool:
        return float(np.abs(a - b).max()) <= atol

    # 1. Changing one row must leave every other row's output unchanged (first row, then last row).
    for row in (0, BATCH - 1):
        x2 = x.copy()
        x2[row] = 3.0 * rng.standard_normal(num_inputs).astype(np.float32)
        out2 = apply(x2, "a batch with one row changed")
        others = np.arange(BATCH) != row
        if not same(out2[others], out[others]):
            raise ChildFailure(BATCH_DEPENDENCE, f"changing input row {row} changed the outputs of "
                                                 "other rows: rows are mixed across the batch")
    # 2. Reordering the batch must reorder the outputs the same way.
    perm = rng.permutation(BATCH)
    if not same(apply(x[perm], "a shuffled batch"), out[perm]):
        raise ChildFailure(BATCH_DEPENDENCE, "shuffling the batch changed the outputs beyond reordering them")
    # 3. A row alone gives the same output as inside the full batch (one more compilation only).
    for row in (0, BATCH // 2, BATCH - 1):
        if not same(apply(x[row:row + 1], "a batch of 1"), out[row:row + 1]):
            raise ChildFailure(BATCH_DEPENDENCE, f"row {row} alone gives a different output than "
                                                 "inside a batch")
