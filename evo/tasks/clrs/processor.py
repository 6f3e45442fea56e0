"""Triplet-GMPNN with an evolved triplet-message function, plugged into dm-clrs through its factory.

dm-clrs's Triplet-GMPNN (``get_processor_factory("triplet_gmpnn", ...)``) is an ``MPNN`` with
``use_triplets=True, gated=True``. In ``PGN.__call__`` the triplet branch is self-contained: it
computes ``tri_msgs = relu(o3(max_i get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts)))``
and returns it next to the node update, which does not use it (``nets.py`` feeds it back as new
edge features). So the subclass runs dm-clrs's own step with the triplet branch off and adds the
branch with the child's function, which includes its own reduction over triplets and output layer
(the paper's signature adds ``out_size``). dm-clrs itself is unchanged.

With the v1 seed (dm-clrs's ``get_triplet_msgs`` followed by ``hk.Linear(out_size)(jnp.max(., axis=1))``)
this is Triplet-GMPNN: the same computation and the same parameter count (the test suite checks it).
"""

from __future__ import annotations

from typing import Callable

import haiku as hk
import jax.numpy as jnp
from clrs._src import processors

# The child's contract: (z (B,N,2H), edge_fts (B,N,N,H), graph_fts (B,H), nb_triplet_fts, out_size)
#   -> triplet messages (B, N, N, out_size), before the processor's activation.
TripletFn = Callable[..., jnp.ndarray]


class EvolvedTripletGMPNN(processors.MPNN):
    """dm-clrs's gated MPNN step plus a triplet branch computed by ``triplet_fn``."""

    def __init__(self, triplet_fn: TripletFn, out_size: int, use_ln: bool, nb_triplet_fts: int,
                 name: str = "evolved_triplet_gmpnn"):
        super().__init__(out_size=out_size, msgs_mlp_sizes=[out_size, out_size], use_ln=use_ln,
                         use_triplets=False, nb_triplet_fts=nb_triplet_fts, gated=True, name=name)
        self.triplet_fn = triplet_fn

    def __call__(self, node_fts, edge_fts, graph_fts, adj_mat, hidden, **unused_kwargs):
        ret, _ = super().__call__(node_fts, edge_fts, graph_fts, adj_mat, hidden)
        z = jnp.concatenate([node_fts, hidden], axis=-1)   # as PGN builds it
        # Own name scope: Haiku numbers the modules of each method call from zero, so the child's
        # hk.Linear would otherwise take the names (and shapes) of dm-clrs's layers above.
        with hk.name_scope("triplet_msgs"):
            tri_msgs = self.triplet_fn(z, edge_fts, graph_fts, self.nb_triplet_fts, self.out_size)
        if self.activation is not None:
            tri_msgs = self.activation(tri_msgs)
        return ret, tri_msgs


def evolved_factory(triplet_fn: TripletFn, use_ln: bool = True, nb_triplet_fts: int = 8):
    """A dm-clrs processor factory (``out_size -> Processor``) for ``BaselineModel``."""
    def factory(out_size: int) -> EvolvedTripletGMPNN:
        return EvolvedTripletGMPNN(triplet_fn, out_size=out_size, use_ln=use_ln, nb_triplet_fts=nb_triplet_fts)
    return factory


def reference_factory(use_ln: bool = True, nb_triplet_fts: int = 8):
    """dm-clrs's own Triplet-GMPNN: the baseline the evolved factory is checked and timed against."""
    return processors.get_processor_factory("triplet_gmpnn", use_ln=use_ln, nb_triplet_fts=nb_triplet_fts)
