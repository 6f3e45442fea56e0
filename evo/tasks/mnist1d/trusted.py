"""TRUSTED STAGE of an MNIST-1D evaluation: exported modules in, the numbers the search acts on out.

``score_export`` runs in a fresh sandboxed process that never runs child Python: it gets only the serialized
``jax.export`` modules that :func:`evo.tasks.mnist1d.harness.export_source` made in the untrusted process,
checks them (evo/sandbox/exported.py: no custom calls but jax's shape assertions, no host transfers, no effects;
constants counted as parameters), runs the pre-training checks on them (finite (batch, 10) logits, batch
independence: evo/tasks/mnist1d/checks.py), trains with optax and scores on the validation and test splits,
all with trusted code. The labels of the validation and test splits exist only in this process.

What the child still decides is what its modules compute: the forward pass, and the gradient of the (trusted)
cross-entropy it was traced with (``loss_grad``, exported next to the forward pass because an exported VJP
made training 1.2-1.8x slower on the GRU and residual-CNN seeds, while the exported gradient runs at native
speed). The gradient module only ever sees training batches: it is the child's learning rule, not a channel
to its score, which is measured here on held-out data through the forward module.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from evo.outcome import BUILD_ERROR, ChildFailure
from evo.sandbox.exported import deserialize, inspect_modules
from evo.tasks.mnist1d.checks import check_model
from evo.tasks.mnist1d.data import load_splits
from evo.tasks.mnist1d.train import INIT_BATCH, init_variables, train_and_evaluate


class ExportedModel:
    """``init``/``apply`` with the signatures of a ``flax.linen`` Module, backed by exported modules, so the
    checks and the trainer written for Flax models run unchanged on them."""

    def __init__(self, init, apply):
        self._init, self._apply = init, apply

    def init(self, key, x):
        if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
            key = jax.random.key_data(key)  # the raw uint32[2] threefry key the module was exported with
        return self._init.call(key, x)

    def apply(self, variables, x):
        return self._apply.call(variables["params"], x)


def load_model(exported: dict, platform: str | None = None) -> tuple[ExportedModel, object, int]:
    """(model, loss_grad, baked constants) from the untrusted stage's ``exported``; BUILD_ERROR if unusable."""
    if not isinstance(exported, dict) or set(exported) != {"init", "apply", "loss_grad"}:
        raise ChildFailure(BUILD_ERROR, "the untrusted stage returned no exported init/apply/loss_grad modules")
    modules = {what: deserialize(exported[what], what) for what in ("init", "apply", "loss_grad")}
    report = inspect_modules(modules, platform)
    return ExportedModel(modules["init"], modules["apply"]), modules["loss_grad"], report.baked_parameters


def _check_gradient_tree(loss_grad, params) -> None:
    """The gradient module must return (scalar loss, one gradient per parameter, same shapes)."""
    expected = jax.tree_util.tree_structure((0.0, params))
    got = jax.tree_util.tree_unflatten(loss_grad.out_tree, loss_grad.out_avals)
    if loss_grad.out_tree != expected:
        raise ChildFailure(BUILD_ERROR, "the exported loss_grad does not return (loss, gradients of the params)")
    loss, grads = got
    if loss.shape != () or any(g.shape != jnp.shape(p) or g.dtype != p.dtype
                               for g, p in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(params))):
        raise ChildFailure(BUILD_ERROR, "the exported loss_grad's outputs do not match the parameters' shapes")


def score_export(code: str = "", *, data_path: str, exported: dict | None = None, **train_kwargs) -> dict:
    """Check, train and score an exported child (the paper's EVAL); see the module docstring.

    ``code`` is ignored (the sandbox passes every entry one; this stage never runs child source). Returns what
    ``train_and_evaluate`` returns plus ``baked_constants`` (already included in ``num_params``) and
    ``device``. Raises ``ChildFailure`` (BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN)."""
    del code
    model, loss_grad, baked = load_model(exported, jax.default_backend())
    check_model(model)
    params = init_variables(model, jax.random.key(train_kwargs.get("seed", 0)),
                            jnp.zeros((INIT_BATCH, 40), jnp.float32)).get("params", {})
    _check_gradient_tree(loss_grad, params)
    result = train_and_evaluate(model, load_splits(data_path), loss_and_grad=loss_grad.call, **train_kwargs)
    result["num_params"] += baked
    return {**result, "baked_constants": baked, "device": jax.default_backend()}
