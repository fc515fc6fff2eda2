"""`ModelConfig`: every model setting, its default and its check, in one place.

A frozen dataclass handed to every module (flax's lm1b `TransformerConfig`
pattern). `ModelConfig.from_config(config, num_classes)` reads the reference's
`config.model` schema: each field names its key there in `metadata['key']`
(relative to `config.model`; `/` marks a top-level key such as
`model_dtype_str`). A missing key takes the field's default, which is the
reference's (`dropout_rate=0.1`, `attention_dropout_rate=0.1`,
`tokenizer.use_v11=True`, `tokenizer.use_tokenfuse=False`); a key under
`config.model` that no field reads is an error naming the closest known key.

Adding a model option is one field here (key, default, check) plus the code
that uses it. Checks run on construction, before any trace or compile, and
raise a `ValueError` naming the config key. Differences from the reference,
all deliberate:
  * `tokenlearner_loc` outside `[0, num_layers)` raises (the reference silently
    runs without TokenLearner); `tokenlearner_loc=None` means "off".
  * `stochastic_depth` is wired and `classifier='token'` works.
  * `attention_config.type='factorized_encoder'` builds ViViT model 2.
The paper's baselines (ours, off by default): `token_reduction` 'pooling'
(`pooling_window`, `pooling_locs`) or 'dense', `fuser_type` 'unpool' or
'reprojection' instead of TokenFuser, and `use_sum_pooling=False` (v1.0's mean
pooling, as the paper's text). Speed options (ours; none changes a number):
`scan_layers`, `remat_policy`, `attention_impl` and `model_dtype_str`.
"""

import dataclasses
import functools
from typing import Any, Dict, Optional, Tuple

from absl import logging
import jax.numpy as jnp
import ml_collections

from tokenlearner_jax import errors
from tokenlearner_jax.configs import fields
from tokenlearner_jax.models import grid as grid_lib
from tokenlearner_jax.models import token_reduction as reduction_lib

# The public field helper (`configs.fields`) and its checks, named short.
_field = fields.field
_require = fields.require
_is_int = fields.is_int

# 'token' prepends a class token and reads it out; '0' (the reference ViViT's)
# reads out the first patch token, with no class token.
CLASSIFIERS = ('gap', 'gmp', 'gsp', 'token', '0')
# ViViT's encoder options: a learned `posembed_input`, fixed sinusoids over the
# sequence or over (t, h, w), or none.
POSITIONAL_EMBEDDINGS = ('learned_1d', 'sinusoidal_1d', 'sinusoidal_3d', 'none')
# `config.model_name`s of the reference's ViViT, whose `config.model` keeps
# `patches`, `temporal_encoding_config` and `attention_config` at its top.
VIVIT_MODEL_NAMES = ('vivit_classification', 'vivit_multilabel_classification')
# Where the ViViT layout's keys live in TokenLearner's (`model.tokenizer`).
VIVIT_KEYS = ('patches', 'temporal_encoding_config')
ATTENTION_TYPES = ('spacetime', 'factorized_encoder')
# The reference's einsum softmax(QK^T)V; `jax.nn.dot_product_attention` with
# XLA's implementation; the same with cuDNN's flash attention (CUDA, bf16); or
# Pallas's TPU flash or splash attention (`common.pallas_attention`,
# `common.splash_attention`).
ATTENTION_IMPLS = ('einsum', 'fused', 'cudnn', 'pallas', 'splash')
# TokenLearner, the paper's baselines (k x k pooling, a dense layer), or the
# methods that came after it (`models.reduction`): Token Merging, EViT,
# Adaptive Token Sampling, PatchMerger.
TOKEN_REDUCTIONS = ('tokenlearner', 'pooling', 'dense', 'tome', 'evit', 'ats',
                    'patchmerger')
# What maps tokens back with `use_tokenfuse`: the reference's TokenFuser, or the
# paper's alternatives (the TokenLearner's own maps transposed, or attention).
FUSER_TYPES = ('tokenfuser', 'unpool', 'reprojection')
# 'none' (no remat) or a `jax.checkpoint_policies` name.
REMAT_POLICIES = ('none', 'nothing_saveable', 'dots_saveable',
                  'dots_with_no_batch_dims_saveable', 'everything_saveable')
# Scratch initializers of the tubelet kernel (`models.vivit`).
TUBELET_INITIALIZERS = (None, 'central_frame_initializer',
                        'central_frame_initializer_scenic',
                        'average_frame_initializer')
