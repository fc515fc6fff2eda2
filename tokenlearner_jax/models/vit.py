"""The TokenLearner ViT / ViViT classifier (the reference's `TokenLearnerViT`).

One module for all three stems, plus what the reference drops: stochastic depth
and a `'token'` head with a class token.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import classifier_head
from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.common import pool
from tokenlearner_jax.models.config import ModelConfig
from tokenlearner_jax.models.encoder import TokenLearnerEncoder
from tokenlearner_jax.models.vivit import embed_video


class TokenLearnerViT(nn.Module):
  """ViT / ViViT classifier with TokenLearner (the reference's TokenLearnerViT).

  `config.tokenizer_type` picks the stem: 'patch' (plain ViT), 'dynamic' (ViT +
  TokenLearner) or 'video' (joint space-time ViViT + TokenLearner per temporal
  slice).

  Attributes:
    config: The model.
  """
  config: ModelConfig

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps `[B, H, W, 3]` images or `[B, T, H, W, 3]` videos to logits."""
    cfg = self.config
    grid = cfg.token_grid(x.shape[1:])
    if cfg.tokenlearner_on and not cfg.use_v11 and grid.height != grid.width:
      raise ValueError(
          f'TokenLearner v1.0 (model.tokenizer.use_v11=False) needs a square '
          f'token grid, got {grid.height}x{grid.width} from input '
          f'{x.shape[1:]}; use v1.1 or a square input.')
    if cfg.tokenizer_type == 'video':
      x = embed_video(x, cfg)  # [B, T, h, w, C]
    else:
      fh, fw = cfg.patch_size[:2]
      x = nn.Conv(cfg.hidden_size, (fh, fw), strides=(fh, fw),
                  padding='VALID', name='embedding',
                  kernel_init=logical(nn.linear.default_kernel_init,
                                      (None, None, None, 'embed')))(
                                          x)  # [B, h, w, C]
    n, c = x.shape[0], x.shape[-1]
    x = jnp.reshape(x, (n, grid.total, c))  # [B, T*h*w, C]
    if cfg.has_cls_token:
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), x.dtype)
      x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)

    encoder = TokenLearnerEncoder(cfg, temporal_dims=grid.time,
                                  has_cls_token=cfg.has_cls_token,
                                  name='Transformer')
    sizes = None
    if cfg.reduces_in_blocks:  # ToMe, EViT, ATS: tokens carry sizes.
      x, sizes = encoder(x, train=train, return_sizes=True)
    else:
      x = encoder(x, train=train)
    return classifier_head(pool(x, cfg.classifier, sizes),
                           cfg.representation_size, cfg.num_classes)
