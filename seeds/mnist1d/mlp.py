"""Seed: the MNIST-1D MLP baseline of Greydanus (2020), `MLPBase` in the mnist1d repository
(notebooks/models.py).

Dense(100), ReLU, a residual Dense(100) + ReLU block, Dense(10): 15,210 parameters.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = nn.relu(nn.Dense(100)(x))
    x = x + nn.relu(nn.Dense(100)(x))  # residual block
    return nn.Dense(10)(x)
