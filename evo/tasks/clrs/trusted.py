"""TRUSTED STAGE of a CLRS evaluation: exported triplet-function modules in, the numbers the search acts on out.

``score_export`` runs in a sandboxed process that never runs child Python (pooled, like MNIST-1D's trusted
stage): it gets only the serialized ``jax.export`` modules that :func:`evo.tasks.clrs.harness.export_source`
made in the untrusted process (evo/tasks/clrs/exporting.py says which), checks them (evo/sandbox/exported.py: no custom
calls but an allowlist, no host transfers, no effects; constants counted as parameters), and trains and scores
dm-clrs's Triplet-GMPNN with them, all with trusted code: :class:`ExportedTripletFn` stands where the child's
``get_triplet_msgs`` stood in ``processor.EvolvedTripletGMPNN``, so dm-clrs's own model, loss, training step,
parameter count and evaluation run unchanged around it. The validation and test labels exist only here.

``ExportedTripletFn`` owns the child's parameters as ordinary Haiku parameters (``hk.get_parameter``, with
the names and shapes of the exported ``init``'s outputs, under the processor's ``triplet_msgs`` scope as
before), initialised by the exported ``init`` the first time they are created, and computes the messages
with the exported forward module, differentiated through the exported backward module (``jax.custom_vjp``).
It draws the random keys the modules take from dm-clrs's Haiku key sequence, as many as the child's code
drew, at the same point: parameters, losses and scores are those of the former single-process path.

What the child still decides is what its modules compute: its triplet messages and their gradient. The
gradient only ever sees training batches; scores are measured on held-out data through the forward module.
"""

from __future__ import annotations

from pathlib import Path

import haiku as hk
import jax
import jax.numpy as jnp
import numpy as np

from evo.sandbox.exported import deserialize, inspect_modules
from evo.outcome import BUILD_ERROR, SHAPE_ERROR, ChildFailure

MODULES = ("init", "forward", "backward")


def _shape_text(shape) -> tuple:
    return tuple(str(d) for d in shape)


class ExportedTripletFn:
    """``get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size)`` backed by exported modules."""

    def __init__(self, modules: dict, hidden_dim: int, nb_triplet_fts: int):
        self.init_module, self.forward_module, self.backward_module = (modules[m] for m in MODULES)
        self.hidden_dim, self.nb_triplet_fts = hidden_dim, nb_triplet_fts
        self._check_signatures()
        params, _ = jax.tree_util.tree_unflatten(self.init_module.out_tree, self.init_module.out_avals)
        self.param_avals = params
        self.init_draws = self.init_module.in_avals[0].shape[0]
        self.apply_draws = self.forward_module.in_avals[len(jax.tree_util.tree_leaves(params))].shape[0]

        @jax.custom_vjp
        def messages(params, keys, z, e, g):
            return self.forward_module.call(params, keys, z, e, g)[0]

        def forward(params, keys, z, e, g):
            out, residuals = self.forward_module.call(params, keys, z, e, g)
            return out, (residuals, keys)

        def backward(saved, d_out):
            residuals, keys = saved
            d_params, d_z, d_e, d_g = self.backward_module.call(residuals, d_out)
            return d_params, np.zeros(keys.shape, jax.dtypes.float0), d_z, d_e, d_g

        messages.defvjp(forward, backward)
        self._messages = messages

    def _check_signatures(self) -> None:
        """The modules' inputs and outputs are the contract's, for every batch ``b`` and node count ``n``."""
        H = self.hidden_dim
        z, e, g, out = ("b", "n", str(2 * H)), ("b", "n", "n", str(H)), ("b", str(H)), ("b", "n", "n", str(H))
        init, forward, backward = self.init_module, self.forward_module, self.backward_module
        init_in = [(_shape_text(a.shape), str(a.dtype)) for a in init.in_avals]
        if (init.in_tree.num_leaves != 4 or init_in[1:] != [(z, "float32"), (e, "float32"), (g, "float32")]
                or len(init_in[0][0]) != 2 or init_in[0][0][1] != "2" or init_in[0][1] != "uint32"):
            raise ChildFailure(BUILD_ERROR, "the exported init does not take (keys, z, edge_fts, graph_fts)")
        params, msgs = jax.tree_util.tree_unflatten(init.out_tree, init.out_avals)
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            raise ChildFailure(BUILD_ERROR, "the exported init does not return Haiku parameters")
        leaves = jax.tree_util.tree_leaves(params)
        if any(not all(str(d).isdigit() for d in p.shape) for p in leaves):
            raise ChildFailure(SHAPE_ERROR, "get_triplet_msgs has parameters whose shapes depend on the batch or "
                                            "the number of nodes")
        if _shape_text(msgs.shape) != out or str(msgs.dtype) != "float32":
            raise ChildFailure(SHAPE_ERROR, f"get_triplet_msgs returns {msgs.dtype}{list(_shape_text(msgs.shape))}, "
                                            f"expected float32 (B, N, N, out_size) = (b, n, n, {H})")
        want_forward = jax.tree_util.tree_structure(((params, 0, 0, 0, 0), {}))  # (args, kwargs)
        forward_in = [(_shape_text(a.shape), str(a.dtype)) for a in forward.in_avals]
        param_in = [(_shape_text(p.shape), str(p.dtype)) for p in leaves]
        k = len(leaves)
        if (forward.in_tree != want_forward or forward_in[:k] != param_in
                or forward_in[k + 1:] != [(z, "float32"), (e, "float32"), (g, "float32")]
                or forward_in[k][1] != "uint32" or len(forward_in[k][0]) != 2 or forward_in[k][0][1] != "2"):
            raise ChildFailure(BUILD_ERROR, "the exported forward does not take (params, keys, z, edge_fts, "
                                            "graph_fts)")
        fwd_out, residuals = jax.tree_util.tree_unflatten(forward.out_tree, forward.out_avals)
        if _shape_text(fwd_out.shape) != out or str(fwd_out.dtype) != "float32" or not isinstance(residuals, list):
            raise ChildFailure(BUILD_ERROR, "the exported forward does not return (messages, residuals)")
        backward_in = [(_shape_text(a.shape), str(a.dtype)) for a in backward.in_avals]
        residual_in = [(_shape_text(r.shape), str(r.dtype)) for r in residuals]
        if (backward.in_tree != jax.tree_util.tree_structure(((residuals, 0), {}))
                or backward_in != residual_in + [(out, "float32")]):
            raise ChildFailure(BUILD_ERROR, "the exported backward does not take (residuals, d messages)")
        got = [(_shape_text(a.shape), str(a.dtype)) for a in backward.out_avals]
        if (backward.out_tree != jax.tree_util.tree_structure((params, 0, 0, 0))
                or got != param_in + [(z, "float32"), (e, "float32"), (g, "float32")]):
            raise ChildFailure(BUILD_ERROR, "the exported backward does not return the gradients of (params, z, "
                                            "edge_fts, graph_fts)")

    def __call__(self, z, edge_fts, graph_fts, nb_triplet_fts, out_size):
        if (nb_triplet_fts, out_size) != (self.nb_triplet_fts, self.hidden_dim):
            raise ValueError(f"exported for nb_triplet_fts={self.nb_triplet_fts}, out_size={self.hidden_dim}, "
                             f"called with {nb_triplet_fts}, {out_size}")
        scope = hk.experimental.current_name()
        created: dict = {}

        def initialiser(module: str, name: str):
            def init(shape, dtype):
                if not created:  # the first parameter created: the exported init makes all of them at once
                    keys = self._draw(self.init_draws)
                    created["params"], created["out"] = self.init_module.call(keys, z, edge_fts, graph_fts)
                return created["params"][module][name]
            return init

        params = {}
        for module, leaves in self.param_avals.items():
            # the child's module names under the processor's scope, as its own hk modules had them
            full = module if scope == "~" else f"{scope}/{module}"
            with hk.name_scope(hk.force_name(full)):
                params[module] = {name: hk.get_parameter(name, aval.shape, aval.dtype, init=initialiser(module, name))
                                  for name, aval in leaves.items()}
        if created:  # Haiku's init, first call: the messages of the child's init (its keys are drawn)
            return created["out"]
        return self._messages(params, self._draw(self.apply_draws), z, edge_fts, graph_fts)

    @staticmethod
    def _draw(count: int):
        if not count:
            return jnp.zeros((0, 2), jnp.uint32)
        return jnp.stack([jax.random.key_data(k) if jnp.issubdtype(k.dtype, jax.dtypes.prng_key) else k
                          for k in (hk.next_rng_key() for _ in range(count))]).astype(jnp.uint32)


