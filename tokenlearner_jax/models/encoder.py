"""Transformer encoder with TokenLearner, and optionally TokenFuser.

`TokenLearnerEncoder` is the reference's `EncoderMod` (TokenLearner once, before
block `tokenlearner_loc`) and `EncoderModFuser` (TokenLearner -> block ->
TokenFuser + residual at every block >= `tokenlearner_loc`) in one module, with
the same parameter names. With `tokenlearner_loc=None` it is the plain
ViT/ViViT encoder.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from tokenlearner_jax.models.common import AddPositionEmbs
from tokenlearner_jax.models.common import Encoder1DBlock
from tokenlearner_jax.models.tokenlearner import TokenFuser
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11


class TokenLearnerEncoder(nn.Module):
  """Transformer encoder that learns `num_tokens` tokens per temporal slice.

  Attributes:
    num_layers: Encoder blocks.
    mlp_dim: MLP width of each block.
    num_heads: Attention heads.
    temporal_dims: Temporal slices T in the `[B, T*HW, C]` input.
    tokenlearner_loc: Index of the first block that sees learned tokens; None
      turns TokenLearner off (a plain ViT/ViViT encoder).
    num_tokens: Tokens learned per slice.
    use_v11: TokenLearner v1.1 (MLP + softmax) instead of v1.0 (convs + sigmoid).
    use_tokenfuse: TokenLearner -> block -> TokenFuser at every block >= loc.
    has_cls_token: The first token is a class token that TokenLearner skips.
    dropout_rate: Dropout rate (also used inside TokenLearner/TokenFuser).
    attention_dropout_rate: Dropout on attention weights.
    stochastic_depth: Drop rate of the last block; block i uses i/(L-1) of it.
    dtype: Computation dtype of the blocks.
  """
  num_layers: int
  mlp_dim: int
  num_heads: int
  temporal_dims: int = 1
  tokenlearner_loc: Optional[int] = None
  num_tokens: int = 8
  use_v11: bool = True
  use_tokenfuse: bool = False
  has_cls_token: bool = False
  dropout_rate: float = 0.1
  attention_dropout_rate: float = 0.1
  stochastic_depth: float = 0.0
  dtype: Any = jnp.float32

  def _learn_tokens(self, x: jax.Array, index: int, train: bool) -> jax.Array:
    """`[B*T, HW, C]` -> `[B*T, S, C]` with the `index`-th TokenLearner."""
    if self.use_v11:
      return TokenLearnerModuleV11(
          self.num_tokens, dropout_rate=self.dropout_rate,
          name=f'TokenLearnerModuleV11_{index}')(x, deterministic=not train)
    return TokenLearnerModule(self.num_tokens,
                              name=f'TokenLearnerModule_{index}')(x)

  @nn.compact
  def __call__(self, inputs: jax.Array, train: bool = False) -> jax.Array:
    assert inputs.ndim == 3, f'expected [B, L, C], got {inputs.shape}'
    x = AddPositionEmbs(name='posembed_input')(inputs)
    x = nn.Dropout(rate=self.dropout_rate)(x, deterministic=not train)
    n, _, c = x.shape
    t = self.temporal_dims
    n_cls = int(self.has_cls_token)
    tl_on = self.tokenlearner_loc is not None

    for lyr in range(self.num_layers):
      block = Encoder1DBlock(
          mlp_dim=self.mlp_dim, num_heads=self.num_heads,
          dropout_rate=self.dropout_rate,
          attention_dropout_rate=self.attention_dropout_rate,
          stochastic_depth=(lyr / max(self.num_layers - 1, 1)) *
          self.stochastic_depth,
          dtype=self.dtype, name=f'encoderblock_{lyr}')
      learn_here = tl_on and (
          lyr >= self.tokenlearner_loc if self.use_tokenfuse
          else lyr == self.tokenlearner_loc)
      if not learn_here:
        x = block(x, deterministic=not train)
        continue
      cls, tokens = x[:, :n_cls], x[:, n_cls:]  # [B, 1|0, C], [B, T*HW, C]
      hw = tokens.shape[1] // t
      tokens = jnp.reshape(tokens, (n * t, hw, c))  # [B*T, HW, C]
      index = lyr - self.tokenlearner_loc if self.use_tokenfuse else 0
      learned = self._learn_tokens(tokens, index, train)  # [B*T, S, C]
      s = learned.shape[1]
      learned = jnp.reshape(learned, (n, t * s, c))  # [B, T*S, C]
      y = block(jnp.concatenate([cls, learned], axis=1),
                deterministic=not train)  # [B, 1|0 + T*S, C]
      if not self.use_tokenfuse:
        x = y
        continue
      learned = jnp.reshape(y[:, n_cls:], (n * t, s, c))  # [B*T, S, C]
      fused = TokenFuser(dropout_rate=self.dropout_rate,
                         name=f'TokenFuser_{index}')(
                             learned, tokens, deterministic=not train)
      fused = jnp.reshape(fused + tokens, (n, t * hw, c))  # [B, T*HW, C]
      x = jnp.concatenate([y[:, :n_cls], fused], axis=1)
    return nn.LayerNorm(name='encoder_norm')(x)
