"""A model's token reduction, as one typed value per kind of method.

`config.model.tokenizer`'s flat keys (the reference's, and ours for the later
methods) are read once, by `from_model`, into one of:

* `NoReduction`: TokenLearner off (`tokenlearner_loc` None).
* `LearnedTokens`: a module makes each temporal slice's tokens before block
  `loc` — TokenLearner v1.1 or v1.0, the paper's 'pooling' and 'dense'
  baselines, PatchMerger — and again before `again_at` ('pooling'); with a
  fuser, the tokens are mapped back after every block from `loc` on.
* `InBlockReduction`: ToMe (every block from `first`), EViT or ATS (their
  `blocks`) reduce tokens inside blocks, which then carry token sizes.

Each kind checks what it needs of the model and builds its modules; the
encoder asks it what to do before and in block i (`learner_before`,
`at_block`). A key that some methods only read (`METHOD_KEYS`), set away from
its default while another method is chosen, is refused.
"""

import dataclasses
from typing import Any, Optional, Tuple, Union

import flax.linen as nn

from tokenlearner_jax.configs import fields
from tokenlearner_jax.models.reduction import ATS_MIN_TOKENS
from tokenlearner_jax.models.reduction import PatchMerger
from tokenlearner_jax.models.reduction import Reduction
from tokenlearner_jax.models.tokenlearner import DenseTokens
from tokenlearner_jax.models.tokenlearner import PoolingTokens
from tokenlearner_jax.models.tokenlearner import TokenFuser
from tokenlearner_jax.models.tokenlearner import TokenLearnerModule
from tokenlearner_jax.models.tokenlearner import TokenLearnerModuleV11
from tokenlearner_jax.models.tokenlearner import TokenReprojection

LEARNED = ('tokenlearner', 'pooling', 'dense', 'patchmerger')
IN_BLOCK = ('tome', 'evit', 'ats')
# Tokenizer keys read by some methods only.
METHOD_KEYS = {'tome_r': ('tome',), 'tome_prop_attn': ('tome',),
               'keep_rate': ('evit',), 'pooling_window': ('pooling',),
               'pooling_locs': ('pooling', 'evit', 'ats')}


@dataclasses.dataclass(frozen=True)
class NoReduction:
  """Every block sees every token."""

  def learner_before(self, block: int) -> Optional[int]:
    del block
    return None


@dataclasses.dataclass(frozen=True)
class LearnedTokens:
  """Tokens made by a module before a block (and fused back, with a fuser).

  Attributes:
    method: 'tokenlearner', 'pooling', 'dense' or 'patchmerger'.
    loc: The first block that sees the made tokens.
    num_tokens: Tokens made per temporal slice (not 'pooling').
    again_at: Further blocks before which 'pooling' pools again.
    fuser: None, or 'tokenfuser', 'unpool' or 'reprojection': the tokens are
      mapped back onto the grid after every block from `loc` on.
    use_v11: TokenLearner v1.1 (False: the paper's v1.0).
    use_sum_pooling: v1.0 sums over space (False: the mean).
    window: The k x k window of 'pooling'.
    dropout_rate: Dropout inside TokenLearner v1.1 and the fusers.
    num_heads: The reprojection fuser's heads.
  """
  method: str
  loc: int
  num_tokens: int
  again_at: Tuple[int, ...] = ()
  fuser: Optional[str] = None
  use_v11: bool = True
  use_sum_pooling: bool = True
  window: int = 2
  dropout_rate: float = 0.0
  num_heads: int = 1

  def learner_before(self, block: int) -> Optional[int]:
    """The index (name suffix) of the module that makes `block`'s input
    tokens, or None where the block takes the tokens as they are."""
    if self.fuser is not None:
      return block - self.loc if block >= self.loc else None
    at = (self.loc, *self.again_at)
    return at.index(block) if block in at else None

  def learner(self, suffix: str) -> nn.Module:
    """The module that makes the tokens, `<Class><suffix>`."""
    if self.method == 'pooling':
      return PoolingTokens(self.window, name=f'PoolingTokens{suffix}')
    if self.method == 'dense':
      return DenseTokens(self.num_tokens, name=f'DenseTokens{suffix}')
    if self.method == 'patchmerger':
      return PatchMerger(self.num_tokens, name=f'PatchMerger{suffix}')
    if self.use_v11:
      return TokenLearnerModuleV11(self.num_tokens,
                                   dropout_rate=self.dropout_rate,
                                   name=f'TokenLearnerModuleV11{suffix}')
    return TokenLearnerModule(self.num_tokens,
                              use_sum_pooling=self.use_sum_pooling,
                              name=f'TokenLearnerModule{suffix}')

  def fuser_module(self, suffix: str) -> Optional[nn.Module]:
    """The module that maps tokens back onto the grid; None for 'unpool'
    (TokenLearner's own maps, transposed)."""
    if self.fuser == 'unpool':
      return None
    if self.fuser == 'reprojection':
      return TokenReprojection(self.num_heads, dropout_rate=self.dropout_rate,
                               name=f'TokenReprojection{suffix}')
    return TokenFuser(dropout_rate=self.dropout_rate,
                      name=f'TokenFuser{suffix}')


