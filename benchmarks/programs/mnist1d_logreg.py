"""Logistic regression on MNIST-1D: `LinearBase` of Greydanus (2020) in the mnist1d repository
(notebooks/models.py), one Dense layer from the 40 values to the 10 logits: 410 parameters.

Not a search seed (seeds/mnist1d/ holds those): the reference model of the trainer check
benchmarks/mnist1d_published.py, whose published test accuracy is ~32%.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    return nn.Dense(10)(x)