DTYPES = {'float32': jnp.float32, 'bfloat16': jnp.bfloat16,
          'float16': jnp.float16}


@dataclasses.dataclass(frozen=True)
class EncoderSize:
  """One encoder's depth and widths (ViViT model 2's spatial and temporal).

  Attributes:
    num_layers: Encoder blocks.
    num_heads: Attention heads.
    mlp_dim: MLP width.
  """
  num_layers: int
  num_heads: int
  mlp_dim: int


@dataclasses.dataclass(frozen=True)
class ModelConfig:
  """The model a config describes; see the module docstring for the schema.

  Attributes:
    num_classes: Output classes (from the dataset, not `config.model`).
    hidden_size: Token width C.
    num_layers: Encoder blocks (the joint space-time encoder).
    num_heads: Attention heads.
    mlp_dim: MLP width.
    patch_size: `(h, w)` for images, `(h, w, t)` for 3d_conv tubelets.
    tokenizer_type: 'patch' (plain ViT), 'dynamic' (ViT + TokenLearner) or
      'video' (joint space-time ViViT + TokenLearner per temporal slice).
    temporal_encoding: '3d_conv' or 'temporal_sampling' (videos).
    kernel_init_method: Tubelet kernel initializer (videos).
    n_sampled_frames: Frames kept by 'temporal_sampling'.
    tokenlearner_loc: First block on learned tokens; None turns it off.
    num_tokens: Tokens learned per temporal slice (PatchMerger: merged;
      ATS: its sampling points in the clip, at least 7).
    use_v11: TokenLearner v1.1; False is the paper's v1.0 module.
    use_tokenfuse: TokenLearner -> block -> TokenFuser at every block >= loc.
    fuser_type: With `use_tokenfuse`: 'tokenfuser' (the reference), 'unpool'
      or 'reprojection' (the paper's alternatives).
    use_sum_pooling: v1.0 sums over space (the reference); False: the mean.
    token_reduction: 'tokenlearner', or the paper's baselines 'pooling'
      (k x k average pooling at `tokenlearner_loc`) and 'dense' (tokens from a
      fully connected layer over space), or the later methods of
      `models.reduction`: 'tome' (merging in every block from
      `tokenlearner_loc`), 'evit' and 'ats' (in block `tokenlearner_loc` and
      `pooling_locs`, after attention), 'patchmerger' (`num_tokens` per slice
      before block `tokenlearner_loc`).
    pooling_window: k of 'pooling'.
    pooling_locs: Further blocks where 'pooling' pools again (before them:
      Table 5's "2x2 pool at 9 and 18" is loc 9, `pooling_locs=(18,)`) or
      'evit'/'ats' reduce again (inside them).
    tome_r: Token pairs ToMe merges in each block.
    tome_prop_attn: ToMe's proportional attention (log size added to the
      attention logits).
    keep_rate: The fraction of tokens EViT keeps at each of its blocks.
    representation_size: Width of the tanh `pre_logits` layer, or None.
    classifier: 'gap', 'gmp', 'gsp' pooling, 'token' (a class token) or '0'
      (the first patch token, the reference ViViT's).
    dropout_rate: Dropout rate (also inside TokenLearner v1.1/TokenFuser).
    attention_dropout_rate: Dropout on the attention weights.
    stochastic_depth: Drop rate of the last block; block i uses i/(L-1) of it
      (kept branches scaled by 1/(1-rate), scenic's `StochasticDepth`).
    stochastic_droplayer_rate: ViViT's name and form of the same: block i
      drops each residual branch with i/(L-1) of it, kept ones unscaled.
    positional_embedding: One of `POSITIONAL_EMBEDDINGS` (ViViT's `Encoder`).
    attention_type: 'spacetime' (joint) or 'factorized_encoder' (model 2).
    spatial_transformer: Model 2's spatial encoder.
    temporal_transformer: Model 2's temporal encoder.
    scan_layers: Run runs of identical layers as one `nn.scan`.
    remat_policy: One of `REMAT_POLICIES`: rematerialise each block.
    attention_impl: One of `ATTENTION_IMPLS`.
    dtype: Computation dtype of the encoder blocks (`model_dtype_str`).
  """
  num_classes: int = _field('', check='positive')
  hidden_size: int = _field('hidden_size', check='positive')
  patch_size: Tuple[int, ...] = _field('tokenizer.patches.size')
  tokenizer_type: str = _field('tokenizer.type',
                               choices=grid_lib.TOKENIZER_TYPES)
  classifier: str = _field('classifier', choices=CLASSIFIERS)
  num_layers: Optional[int] = _field('num_layers', None,
                                     check='optional_positive')
  num_heads: Optional[int] = _field('num_heads', None,
                                    check='optional_positive')
  mlp_dim: Optional[int] = _field('mlp_dim', None, check='optional_positive')
  temporal_encoding: str = _field(
      'tokenizer.temporal_encoding_config.method', '3d_conv',
      choices=grid_lib.TEMPORAL_ENCODINGS)
  kernel_init_method: Optional[str] = _field(
      'tokenizer.temporal_encoding_config.kernel_init_method', None,
      choices=TUBELET_INITIALIZERS)
  n_sampled_frames: Optional[int] = _field(
      'tokenizer.temporal_encoding_config.n_sampled_frames', None,
      check='optional_positive')
  tokenlearner_loc: Optional[int] = _field('tokenizer.tokenlearner_loc', None)
  num_tokens: int = _field('tokenizer.num_tokens', 8, check='positive')
  use_v11: bool = _field('tokenizer.use_v11', True, check='bool')
  use_tokenfuse: bool = _field('tokenizer.use_tokenfuse', False, check='bool')
  fuser_type: str = _field('tokenizer.fuser_type', 'tokenfuser',
                           choices=FUSER_TYPES)
  use_sum_pooling: bool = _field('tokenizer.use_sum_pooling', True,
                                 check='bool')
  token_reduction: str = _field('tokenizer.token_reduction', 'tokenlearner',
                                choices=TOKEN_REDUCTIONS)
  pooling_window: int = _field('tokenizer.pooling_window', 2, check='positive')
  pooling_locs: Tuple[int, ...] = _field('tokenizer.pooling_locs', ())
  tome_r: int = _field('tokenizer.tome_r', 0)
  tome_prop_attn: bool = _field('tokenizer.tome_prop_attn', True,
                                check='bool')
  keep_rate: float = _field('tokenizer.keep_rate', 0.7)
  representation_size: Optional[int] = _field('representation_size', None,
                                              check='optional_positive')
  dropout_rate: float = _field('dropout_rate', 0.1, check='rate')
  attention_dropout_rate: float = _field('attention_dropout_rate', 0.1,
                                         check='rate')
  stochastic_depth: float = _field('stochastic_depth', 0.0, check='rate')
  stochastic_droplayer_rate: float = _field('stochastic_droplayer_rate', 0.0,
                                            check='rate')
  positional_embedding: str = _field('positional_embedding', 'learned_1d',
                                     choices=POSITIONAL_EMBEDDINGS)
  attention_type: str = _field('attention_config.type', 'spacetime',
                               choices=ATTENTION_TYPES)
  spatial_transformer: Optional[EncoderSize] = _field('spatial_transformer',
                                                      None)
  temporal_transformer: Optional[EncoderSize] = _field('temporal_transformer',
                                                       None)
  scan_layers: bool = _field('scan_layers', False, check='bool')
  remat_policy: str = _field('remat_policy', 'none', choices=REMAT_POLICIES)
  attention_impl: str = _field('attention_impl', 'einsum',
                               choices=ATTENTION_IMPLS)
  dtype: str = _field('/model_dtype_str', 'float32', choices=tuple(DTYPES))

  def __post_init__(self):
    for f in dataclasses.fields(self):
      fields.check_field(f, getattr(self, f.name),
                         fields.key_name(f, 'model'))
    _check_tokenizer(self)
    if self.attention_type == 'factorized_encoder':
      _check_factorized(self)
    else:
      _check_spacetime(self)
      _ = self.reduction  # Built, and so checked, once.

  @property
  def tokenlearner_on(self) -> bool:
    """Whether tokens are learned (or pooled) before `tokenlearner_loc`."""
    return self.tokenlearner_loc is not None

  @functools.cached_property
  def reduction(self) -> reduction_lib.TokenReduction:
    """The token reduction, typed by kind (`models.token_reduction`)."""
    if self.attention_type == 'factorized_encoder':
      return reduction_lib.NoReduction()
    return reduction_lib.from_model(self)

  @property
  def reduces_in_blocks(self) -> bool:
    """ToMe, EViT or ATS: tokens are reduced inside blocks, with sizes."""
    return isinstance(self.reduction, reduction_lib.InBlockReduction)

  @property
  def reduction_blocks(self) -> Tuple[int, ...]:
    """The blocks whose tokens ToMe, EViT or ATS reduce; () otherwise."""
    return self.reduction.blocks if self.reduces_in_blocks else ()

  @property
  def protects_first_token(self) -> bool:
    """The first token is the classifier's ('token', '0'): ToMe, EViT and
    ATS never merge, drop or resample it."""
    return self.classifier in ('token', '0')

  @property
  def has_cls_token(self) -> bool:
    return self.classifier == 'token'

  @property
  def droplayer_rate(self) -> float:
    """The last block's drop rate (`stochastic_depth` or ViViT's)."""
    return self.stochastic_depth or self.stochastic_droplayer_rate

  @property
  def compute_dtype(self) -> Any:
    return DTYPES[self.dtype]

  def token_grid(self, input_shape, warn: bool = True) -> grid_lib.TokenGrid:
    """The token grid the stem makes of one example of `input_shape`."""
    return grid_lib.token_grid(input_shape, self.patch_size,
                               self.tokenizer_type, self.temporal_encoding,
                               self.n_sampled_frames, warn=warn)

  def encoder(self, size: EncoderSize) -> 'ModelConfig':
    """This config for one plain encoder of `size` (ViViT model 2's parts)."""
    return dataclasses.replace(
        self, attention_type='spacetime', num_layers=size.num_layers,
        num_heads=size.num_heads, mlp_dim=size.mlp_dim, tokenlearner_loc=None,
        spatial_transformer=None, temporal_transformer=None)

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  num_classes: int) -> 'ModelConfig':
    """Reads and checks `config.model` (and `model_dtype_str`)."""
    if 'model' not in config:
      raise errors.ConfigError('config.model is missing.')
    model = config.model.to_dict()
    vivit = 'tokenizer' not in model
    _check_known_keys(model, known=_known_keys(vivit))  # As the user wrote it.
    model = _tokenizer_layout(model, config.get('model_name'))
    values: Dict[str, Any] = {'num_classes': num_classes}
    for f in dataclasses.fields(cls)[1:]:
      found, value = fields.lookup(config, model, f.metadata['key'])
      if found:
        values[f.name] = _convert(f.name, value)
      elif f.default is dataclasses.MISSING:
        raise errors.ConfigError(
            f'{fields.key_name(f, "model")} is missing.')
    if values['tokenizer_type'] == 'patch' and (
        values.get('tokenlearner_loc') is not None):
      logging.warning("model.tokenizer.tokenlearner_loc=%s is ignored: "
                      "tokenizer.type='patch' is the plain ViT.",
                      values['tokenlearner_loc'])
      values['tokenlearner_loc'] = None
    return cls(**values)


