"""A temporal 1-D U-Net denoiser for trajectories [batch, horizon, channels].

The layout follows Decision Diffuser's TemporalUnet (Ajay et al. 2023), which extends
Diffuser's (Janner et al. 2022):

  * residual temporal blocks: two (Conv1d kernel 5 -> GroupNorm(8) -> Mish) blocks, with the
    embedding added after the first through Mish -> Dense, and a kernel-1 convolution on the
    skip path when the channel count changes;
  * per resolution level i: two residual blocks with dim * dim_mults[i] channels, then a
    stride-2 convolution (kernel 3, padding 1) that halves the horizon. The last level skips
    the halving, and two residual blocks follow it in the middle;
  * per upsampling level: concatenation with the skip from the same resolution, two residual
    blocks, and a stride-2 transposed convolution (kernel 4, padding 1) that doubles the horizon.
    As in Decision Diffuser, the full-resolution skip of the first level is not used;
  * a sinusoidal time embedding -> Dense(4 dim) -> Mish -> Dense(dim), concatenated with an
    optional condition embedding Dense(dim) -> Mish -> Dense(4 dim) -> Mish -> Dense(dim).

Every convolution's module name ends in "conv" and no other module's does, so the kernels that
VQ-CD masks are the leaves whose path matches `CONV_KERNEL_PATTERN` (see `conv_kernel_paths`).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.core import tree as tree_lib

# Regular expression for the path of every convolution kernel in these networks' parameters.
CONV_KERNEL_PATTERN = r"conv/kernel$"


def mish(x: jax.Array) -> jax.Array:
    """Mish activation x tanh(softplus(x)) (Misra 2019)."""
    return x * jnp.tanh(jax.nn.softplus(x))


def sinusoidal_embedding(t: jax.Array, dim: int, max_period: float = 10000.0) -> jax.Array:
    """Embed timesteps [batch] as [sin(t w_k), cos(t w_k)], w_k = max_period^(-k / (dim/2 - 1)).

    The frequencies run from 1 to 1 / max_period, as in Diffuser's SinusoidalPosEmb.
    """
    if dim < 4 or dim % 2:
        raise ValueError(f"time embedding dim={dim} is invalid; expected an even int >= 4")
    half = dim // 2
    frequencies = jnp.exp(-math.log(max_period) * jnp.arange(half) / (half - 1))
    angles = jnp.asarray(t, jnp.float32)[:, None] * frequencies[None, :]
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


def batch_timesteps(t: jax.Array, batch: int) -> jax.Array:
    """Return timesteps as [batch], broadcasting a scalar; raise ValueError for other shapes."""
    t = jnp.asarray(t)
    if t.ndim == 0:
        return jnp.broadcast_to(t, (batch,))
    if t.shape != (batch,):
        raise ValueError(f"t has shape {t.shape}; expected a scalar or [batch]=({batch},)")
    return t


def check_trajectory(x: jax.Array) -> tuple[int, int, int]:
    """Return (batch, horizon, channels), raising ValueError unless x has rank 3."""
    if x.ndim != 3:
        raise ValueError(f"x has shape {x.shape}; expected [batch, horizon, channels]")
    return x.shape


def condition_input(condition: jax.Array | None, condition_dim: int, batch: int) -> jax.Array | None:
    """Check and flatten a condition to [batch, condition_dim].

    A network built with condition_dim = 0 takes no condition. One built with condition_dim > 0
    reads None as the all-zeros condition, the default null condition of
    `jaxlab.core.diffusion`.
    """
    if condition_dim == 0:
        if condition is not None:
            raise ValueError(
                "this network was built with condition_dim=0 but received a condition; set "
                "condition_dim to the flattened condition size to condition it")
        return None
    if condition is None:
        return jnp.zeros((batch, condition_dim), jnp.float32)
    condition = jnp.asarray(condition)
    if condition.ndim == 0 or condition.shape[0] != batch:
        raise ValueError(f"condition has shape {condition.shape}; expected [batch={batch}, ...]")
    condition = condition.reshape(batch, -1)
    if condition.shape[1] != condition_dim:
        raise ValueError(
            f"condition has {condition.shape[1]} features per example but condition_dim="
            f"{condition_dim}; build the network with condition_dim={condition.shape[1]}")
    return condition


class TimeEmbedding(nn.Module):
    """Sinusoidal embedding of the timestep -> Dense(4 dim) -> Mish -> Dense(dim)."""

    dim: int

    @nn.compact
    def __call__(self, t: jax.Array) -> jax.Array:
        h = sinusoidal_embedding(t, self.dim)
        h = mish(nn.Dense(4 * self.dim, name="dense_0")(h))
        return nn.Dense(self.dim, name="dense_1")(h)


class ConditionEmbedding(nn.Module):
    """Dense(dim) -> Mish -> Dense(4 dim) -> Mish -> Dense(dim), Decision Diffuser's returns MLP."""

    dim: int

    @nn.compact
    def __call__(self, condition: jax.Array) -> jax.Array:
        h = mish(nn.Dense(self.dim, name="dense_0")(condition))
        h = mish(nn.Dense(4 * self.dim, name="dense_1")(h))
        return nn.Dense(self.dim, name="dense_2")(h)


def time_and_condition_embedding(t: jax.Array, condition: jax.Array | None, dim: int) -> jax.Array:
    """Concatenate the time embedding with the condition embedding when there is a condition.

    Call inside a compact module: it creates the submodules "time_embedding" and
    "condition_embedding" there.
    """
    embedding = TimeEmbedding(dim, name="time_embedding")(t)
    if condition is None:
        return embedding
    return jnp.concatenate(
        [embedding, ConditionEmbedding(dim, name="condition_embedding")(condition)], axis=-1)


