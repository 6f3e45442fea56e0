"""Seed: the MNIST-1D CNN baseline of Greydanus (2020), `ConvBase` in the mnist1d repository
(notebooks/models.py).

Three 25-channel convolutions (kernel 5 stride 2, then two of kernel 3 stride 2, padding 1 each,
ReLU after each), flatten (5 positions x 25 channels), Dense(10): 5,210 parameters, as in PyTorch.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x[..., None]  # (batch, 40) -> (batch, 40, 1): add a channel axis
    x = nn.relu(nn.Conv(25, kernel_size=(5,), strides=(2,), padding=((1, 1),))(x))
    x = nn.relu(nn.Conv(25, kernel_size=(3,), strides=(2,), padding=((1, 1),))(x))
    x = nn.relu(nn.Conv(25, kernel_size=(3,), strides=(2,), padding=((1, 1),))(x))
    x = jnp.reshape(x, (x.shape[0], -1))  # flatten: (batch, 5, 25) -> (batch, 125)
    return nn.Dense(10)(x)
