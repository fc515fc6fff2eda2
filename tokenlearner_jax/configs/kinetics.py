"""The ViViT + TokenLearner config on Kinetics, and its paper-row presets.

`configs/vivit_k400.py` and `configs/vivit_k600.py` call `kinetics_config`
with their dataset's classes, split sizes and learning rate; their module
docstrings describe the model, the recipe and the arguments.
"""

from typing import Any, Dict, Mapping, Optional

import ml_collections

from tokenlearner_jax import paper
from tokenlearner_jax.configs import common

# The arguments of `--config=configs/vivit_k400.py:ARG` (and vivit_k600.py).
ARG_DEFAULTS = dict(variant='L/16', num_tokens=8, tokenlearner_loc=18,
                    use_v11=False, use_tokenfuse=False, extra_layers=0,
                    row='', runlocal=False)
ARG_TYPES = dict(tokenlearner_loc=Optional[int])

# `row=NAME`: the args of the paper's row with that preset (Tables 6-8;
# docs/flops.md lists them); explicit args override them.
PRESETS: Dict[str, Dict[str, Any]] = {
    name: row.args for name, row in paper.presets().items()}


def parse_row_arg(arg: Optional[str]) -> ml_collections.ConfigDict:
  """Parses `arg` over `ARG_DEFAULTS`, `row=NAME` supplying the defaults."""
  row = common.parse_arg(arg, types=ARG_TYPES, **ARG_DEFAULTS).row
  if row and row not in PRESETS:
    raise ValueError(f'Unknown row={row!r}; known: {sorted(PRESETS)}.')
  return common.parse_arg(arg, types=ARG_TYPES,
                          **{**ARG_DEFAULTS, **PRESETS.get(row, {})})


def kinetics_config(arg: Optional[str], *, experiment_name: str,
                    num_classes: int, sizes: Mapping[str, int],
                    base_learning_rate: float) -> ml_collections.ConfigDict:
  """The ViViT + TokenLearner config on a Kinetics dataset.

  Args:
    arg: The config argument (see `ARG_DEFAULTS`; `row=NAME` presets).
    experiment_name: `config.experiment_name`.
    num_classes: Classes of the dataset.
    sizes: Examples per split ('train', 'validation', 'test').
    base_learning_rate: The SGD base learning rate.

  Returns:
    The config of `configs/vivit_k400.py` and `configs/vivit_k600.py`.
  """
  arg = parse_row_arg(arg)
  loc = arg.tokenlearner_loc
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = experiment_name
  config.dataset_name = 'video_tfrecord_dataset'
  config.dataset_configs = _dataset_configs(num_classes, sizes)
  config.model_name = 'token_learner_classification'
  config.model = _model(arg, arg.variant, loc, extra_layers=arg.extra_layers)
  config.model_dtype_str = 'float32'
  _training(config, sizes['train'], base_learning_rate)
  common.trainer_defaults(config)
  # From a JFT-pretrained image model (see the module docstring); the tubelet
  # kernel inflation is model.tokenizer.temporal_encoding_config's
  # central_frame_initializer.
  config.init_from.checkpoint_format = 'big_vision'
  config.init_from.positional_embed_size_change = 'resize_tile'
  config.init_from.init_missing_from_scratch = loc is not None
  if arg.runlocal:
    _runlocal(config, arg)
  return config


def _dataset_configs(num_classes: int,
                     sizes: Mapping[str, int]) -> ml_collections.ConfigDict:
  """The reference ViViT's Kinetics input: 32 frames at stride 2, 224 crops."""
  return ml_collections.ConfigDict(dict(
      base_dir='/path/to/kinetics_tfrecords',  # See docs/data.md.
      tables=dict(train='train.tfrecord@1024', validation='validation@1024',
                  test='test@1024'),
      examples_per_subset=dict(sizes),
      num_classes=num_classes, num_frames=32, stride=2, min_resize=256,
      crop_size=224, zero_centering=True,
      augmentation_params=dict(
          do_jitter_scale=True, scale_min_factor=0.9, scale_max_factor=1.33,
          prob_scale_jitter=1.0, do_color_augment=True,
          prob_color_augment=0.8, prob_color_drop=0.1),
      # The 4x3-view test of `tokenlearner_jax.evaluate`: each test batch holds
      # `test_batch_size` videos x 12 views.
      num_test_clips=4, do_three_spatial_crops=True, test_batch_size=8))


def _model(arg: ml_collections.ConfigDict, variant: str,
           loc: Optional[int], **kwargs) -> ml_collections.ConfigDict:
  """ViViT (+ TokenLearner at `loc`) with a class token, no dropout."""
  return common.model_config(
      variant, 'video', num_tokens=arg.num_tokens, tokenlearner_loc=loc,
      use_v11=arg.use_v11, use_tokenfuse=arg.use_tokenfuse,
      classifier='token', kernel_init_method='central_frame_initializer',
      dropout_rate=0.0, attention_dropout_rate=0.0, **kwargs)


def _training(config: ml_collections.ConfigDict, train_size: int,
              base_learning_rate: float) -> None:
  """The reference ViViT K400 recipe: SGD momentum, batch 64, 30 epochs,
  cosine decay after 2.5 warmup epochs, clipping at 1."""
  config.optimizer = 'momentum'
  config.optimizer_configs = ml_collections.ConfigDict(dict(momentum=0.9))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 64
  config.num_training_epochs = 30
  steps_per_epoch = train_size // config.batch_size
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * cosine_decay * linear_warmup',
      warmup_steps=int(2.5 * steps_per_epoch),
      steps_per_cycle=config.num_training_epochs * steps_per_epoch,
      base_learning_rate=base_learning_rate))
  config.rng_seed = 0
  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.eval_batch_size = 64
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000


def _runlocal(config: ml_collections.ConfigDict,
              arg: ml_collections.ConfigDict) -> None:
  """A 'mu/8' model on 4x32x32 clips for a CPU smoke run."""
  loc = arg.tokenlearner_loc
  config.model = _model(arg, 'mu/8', None if loc is None else 1)
  config.model.tokenizer.num_tokens = 4
  dc = config.dataset_configs
  dc.num_frames, dc.crop_size, dc.min_resize, dc.stride = 4, 32, 36, 1
  dc.test_batch_size = 2
  dc.tables = dict(train='train.tfrecord@1', validation='validation@1',
                   test='test@1')
  dc.examples_per_subset = dict(train=8, validation=4, test=4)
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_training_steps = 2
  config.log_summary_steps = 1
  config.log_eval_steps = 2
  config.checkpoint_steps = 2
