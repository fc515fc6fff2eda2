"""Demo: ViT + TokenLearner, JFT-style multi-label training on `multi_digits`.

64x64 images holding 1-3 digits; the target is the multi-hot set of digits
(sigmoid cross-entropy, `init_head_bias`, precision@1 and mAP), the path the
reference uses for JFT pre-training. Generated offline on first use. Every
1000 steps and at the end, the few-shot linear accuracy of the frozen
features on `fewshot_digits` (digit images multi_digits never trains on), as
the paper measures its pre-trained models (`tokenlearner_jax.fewshot`; also
standalone: `python -m tokenlearner_jax.fewshot --config=... --workdir=...`).

  python -m tokenlearner_jax.train --config=configs/demo_multi_digits.py \
      --workdir=/tmp/demo_multi_digits

Args: tokenlearner_loc (default 2; None: no TokenLearner, a plain ViT),
runlocal (a few steps on the small split, for tests).
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
  config.experiment_name = 'demo_multi_digits'
  config.dataset_name = 'multi_digits'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      builder_config='default',
      data_dir=ml_collections.config_dict.placeholder(str), num_classes=10,
      shuffle_buffer_size=4096, random_flip=False,  # Digits: no mirroring.
      global_order=False,  # True: the same batches on any process count.
      # tf.data autotuning off: on 2 cores it delays the exit by up to a
      # minute (see demo_moving_digits.py).
      autotune=False))

  config.model_name = 'token_learner_multilabel_classification'
  config.model = common.model_config(
      'mu/8', 'dynamic', num_tokens=8, tokenlearner_loc=loc, classifier='gap',
      dropout_rate=0.0, attention_dropout_rate=0.0)
  config.model.hidden_size = 128
  config.model.num_heads = 4
  config.model.mlp_dim = 256
  config.model.num_layers = 6
  config.model_dtype_str = 'float32'
  config.init_head_bias = -2.0

  config.optimizer = 'adamw'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=1e-4))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.batch_size = 64
  config.eval_batch_size = 250
  config.num_training_steps = 2000
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * linear_warmup * cosine_decay',
      warmup_steps=200, base_learning_rate=1e-3))
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000
  config.rng_seed = 0
  # The paper's metric of pre-trained models: 5-shot (and 1-, 10-, 25-shot)
  # linear accuracy on a target disjoint from the pre-training images
  # (`fewshot_digits`), every `log_steps` and at the end.
  config.fewshot = ml_collections.ConfigDict(dict(
      datasets={'digits': ('fewshot_digits', 'train', 'test')},
      shots=(1, 5, 10, 25), num_seeds=3, l2_reg=2.0**10, log_steps=1000,
      crop_fraction=1.0,  # The images are the model's input size already.
      batch_size=250))
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
    config.fewshot.datasets = {'digits': ('fewshot_digits/small', 'train',
                                          'test')}
    config.fewshot.shots = (1, 5)
    config.fewshot.num_seeds = 2
    config.fewshot.log_steps = 1
    config.fewshot.batch_size = 64
  return config
