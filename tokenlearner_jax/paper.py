"""The paper's numbers in one place: its GFLOPs, with the models they belong to.

Each `Row` is one model the paper (Ryoo et al., NeurIPS 2021, arXiv
2106.11297 v2) gives GFLOPs for: where (table or figure), the number, the
accuracy printed beside it, the model as config arguments, and the config file
that trains it. The paper's "GFLOPs" are multiply-adds per image or per view
(`tokenlearner_jax.flops`). Every row uses the paper's TokenLearner v1.0
module; the L/14, L/10 and L/8 models are the "24+11" ones (35 blocks).

`scripts/flops_table.py` puts our count next to each row (`--check`: within
`TOLERANCE`; `--markdown`: docs/flops.md), the tests check that each row's
config builds that model, and `configs/vivit_k400.py`'s `row=NAME` presets are
the rows with a `preset`. Table 1 gives no TokenLearner locations: the
locations of its rows (and of the few-shot figure's) are the ones whose
multiply-adds match its GFLOPs. Figure values were read from pixels.
"""

import dataclasses
from typing import Any, Dict, Optional, Tuple

IMAGE224: Tuple[int, ...] = (224, 224, 3)  # JFT pre-training.
IMAGE384: Tuple[int, ...] = (384, 384, 3)  # ImageNet fine-tuning, Ti/S/B.
IMAGE512: Tuple[int, ...] = (512, 512, 3)  # ImageNet fine-tuning, L.
VIDEO: Tuple[int, ...] = (32, 224, 224, 3)  # A Kinetics view: 16x16x2 tubelets.
# How far our multiply-adds may lie from a checked row's GFLOPs.
TOLERANCE = 0.02

# What each table's or figure's accuracy column measures.
METRICS: Dict[str, str] = {
    'location fig.': 'ImageNet 5-shot linear top-1 (JFT-300M pre-trained)',
    'few-shot fig.': 'ImageNet 5-shot linear top-1 (JFT-300M pre-trained)',
    'T1': 'ImageNet top-1', 'T2': 'ImageNet top-1', 'T3': 'ImageNet top-1',
    'T4': 'ImageNet top-1', 'T4, T5': 'ImageNet top-1',
    'Fuser fig.': 'ImageNet top-1',
    'T6': 'Kinetics-400 top-1, 4x3 views',
    'T7': 'Kinetics-400 top-1, 6 views',
    'T8': 'Kinetics-600 top-1, 4x3 views',
}


@dataclasses.dataclass(frozen=True)
class Row:
  """One model of the paper with its GFLOPs.

  Attributes:
    name: The model, named as in the paper where it has a name.
    table: Where the paper gives it: 'T1'...'T8' or a figure (a key of
      `METRICS`).
    gflops: The paper's GFLOPs (multiply-adds per image or view); None where
      the paper gives none.
    args: The model as config arguments: `variant`, and where they differ
      from `common.model_config`'s, `num_tokens`, `tokenlearner_loc`,
      `extra_layers`, `use_tokenfuse`, `fuser_type`.
    input_shape: One image `(H, W, 3)` or view `(T, H, W, 3)`.
    accuracy: The accuracy (%) printed beside it (`METRICS[table]`), or None.
    config: The config file (in `configs/`, without '.py') that trains it with
      `args`; None where no config takes these args.
    preset: Its `row=` name in `configs/vivit_k400.py`/`vivit_k600.py`.
    checked: Whether our count must lie within `TOLERANCE` of `gflops`.
    note: What the numbers need said about them.
  """
  name: str
  table: str
  gflops: Optional[float]
  args: Dict[str, Any]
  input_shape: Tuple[int, ...]
  accuracy: Optional[float] = None
  config: Optional[str] = None
  preset: Optional[str] = None
  checked: bool = True
  note: str = ''

  @property
  def tokenizer_type(self) -> str:
    """'video' (ViViT tubelets) or 'dynamic' (ViT patches)."""
    return 'video' if len(self.input_shape) == 4 else 'dynamic'

  @property
  def config_arg(self) -> str:
    """`args` as the config's argument string: 'k=v,k=v'."""
    return ','.join(f'{key}={value}' for key, value in self.args.items())


