"""X(2+1)D-M: X3D-M with (2+1)D channel-wise convolutions, and the module slot.

Layer for layer the X3D of Feichtenhofer (CVPR 2020) as PyTorchVideo builds
it (`create_x3d`): a (2+1)D stem, four stages of inverted-bottleneck blocks
(1x1x1 expansion, channel-wise 3x3x3 convolution, squeeze-excitation in every
other block, swish, 1x1x1 projection, BatchNorm after each convolution), a
1x1x1 `conv5`, global average pooling, a 2048-wide fully connected layer and
the classifier. With `conv_type='2plus1d'` each channel-wise 3x3x3
convolution is a 1x3x3 followed by a 3x1x1 one; with `middle_conv='full'`
these middle convolutions are full ones (the paper's X(2+1)D-M,
docs/models.md). The blocks named by `X2Plus1DConfig.module_blocks()` run the
module slot (`video_modules.ModuleSlot`) in place of that convolution.
"""

import itertools
from typing import Any, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.video_modules import KERNEL_AXES as KERNEL
from tokenlearner_jax.models.video_modules import ModuleSlot
from tokenlearner_jax.models.x2plus1d_config import X2Plus1DConfig


def _init(c: X2Plus1DConfig):
  """He-normal convolution kernels: over the fan-in (truncated), or X3D's
  over the fan-out (`c.x3d_init`)."""
  return (nn.initializers.variance_scaling(2.0, 'fan_out', 'normal')
          if c.x3d_init else nn.initializers.he_normal())


def kernel_init(c: X2Plus1DConfig, axes: Tuple[Any, ...]):
  """`_init(c)` with the kernel's logical `axes`."""
  return logical(_init(c), axes)


KERNEL_OUT = (None, None, None, 'mlp', 'embed')  # [t, h, w, hidden, out]


