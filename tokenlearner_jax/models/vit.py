"""The TokenLearner ViT / ViViT classifier (the reference's `TokenLearnerViT`).

One module for all three stems, plus what the reference drops: stochastic depth
and a `'token'` head with a class token.
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models.common import classifier_head
from tokenlearner_jax.models.common import logical
from tokenlearner_jax.models.common import pool
from tokenlearner_jax.models.encoder import TokenLearnerEncoder
from tokenlearner_jax.models.vivit import embed_video


class TokenLearnerViT(nn.Module):
  """ViT / ViViT classifier with TokenLearner, the reference's `TokenLearnerViT`.

  Attributes:
    num_classes: Output classes.
    hidden_size: Token width C.
    num_layers: Encoder blocks.
    num_heads: Attention heads.
    mlp_dim: MLP width.
    patch_size: `(h, w)` for images, `(h, w, t)` for 3d_conv tubelets.
    tokenizer_type: 'patch' (plain ViT), 'dynamic' (ViT + TokenLearner) or
      'video' (joint space-time ViViT + TokenLearner per temporal slice).
    temporal_encoding: '3d_conv' or 'temporal_sampling' (videos).
    kernel_init_method: Tubelet kernel initializer name (videos).
    n_sampled_frames: Frames kept by 'temporal_sampling'.
    tokenlearner_loc: First block on learned tokens; None turns TokenLearner off.
    num_tokens: Tokens learned per temporal slice.
    use_v11: TokenLearner v1.1 instead of v1.0.
    use_tokenfuse: The TokenLearner -> block -> TokenFuser stack (Figure 3b).
    fuser_type: 'tokenfuser', or the paper's 'unpool' / 'reprojection'.
    use_sum_pooling: v1.0 sums over space (reference); False: the mean.
    token_reduction: 'tokenlearner', 'pooling' or 'dense' (the baselines).
    pooling_window: k of the k x k 'pooling' baseline.
    pooling_locs: Further blocks before which 'pooling' pools again.
    representation_size: Width of the tanh `pre_logits` layer; None skips it.
    classifier: 'gap', 'gmp', 'gsp' pooling, or 'token' (a class token `cls`).
    dropout_rate: Dropout rate.
    attention_dropout_rate: Attention dropout rate.
    scan_layers: Run runs of identical encoder layers as one `nn.scan`.
    remat_policy: Rematerialise each block ('none' or a
      `jax.checkpoint_policies` name).
    attention_impl: 'einsum' (the reference), 'fused' or 'cudnn'
      (`jax.nn.dot_product_attention`, XLA's or cuDNN's).
    stochastic_depth: Stochastic depth rate of the last block.
    dtype: Computation dtype of the encoder blocks.
  """
  num_classes: int
  hidden_size: int
  num_layers: int
  num_heads: int
  mlp_dim: int
  patch_size: Tuple[int, ...]
  tokenizer_type: str = 'dynamic'
  temporal_encoding: str = '3d_conv'
  kernel_init_method: Optional[str] = None
  n_sampled_frames: Optional[int] = None
  tokenlearner_loc: Optional[int] = None
  num_tokens: int = 8
  use_v11: bool = True
  use_tokenfuse: bool = False
  fuser_type: str = 'tokenfuser'
  use_sum_pooling: bool = True
  token_reduction: str = 'tokenlearner'
  pooling_window: int = 2
  pooling_locs: Tuple[int, ...] = ()
  representation_size: Optional[int] = None
  classifier: str = 'gap'
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_depth: float = 0.0
  scan_layers: bool = False
  remat_policy: str = 'none'
  attention_impl: str = 'einsum'
  dtype: Any = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, *, train: bool) -> jax.Array:
    """Maps `[B, H, W, 3]` images or `[B, T, H, W, 3]` videos to logits."""
    grid = grid_lib.token_grid(x.shape[1:], self.patch_size,
                               self.tokenizer_type, self.temporal_encoding,
                               self.n_sampled_frames)
    tl_on = (self.tokenizer_type != 'patch' and
             self.tokenlearner_loc is not None)
    if tl_on and not self.use_v11 and grid.height != grid.width:
      raise ValueError(
          f'TokenLearner v1.0 (model.tokenizer.use_v11=False) needs a square '
          f'token grid, got {grid.height}x{grid.width} from input '
          f'{x.shape[1:]}; use v1.1 or a square input.')
    if self.tokenizer_type == 'video':
      x = embed_video(x, self.patch_size, self.hidden_size,
                      self.temporal_encoding, self.kernel_init_method,
                      self.n_sampled_frames)  # [B, T, h, w, C]
    else:
      fh, fw = self.patch_size[:2]
      x = nn.Conv(self.hidden_size, (fh, fw), strides=(fh, fw),
                  padding='VALID', name='embedding',
                  kernel_init=logical(nn.linear.default_kernel_init,
                                      (None, None, None, 'embed')))(
                                          x)  # [B, h, w, C]
    n, c = x.shape[0], x.shape[-1]
    x = jnp.reshape(x, (n, grid.total, c))  # [B, T*h*w, C]
    if self.classifier == 'token':
      cls = self.param('cls', nn.initializers.zeros, (1, 1, c), x.dtype)
      x = jnp.concatenate([jnp.tile(cls, (n, 1, 1)), x], axis=1)

    x = TokenLearnerEncoder(
        num_layers=self.num_layers, mlp_dim=self.mlp_dim,
        num_heads=self.num_heads, temporal_dims=grid.time,
        tokenlearner_loc=self.tokenlearner_loc if tl_on else None,
        num_tokens=self.num_tokens, use_v11=self.use_v11,
        use_tokenfuse=self.use_tokenfuse, fuser_type=self.fuser_type,
        use_sum_pooling=self.use_sum_pooling,
        token_reduction=self.token_reduction,
        pooling_window=self.pooling_window, pooling_locs=self.pooling_locs,
        has_cls_token=self.classifier == 'token',
        dropout_rate=self.dropout_rate,
        attention_dropout_rate=self.attention_dropout_rate,
        stochastic_depth=self.stochastic_depth, scan_layers=self.scan_layers,
        remat_policy=self.remat_policy, attention_impl=self.attention_impl,
        dtype=self.dtype,
        name='Transformer')(x, train=train)
    return classifier_head(pool(x, self.classifier), self.representation_size,
                           self.num_classes)
