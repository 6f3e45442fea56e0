"""v3: Triplet-GMPNN triplet messages with sum aggregation.

As v1, but the triplets are summed over the first node axis instead of maxed.
"""
import haiku as hk
import jax
import jax.numpy as jnp


def get_triplet_msgs(z, edge_fts, graph_fts, nb_triplet_fts, out_size):
    tri_1 = hk.Linear(nb_triplet_fts)(z)
    tri_2 = hk.Linear(nb_triplet_fts)(z)
    tri_3 = hk.Linear(nb_triplet_fts)(z)
    tri_e_1 = hk.Linear(nb_triplet_fts)(edge_fts)
    tri_e_2 = hk.Linear(nb_triplet_fts)(edge_fts)
    tri_e_3 = hk.Linear(nb_triplet_fts)(edge_fts)
    tri_g = hk.Linear(nb_triplet_fts)(graph_fts)
    triplets = (jnp.expand_dims(tri_1, axis=(2, 3))        # (B, N, 1, 1, H)
                + jnp.expand_dims(tri_2, axis=(1, 3))      # (B, 1, N, 1, H)
                + jnp.expand_dims(tri_3, axis=(1, 2))      # (B, 1, 1, N, H)
                + jnp.expand_dims(tri_e_1, axis=3)         # (B, N, N, 1, H)
                + jnp.expand_dims(tri_e_2, axis=2)         # (B, N, 1, N, H)
                + jnp.expand_dims(tri_e_3, axis=1)         # (B, 1, N, N, H)
                + jnp.expand_dims(tri_g, axis=(1, 2, 3)))  # (B, 1, 1, 1, H) -> (B, N, N, N, H)
    return hk.Linear(out_size)(jnp.sum(triplets, axis=1))  # (B, N, N, out_size)
