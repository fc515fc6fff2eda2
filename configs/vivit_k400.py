r"""ViViT-L/16x2 + TokenLearner 8at18 on Kinetics-400 (the paper's Table 6).

The joint space-time ViViT-L/16x2 on 32x224x224 clips with 8 tokens learned per
temporal slice before block 18 (TokenLearner v1.0, the paper's module). The
training recipe is the reference ViViT K400 one (scenic
`vivit/configs/kinetics400/vivit_base_k400.py`): SGD momentum 0.9, base LR 0.1,
batch 64, 30 epochs, cosine decay with 2.5 warmup epochs, global-norm clip 1,
scale jitter 0.9-1.33 and colour augmentation (p=0.8, colour drop 0.1). Eval
during training is one central clip per video; the paper's numbers are the 4x3
test (4 clips x 3 spatial crops = 12 views per video, logits averaged:
`num_test_clips=4`, `do_three_spatial_crops=True`, `test_batch_size` videos
per step), run by `tokenlearner_jax.evaluate`.

The paper fine-tunes from a JFT-pretrained image model. Set
`init_from.checkpoint_path` (left unset, the run trains from scratch): a
big_vision / vision_transformer `.npz` by default, or a
`configs/jft_pretrain.py` workdir with `init_from.checkpoint_format=
tokenlearner_jax`. The image position embedding is resized to the per-slice
grid and tiled over the 16 slices ('resize_tile'), the 2-D patch kernel
inflated to the 16x16x2 tubelet with `central_frame_initializer`, and a
TokenLearner the checkpoint lacks starts from scratch
(`init_missing_from_scratch`; scenic #112 reports that initialising from a
plain ViT does not help much when TokenLearner sits between its layers).

Train (set dataset_configs.base_dir to the TFRecords and
init_from.checkpoint_path first):
  python -m tokenlearner_jax.train --config=configs/vivit_k400.py \
      --workdir=DIR --config.dataset_configs.base_dir=/path/to/tfrecords \
      --config.init_from.checkpoint_path=/path/to/ViT-L_16.npz
Test with 4x3 views per video (writes DIR/eval_test.json):
  python -m tokenlearner_jax.evaluate --config=configs/vivit_k400.py \
      --workdir=DIR
Model summary (parameters and GMACs per view):
  python -m tokenlearner_jax.summary --config=configs/vivit_k400.py

Args (`--config=configs/vivit_k400.py:ARGS`, comma-separated): variant=L/16,
num_tokens=8, tokenlearner_loc=18 (None: the ViViT baseline), use_v11=False,
use_tokenfuse=False, extra_layers=0 (blocks added after the base depth),
row=NAME (the args of a paper row: L16, L16_16at12, L16_8at18, L14_16at18,
L10_16at18, L10_16at18_fuser; explicit args override them), runlocal (a tiny
'mu/8' model on 4x32x32 clips for a CPU smoke run; tables '@1').

The paper's Kinetics rows (Tables 6-8: each model's ARGS, its GFLOPs per view
and accuracy, and our GMACs) are listed in docs/flops.md, made from
`tokenlearner_jax/paper.py` by `python scripts/flops_table.py --markdown`.
L14/L10 are the "24+11" models (35 blocks, TokenLearner before block 18).
Table 7's 6-view rows are the same models tested with fewer views, e.g.
`--config.dataset_configs.num_test_clips=2` (2x3).
"""

from tokenlearner_jax.configs import kinetics

KINETICS400_SIZES = dict(train=214_834, validation=17_637,
                         test=34_579)  # scenic's; Kinetics shrinks over time.


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  return kinetics.kinetics_config(
      arg, experiment_name='vivit_k400_tokenlearner', num_classes=400,
      sizes=KINETICS400_SIZES, base_learning_rate=0.1)