def load_triplet_fn(exported: dict, hidden_dim: int, nb_triplet_fts: int,
                    platform: str | None = None) -> tuple[ExportedTripletFn, int]:
    """(the exported triplet function, baked constants) from the untrusted stage's ``exported``."""
    if not isinstance(exported, dict) or set(exported) != set(MODULES):
        raise ChildFailure(BUILD_ERROR, "the untrusted stage returned no exported init/forward/backward modules")
    modules = {what: deserialize(exported[what], what) for what in MODULES}
    report = inspect_modules(modules, platform)
    return ExportedTripletFn(modules, hidden_dim, nb_triplet_fts), report.baked_parameters


def score_export(code: str = "", *, data_dir: str, train_pools: list, val_pool: str, test_pool: str,
                 exported: dict | None = None, nb_triplet_fts: int = 8, use_ln: bool = True,
                 **train_kwargs) -> dict:
    """Check, train and score an exported child (the paper's EVAL); see the module docstring.

    ``code`` is ignored (the sandbox passes every entry one; this stage never runs child source). Returns what
    ``train_and_evaluate`` returns (less its history) plus ``baked_constants`` (already in ``num_params``) and
    ``device``. Raises ``ChildFailure`` (BUILD_ERROR, SHAPE_ERROR, BATCH_DEPENDENCE, NAN)."""
    from evo.tasks.clrs import data
    from evo.tasks.clrs.checks import check_triplet_fn
    from evo.tasks.clrs.processor import evolved_factory
    from evo.tasks.clrs.train import train_and_evaluate

    del code
    hidden_dim = train_kwargs.get("hidden_dim", 128)
    fn, baked = load_triplet_fn(exported, hidden_dim, nb_triplet_fts, jax.default_backend())
    check_triplet_fn(fn, hidden_dim, nb_triplet_fts)  # the pre-training checks, now on the exported modules
    folder = Path(data_dir)
    pools = [data.load(folder, name) for name in train_pools]
    val, test = data.load(folder, val_pool), data.load(folder, test_pool)
    result = train_and_evaluate(evolved_factory(fn, use_ln, nb_triplet_fts), pools, val, test, **train_kwargs)
    result.pop("history")
    result["num_params"] += baked
    return {**result, "baked_constants": baked, "device": jax.default_backend()}
