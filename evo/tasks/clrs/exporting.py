"""UNTRUSTED STAGE of a CLRS evaluation: the child's ``get_triplet_msgs`` in, serialized StableHLO modules out.

``export_triplet_fn`` runs inside the sandboxed process that runs the child's Python (it sees no data). It
Haiku-transforms the child's function and exports, with ``jax.export`` and symbolic batch ``b`` and node ``n``
dimensions, the three modules the trusted stage (evo/tasks/clrs/trusted.py) needs to train and score the
child inside dm-clrs's Triplet-GMPNN without running any child Python:

* ``init(keys u32[K_init, 2], z f32[b, n, 2H], edge_fts f32[b, n, n, H], graph_fts f32[b, H])
  -> (params, messages f32[b, n, n, H])``: the child's ``hk.transform(...).init``, and the messages of that
  first call (dm-clrs's init runs the processor once to create its parameters);
* ``forward(params, keys u32[K_apply, 2], z, edge_fts, graph_fts) -> (messages, residuals)``: the child's
  ``apply`` with the residuals ``jax.vjp`` keeps for the backward pass;
* ``backward(residuals, d messages) -> (d params, d z, d edge_fts, d graph_fts)``.

A forward/backward pair rather than one module exported with its VJP (``vjp_order=1``): that VJP recomputes
the forward pass, and the triplet messages (a (b, n, n, n, F) tensor) are most of a Triplet-GMPNN step.

The random keys: in the former single-process path the child's modules drew their keys from dm-clrs's own
Haiku key sequence (``hk.next_rng_key``: its initialisers, and anything it draws when applied). The modules
take those keys as an input instead, ``K_init`` / ``K_apply`` of them (counted here: how many keys the child's
init / apply draw), and the trusted stage draws exactly that many from dm-clrs's sequence at the same point,
so the parameters, and everything dm-clrs draws after them, are the ones of the former path.
"""

from __future__ import annotations

from evo.outcome import BUILD_ERROR, SHAPE_ERROR, ChildFailure

# The most random keys a child's init or apply may draw (a Haiku initialiser draws one per parameter array;
# the nine seeds draw 8-11): counting uses this many pre-split keys, and a child that draws more is refused.
MAX_DRAWS = 512


def _key_state(keys, n: int):
    """A Haiku PRNGSequence state whose first ``n`` draws are ``keys[0..n-1]``; the fallback key behind them is
    never reached by a child whose draws were counted (a hostile one only gets a fixed key)."""
    import jax
    import jax.numpy as jnp

    fallback = jax.random.PRNGKey(0)
    return fallback, tuple(keys[i].astype(jnp.uint32) for i in range(n))


def count_draws(transformed, z, e, g) -> tuple[int, int]:
    """(keys drawn by ``transformed.init``, keys drawn by ``transformed.apply``) on abstract inputs."""
    import haiku as hk
    import jax
    import jax.numpy as jnp

    def remaining(run):
        left: list[int] = []

        def wrapped(*args):
            out = run(*args)
            state = hk.maybe_get_rng_sequence_state()
            left.append(len(state[1]) if state is not None else MAX_DRAWS)
            return out
        return wrapped, left

    pool = jnp.zeros((MAX_DRAWS, 2), jnp.uint32)
    init_fn, init_left = remaining(transformed)
    jax.eval_shape(lambda z, e, g: hk.transform(init_fn).init(_key_state(pool, MAX_DRAWS), z, e, g), z, e, g)
    params = jax.eval_shape(lambda z, e, g: hk.transform(transformed).init(_key_state(pool, MAX_DRAWS), z, e, g),
                            z, e, g)
    apply_fn, apply_left = remaining(transformed)
    jax.eval_shape(lambda p, z, e, g: hk.transform(apply_fn).apply(p, _key_state(pool, MAX_DRAWS), z, e, g),
                   params, z, e, g)
    counts = MAX_DRAWS - init_left[0], MAX_DRAWS - apply_left[0]
    if max(counts) >= MAX_DRAWS:
        raise ChildFailure(BUILD_ERROR, f"get_triplet_msgs draws {MAX_DRAWS} or more random keys")
    return counts


