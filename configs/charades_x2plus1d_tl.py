r"""X(2+1)D-M + Conv2D + TokenLearner on Charades (the paper's Table 9 "Ours").

The paper's Section 6 network: the X(2+1)D-M backbone (X3D-M with (2+1)D
channel-wise convolutions) whose last res5 block carries the module slot of
Figure 9 (Conv2D -> TokenLearner, 8 tokens per frame -> Vector Transformer ->
TokenFuser), trained from scratch on 64-frame clips (224 crops) of Charades
(157 classes, multi-label: sigmoid cross-entropy, mAP). docs/models.md
describes the network and how its module counts meet Tables 11-12.

Charades TFRecords at 12 fps (Table 9; `fps=6` for the 6 fps setting of
Tables 11-12) as scripts/make_charades_tfrecords.py writes them from
Charades_v1_train.csv (split 'train', 64 shards) and Charades_v1_test.csv
(split 'test', 16 shards; Charades' standard evaluation set, also evaluated
during training): one record per video with every action's class in
`clip/label/index` and the action segments (see docs/data.md). A train clip
(64 frames at stride 1: 5.3 s at 12 fps, 10.7 s at 6 fps) takes the classes
of the actions it overlaps (`clip_labels='segments'`); the test scores each
video's classes from 10 clips, each class's max over the clips
(`test_pooling='max'`), with the mAP over the classes that have a positive:
  python -m tokenlearner_jax.train --config=configs/charades_x2plus1d_tl.py \
      --workdir=DIR --config.dataset_configs.base_dir=/path/to/tfrecords
  python -m tokenlearner_jax.evaluate \
      --config=configs/charades_x2plus1d_tl.py --workdir=DIR \
      --config.dataset_configs.base_dir=/path/to/tfrecords
Per-module and network GFLOPs and parameters beside the paper's:
  python -m tokenlearner_jax.summary --config=configs/charades_x2plus1d_tl.py

The paper gives no training recipe for this network; this one is X3D's
(Feichtenhofer 2020): SGD with momentum 0.9, weight decay 5e-5, cosine decay
after a linear warmup, dropout 0.5 before the classifier, batch 64.

Args (`--config=configs/charades_x2plus1d_tl.py:ARGS`, comma-separated):
row=NAME (the module of a Table 11/12 row: conv2d_tokenlearner (default),
tokenlearner, spatial_tokenlearner, mhsa, conv2d_mhsa, conv2d_conv1d,
conv2d_mlp_mixer, conv2d_temporal, spatial_temporal, conv2d_spatial_temporal,
or backbone: no module), token_maker (tokenlearner, or the text's
alternatives fixed, dense, pooling), num_tokens=8, fps=12 (6 or 12: which
TFRecords `base_dir` names), runlocal (a tiny network on 4x64x64 clips for a
CPU smoke run; tables 'train@1' and 'test@1').
"""

import ml_collections

from tokenlearner_jax import paper
from tokenlearner_jax.configs import common

CHARADES_SIZES = dict(train=7_985, test=1_863)  # Charades v1's two CSVs.
# `row=NAME` -> the module's parts (Tables 11-12; 'backbone': none).
ROWS = {row.preset: row.parts for row in paper.MODULE_ROWS}
ROWS['backbone'] = ()


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(arg, row='conv2d_tokenlearner',
                         token_maker='tokenlearner', num_tokens=8, fps=12,
                         runlocal=False)
  if arg.row not in ROWS:
    raise ValueError(f'Unknown row={arg.row!r}; known: {sorted(ROWS)}.')
  if arg.fps not in (6, 12):
    raise ValueError(f'fps must be 6 or 12, got {arg.fps}.')
  config = ml_collections.ConfigDict()
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
  config.model_name = 'x2plus1d_multilabel_classification'
  config.model = common.x2plus1d_model_config(
      parts=ROWS[arg.row], token_maker=arg.token_maker,
      num_tokens=arg.num_tokens)
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
    _runlocal(config)
  return config


def _runlocal(config: ml_collections.ConfigDict) -> None:
  """A tiny network (same parts) on 4x64x64 clips for a CPU smoke run."""
  model = config.model
  model.depths, model.widths = (1, 1, 1, 2), (8, 8, 16, 16)
  model.stem_width, model.head_width = 8, 32
  model.module.num_tokens, model.module.num_heads = 4, 2
  model.module.attention_dim = 16
  model.channelwise_impl = 'shifts'  # XLA:CPU's grouped convs are slow.
  dc = config.dataset_configs
  dc.num_frames, dc.crop_size, dc.min_resize = 4, 64, 72
  dc.num_test_clips, dc.test_batch_size = 2, 2
  dc.tables = dict(train='train@1', test='test@1')
  dc.examples_per_subset = dict(train=8, test=4)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_training_steps = 2
  config.log_summary_steps = 1
  config.log_eval_steps = 2
  config.checkpoint_steps = 2
