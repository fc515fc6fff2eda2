r"""A tiny X(2+1)D on `event_digits`: Table 11's modules in miniature, offline.

`event_digits` (tokenlearner_jax/data/datasets/event_digits.py) holds
32-frame 32x32 clips in which 1-3 digits appear, move left or right and
vanish at random times; the label is the multi-hot set of digit x direction
(20 classes), the Charades stand-in. The network is the X(2+1)D of
configs/charades_x2plus1d_tl.py narrowed (depths 1, 2, 1, 1, widths 8, 16,
24, 32, stem 8, head 64) with the module in res3's last block (res5 of a
32x32 clip is one position per frame, where tokens have nothing to select;
res3 has 4x4), at width 36 with 4 heads, attention width 32, 4 tokens per
frame, trained from scratch with a sigmoid head:

  python -m tokenlearner_jax.train --config=configs/demo_event_digits.py \
      --workdir=/tmp/demo_event_digits
  python -m tokenlearner_jax.train \
      --config=configs/demo_event_digits.py:row=backbone \
      --workdir=/tmp/demo_event_digits_backbone

scripts/event_study.py trains the backbone and Table 11's modules on it
over 3 seeds (docs/results.md); docs/data.md describes the dataset.

Args (`--config=configs/demo_event_digits.py:ARGS`): row=NAME (any row of
configs/charades_x2plus1d_tl.py: backbone, mhsa, tokenlearner,
conv2d_tokenlearner (default), ...), runlocal (the 'small' dataset, 2
steps).
"""

import ml_collections

from tokenlearner_jax.configs import charades
from tokenlearner_jax.configs import common


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(arg, row='conv2d_tokenlearner', runlocal=False)
  if arg.row not in charades.ROWS:
    raise ValueError(f'Unknown row={arg.row!r}; known: '
                     f'{sorted(charades.ROWS)}.')
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = f'demo_event_digits_{arg.row}'
  config.dataset_name = 'event_digits'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      builder_config='default',
      data_dir=ml_collections.config_dict.placeholder(str), num_classes=20,
      shuffle_buffer_size=4096, random_flip=False,  # Flips swap directions.
      global_order=False, autotune=False))
  config.model_name = 'x2plus1d_multilabel_classification'
  model = common.x2plus1d_model_config(parts=charades.ROWS[arg.row],
                                       num_tokens=4)
  model.depths, model.widths = (1, 2, 1, 1), (8, 16, 24, 32)
  model.stem_width, model.head_width = 8, 64
  # res5 of 32x32 clips is one position per frame: the module goes in res3's
  # last block (4x4 per frame), where tokens have something to select.
  model.module.stage = 3
  model.module.num_heads, model.module.attention_dim = 4, 32
  model.dropout_rate = 0.0  # A short run from scratch.
  model.channelwise_impl = 'shifts'  # XLA:CPU's grouped convs are slow.
  config.model = model
  config.model_dtype_str = 'float32'
  config.optimizer = 'adamw'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=1e-4))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.batch_size = 32
  config.eval_batch_size = 100
  config.num_training_steps = 400
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * linear_warmup * cosine_decay',
      warmup_steps=40, base_learning_rate=3e-3))
  config.log_summary_steps = 100
  config.log_eval_steps = 400
  config.checkpoint_steps = 400
  config.rng_seed = 0
  common.trainer_defaults(config)
  if arg.runlocal:
    config.dataset_configs.builder_config = 'small'
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_training_steps = 2
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
  return config
