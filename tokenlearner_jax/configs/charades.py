"""The X(2+1)D-M config on Charades, shared by the Section 6 config files.

`configs/charades_x2plus1d_tl.py` is `charades_config`; `configs/
avid_x2plus1d_tl.py` and `configs/demo_event_digits.py` start from it or
from its `ROWS`. The config files' docstrings describe the model, the recipe
and the arguments.
"""

from typing import Optional

import ml_collections

from tokenlearner_jax import paper
from tokenlearner_jax.configs import common

CHARADES_SIZES = dict(train=7_985, test=1_863)  # Charades v1's two CSVs.
# `row=NAME` -> the module's parts (Tables 11-12; 'backbone': none).
ROWS = {row.preset: row.parts for row in paper.MODULE_ROWS}
ROWS['backbone'] = ()
# `network=NAME` -> the backbone's settings and the test crop. 'x2plus1d_m'
# is the paper's X(2+1)D-M (Table 10's GFLOPs: full middle convolutions, the
# module in the last three res5 blocks, X3D's initialisation, the MHSA
# part's position logits as the Bottleneck Transformer's Figure 4, 256 test
# crops); 'channelwise' is X3D-M's channel-wise middles with the module in
# the last block only, tested at the train crop (docs/models.md).
NETWORKS = {
    'x2plus1d_m': dict(model=dict(middle_conv='full', blocks=(-3, -2, -1),
                                  x3d_init=True, mhsa_position='factorized'),
                       test_crop_size=256),
    'channelwise': dict(model=dict(middle_conv='channelwise', blocks=(-1,),
                                   x3d_init=False), test_crop_size=None),
}
# The arguments of `--config=configs/charades_x2plus1d_tl.py:ARG`.
ARG_DEFAULTS = dict(row='conv2d_tokenlearner', token_maker='tokenlearner',
                    num_tokens=8, fps=12, network='x2plus1d_m',
                    runlocal=False)


def charades_config(arg: Optional[str] = None) -> ml_collections.ConfigDict:
  """The config of `configs/charades_x2plus1d_tl.py:ARG` (its docstring
  describes `arg`)."""
  arg = common.parse_arg(arg, **ARG_DEFAULTS)
  if arg.row not in ROWS:
    raise ValueError(f'Unknown row={arg.row!r}; known: {sorted(ROWS)}.')
  if arg.fps not in (6, 12):
    raise ValueError(f'fps must be 6 or 12, got {arg.fps}.')
  if arg.network not in NETWORKS:
    raise ValueError(f'Unknown network={arg.network!r}; known: '
                     f'{sorted(NETWORKS)}.')
  network = NETWORKS[arg.network]
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = f'charades_x2plus1d_{arg.row}_{arg.fps}fps'
  config.dataset_name = 'video_tfrecord_dataset'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      base_dir=f'/path/to/charades_{arg.fps}fps_tfrecords',
      tables=dict(train='train@64', test='test@16'), eval_split='test',
      examples_per_subset=CHARADES_SIZES,
      num_classes=157, num_frames=64, stride=1, min_resize=256,
      crop_size=224, zero_centering=True,
      augmentation_params=dict(
          do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.33,
          prob_scale_jitter=1.0, do_color_augment=False),
      num_test_clips=10, do_three_spatial_crops=False, test_batch_size=4,
      clip_labels='segments', test_pooling='max'))
  config.dataset_configs.test_crop_size = (
      network['test_crop_size'] or ml_collections.config_dict.placeholder(int))
  config.model_name = 'x2plus1d_multilabel_classification'
  config.model = common.x2plus1d_model_config(
      parts=ROWS[arg.row], token_maker=arg.token_maker,
      num_tokens=arg.num_tokens, **network['model'])
  config.model_dtype_str = 'float32'
  config.optimizer = 'momentum'
  config.optimizer_configs = ml_collections.ConfigDict(dict(momentum=0.9))
  config.l2_decay_factor = 5e-5
  config.max_grad_norm = ml_collections.config_dict.placeholder(float)
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 64
  config.num_training_epochs = 100
  steps_per_epoch = CHARADES_SIZES['train'] // config.batch_size
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * cosine_decay * linear_warmup',
      warmup_steps=10 * steps_per_epoch,
      steps_per_cycle=config.num_training_epochs * steps_per_epoch,
      base_learning_rate=0.1))
  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.rng_seed = 0
  config.eval_batch_size = 64
  config.log_summary_steps = 50
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000
  common.trainer_defaults(config)
  if arg.runlocal:
    runlocal(config)
  return config


def runlocal(config: ml_collections.ConfigDict) -> None:
  """A tiny network (same parts) on 4x64x64 clips for a CPU smoke run."""
  model = config.model
  model.depths, model.widths = (1, 1, 1, 2), (8, 8, 16, 16)
  model.stem_width, model.head_width = 8, 32
  model.module.blocks = (-1,)  # res5 has two blocks here.
  model.module.num_tokens, model.module.num_heads = 4, 2
  model.module.attention_dim = 16
  model.channelwise_impl = 'shifts'  # XLA:CPU's grouped convs are slow.
  dc = config.dataset_configs
  dc.num_frames, dc.crop_size, dc.min_resize = 4, 64, 72
  if dc.test_crop_size:
    dc.test_crop_size = 72
  dc.num_test_clips, dc.test_batch_size = 2, 2
  dc.tables = dict(train='train@1', test='test@1')
  dc.examples_per_subset = dict(train=8, test=4)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_training_steps = 2
  config.log_summary_steps = 1
  config.log_eval_steps = 2
  config.checkpoint_steps = 2
