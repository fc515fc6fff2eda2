"""ViT-B/16 + TokenLearner v1.1 (16 tokens at block 9) on ImageNet-1k.

Mirrors the reference's only config, scenic `projects/token_learner/configs/
im1k_token_learner_config.py`: multi-label (sigmoid) head with init_head_bias
-10, Adam with weight decay 0.3, batch 4096, 90 epochs, LR 5e-3 with 10k linear
warmup steps and linear decay to 1e-5, clip 1. Unlike the reference,
`stochastic_depth=0.1` takes effect.

Train:
  python -m tokenlearner_jax.train --config=configs/im1k_token_learner.py --workdir=DIR
Model summary (parameters and GMACs per image):
  python -m tokenlearner_jax.summary --config=configs/im1k_token_learner.py
Args: variant=B/16, num_tokens=16, tokenlearner_loc=9, use_v11,
use_tokenfuse, runlocal.
"""

from typing import Optional

import ml_collections

from tokenlearner_jax.configs import common

IMAGENET_TRAIN_SIZE = 1_281_167


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(
      arg, types=dict(tokenlearner_loc=Optional[int]), variant='B/16',
      num_tokens=16, tokenlearner_loc=9, use_v11=True, use_tokenfuse=False,
      runlocal=False)
  loc = arg.tokenlearner_loc
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = 'im1k_token_learner'
  config.dataset_name = 'imagenet'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      num_classes=1000, image_size=224, shuffle_buffer_size=10_000))

  config.model_name = 'token_learner_multilabel_classification'
  config.model = common.model_config(
      arg.variant, 'dynamic', num_tokens=arg.num_tokens,
      tokenlearner_loc=loc, use_v11=arg.use_v11,
      use_tokenfuse=arg.use_tokenfuse, stochastic_depth=0.1,
      dropout_rate=0.0, attention_dropout_rate=0.0)
  config.model_dtype_str = 'float32'
  config.init_head_bias = -10.0

  config.optimizer = 'adam'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=0.3))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 4096
  config.num_training_epochs = 90
  # As the reference: 90 epochs of 312 full batches, 28,080 steps, which the
  # linear decay to end_learning_rate spans.
  steps_per_epoch = IMAGENET_TRAIN_SIZE // config.batch_size
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * linear_warmup * linear_decay',
      warmup_steps=10_000,
      total_steps=config.num_training_epochs * steps_per_epoch,
      end_learning_rate=1e-5, base_learning_rate=5e-3))
  config.rng_seed = 42

  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.eval_batch_size = 1024
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 5000
  common.trainer_defaults(config)

  if arg.runlocal:
    config.model = common.model_config(
        'mu/8', 'dynamic', num_tokens=4,
        tokenlearner_loc=None if loc is None else 1, use_v11=arg.use_v11,
        use_tokenfuse=arg.use_tokenfuse, stochastic_depth=0.1,
        dropout_rate=0.0, attention_dropout_rate=0.0)
    config.dataset_configs.image_size = 32
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_training_steps = 2
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
    config.dataset_configs.shuffle_buffer_size = 16
  return config
