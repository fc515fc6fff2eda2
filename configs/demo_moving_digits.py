"""Demo: ViViT + TokenLearner on `moving_digits` (40 classes), offline on CPU.

Clips of 8 frames at 32x32 where one digit moves in one of 4 directions; the
label needs both the digit and the motion. The dataset is generated from
scikit-learn's digits on first use, so this runs with no download.

  python -m tokenlearner_jax.train --config=configs/demo_moving_digits.py \
      --workdir=/tmp/demo_moving_digits

Args: tokenlearner_loc (default 2; None: no TokenLearner, the ViViT
baseline), runlocal (a few steps on the small split, for tests). `sweep()`:
the TokenLearner-location grid for `scripts/sweep.py --from_config`;
`scripts/reproduce.py` runs the paper's ablations on this config.
"""

from typing import Optional

import ml_collections

from tokenlearner_jax.configs import common


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(arg, types=dict(tokenlearner_loc=Optional[int]),
                         tokenlearner_loc=2, runlocal=False)
  loc = arg.tokenlearner_loc
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = 'demo_moving_digits'
  config.dataset_name = 'moving_digits'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      builder_config='default',
      data_dir=ml_collections.config_dict.placeholder(str), num_classes=40,
      shuffle_buffer_size=4096, crop_padding=4,
      global_order=False,  # True: the same batches on any process count.
      # tf.data autotuning off: on 2 cores its tuning thread takes CPU from
      # the train step and holds up the exit by up to a minute.
      autotune=False))

  config.model_name = 'token_learner_classification'
  config.model = common.model_config(
      'mu/8', 'video', num_tokens=8, tokenlearner_loc=loc, classifier='gap',
      dropout_rate=0.0, attention_dropout_rate=0.0)
  config.model.hidden_size = 64
  config.model.mlp_dim = 128
  config.model.num_layers = 4
  config.model_dtype_str = 'float32'

  config.optimizer = 'adamw'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=0.05))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  # Small batches and many updates, no stochastic depth: on 2 CPU cores this
  # learned faster per second than batches of 64 or 6 layers did. Batch 24
  # ran at 1.5-1.9x the steps/s of batch 32 on XLA:CPU here (44-49 vs 73-83
  # ms/step: XLA's YNNPACK fusions slow down past batch ~26), so 7,000 steps
  # of 24 take less time than 6,000 of 32.
  config.batch_size = 24
  config.eval_batch_size = 250
  config.num_training_steps = 7000
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * linear_warmup * cosine_decay',
      warmup_steps=400, base_learning_rate=3e-3))
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000
  config.rng_seed = 0
  common.trainer_defaults(config)

  if arg.runlocal:
    config.dataset_configs.builder_config = 'small'
    config.model.num_layers = 2
    config.model.tokenizer.tokenlearner_loc = None if loc is None else 1
    config.batch_size = 8
    config.eval_batch_size = 32
    config.num_training_steps = 2
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
  return config


def sweep():
  """TokenLearner location x seed, for `scripts/sweep.py --from_config`."""
  return [{'model.tokenizer.tokenlearner_loc': loc, 'rng_seed': seed}
          for loc in (0, 1, 2, 3) for seed in (0, 1, 2)]