def _jft(name, table, gflops, accuracy, args, **fields) -> Row:
  """A row of JFT-300M pre-training at 224 (`configs/jft_pretrain.py`)."""
  return Row(name, table, gflops, args, IMAGE224, accuracy, 'jft_pretrain',
             **fields)


def _imagenet(name, table, gflops, accuracy, args, **fields) -> Row:
  """A row of ImageNet fine-tuning (`configs/vit_imagenet.py`): 384 for S/B,
  512 for L."""
  shape = IMAGE512 if args['variant'].startswith('L/') else IMAGE384
  return Row(name, table, gflops, args, shape, accuracy, 'vit_imagenet',
             **fields)


def _kinetics(name, table, gflops, accuracy, args, **fields) -> Row:
  """A row of Kinetics-400 (T6, T7: `configs/vivit_k400.py`) or -600 (T8:
  `configs/vivit_k600.py`)."""
  config = 'vivit_k600' if table == 'T8' else 'vivit_k400'
  return Row(name, table, gflops, args, VIDEO, accuracy, config, **fields)


def _b16(**args) -> Dict[str, Any]:
  return dict(variant='B/16', **args)


def _l16(**args) -> Dict[str, Any]:
  return dict(variant='L/16', **args)


def _l10_35(**args) -> Dict[str, Any]:
  """L/10 (24+11): 16 tokens learned before block 18 of 35."""
  return dict(variant='L/10', num_tokens=16, tokenlearner_loc=18,
              extra_layers=11, **args)


_READING = 'outside 2%, within the reading error of the figure'