@dataclasses.dataclass(frozen=True)
class InBlockReduction:
  """ToMe, EViT or ATS: blocks that reduce their tokens after attention.

  Attributes:
    method: 'tome', 'evit' or 'ats'.
    first: Blocks before it are plain ones (without token sizes).
    blocks: The blocks that reduce.
    amount: ToMe's r (pairs merged), EViT's keep rate, ATS's sample count.
    protects_first_token: The first token (the classifier's) is never
      merged, dropped or resampled.
  """
  method: str
  first: int
  blocks: Tuple[int, ...]
  amount: float
  protects_first_token: bool

  def learner_before(self, block: int) -> Optional[int]:
    del block
    return None

  def at_block(self, block: int) -> Reduction:
    """What block `block` (>= `first`) does after its attention."""
    return Reduction(self.method if block in self.blocks else 'none',
                     self.amount, self.protects_first_token)


TokenReduction = Union[NoReduction, LearnedTokens, InBlockReduction]
_require = fields.require


def from_model(c: Any) -> TokenReduction:
  """The reduction a `ModelConfig` describes, checked against the model.

  Raises:
    errors.ConfigError: naming the key, for a combination that cannot run.
  """
  if c.tokenlearner_loc is None:
    return NoReduction()
  loc, layers, method = c.tokenlearner_loc, c.num_layers, c.token_reduction
  _require(fields.is_int(loc) and 0 <= loc < layers,
           f'model.tokenizer.tokenlearner_loc must be in [0, num_layers='
           f'{layers}) while TokenLearner is on, got {loc!r} (use None to '
           'turn TokenLearner off).')
  defaults = {f.name: f.default for f in dataclasses.fields(type(c))}
  for key, methods in METHOD_KEYS.items():
    value = getattr(c, key)
    _require(value == defaults[key] or method in methods,
             f'model.tokenizer.{key}={value!r} is read by token_reduction='
             f"{' or '.join(map(repr, methods))} only (it is {method!r}).")
  if method in IN_BLOCK:
    reduction = _in_block(c)
    _check_locs(c)
    return reduction
  _require(c.use_tokenfuse or c.fuser_type == 'tokenfuser',
           f'model.tokenizer.fuser_type={c.fuser_type!r} needs '
           'model.tokenizer.use_tokenfuse=True.')
  _require(c.fuser_type != 'unpool' or method == 'tokenlearner',
           "model.tokenizer.fuser_type='unpool' reuses TokenLearner's maps: "
           f"it needs token_reduction='tokenlearner', got {method!r}.")
  _require(not (c.pooling_locs and c.use_tokenfuse),
           'model.tokenizer.pooling_locs: pooling again needs '
           'use_tokenfuse=False.')
  _check_locs(c)
  return LearnedTokens(
      method, loc, c.num_tokens, again_at=tuple(c.pooling_locs),
      fuser=c.fuser_type if c.use_tokenfuse else None, use_v11=c.use_v11,
      use_sum_pooling=c.use_sum_pooling, window=c.pooling_window,
      dropout_rate=c.dropout_rate, num_heads=c.num_heads)


def _check_locs(c: Any) -> None:
  locs, loc = c.pooling_locs, c.tokenlearner_loc
  if not locs:
    return
  _require(not c.scan_layers,
           'model.scan_layers does not take model.tokenizer.pooling_locs.')
  _require(all(fields.is_int(l) for l in locs) and
           list(locs) == sorted(set(locs)) and
           loc < locs[0] and locs[-1] < c.num_layers,
           'model.tokenizer.pooling_locs must be increasing layer indices in '
           f'(tokenlearner_loc={loc}, num_layers={c.num_layers}), got '
           f'{locs!r}.')


def _in_block(c: Any) -> InBlockReduction:
  """ToMe, EViT and ATS: what they need of the encoder."""
  method = c.token_reduction
  name = f'model.tokenizer.token_reduction={method!r}'
  _require(not c.use_tokenfuse and not c.scan_layers,
           f'{name} changes the token count inside blocks: it takes neither '
           'model.tokenizer.use_tokenfuse nor model.scan_layers.')
  _require(c.attention_impl == 'einsum', f'{name} reads the attention '
           "weights: it needs model.attention_impl='einsum', got "
           f'{c.attention_impl!r}.')
  _require(method == 'tome' or c.has_cls_token,
           f"{name} ranks tokens by the class token's attention: it needs "
           f"model.classifier='token', got {c.classifier!r}.")
  _require(fields.is_int(c.tome_r) and c.tome_r >= 0,
           f'model.tokenizer.tome_r must be an integer >= 0, got '
           f'{c.tome_r!r}.')
  _require(method != 'ats' or c.num_tokens >= ATS_MIN_TOKENS - 1,
           f'model.tokenizer.num_tokens={c.num_tokens}: ATS samples at least '
           f'{ATS_MIN_TOKENS} tokens with the class token (its '
           f'authors\' minimum), so set {ATS_MIN_TOKENS - 1} or '
           'more tokens besides it.')
  _require(isinstance(c.keep_rate, (int, float)) and 0 < c.keep_rate <= 1,
           f'model.tokenizer.keep_rate must be in (0, 1], got '
           f'{c.keep_rate!r}.')
  loc = c.tokenlearner_loc
  if method == 'tome':
    blocks = tuple(range(loc, c.num_layers))
  else:
    blocks = (loc, *c.pooling_locs)
  amount = {'tome': c.tome_r, 'evit': c.keep_rate, 'ats': c.num_tokens}[method]
  return InBlockReduction(method, loc, blocks, amount,
                          protects_first_token=c.protects_first_token)
