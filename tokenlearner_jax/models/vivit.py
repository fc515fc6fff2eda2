"""ViViT pieces: the video stems and the factorised-encoder baseline (model 2).

`embed_video` is the reference's `temporal_encode` (a tubelet 3-D conv, or
uniform frame sampling stacked along the height and a 2-D conv), creating the
same `embedding` parameter in the calling module.
"""

from typing import Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models.common import classifier_head
from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.common import pool
from tokenlearner_jax.models.config import EncoderSize
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.models.encoder import TokenLearnerEncoder


def tubelet_kernel_init(method: Optional[str]):
  """Initializer of a `[t, h, w, c_in, c_out]` tubelet kernel.

  'central_frame_initializer' keeps only the central time slice. The reference
  zeroes the wrong axis (width instead of time); its behaviour is available as
  'central_frame_initializer_scenic'. 'average_frame_initializer' draws the
  LeCun normal of the whole 5-D shape and repeats its first time slice (the
  reference's draw, value for value). None is the plain LeCun normal.
  """
  default = nn.linear.default_kernel_init
  if method is None:
    return default

  def init(key, shape, dtype=jnp.float32):
    kernel = default(key, shape, dtype)
    if method == 'average_frame_initializer':
      return jnp.broadcast_to(kernel[:1], shape)
    axis = 0 if method == 'central_frame_initializer' else 2
    keep = jnp.arange(shape[axis]) == shape[0] // 2
    keep = jnp.reshape(keep, [-1 if i == axis else 1 for i in range(5)])
    return jnp.where(keep, kernel, 0.0).astype(dtype)

  return init


def embed_video(x: jax.Array, config: ModelConfig) -> jax.Array:
  """Video `[B, T, H, W, 3]` -> tokens `[B, t, h, w, C]` (`embedding` conv).

  Call inside a compact method: `embedding` joins the caller's parameters.
  """
  n, _, height, width, channels = x.shape
  fh, fw = config.patch_size[0], config.patch_size[1]
  if config.temporal_encoding == 'temporal_sampling':
    x = x[:, grid_lib.sampled_frame_indices(x.shape[1],
                                            config.n_sampled_frames)]
    t = x.shape[1]
    x = jnp.reshape(x, (n, t * height, width, channels))  # [B, t*H, W, 3]
    x = nn.Conv(config.hidden_size, (fh, fw), strides=(fh, fw),
                padding='VALID',
                kernel_init=logical(nn.linear.default_kernel_init,
                                    (None, None, None, 'embed')),
                name='embedding')(x)  # [B, t*h, w, C]
    return jnp.reshape(x, (n, t, -1) + x.shape[2:])  # [B, t, h, w, C]
  ft = config.patch_size[2]
  return nn.Conv(config.hidden_size, (ft, fh, fw), strides=(ft, fh, fw),
                 padding='VALID', kernel_init=logical(
                     tubelet_kernel_init(config.kernel_init_method),
                     (None, None, None, None, 'embed')),
                 name='embedding')(x)  # [B, t, h, w, C]


class FactorisedEncoderViViT(nn.Module):
  """ViViT model 2: a spatial encoder per frame, then a temporal encoder.

  Parameter names follow the reference's `SpaceTimeViViT`: `embedding`,
  `cls_SpatialTransformer`/`cls_TemporalTransformer` (with a 'token' head),
  `SpatialTransformer`, `TemporalTransformer`, `pre_logits`,
  `output_projection`. The spatial encoder's weights are shared across frames.
  `config.classifier` pools both encoders; their sizes are
  `config.spatial_transformer` and `config.temporal_transformer`.

  Attributes:
    config: The model (`attention_type='factorized_encoder'`).
  """
  config: ModelConfig

  def _encode(self, x: jax.Array, size: EncoderSize, name: str,
              train: bool) -> jax.Array:
    """`[B, L, C]` -> `[B, C]`, or per frame `[B, t, L, C]` -> `[B, t, C]`."""
    c = x.shape[-1]
    if self.config.has_cls_token:
      cls = self.param(f'cls_{name}', nn.initializers.zeros, (1, 1, c), x.dtype)
      cls = jnp.broadcast_to(cls, x.shape[:-2] + (1, c))  # [B, (t,) 1, C]
      x = jnp.concatenate([cls, x], axis=-2)  # [B, (t,) 1+L, C]
    encoder = TokenLearnerEncoder
    if x.ndim == 4:
      # One set of weights for all frames and, as in the reference's jax.vmap,
      # the same dropout and stochastic-depth draws for every frame of a video.
      encoder = nn.vmap(
          TokenLearnerEncoder, in_axes=(1, None), out_axes=1,
          variable_axes={'params': None},
          split_rngs={'params': False, 'dropout': False})
    x = encoder(self.config.encoder(size), name=name)(x, train)
    return pool(x, self.config.classifier)

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps `[B, T, H, W, 3]` videos to logits `[B, num_classes]`."""
    cfg = self.config
    grid = cfg.token_grid(x.shape[1:])
    x = embed_video(x, cfg)  # [B, t, h, w, C]
    n, c = x.shape[0], x.shape[-1]
    x = jnp.reshape(x, (n, grid.time, grid.per_slice, c))  # [B, t, h*w, C]
    x = self._encode(x, cfg.spatial_transformer, 'SpatialTransformer',
                     train)  # [B, t, C]
    x = self._encode(x, cfg.temporal_transformer, 'TemporalTransformer',
                     train)  # [B, C]
    return classifier_head(x, cfg.representation_size, cfg.num_classes)
