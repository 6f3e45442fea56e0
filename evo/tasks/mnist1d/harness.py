"""Sandbox entry points for MNIST-1D children: source code in, exported model out (untrusted stage).

``export_source`` runs INSIDE the sandboxed subprocess that runs the child's Python; it sees no data. The
numbers the search acts on are computed by ``evo.tasks.mnist1d.trusted.score_export`` in another, fresh
process in which no child Python ever runs (evo/sandbox/exported.py says why that is a trust boundary). jax is
imported lazily so that the search process can import ``CHILD_ENV`` from here cheaply.
"""

from __future__ import annotations

from evo.outcome import BUILD_ERROR, SHAPE_ERROR, ChildFailure
from evo.sandbox.exported import encode
from evo.tasks.child import JAX_CHILD_ENV, build_failure, describe, run_program
from evo.tasks.mnist1d.data import load_splits

CHILD_ENV = JAX_CHILD_ENV


def build_model(code: str):
    """Run the child's module code and instantiate its ``Model`` (untrusted: inside the sandbox only)."""
    Model = run_program(code, "Model")
    try:
        model = Model()
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "Model()") from None
    if not hasattr(model, "init") or not hasattr(model, "apply"):
        raise ChildFailure(BUILD_ERROR, f"Model is a {type(model).__name__}, not a flax.linen Module")
    return model


def evaluate_source(code: str, data_path: str, **train_kwargs) -> dict:
    """Both stages in THIS process (tests and benchmarks; the search runs them in two processes):
    :func:`export_source` on ``code``, then :func:`evo.tasks.mnist1d.trusted.score_export` on its output.

    Raises ``ChildFailure`` (SYNTAX_ERROR, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN); other
    exceptions escape. ``train_kwargs`` go to ``train_and_evaluate``."""
    from evo.tasks.mnist1d.trusted import score_export   # jax: not on import (the search imports CHILD_ENV)

    return score_export("", data_path=data_path, exported=export_source(code)["exported"], **train_kwargs)


def export_source(code: str, num_inputs: int = 40, init_batch: int | None = None,
                  platforms: list | None = None) -> dict:
    """UNTRUSTED STAGE (runs in the sandbox, sees no data): build the child's ``Model`` and export it.

    Returns {"exported": {"init", "apply", "loss_grad"}} of base64 ``jax.export`` serializations:
    ``init(key uint32[2], x f32[init_batch, 40]) -> variables``, ``apply(params, x f32[b, 40]) -> logits`` and
    ``loss_grad(params, x f32[b, 40], y i32[b]) -> (mean cross-entropy, d loss / d params)``, with a symbolic
    batch ``b``. Nothing this process returns is trusted: the trusted stage checks the modules and does all
    training and scoring itself (see evo/sandbox/exported.py). Raises ``ChildFailure`` for a program that cannot be
    built or exported (its own failure: it gains nothing by faking one).
    """
    # jax (and train, which imports it): here, not on import, so the search process imports CHILD_ENV cheaply
    import jax
    import jax.numpy as jnp
    from jax import export

    from evo.tasks.mnist1d.train import INIT_BATCH, cross_entropy

    init_batch = init_batch or INIT_BATCH
    model = build_model(code)
    kw = {"platforms": list(platforms)} if platforms else {}
    key = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a raw threefry key: jax.random.key_data(jax.random.key(s))
    x_init = jax.ShapeDtypeStruct((init_batch, num_inputs), jnp.float32)
    try:
        init = export.export(jax.jit(lambda k, x: model.init(k, x)), **kw)(key, x_init)
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "Model.init") from None
    variables = jax.tree_util.tree_unflatten(init.out_tree, init.out_avals)
    if not isinstance(variables, dict):
        raise ChildFailure(BUILD_ERROR, f"Model.init returned a {type(variables).__name__}, not a dict of collections")
    params = variables.get("params", {})

    def apply(p, x):
        return model.apply({"params": p}, x)

    def loss(p, x, y):
        return cross_entropy(apply(p, x), y)

    (b,) = export.symbolic_shape("b")
    x_any = jax.ShapeDtypeStruct((b, num_inputs), jnp.float32)
    try:
        forward = export.export(jax.jit(apply), **kw)(params, x_any)
        out = forward.out_avals[0] if len(forward.out_avals) == 1 else None
        if out is None or len(out.shape) != 2 or out.shape[1] != 10 or not jnp.issubdtype(out.dtype, jnp.floating):
            # the same wording as the trusted check, which sees concrete shapes
            got = "several outputs" if out is None else f"{out.dtype}{list(out.shape)}"
            raise ChildFailure(SHAPE_ERROR, f"output is {got} for input float32[b,{num_inputs}], expected "
                                            "floating point (b, 10) logits")
        loss_grad = export.export(jax.jit(jax.value_and_grad(loss)), **kw)(
            params, x_any, jax.ShapeDtypeStruct((b,), jnp.int32))
    except ChildFailure:
        raise
    except (Exception, SystemExit) as e:  # noqa: BLE001
        failure = build_failure(e, "Model.apply")
        if failure.status != BUILD_ERROR:  # MEMORY
            raise failure from None
        # Does it work on the init batch at least? Then only other batch sizes fail: a shape error.
        try:
            jax.eval_shape(apply, params, jax.ShapeDtypeStruct((init_batch, num_inputs), jnp.float32))
        except (Exception, SystemExit):  # noqa: BLE001
            raise ChildFailure(BUILD_ERROR, f"Model.apply raised {describe(e)}") from None
        raise ChildFailure(SHAPE_ERROR, f"Model.apply does not work for every batch size: {describe(e)}") from None
    return {"exported": {"init": encode(init.serialize()), "apply": encode(forward.serialize()),
                         "loss_grad": encode(loss_grad.serialize())}}


def evaluate_in_child(code: str, data_path: str, **train_kwargs) -> dict:
    """The former single-process path, kept ONLY as a reference for benchmarks/train_speed.py and for the
    attack tests (tests/test_sandbox_trust.py) that show what it let a child forge: the child's code is
    built, checked and trained in the process that also computes and reports its score. Not used by the
    search."""
    # jax (checks and train import it): here, not on import, so the search process imports CHILD_ENV cheaply
    import jax

    from evo.tasks.mnist1d.checks import check_model
    from evo.tasks.mnist1d.train import train_and_evaluate

    model = build_model(code)
    check_model(model)
    return {**train_and_evaluate(model, load_splits(data_path), **train_kwargs), "device": jax.default_backend()}
