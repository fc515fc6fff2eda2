r"""X(2+1)D-M + Conv2D + TokenLearner on Charades (the paper's Table 9 "Ours").

The paper's Section 6 network: the X(2+1)D-M backbone (X3D-M whose middle
convolutions are full 1x3x3 + 3x1x1 ones) whose last three res5 blocks carry
the module slot of Figure 9 (Conv2D -> TokenLearner, 8 tokens per frame ->
Vector Transformer -> TokenFuser) in place of that convolution, trained from
scratch on 64-frame clips (224 crops; tested at 256) of Charades (157
classes, multi-label: sigmoid cross-entropy, mAP). The MHSA rows' attention
has the Bottleneck Transformer's position logits as its Figure 4 draws them
(`model.module.mhsa_position`). docs/models.md describes the network and how
its counts meet Tables 10-12.

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
TFRecords `base_dir` names), network (x2plus1d_m (default): the paper's
network as above; channelwise: X3D-M's channel-wise (2+1)D middles with the
module in the last res5 block only, tested at 224), runlocal (a tiny network
on 4x64x64 clips for a CPU smoke run; tables 'train@1' and 'test@1').
"""

from tokenlearner_jax.configs import charades


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  return charades.charades_config(arg)
