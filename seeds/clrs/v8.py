"""v8: a linear layer on z, tiled over the first node axis (no triplets).

Unlike v1, no triplets, edge or graph features: message (i, j) is a linear function of node j's
z, the same for every i (jnp.tile of the (B, N, out_size) projection to (B, N, N, out_size)).
"""
import haiku as hk
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = hk.Linear(out_size)(z)                                          # (B, N, out_size)
    return jnp.tile(jnp.expand_dims(tri_1, axis=1), (1, z.shape[1], 1, 1))  # (B, N, N, out_size)
