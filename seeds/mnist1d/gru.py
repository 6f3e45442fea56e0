"""Seed: the MNIST-1D GRU baseline of Greydanus (2020), `GRUBase` in the mnist1d repository
(notebooks/models.py).

A 1-layer bidirectional GRU with hidden size 6 reads the 40 values one per time step; the outputs
of all 40 steps (40 x 12) are flattened and fed to Dense(10). 5,110 parameters; PyTorch's has 24
more because it keeps separate input and hidden biases for the reset and update gates, which
Flax's GRUCell merges (the same function).
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x[..., None]  # (batch, 40) -> (batch, 40, 1): one input feature per time step
    x = nn.Bidirectional(nn.RNN(nn.GRUCell(6)), nn.RNN(nn.GRUCell(6)))(x)  # (batch, 40, 12)
    x = jnp.reshape(x, (x.shape[0], -1))  # flatten all time steps: (batch, 480)
    return nn.Dense(10)(x)
