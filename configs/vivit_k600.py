r"""ViViT-L/16x2 + TokenLearner 8at18 on Kinetics-600 (the paper's Table 8).

`configs/vivit_k400.py` (model, data format, augmentation, 4x3-view test,
`init_from` from a JFT-pretrained image model) on Kinetics-600: 600 classes,
scenic's K600 split sizes (`vivit/configs/kinetics600/
vivit_large_factorised_encoder.py`: 363,213 / 27,676 / 55,377; Kinetics
shrinks as videos leave YouTube, so set yours) and that config's base LR 0.05
(K400: 0.1); SGD momentum 0.9, batch 64, 30 epochs, cosine decay with 2.5
warmup epochs, clip 1.

Train (set dataset_configs.base_dir and init_from.checkpoint_path first):
  python -m tokenlearner_jax.train --config=configs/vivit_k600.py \
      --workdir=DIR --config.dataset_configs.base_dir=/path/to/tfrecords \
      --config.init_from.checkpoint_path=/path/to/ViT-L_16.npz
Test with 4x3 views per video (writes DIR/eval_test.json):
  python -m tokenlearner_jax.evaluate --config=configs/vivit_k600.py \
      --workdir=DIR
Model summary (parameters and GMACs per view):
  python -m tokenlearner_jax.summary --config=configs/vivit_k600.py

Args: as configs/vivit_k400.py (variant=L/16, num_tokens=8,
tokenlearner_loc=18 or None, use_v11=False, use_tokenfuse=False,
extra_layers=0, row, runlocal).

The paper's Kinetics-600 rows (Table 8) are listed with their ARGS, GFLOPs
per view and accuracies in docs/flops.md (`python scripts/flops_table.py`).
"""

from tokenlearner_jax.configs import kinetics

KINETICS600_SIZES = dict(train=363_213, validation=27_676, test=55_377)


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  return kinetics.kinetics_config(
      arg, experiment_name='vivit_k600_tokenlearner', num_classes=600,
      sizes=KINETICS600_SIZES, base_learning_rate=0.05)