def round_width(width: float, divisor: int = 8, min_width: int = 8) -> int:
  """X3D's channel rounding (of the squeeze-excitation width)."""
  out = max(min_width, int(width + divisor / 2) // divisor * divisor)
  return out + divisor if out < 0.9 * width else out


class ChannelwiseConv(nn.Module):
  """A channel-wise (depthwise) 3-D convolution, zero 'SAME' padding, no bias.

  Its `kernel` `[kt, kh, kw, 1, C]` is `nn.Conv`'s with
  `feature_group_count=C`. `impl` 'conv' runs it as that grouped convolution;
  'shifts' as the sum over the kernel's taps of the shifted input times the
  tap's weights: the same numbers (to float rounding), and on XLA:CPU, where
  grouped convolutions are slow, 10-100x faster.

  Attributes:
    kernel_size: (kt, kh, kw), odd.
    strides: (st, sh, sw).
    impl: 'conv' or 'shifts'.
    kernel_init: The kernel's initializer (He normal).
  """
  kernel_size: Tuple[int, int, int]
  strides: Tuple[int, int, int] = (1, 1, 1)
  impl: str = 'conv'
  kernel_init: Any = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    c = x.shape[-1]
    kernel = self.param('kernel', logical(
        self.kernel_init, (None, None, None, None, 'mlp')),
                        tuple(self.kernel_size) + (1, c)).astype(x.dtype)
    pads = [(k // 2, k // 2) for k in self.kernel_size]
    if self.impl == 'conv':
      return jax.lax.conv_general_dilated(
          x, kernel, self.strides, pads, feature_group_count=c,
          dimension_numbers=('NDHWC', 'DHWIO', 'NDHWC'))
    padded = jnp.pad(x, [(0, 0)] + pads + [(0, 0)])  # [B, T+, H+, W+, C]
    out_size = [(n - 1) // s + 1 for n, s in zip(x.shape[1:4], self.strides)]
    out = 0
    for tap in itertools.product(*(range(k) for k in self.kernel_size)):
      window = tuple(slice(i, i + (n - 1) * s + 1, s) for i, n, s in zip(
          tap, out_size, self.strides))
      # [B, t, h, w, C]
      out = out + padded[(slice(None),) + window] * kernel[tap][0]
    return out


class SqueezeExcite(nn.Module):
  """Global average pool, 1x1x1 conv down, ReLU, 1x1x1 conv up, sigmoid gate.

  Attributes:
    ratio: Reduction of the hidden width (`round_width(D * ratio)`).
    dtype: Compute dtype (parameters stay fp32).
    kernel_init: The kernels' initializer (He normal).
  """
  ratio: float
  dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.he_normal()

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    d = x.shape[-1]
    s = jnp.mean(x, axis=(1, 2, 3), keepdims=True)  # [B, 1, 1, 1, D]
    s = nn.relu(nn.Conv(round_width(d * self.ratio), (1, 1, 1),
                        kernel_init=logical(self.kernel_init, KERNEL),
                        dtype=self.dtype, name='conv_down')(s))
    s = nn.Conv(d, (1, 1, 1), kernel_init=logical(self.kernel_init,
                                                  KERNEL_OUT),
                dtype=self.dtype, name='conv_up')(s)
    return x * nn.sigmoid(s)


class Block(nn.Module):
  """X3D's inverted bottleneck, with the module slot in its middle if asked.

  Attributes:
    config: The network.
    width: Output width.
    inner: Expanded width.
    stride: Spatial stride (of the channel-wise convolution).
    use_se: Squeeze-excitation after the middle.
    has_module: The module slot replaces the channel-wise convolution.
  """
  config: X2Plus1DConfig
  width: int
  inner: int
  stride: int
  use_se: bool
  has_module: bool = False

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = self.config
    dtype = c.compute_dtype
    norm = lambda name, scale=nn.initializers.ones: nn.BatchNorm(  # pylint: disable=g-long-lambda
        use_running_average=not train, momentum=c.bn_momentum, epsilon=1e-5,
        dtype=dtype, scale_init=scale, name=name)
    strides = (1, self.stride, self.stride)
    y = nn.Conv(self.inner, (1, 1, 1), use_bias=False, dtype=dtype,
                kernel_init=kernel_init(c, KERNEL), name='conv_a')(x)
    y = nn.relu(norm('bn_a')(y))
    if self.has_module:
      y = ModuleSlot(c, name='module')(y, train=train).astype(dtype)
    else:
      y = norm('bn_b')(self.middle(y, strides, norm))
    if self.use_se:
      y = SqueezeExcite(c.se_ratio, dtype, _init(c), name='se')(y)
    y = nn.swish(y)
    y = nn.Conv(self.width, (1, 1, 1), use_bias=False, name='conv_c',
                dtype=dtype, kernel_init=kernel_init(c, KERNEL_OUT))(y)
    y = norm('bn_c', nn.initializers.zeros if c.x3d_init else
             nn.initializers.ones)(y)
    if x.shape[-1] != self.width or self.stride != 1:
      x = nn.Conv(self.width, (1, 1, 1), strides=strides, use_bias=False,
                  dtype=dtype, kernel_init=kernel_init(c, KERNEL),
                  name='shortcut')(x)
      x = norm('bn_shortcut')(x)
    return nn.relu(x + y)

  def middle(self, y: jax.Array, strides: Tuple[int, int, int],
             norm) -> jax.Array:
    """The middle convolution(s), before its BatchNorm `bn_b`."""
    c = self.config
    if c.middle_conv == 'channelwise':
      conv = lambda kernel, s, name: ChannelwiseConv(  # pylint: disable=g-long-lambda
          kernel, s, c.channelwise_impl, _init(c), name=name)
    else:
      conv = lambda kernel, s, name: nn.Conv(  # pylint: disable=g-long-lambda
          self.inner, kernel, s, padding=[(k // 2, k // 2) for k in kernel],
          use_bias=False, dtype=c.compute_dtype,
          kernel_init=kernel_init(c, KERNEL), name=name)
    if c.conv_type == '3d':
      return conv((3, 3, 3), strides, 'conv_b')(y)
    y = conv((1, 3, 3), strides, 'conv_b_spatial')(y)
    if c.middle_conv == 'full':  # R(2+1)D's BatchNorm and ReLU between.
      y = nn.relu(norm('bn_b_spatial')(y))
    return conv((3, 1, 1), (1, 1, 1), 'conv_b_temporal')(y)


class X2Plus1D(nn.Module):
  """X(2+1)D-M (or X3D-M) classifier with the paper's module slot.

  `apply(variables, x, train=...)` maps videos `[B, T, H, W, 3]` to logits
  `[B, num_classes]`; training updates the `batch_stats` collection.

  Attributes:
    config: The network.
  """
  config: X2Plus1DConfig

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    c = self.config
    dtype = c.compute_dtype
    x = x.astype(dtype)
    x = nn.Conv(c.stem_width, (1, 3, 3), strides=(1, 2, 2),
                padding=[(0, 0), (1, 1), (1, 1)], use_bias=False, dtype=dtype,
                kernel_init=kernel_init(c, (None, None, None, None, 'mlp')),
                name='stem_spatial')(x)
    x = ChannelwiseConv((5, 1, 1), (1, 1, 1), c.channelwise_impl, _init(c),
                        name='stem_temporal')(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train,
                             momentum=c.bn_momentum, epsilon=1e-5,
                             dtype=dtype, name='stem_bn')(x))
    for stage, (depth, width) in enumerate(zip(c.depths, c.widths), start=2):
      carries = c.module_blocks() if stage == c.stage else ()
      for i in range(depth):
        x = Block(c, width, c.inner_width(stage), 2 if i == 0 else 1,
                  use_se=c.se_ratio > 0 and i % 2 == 0,
                  has_module=i in carries,
                  name=f'res{stage}_block{i}')(x, train=train)
    x = nn.Conv(c.inner_width(5), (1, 1, 1), use_bias=False, dtype=dtype,
                kernel_init=kernel_init(c, KERNEL), name='conv5')(x)
    x = nn.relu(nn.BatchNorm(use_running_average=not train,
                             momentum=c.bn_momentum, epsilon=1e-5,
                             dtype=dtype, name='conv5_bn')(x))
    x = jnp.mean(x, axis=(1, 2, 3))  # [B, D5]
    x = nn.relu(nn.Dense(c.head_width, use_bias=False, name='fc', dtype=dtype,
                         kernel_init=kernel_init(c, ('embed', 'mlp')))(x))
    x = nn.Dropout(c.dropout_rate)(x, deterministic=not train)
    x = x.astype(jnp.float32)
    return nn.Dense(c.num_classes, name='output_projection', kernel_init=
                    logical(nn.initializers.normal(0.01),
                            ('mlp', 'classes')))(x)
