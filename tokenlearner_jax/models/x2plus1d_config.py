"""`X2Plus1DConfig`: the paper's Section 6 network, every setting in one place.

The X(2+1)D-M backbone (X3D-M, Feichtenhofer CVPR 2020, with each 3x3x3
channel-wise convolution factorised into a 1x3x3 spatial and a 3x1x1 temporal
one) and the Bottleneck-Transformer-style module slot of the paper's Figure 9.
`config.model_name` 'x2plus1d_classification' or
'x2plus1d_multilabel_classification' selects it; its keys live under
`config.model` (and `model.module`), each field naming its key in
`metadata['key']` as `ModelConfig`'s do, checked on construction.

The module replaces the channel-wise (2+1)D convolution (the middle) of the
inverted-bottleneck blocks `module.blocks` of stage `module.stage`: the
block's 1x1x1 convolutions expand to and project from the module's width
(`expansion` x the stage width: 432 in res5 of X3D-M). `module.parts` lists
what the module runs, in order (`PARTS`); an empty tuple is the backbone
alone. docs/models.md gives each part's definition and how its counts meet
the paper's Tables 11-12.
"""

import dataclasses
from typing import Any, Dict, Tuple

import ml_collections

from tokenlearner_jax import errors
from tokenlearner_jax.configs import fields
from tokenlearner_jax.models import config as config_lib

_field = fields.field

MODEL_NAMES = ('x2plus1d_classification', 'x2plus1d_multilabel_classification')
CONV_TYPES = ('2plus1d', '3d')  # X(2+1)D, or X3D's 3x3x3 convolutions.
# The blocks' middle convolution: X3D's channel-wise one, or a full one
# (every input channel to every output channel) at the block's inner width.
MIDDLE_CONVS = ('channelwise', 'full')
# The module's parts (`models.video_modules`), each at the module's width D:
PARTS = (
    'conv2d',  # A full 1x3x3 convolution D -> D, BatchNorm, ReLU.
    'conv1d',  # A full 3x1x1 (temporal) convolution D -> D, BatchNorm, ReLU.
    'mhsa',  # Joint space-time multi-head self-attention, residual.
    'spatial_transformer',  # Self-attention within each frame, residual.
    'temporal_transformer',  # Self-attention across frames per position.
    'mlp_mixer',  # An MLP-Mixer block over the frames' pooled features.
    'tokenlearner',  # TokenLearner -> Vector Transformer -> TokenFuser.
)
# What makes the tokens of the 'tokenlearner' part: TokenLearner (a single
# 3x3 conv's sigmoid maps), or the paper's "more alternatives": fixed learned
# maps, a dense layer over space, average pooling to S regions.
TOKEN_MAKERS = ('tokenlearner', 'fixed', 'dense', 'pooling')
MHSA_POSITIONS = ('none', 'factorized')  # `mhsa_position`.
# The attention parts and the axes each attends over
# (`video_modules.SpaceTimeAttention.axes`).
ATTENTION_AXES = {'mhsa': 'joint', 'spatial_transformer': 'spatial',
                  'temporal_transformer': 'temporal'}
STAGES = (2, 3, 4, 5)  # res2 ... res5.
CHANNELWISE_IMPLS = ('conv', 'shifts')  # `x2plus1d.ChannelwiseConv.impl`.


