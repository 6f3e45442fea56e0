"""Seed: the larger residual CNN of the EvoPrompting authors (Chen et al. 2023, App. A.2).

Conv32 k3, ReLU, average-pool 2, two residual Conv32 k3 + ReLU blocks, average-pool 2, flatten,
Dense(256), ReLU, Dense(10). 'SAME' padding keeps the length so that the residual sums line up.
"""
import flax.linen as nn
import jax.numpy as jnp


class Model(nn.Module):
  @nn.compact
  def __call__(self, x):
    x = x[..., None]  # (batch, 40) -> (batch, 40, 1): add a channel axis
    x = nn.relu(nn.Conv(32, kernel_size=(3,), padding='SAME')(x))
    x = nn.avg_pool(x, window_shape=(2,), strides=(2,))  # length 40 -> 20
    for _ in range(2):
      x = x + nn.relu(nn.Conv(32, kernel_size=(3,), padding='SAME')(x))  # residual block
    x = nn.avg_pool(x, window_shape=(2,), strides=(2,))  # length 20 -> 10
    x = jnp.reshape(x, (x.shape[0], -1))  # flatten: (batch, 10, 32) -> (batch, 320)
    x = nn.relu(nn.Dense(256)(x))
    return nn.Dense(10)(x)