class Conv1dBlock(nn.Module):
    """Conv1d (same padding) -> GroupNorm -> Mish on [batch, horizon, channels]."""

    features: int
    kernel_size: int = 5
    num_groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.Conv(self.features, (self.kernel_size,), padding="SAME", name="conv")(x)
        # PyTorch's GroupNorm epsilon, which Decision Diffuser uses.
        x = nn.GroupNorm(num_groups=self.num_groups, epsilon=1e-5, name="group_norm")(x)
        return mish(x)


class ResidualTemporalBlock(nn.Module):
    """Two Conv1dBlocks with the embedding added in between, plus a residual connection."""

    features: int
    kernel_size: int = 5
    num_groups: int = 8

    @nn.compact
    def __call__(self, x: jax.Array, embedding: jax.Array) -> jax.Array:
        h = Conv1dBlock(self.features, self.kernel_size, self.num_groups, name="block_0")(x)
        h = h + nn.Dense(self.features, name="embedding_dense")(mish(embedding))[:, None, :]
        h = Conv1dBlock(self.features, self.kernel_size, self.num_groups, name="block_1")(h)
        if x.shape[-1] != self.features:
            x = nn.Conv(self.features, (1,), name="residual_conv")(x)
        return h + x


class TemporalUnet(nn.Module):
    """Temporal U-Net denoiser: `__call__(x, t, condition=None, *, train=False)` -> x's shape.

    Attributes:
        dim: base channel count; also the time and condition embedding size.
        dim_mults: channel multiplier per resolution level; the horizon is halved between
            levels, so it must be divisible by 2 ** (len(dim_mults) - 1).
        condition_dim: flattened condition size, 0 for an unconditional network. With
            condition_dim > 0, a None condition means the all-zeros condition.
        kernel_size: temporal kernel of the residual blocks.
        num_groups: GroupNorm groups; dim * m must be divisible by it for every m in dim_mults.

    Inputs are x [batch, horizon, channels], t (int) [batch] or a scalar, and condition
    [batch, ...]. The network has no dropout or batch statistics, so `train` does not change
    its output; the argument keeps the signature shared with `jaxlab.core.nn.denoisers`.
    """

    dim: int = 128
    dim_mults: Sequence[int] = (1, 4, 8)
    condition_dim: int = 0
    kernel_size: int = 5
    num_groups: int = 8

    def _check_attributes(self, horizon: int) -> None:
        if len(self.dim_mults) == 0:
            raise ValueError("dim_mults is empty; expected at least one level, e.g. (1, 4, 8)")
        for mult in self.dim_mults:
            if mult < 1 or (self.dim * mult) % self.num_groups:
                raise ValueError(
                    f"dim * mult = {self.dim} * {mult} is not a positive multiple of "
                    f"num_groups={self.num_groups}; pick dim and dim_mults so every level's "
                    "channel count divides into the GroupNorm groups")
        factor = 2 ** (len(self.dim_mults) - 1)
        if horizon % factor:
            below = horizon - horizon % factor
            raise ValueError(
                f"horizon={horizon} is not divisible by 2**(len(dim_mults)-1)={factor}, which the "
                f"U-Net's {len(self.dim_mults) - 1} halvings need; use a horizon such as "
                f"{below or factor} or {below + factor}, or fewer dim_mults")

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array, condition: jax.Array | None = None, *,
                 train: bool = False) -> jax.Array:
        del train  # No dropout or batch statistics (see the class docstring).
        batch, horizon, channels = check_trajectory(x)
        self._check_attributes(horizon)
        t = batch_timesteps(t, batch)
        condition = condition_input(condition, self.condition_dim, batch)
        embedding = time_and_condition_embedding(t, condition, self.dim)

        def residual(name: str, features: int):
            return ResidualTemporalBlock(features, self.kernel_size, self.num_groups, name=name)

        dims = [self.dim * mult for mult in self.dim_mults]
        h = x
        skips = []
        for level, features in enumerate(dims):
            h = residual(f"down_{level}_res_0", features)(h, embedding)
            h = residual(f"down_{level}_res_1", features)(h, embedding)
            skips.append(h)
            if level < len(dims) - 1:
                h = nn.Conv(features, (3,), strides=(2,), padding=((1, 1),),
                            name=f"down_{level}_downsample_conv")(h)

        h = residual("mid_res_0", dims[-1])(h, embedding)
        h = residual("mid_res_1", dims[-1])(h, embedding)

        for level, features in enumerate(reversed(dims[:-1])):
            h = jnp.concatenate([h, skips.pop()], axis=-1)
            h = residual(f"up_{level}_res_0", features)(h, embedding)
            h = residual(f"up_{level}_res_1", features)(h, embedding)
            # Padding 2 on the dilated input is PyTorch's ConvTranspose1d(kernel 4, stride 2,
            # padding 1), which doubles the horizon exactly.
            h = nn.ConvTranspose(features, (4,), strides=(2,), padding=((2, 2),),
                                 name=f"up_{level}_upsample_conv")(h)

        h = Conv1dBlock(self.dim, self.kernel_size, self.num_groups, name="final_block")(h)
        return nn.Conv(channels, (1,), name="final_conv")(h)


def conv_kernel_paths(params: Any) -> list[str]:
    """Return the '/'-joined paths of every convolution kernel in a parameter pytree."""
    mask = tree_lib.tree_path_mask(params, CONV_KERNEL_PATTERN)
    paths = tree_lib.tree_paths(params)
    return [path for path, selected in zip(paths, jax.tree.leaves(mask)) if selected]