# ------------------------------------------------------------------ reading


def _tokenizer_layout(model: Dict[str, Any],
                      model_name: Optional[str]) -> Dict[str, Any]:
  """`config.model` (a dict) in TokenLearner's layout.

  The reference ViViT's layout (`model_name` one of `VIVIT_MODEL_NAMES`, no
  `model.tokenizer`) keeps `patches` and `temporal_encoding_config` at the
  top: they move under a `tokenizer` of type 'video' with no TokenLearner.
  """
  if 'tokenizer' in model:
    return model
  if model_name not in VIVIT_MODEL_NAMES:
    raise errors.ConfigError(
        'config.model.tokenizer is missing (the reference ViViT layout, with '
        'model.patches at the top, needs config.model_name in '
        f'{VIVIT_MODEL_NAMES}; it is {model_name!r}).')
  tokenizer = {'type': 'video', 'tokenlearner_loc': None}
  for key in VIVIT_KEYS:
    if key in model:
      tokenizer[key] = model.pop(key)
  model['tokenizer'] = tokenizer
  return model


def _convert(name: str, value: Any) -> Any:
  """Config values as the dataclass holds them (tuples, `EncoderSize`)."""
  if name in ('patch_size', 'pooling_locs'):
    return None if value is None else tuple(value)
  if name in ('spatial_transformer', 'temporal_transformer'):
    if value is None:
      return None
    _check_known_keys(value, f'model.{name}', _ENCODER_SIZE_KEYS)
    for key in _ENCODER_SIZE_KEYS:
      if key not in value:
        raise errors.ConfigError(f'model.{name}.{key} is missing.')
    return EncoderSize(**{k: value[k] for k in _ENCODER_SIZE_KEYS})
  return value