@dataclasses.dataclass(frozen=True)
class X2Plus1DConfig:
  """The X(2+1)D network a config describes.

  Attributes:
    num_classes: Output classes (from the dataset, not `config.model`).
    depths: Blocks in res2..res5 (X3D-M: 3, 5, 11, 7).
    widths: Output widths of res2..res5 (X3D-M: 24, 48, 96, 192).
    stem_width: Channels of the stem.
    expansion: Inverted-bottleneck expansion of each block (2.25).
    se_ratio: Squeeze-excitation reduction, in every other block (0.0625).
    head_width: Width of the fully connected layer before the classifier.
    conv_type: '2plus1d' (1x3x3 then 3x1x1, X(2+1)D) or '3d' (X3D's 3x3x3).
    middle_conv: 'channelwise' (X3D's) or 'full' (each output channel from
      every input channel; with '2plus1d', BatchNorm and ReLU between the
      spatial and the temporal convolution, as R(2+1)D): the paper's
      X(2+1)D-M (docs/models.md, "Section 6's whole network").
    x3d_init: X3D's initialisation: each block's last BatchNorm scale zero
      and He-normal convolution kernels over their fan-out (else fan-in, and
      scales one).
    dropout_rate: Dropout before the classifier (X3D: 0.5).
    bn_momentum: BatchNorm running-average momentum (flax convention).
    channelwise_impl: How the channel-wise convolutions run: 'conv' (grouped
      convolutions) or 'shifts' (a sum of shifted inputs; the same numbers,
      much faster on XLA:CPU).
    parts: The module's parts, in order (`PARTS`); () is the backbone alone.
    stage: The stage (2..5) whose blocks carry the module.
    blocks: Indices (negative from the end) of the blocks carrying it.
    num_tokens: Tokens S per frame of the 'tokenlearner' part.
    token_maker: What makes them (`TOKEN_MAKERS`).
    num_heads: Heads of the attention parts.
    attention_dim: Query/key/value width of the attention parts.
    mhsa_position: Position logits of the 'mhsa' part: 'none', or
      'factorized', as the Bottleneck Transformer's Figure 4 draws them: a
      learned embedding per frame, row and column, summed into one per
      position (r), and content-position logits q r^T added to q k^T.
    relation_group_size: Channels per group of the Vector Transformer's
      relation function (a grouped linear layer).
    dtype: Computation dtype (`model_dtype_str`).
  """
  num_classes: int = _field('', check='positive')
  depths: Tuple[int, ...] = _field('depths', (3, 5, 11, 7))
  widths: Tuple[int, ...] = _field('widths', (24, 48, 96, 192))
  stem_width: int = _field('stem_width', 24, check='positive')
  expansion: float = _field('expansion', 2.25)
  se_ratio: float = _field('se_ratio', 0.0625)
  head_width: int = _field('head_width', 2048, check='positive')
  conv_type: str = _field('conv_type', '2plus1d', choices=CONV_TYPES)
  middle_conv: str = _field('middle_conv', 'channelwise', choices=MIDDLE_CONVS)
  x3d_init: bool = _field('x3d_init', False, check='bool')
  dropout_rate: float = _field('dropout_rate', 0.5, check='rate')
  bn_momentum: float = _field('bn_momentum', 0.9, check='rate')
  channelwise_impl: str = _field('channelwise_impl', 'conv',
                                 choices=CHANNELWISE_IMPLS)
  parts: Tuple[str, ...] = _field('module.parts', ())
  stage: int = _field('module.stage', 5, choices=STAGES)
  blocks: Tuple[int, ...] = _field('module.blocks', (-1,))
  num_tokens: int = _field('module.num_tokens', 8, check='positive')
  token_maker: str = _field('module.token_maker', 'tokenlearner',
                            choices=TOKEN_MAKERS)
  num_heads: int = _field('module.num_heads', 8, check='positive')
  attention_dim: int = _field('module.attention_dim', 176, check='positive')
  relation_group_size: int = _field('module.relation_group_size', 9,
                                    check='positive')
  mhsa_position: str = _field('module.mhsa_position', 'none',
                              choices=MHSA_POSITIONS)
  dtype: str = _field('/model_dtype_str', 'float32',
                      choices=tuple(config_lib.DTYPES))

  def __post_init__(self):
    for f in dataclasses.fields(self):
      fields.check_field(f, getattr(self, f.name),
                         fields.key_name(f, 'model'))
    _check(self)

  @property
  def compute_dtype(self) -> Any:
    return config_lib.DTYPES[self.dtype]

  def attention_part(self, part: str) -> Tuple[str, str]:
    """(axes, position logits) of the attention part `part`: the 'mhsa'
    part's position is `mhsa_position`, the others' 'none'."""
    return (ATTENTION_AXES[part],
            self.mhsa_position if part == 'mhsa' else 'none')

  def inner_width(self, stage: int) -> int:
    """The expanded width of stage `stage`'s blocks (432 in res5 of X3D-M)."""
    return int(self.expansion * self.widths[stage - 2])

  def module_blocks(self) -> Tuple[int, ...]:
    """Indices (from 0) of the blocks of `stage` that carry the module."""
    if not self.parts:
      return ()
    depth = self.depths[self.stage - 2]
    return tuple(sorted({b % depth for b in self.blocks}))

  @classmethod
  def from_config(cls, config: ml_collections.ConfigDict,
                  num_classes: int) -> 'X2Plus1DConfig':
    """Reads and checks `config.model` (and `model_dtype_str`)."""
    if 'model' not in config:
      raise errors.ConfigError('config.model is missing.')
    model = config.model.to_dict()
    fields.check_known_keys(model, 'model', known_keys(), 'a model setting')
    values: Dict[str, Any] = {'num_classes': num_classes}
    for f in dataclasses.fields(cls)[1:]:
      found, value = fields.lookup(config, model, f.metadata['key'])
      if found:
        values[f.name] = (tuple(value) if f.name in
                          ('depths', 'widths', 'parts', 'blocks') else value)
    return cls(**values)