def export_triplet_fn(fn, hidden_dim: int, nb_triplet_fts: int, platforms: list | None = None) -> dict:
    """The three modules of the module docstring, base64 for the JSON result channel. Raises ``ChildFailure``
    (BUILD_ERROR, SHAPE_ERROR) for a function that cannot be exported for every batch and graph size."""
    import haiku as hk
    import jax
    import jax.numpy as jnp
    from jax import export

    from evo.sandbox.exported import encode
    from evo.tasks.child import build_failure, describe

    def child(z, e, g):
        return fn(z, e, g, nb_triplet_fts, hidden_dim)

    b, n = export.symbolic_shape("b, n")
    f32 = jnp.float32
    z = jax.ShapeDtypeStruct((b, n, 2 * hidden_dim), f32)
    e = jax.ShapeDtypeStruct((b, n, n, hidden_dim), f32)
    g = jax.ShapeDtypeStruct((b, hidden_dim), f32)
    kw = {"platforms": list(platforms)} if platforms else {}
    try:
        k_init, k_apply = count_draws(child, z, e, g)

        def init(keys, z, e, g):
            out: list = []

            def run(z, e, g):
                out.append(child(z, e, g))
                return out[-1]
            params = hk.transform(run).init(_key_state(keys, k_init), z, e, g)
            return params, out[0]

        init_exp = export.export(jax.jit(init), **kw)(jax.ShapeDtypeStruct((k_init, 2), jnp.uint32), z, e, g)
        params = jax.tree_util.tree_unflatten(init_exp.out_tree, init_exp.out_avals)[0]
        apply = hk.transform(child).apply

        residual_tree: list = []

        def forward(params, keys, z, e, g):
            out, vjp = jax.vjp(lambda p, z, e, g: apply(p, _key_state(keys, k_apply), z, e, g), params, z, e, g)
            leaves, tree = jax.tree_util.tree_flatten(vjp)
            residual_tree.append(tree)
            return out, leaves

        keys_apply = jax.ShapeDtypeStruct((k_apply, 2), jnp.uint32)
        forward_exp = export.export(jax.jit(forward), **kw)(params, keys_apply, z, e, g)
        out_aval, residuals = jax.tree_util.tree_unflatten(forward_exp.out_tree, forward_exp.out_avals)
        expected = (b, n, n, hidden_dim)
        if getattr(out_aval, "shape", None) != expected or out_aval.dtype != f32:
            raise ChildFailure(SHAPE_ERROR, f"get_triplet_msgs returns {getattr(out_aval, 'dtype', '?')}"
                                            f"{list(getattr(out_aval, 'shape', []))} for inputs of batch b and n "
                                            f"nodes, expected float32 (B, N, N, out_size) = (b, n, n, {hidden_dim})")

        def backward(leaves, d_out):
            return jax.tree_util.tree_unflatten(residual_tree[0], leaves)(d_out)

        backward_exp = export.export(jax.jit(backward), **kw)(residuals, jax.ShapeDtypeStruct(expected, f32))
    except ChildFailure:
        raise
    except (Exception, SystemExit) as exc:  # noqa: BLE001 - the child's code or shapes: its build error
        failure = build_failure(exc, "exporting get_triplet_msgs for any batch and graph size")
        if failure.status != BUILD_ERROR:  # MEMORY
            raise failure from None
        raise ChildFailure(BUILD_ERROR, f"get_triplet_msgs could not be exported for symbolic batch and node "
                                        f"sizes: {describe(exc)}") from None
    return {"init": encode(init_exp.serialize()), "forward": encode(forward_exp.serialize()),
            "backward": encode(backward_exp.serialize())}