ROWS: Tuple[Row, ...] = (
    # JFT-300M pre-training at 224: "where should we have TokenLearner?"
    # (ViT-B/16; 8 or 16 tokens at relative locations 0, 0.25, 0.5, 0.75).
    _jft('ViT-B/16 @224', 'location fig.', 17.5, 62.9,
         _b16(tokenlearner_loc=None)),
    _jft('B/16 @224, 8-TL at 0', 'location fig.', 0.76, 20.9,
         _b16(tokenlearner_loc=0), checked=False, note=_READING),
    _jft('B/16 @224, 8-TL at 3', 'location fig.', 4.98, 58.8,
         _b16(tokenlearner_loc=3)),
    _jft('B/16 @224, 8-TL at 6', 'location fig.', 9.15, 63.7,
         _b16(tokenlearner_loc=6)),
    _jft('B/16 @224, 8-TL at 9', 'location fig.', 13.37, 67.9,
         _b16(tokenlearner_loc=9)),
    _jft('B/16 @224, 16-TL at 0', 'location fig.', 1.52, 31.6,
         _b16(num_tokens=16, tokenlearner_loc=0)),
    _jft('B/16 @224, 16-TL at 3', 'location fig.', 5.49, 61.4,
         _b16(num_tokens=16, tokenlearner_loc=3)),
    _jft('B/16 @224, 16-TL at 6', 'location fig.', 9.50, 63.5,
         _b16(num_tokens=16, tokenlearner_loc=6)),
    _jft('B/16 @224, 16-TL at 9', 'location fig.', 13.52, 67.9,
         _b16(num_tokens=16, tokenlearner_loc=9)),
    # The few-shot figure (JFT-300M pre-trained, 224).
    _jft('ViT-S/32 @224', 'few-shot fig.', 1.16, 44.7,
         dict(variant='S/32', tokenlearner_loc=None), checked=False,
         note=_READING),
    _jft('TL-S/32', 'few-shot fig.', 0.68, 44.3,
         dict(variant='S/32', tokenlearner_loc=6)),
    _jft('TL-S/32 (22)', 'few-shot fig.', 1.14, 50.7,
         dict(variant='S/32', tokenlearner_loc=11, extra_layers=10),
         checked=False, note=_READING),
    _jft('ViT-B/32 @224', 'few-shot fig.', 4.34, 51.9,
         dict(variant='B/32', tokenlearner_loc=None)),
    _jft('TL-B/32 (20)', 'few-shot fig.', 4.22, 61.0,
         dict(variant='B/32', tokenlearner_loc=10, extra_layers=8)),
    _jft('ViT-B/16 @224', 'few-shot fig.', 17.56, 63.0,
         _b16(tokenlearner_loc=None)),
    _jft('TL-B/16', 'few-shot fig.', 9.54, 63.8,
         _b16(num_tokens=16, tokenlearner_loc=6)),
    _jft('TL-B/16 (21)', 'few-shot fig.', 15.29, 68.5,
         _b16(tokenlearner_loc=10, extra_layers=9)),
    # ImageNet fine-tuning, Table 1.
    _imagenet('ViT S/32 @384', 'T1', 3.4, 77.87,
              dict(variant='S/32', tokenlearner_loc=None)),
    _imagenet('ViT B/32 @384', 'T1', 19.8, 80.69,
              dict(variant='B/32', tokenlearner_loc=None), checked=False,
              note='unexplained: ViT-B/32 is 13.0 GMACs at 384, 4.3 at 224'),
    _imagenet('ViT-B/16 @384', 'T1', 55.6, 84.73,
              _b16(tokenlearner_loc=None)),
    _imagenet('TokenLearner S/32', 'T1', 1.9, 76.13,
              dict(variant='S/32', tokenlearner_loc=6)),
    _imagenet('TokenLearner B/16', 'T1', 28.7, 83.65,
              _b16(num_tokens=16, tokenlearner_loc=6),
              note="T4's 16-TL GFLOPs (its 8-TL row: 28.3, 83.2)"),
    _imagenet('TokenLearner S/32 (22)', 'T1', 3.3, 79.42,
              dict(variant='S/32', tokenlearner_loc=11, extra_layers=10)),
    _imagenet('TokenLearner B/32 (20)', 'T1', 11.5, 82.74,
              dict(variant='B/32', tokenlearner_loc=10, extra_layers=8)),
    _imagenet('TokenLearner B/16 (21)', 'T1', 47.1, 85.21,
              _b16(tokenlearner_loc=10, extra_layers=9)),
    _imagenet('16-TokenLearner B/16 (21)', 'T1', 47.7, 85.45,
              _b16(num_tokens=16, tokenlearner_loc=10, extra_layers=9)),
    # Table 4 (with and without TokenFuser) and Table 2 (L/16, L/14).
    _imagenet('B/16 @384, 8-TL at 6', 'T4', 28.3, 83.2,
              _b16(tokenlearner_loc=6)),
    _imagenet('B/16 @384, 8-TL at 6 + Fuser', 'T4', 28.5, 83.7,
              _b16(tokenlearner_loc=6, use_tokenfuse=True)),
    _imagenet('B/16 @384, 16-TL at 6', 'T4', 28.7, 83.2,
              _b16(num_tokens=16, tokenlearner_loc=6)),
    _imagenet('B/16 @384, 16-TL at 6 + Fuser', 'T4', 29.1, 83.9,
              _b16(num_tokens=16, tokenlearner_loc=6, use_tokenfuse=True)),
    _imagenet('ViT-L/16 @512', 'T2', 363.1, 87.35,
              _l16(tokenlearner_loc=None)),
    _imagenet('L/16 @512, 16-TL at 12', 'T4, T5', 184.6, 87.6,
              _l16(num_tokens=16, tokenlearner_loc=12), note='T5: 87.68'),
    _imagenet('L/16 @512, 16-TL at 12', 'T2', 178.1, 87.68,
              _l16(num_tokens=16, tokenlearner_loc=12), checked=False,
              note='paper inconsistency: the same model is 184.6 in T4/T5'),
    _imagenet('L/16 @512, 16-TL at 12 + Fuser', 'T4', 187.1, 87.6,
              _l16(num_tokens=16, tokenlearner_loc=12, use_tokenfuse=True)),
    _imagenet('L/16 @512, 8-TL at 18', 'T4', 273.2, 87.9,
              _l16(tokenlearner_loc=18)),
    _imagenet('L/16 @512, 8-TL at 18 + Fuser', 'T4', 273.8, 88.2,
              _l16(tokenlearner_loc=18, use_tokenfuse=True)),
    _imagenet('L/16 @512 (24+11), 16-TL at 12', 'T2', 186.8, 87.47,
              _l16(num_tokens=16, tokenlearner_loc=12, extra_layers=11)),
    _imagenet('L/16 @512 (24+6), 8-TL at 18', 'T2', 274.2, 88.11,
              _l16(tokenlearner_loc=18, extra_layers=6)),
    _imagenet('L/14 @512 (24+11), 16-TL at 18', 'T2', 361.6, 88.37,
              dict(variant='L/14', num_tokens=16, tokenlearner_loc=18,
                   extra_layers=11)),
    _imagenet('L/10 @512 (24+11), 16-TL at 18', 'T4', 849.0, 88.5,
              _l10_35(), note='T3: 88.5'),
    _imagenet('L/10 @512 (24+11), 16-TL at 18 + Fuser', 'T4', 856.9, 88.5,
              _l10_35(use_tokenfuse=True)),
    _imagenet('TokenLearner L/8 (24+11)', 'T3', None, 88.87,
              dict(variant='L/8', num_tokens=16, tokenlearner_loc=18,
                   extra_layers=11), note='no GFLOPs given'),
    # The TokenFuser-alternatives figure (B/16 at 384, TokenLearner at 6);
    # no config takes `fuser_type`: `model.tokenizer.fuser_type` does.
    _imagenet('B/16 @384, 8-TL at 6 + TokenFuser', 'Fuser fig.', 28.6, 83.70,
              _b16(tokenlearner_loc=6, use_tokenfuse=True)),
    _imagenet('B/16 @384, 16-TL at 6 + TokenFuser', 'Fuser fig.', 29.2, 83.91,
              _b16(num_tokens=16, tokenlearner_loc=6, use_tokenfuse=True)),
    Row('B/16 @384, 8-TL at 6 + unpool', 'Fuser fig.', 28.6,
        _b16(tokenlearner_loc=6, use_tokenfuse=True, fuser_type='unpool'),
        IMAGE384, 82.75),
    Row('B/16 @384, 16-TL at 6 + unpool', 'Fuser fig.', 29.1,
        _b16(num_tokens=16, tokenlearner_loc=6, use_tokenfuse=True,
             fuser_type='unpool'), IMAGE384, 83.07),
    Row('B/16 @384, 8-TL at 6 + reprojection', 'Fuser fig.', 32.7,
        _b16(tokenlearner_loc=6, use_tokenfuse=True,
             fuser_type='reprojection'), IMAGE384, 83.65),
    Row('B/16 @384, 16-TL at 6 + reprojection', 'Fuser fig.', 33.4,
        _b16(num_tokens=16, tokenlearner_loc=6, use_tokenfuse=True,
             fuser_type='reprojection'), IMAGE384, 83.92),
    # Kinetics-400 (T6, T7) and -600 (T8): ViViT-L/16x2, joint space-time.
    _kinetics('ViViT-L/16x2, 32x224x224', 'T6', 1446, 83.4,
              _l16(tokenlearner_loc=None), preset='L16',
              note="the paper's run (82.8 in the ViViT paper)"),
    _kinetics('TokenLearner 16at12 + L/16', 'T6', 766, 83.5,
              _l16(num_tokens=16, tokenlearner_loc=12), preset='L16_16at12'),
    _kinetics('TokenLearner 8at18 + L/16', 'T6', 1105, 84.5,
              _l16(tokenlearner_loc=18), preset='L16_8at18'),
    _kinetics('TokenLearner 16at18 + L/14 (24+11)', 'T6', 1621, 84.7,
              dict(variant='L/14', num_tokens=16, tokenlearner_loc=18,
                   extra_layers=11), preset='L14_16at18'),
    _kinetics('TokenLearner 16at18 + L/10 (24+11)', 'T6', 4076, 85.4,
              _l10_35(), preset='L10_16at18',
              note='the L/10 stem floors 224/10 to a 22x22 grid'),
    _kinetics('TokenLearner 16at12 + L/16', 'T7', 766, 82.1,
              _l16(num_tokens=16, tokenlearner_loc=12),
              note='the T6 model on 6 views (the paper does not say how '
              'they split; e.g. num_test_clips=2)'),
    _kinetics('TokenLearner 8at18 + L/16', 'T7', 1105, 83.2,
              _l16(tokenlearner_loc=18), note='the T6 model on 6 views'),
    _kinetics('ViViT-L/16x2, 32x224x224', 'T8', 1446, 84.3,
              _l16(tokenlearner_loc=None), note="the ViViT paper's"),
    _kinetics('TokenLearner 16at12 + L/16', 'T8', 766, 84.4,
              _l16(num_tokens=16, tokenlearner_loc=12)),
    _kinetics('TokenLearner 8at18 + L/16', 'T8', 1105, 86.0,
              _l16(tokenlearner_loc=18)),
    _kinetics('TokenLearner 16at18 + L/10 (24+11)', 'T8', 4076, 86.1,
              _l10_35()),
    _kinetics('TokenLearner 16at18 + L/10 (24+11) + Fuser', 'T8', 4100, 86.3,
              _l10_35(use_tokenfuse=True), preset='L10_16at18_fuser'),
)


