"""Sandbox entry point for MNIST-1D children: source code in, EVAL metrics out.

``evaluate_source`` runs INSIDE the sandboxed subprocess. jax is imported lazily so that the
search process can import ``CHILD_ENV`` from here cheaply.
"""

from __future__ import annotations

from evo.outcome import BUILD_ERROR, ChildFailure
from evo.tasks.child import JAX_CHILD_ENV, build_failure, run_program

CHILD_ENV = JAX_CHILD_ENV


def evaluate_source(code: str, data_path: str, **train_kwargs) -> dict:
    """Build the child's ``Model`` from ``code``, check it, train it on the splits at ``data_path``.

    Raises ``ChildFailure`` (SYNTAX_ERROR, BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN);
    other exceptions escape to the caller. ``train_kwargs`` go to ``train_and_evaluate``.
    """
    from evo.tasks.mnist1d.checks import check_model
    from evo.tasks.mnist1d.data import load_splits
    from evo.tasks.mnist1d.train import train_and_evaluate

    Model = run_program(code, "Model")
    try:
        model = Model()
    except (Exception, SystemExit) as e:  # noqa: BLE001
        raise build_failure(e, "Model()") from None
    if not hasattr(model, "init") or not hasattr(model, "apply"):
        raise ChildFailure(BUILD_ERROR, f"Model is a {type(model).__name__}, not a flax.linen Module")
    check_model(model)
    import jax
    return {**train_and_evaluate(model, load_splits(data_path), **train_kwargs), "device": jax.default_backend()}