def known_keys() -> Tuple[str, ...]:
  """Every key (and parent key) under `config.model` a field reads."""
  keys = set()
  for f in dataclasses.fields(X2Plus1DConfig):
    key = f.metadata['key']
    if key and not key.startswith('/'):
      parts = key.split('.')
      keys |= {'.'.join(parts[:i]) for i in range(1, len(parts) + 1)}
  return tuple(sorted(keys))


_require = fields.require


def _ints(values: Any) -> bool:
  return all(fields.is_int(v) for v in values)


def _check(c: X2Plus1DConfig) -> None:
  """Cross-field checks, each naming its config key."""
  _require(len(c.depths) == 4 and _ints(c.depths) and min(c.depths) > 0,
           f'model.depths must be 4 positive integers (res2..res5), got '
           f'{c.depths!r}.')
  _require(len(c.widths) == 4 and _ints(c.widths) and min(c.widths) > 0,
           f'model.widths must be 4 positive integers (res2..res5), got '
           f'{c.widths!r}.')
  _require(isinstance(c.expansion, (int, float)) and c.expansion >= 1,
           f'model.expansion must be a number >= 1, got {c.expansion!r}.')
  _require(isinstance(c.se_ratio, (int, float)) and 0 <= c.se_ratio < 1,
           f'model.se_ratio must be in [0, 1), got {c.se_ratio!r}.')
  unknown = [p for p in c.parts if p not in PARTS]
  _require(not unknown, f'model.module.parts: {unknown[0] if unknown else ""!r}'
           f' is not a part; the parts are {PARTS}.')
  _require(len(set(c.parts)) == len(c.parts),
           f'model.module.parts names a part twice: {c.parts!r}.')
  depth = c.depths[c.stage - 2]
  _require(_ints(c.blocks) and len(c.blocks) > 0 and
           all(-depth <= b < depth for b in c.blocks),
           f'model.module.blocks must be block indices of res{c.stage} '
           f'(depth {depth}), got {c.blocks!r}.')
  _require(not c.parts or 0 not in c.module_blocks(),
           f'model.module.blocks: the first block of res{c.stage} strides, '
           'so it cannot carry the module; choose blocks 1 or later.')
  width = c.inner_width(c.stage)
  if 'tokenlearner' in c.parts:
    _require(width % c.relation_group_size == 0,
             f'model.module.relation_group_size={c.relation_group_size} must '
             f'divide the module width {width} (model.expansion x '
             f'model.widths[{c.stage - 2}]).')
  if {'mhsa', 'spatial_transformer', 'temporal_transformer'} & set(c.parts):
    _require(c.attention_dim % c.num_heads == 0,
             f'model.module.attention_dim={c.attention_dim} must be divisible '
             f'by model.module.num_heads={c.num_heads}.')