def find(name: str, table: str) -> Row:
  """The row of `ROWS` with `name` in `table`."""
  for row in ROWS:
    if row.name == name and row.table == table:
      return row
  raise KeyError(f'No paper row {name!r} in {table!r}.')


def presets() -> Dict[str, Row]:
  """The `row=NAME` presets of the Kinetics configs: NAME -> its row."""
  return {row.preset: row for row in ROWS if row.preset}


# ------------------------------------------------- Section 6: X(2+1)D

# Tables 11-12 give GFLOPs and parameters of each module alone (not the
# network) "with 64 frame inputs". Their GFLOPs are 2 multiply-adds per
# "FLOP" at the 256 x 256 test input (8 x 8 positions per frame in res5):
# Conv2D's share (the same in both tables: Conv2D + TokenLearner minus
# TokenLearner, and Conv2D + MHSA minus MHSA) is 1.68M parameters and
# 13.8 GFLOPs, exactly one full 3x3 convolution at X3D-M's res5 width 432
# (9 x 432^2 = 1.68M) over 64 x 8 x 8 positions, twice.
MODULE_INPUT: Tuple[int, ...] = (64, 256, 256, 3)
MODULE_FLOPS_PER_MAC = 2
MODULE_TOLERANCE = 0.10  # How far our count may lie from a module row.


