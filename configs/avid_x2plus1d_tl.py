r"""X(2+1)D-M + TokenLearner on AViD (the paper's Table 10 "Ours").

AViD (Anonymized Videos from Diverse countries, Piergiovanni and Ryoo 2020):
887 classes, one per video, about 410K train and 40K test videos of 3-15 s,
in Kinetics' format; Table 10 reports the mean accuracy, trained from
scratch on RGB, one view per video. The network and recipe are those of
configs/charades_x2plus1d_tl.py (docs/models.md) with a softmax head; Table
10's "Ours" is Table 11's AViD row "Ours (TokenLearner)" (53.8 in both), so
the default module is TokenLearner without Conv2D.

TFRecords from a `path,label` CSV per split (scripts/make_video_tfrecords.py;
the paper gives no AViD frame rate, we use Charades' 12 fps: a 64-frame clip
at stride 1 is 5.3 s, shorter videos wrap around):
  python scripts/make_video_tfrecords.py --csv=avid_train.csv \
      --video_dir=/data/avid/videos --output_dir=/data/avid_12fps_tfrecords \
      --split=train --num_shards=1024 --fps=12 --min_resize=256
  python scripts/make_video_tfrecords.py --csv=avid_test.csv \
      --video_dir=/data/avid/videos --output_dir=/data/avid_12fps_tfrecords \
      --split=test --num_shards=128 --fps=12 --min_resize=256 \
      --label_map=/data/avid_12fps_tfrecords/label_map.csv
  python -m tokenlearner_jax.train --config=configs/avid_x2plus1d_tl.py \
      --workdir=DIR --config.dataset_configs.base_dir=/data/avid_12fps_tfrecords
  python -m tokenlearner_jax.evaluate --config=configs/avid_x2plus1d_tl.py \
      --workdir=DIR --config.dataset_configs.base_dir=/data/avid_12fps_tfrecords
Set `dataset_configs.examples_per_subset` to your copy's counts (the epochs
are counted from them). The paper gives no AViD recipe: this is the Charades
one (X3D's) run for 30 epochs with a 2-epoch warmup, the length of scenic's
Kinetics recipe for a dataset of this size.

Args (`--config=configs/avid_x2plus1d_tl.py:ARGS`, comma-separated): row=NAME
(tokenlearner (default), backbone, spatial_temporal: Table 10's disjoint
space + time transformer, mhsa, conv2d_mhsa, conv2d_tokenlearner: the other
Table 11 rows; any row of configs/charades_x2plus1d_tl.py), token_maker,
num_tokens=8, network (x2plus1d_m (default): the paper's network, Table 10's
GFLOPs; channelwise: X3D-M's channel-wise middles, the module in the last
block; as configs/charades_x2plus1d_tl.py), runlocal (a tiny network on
4x64x64 clips for a CPU smoke run; tables 'train@1' and 'test@1').

Whole-network GFLOPs per view beside Table 10's (532 backbone, 493 disjoint
space + time transformer, 487 Ours):
  python -m tokenlearner_jax.summary --config=configs/avid_x2plus1d_tl.py:row=backbone
"""

from tokenlearner_jax.configs import charades
from tokenlearner_jax.configs import common

AVID_SIZES = dict(train=410_000, test=40_000)  # About; set your copy's.
NUM_CLASSES = 887


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(arg, row='tokenlearner', token_maker='tokenlearner',
                         num_tokens=8, network='x2plus1d_m', runlocal=False)
  config = charades.charades_config(
      f'row={arg.row},token_maker={arg.token_maker},'
      f'num_tokens={arg.num_tokens},network={arg.network},'
      f'runlocal={arg.runlocal},fast={arg.fast}')
  config.experiment_name = f'avid_x2plus1d_{arg.row}_12fps'
  config.model_name = 'x2plus1d_classification'
  dc = config.dataset_configs
  dc.base_dir = '/path/to/avid_12fps_tfrecords'
  dc.num_classes = NUM_CLASSES
  # One label per video: no segments, the views' logits averaged.
  dc.clip_labels, dc.test_pooling = 'video', 'mean'
  dc.num_test_clips = 1
  if arg.runlocal:
    dc.num_test_clips = 2
    return config
  dc.tables = dict(train='train@1024', test='test@128')
  dc.examples_per_subset = AVID_SIZES
  config.num_training_epochs = 30
  steps_per_epoch = AVID_SIZES['train'] // config.batch_size
  config.lr_configs.warmup_steps = 2 * steps_per_epoch
  config.lr_configs.steps_per_cycle = (config.num_training_epochs
                                       * steps_per_epoch)
  return config