_ENCODER_SIZE_KEYS = tuple(f.name for f in dataclasses.fields(EncoderSize))


def _known_keys(vivit: bool = False) -> Tuple[str, ...]:
  """Every key (and parent key) under `config.model` that a field reads; with
  `vivit`, as the reference ViViT's layout spells them (no `tokenizer`)."""
  keys = set()
  for f in dataclasses.fields(ModelConfig):
    key = f.metadata['key']
    if not key or key.startswith('/'):
      continue
    if vivit and key.startswith('tokenizer.'):
      key = key[len('tokenizer.'):]
      if key.split('.')[0] not in VIVIT_KEYS:
        continue
    parts = key.split('.')
    keys |= {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
  return tuple(sorted(keys))


def _check_known_keys(node: Any, prefix: str = 'model',
                      known: Optional[Tuple[str, ...]] = None) -> None:
  """Raises for a key no field reads, naming the closest known one."""
  fields.check_known_keys(node, prefix,
                          _known_keys() if known is None else known,
                          'a model setting',
                          leaves=('spatial_transformer',
                                  'temporal_transformer'))


# ------------------------------------------------------------------ checks


def _check_tokenizer(c: ModelConfig) -> None:
  """Patch sizes, video encodings and the fused-attention settings."""
  size = c.patch_size
  _require(size is not None and len(size) in (2, 3) and
           all(_is_int(s) and s > 0 for s in size),
           'model.tokenizer.patches.size must be 2 or 3 positive integers, '
           f'got {size!r}.')
  if c.tokenizer_type != 'video':
    _require(len(size) == 2, 'model.tokenizer.patches.size must be (h, w) for '
             f'tokenizer.type={c.tokenizer_type!r}, got {tuple(size)}.')
  elif c.temporal_encoding == '3d_conv':
    _require(len(size) == 3, 'model.tokenizer.patches.size must be (h, w, t) '
             f'for 3d_conv tubelets, got {tuple(size)}.')
  else:
    _require(c.n_sampled_frames is not None,
             'model.tokenizer.temporal_encoding_config.n_sampled_frames must '
             f'be a positive integer, got {c.n_sampled_frames!r}.')
  _require(c.attention_impl == 'einsum' or not c.attention_dropout_rate,
           f'model.attention_impl={c.attention_impl!r} has no attention '
           'dropout: set model.attention_dropout_rate=0 (it is '
           f'{c.attention_dropout_rate!r}; the reference default is 0.1).')
  _require(c.positional_embedding != 'sinusoidal_3d' or c.hidden_size % 6 == 0,
           "model.positional_embedding='sinusoidal_3d' needs "
           f'model.hidden_size divisible by 6, got {c.hidden_size}.')
  _require(not (c.stochastic_depth and c.stochastic_droplayer_rate),
           'model.stochastic_depth and model.stochastic_droplayer_rate are '
           'two forms of one setting: set one of them.')
  _require(c.attention_impl != 'cudnn' or c.dtype in ('bfloat16', 'float16'),
           "model.attention_impl='cudnn' (cuDNN flash attention) computes in "
           f"bf16 or fp16: set model_dtype_str='bfloat16' (it is {c.dtype!r}).")


def _check_factorized(c: ModelConfig) -> None:
  _require(c.tokenizer_type == 'video', "model.attention_config.type="
           "'factorized_encoder' needs model.tokenizer.type='video'.")
  _require(not c.tokenlearner_on,
           'model.tokenizer.tokenlearner_loc must be None with the '
           'factorized_encoder (TokenLearner is wired into the joint '
           'space-time encoder only).')
  for part in ('spatial_transformer', 'temporal_transformer'):
    size = getattr(c, part)
    _require(size is not None,
             f'model.{part} is required for the factorized_encoder.')
    for key in _ENCODER_SIZE_KEYS:
      value = getattr(size, key)
      _require(_is_int(value) and value > 0, f'model.{part}.{key} must be a '
               f'positive integer, got {value!r}.')
    _require(c.hidden_size % size.num_heads == 0,
             f'model.hidden_size={c.hidden_size} must be divisible by '
             f'model.{part}.num_heads={size.num_heads}.')


def _check_spacetime(c: ModelConfig) -> None:
  for key in ('num_layers', 'num_heads', 'mlp_dim'):
    _require(getattr(c, key) is not None, f'model.{key} is missing.')
  _require(c.hidden_size % c.num_heads == 0,
           f'model.hidden_size={c.hidden_size} must be divisible by '
           f'model.num_heads={c.num_heads}.')
  _require(c.tokenizer_type != 'patch' or not c.tokenlearner_on,
           "model.tokenizer.tokenlearner_loc must be None with "
           "tokenizer.type='patch' (the plain ViT).")