@dataclasses.dataclass(frozen=True)
class ModuleRow:
  """One module of Tables 11-12 with its GFLOPs and parameters.

  Attributes:
    name: The module as the paper names it.
    table: 'T11', 'T12' or 'T11, T12'.
    gflops: The paper's GFLOPs of the module (`MODULE_INPUT`).
    params_m: Its parameters, in millions.
    charades_6fps: Charades mAP (%), 6 fps setting.
    parts: The module as `model.module.parts` (`X2Plus1DConfig.parts`).
    preset: Its `row=` name in `configs/charades_x2plus1d_tl.py`.
    note: Why our count cannot meet the paper's, where it cannot.
  """
  name: str
  table: str
  gflops: float
  params_m: float
  charades_6fps: float
  parts: Tuple[str, ...]
  preset: str
  note: str = ''


MODULE_ROWS: Tuple[ModuleRow, ...] = (
    ModuleRow('Joint space-time MHSA', 'T11', 22.0, 0.30, 57.9, ('mhsa',),
              'mhsa'),
    ModuleRow('Conv2D + Joint space-time MHSA', 'T11', 35.8, 1.98, 58.6,
              ('conv2d', 'mhsa'), 'conv2d_mhsa'),
    ModuleRow('Conv2D + Conv1D', 'T12', 18.3, 2.24, 56.6,
              ('conv2d', 'conv1d'), 'conv2d_conv1d'),
    ModuleRow('Conv2D + MLPMixer', 'T12', 13.8, 2.06, 57.0,
              ('conv2d', 'mlp_mixer'), 'conv2d_mlp_mixer'),
    ModuleRow('Conv2D + Temporal transformer', 'T12', 16.5, 1.98, 58.4,
              ('conv2d', 'temporal_transformer'), 'conv2d_temporal'),
    ModuleRow('Spatial + Temporal transformer', 'T12', 5.5, 0.59, 58.8,
              ('spatial_transformer', 'temporal_transformer'),
              'spatial_temporal'),
    ModuleRow('Conv2D + Spatial + Temporal transformer', 'T12', 19.2, 2.27,
              58.0, ('conv2d', 'spatial_transformer', 'temporal_transformer'),
              'conv2d_spatial_temporal'),
    ModuleRow('Ours (TokenLearner)', 'T11, T12', 3.4, 0.81, 58.8,
              ('tokenlearner',), 'tokenlearner'),
    ModuleRow('Ours (SpatialT + TokenLearner)', 'T12', 6.2, 1.11, 58.9,
              ('spatial_transformer', 'tokenlearner'),
              'spatial_tokenlearner'),
    ModuleRow('Ours (Conv2D + TokenLearner)', 'T11, T12', 17.2, 2.49, 59.6,
              ('conv2d', 'tokenlearner'), 'conv2d_tokenlearner'),
)


