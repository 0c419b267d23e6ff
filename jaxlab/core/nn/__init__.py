"""Flax denoiser networks for diffusion models: a temporal U-Net, an MLP and a transformer.

All three are called as `model.apply(variables, x, t, condition=None, train=False)` with
x [batch, horizon, channels] and return x's shape (see `jaxlab.core.diffusion`).
"""

from jaxlab.core.nn.denoisers import MLPDenoiser, TransformerDenoiser
from jaxlab.core.nn.unet1d import CONV_KERNEL_PATTERN, TemporalUnet, conv_kernel_paths

__all__ = ["CONV_KERNEL_PATTERN", "MLPDenoiser", "TemporalUnet", "TransformerDenoiser",
           "conv_kernel_paths"]