# Table 10 gives the whole network's GFLOPs per view (x 1 view), at the same
# test input and count as Tables 11-12. X(2+1)D-M is X3D-M with full (not
# channel-wise) 1x3x3 + 3x1x1 middle convolutions (`middle_conv='full'`):
# each res5 one is Table 12's "Conv2D + Conv1D" (18.3 GFLOPs), and the
# module replaces it in the last three res5 blocks, as the Bottleneck
# Transformer puts its attention in the last three blocks of its last stage:
# 532 - 3 x (18.3 - 3.4) = 487 and 532 - 3 x (18.3 - 5.5) = 493.6, Table 10's
# "Ours" and disjoint space + time rows (docs/models.md).
NETWORK_TOLERANCE = 0.07  # How far our whole-network count may lie.


@dataclasses.dataclass(frozen=True)
class NetworkRow:
  """One X(2+1)D-M network of Table 10 with its GFLOPs per view.

  Attributes:
    name: The network as the paper names it.
    gflops: Its GFLOPs per view (`MODULE_INPUT`, `MODULE_FLOPS_PER_MAC`).
    avid: AViD accuracy (%).
    parts: Its module (`X2Plus1DConfig.parts`; () the backbone).
    preset: Its `row=` name in `configs/avid_x2plus1d_tl.py`.
  """
  name: str
  gflops: float
  avid: float
  parts: Tuple[str, ...]
  preset: str


NETWORK_ROWS: Tuple[NetworkRow, ...] = (
    NetworkRow('Backbone (X(2+1)D-M)', 532, 48.6, (), 'backbone'),
    NetworkRow('X(2+1)D-M w/ disjoint space+time Transformer', 493, 50.6,
               ('spatial_transformer', 'temporal_transformer'),
               'spatial_temporal'),
    NetworkRow('Ours', 487, 53.8, ('tokenlearner',), 'tokenlearner'),
)
