"""ViViT-L/16x2 + TokenLearner 8at18 on Kinetics-400 (paper Table 6: 84.5%).

The joint space-time ViViT-L/16x2 on 32x224x224 clips with 8 tokens learned per
temporal slice before block 18 (TokenLearner v1.0, the paper's module). The
training recipe is the reference ViViT K400 one (scenic
`vivit/configs/kinetics400`): SGD momentum 0.9, base LR 0.1, batch 64, 30
epochs, cosine decay with 2.5 warmup epochs, global-norm clip 1. Eval is one
central clip per video for now (the paper's 4x3-view test is not built yet).

Train (set dataset_configs.base_dir to the TFRecords first):
  python -m tokenlearner_jax.train --config=configs/vivit_k400.py --workdir=DIR
Model summary (parameters and GMACs per view):
  python -m tokenlearner_jax.summary --config=configs/vivit_k400.py
Args (`--config=configs/vivit_k400.py:ARGS`): variant=L/16, num_tokens=8,
tokenlearner_loc=18 (None: the ViViT baseline), use_v11, use_tokenfuse,
extra_layers, runlocal.
"""

import ml_collections

from tokenlearner_jax import config_lib

KINETICS400_TRAIN_SIZE = 214_834


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = config_lib.parse_arg(
      arg, variant='L/16', num_tokens=8, tokenlearner_loc='18',
      use_v11=False, use_tokenfuse=False, extra_layers=0, runlocal=False)
  loc = None if arg.tokenlearner_loc == 'None' else int(arg.tokenlearner_loc)
  config = ml_collections.ConfigDict()
  config.experiment_name = 'vivit_k400_tokenlearner'

  config.dataset_name = 'video_tfrecord_dataset'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      base_dir='/path/to/kinetics400_tfrecords',  # See the README.
      tables=dict(train='train.tfrecord@1024', validation='validation@1024',
                  test='test@1024'),
      examples_per_subset=dict(train=KINETICS400_TRAIN_SIZE,
                               validation=17_637, test=34_579),
      num_classes=400, num_frames=32, stride=2, min_resize=256,
      crop_size=224, zero_centering=True, num_test_clips=4,
      do_three_spatial_crops=True))

  config.model_name = 'token_learner_classification'
  config.model = config_lib.model_config(
      arg.variant, 'video', num_tokens=arg.num_tokens, tokenlearner_loc=loc,
      use_v11=arg.use_v11, use_tokenfuse=arg.use_tokenfuse,
      extra_layers=arg.extra_layers, classifier='token',
      kernel_init_method='central_frame_initializer')
  config.model_dtype_str = 'float32'

  config.optimizer = 'momentum'
  config.optimizer_configs = ml_collections.ConfigDict(dict(momentum=0.9))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 64
  config.num_training_epochs = 30
  steps_per_epoch = KINETICS400_TRAIN_SIZE // config.batch_size
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * cosine_decay * linear_warmup',
      warmup_steps=int(2.5 * steps_per_epoch),
      steps_per_cycle=config.num_training_epochs * steps_per_epoch,
      base_learning_rate=0.1))
  config.rng_seed = 0

  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.eval_batch_size = 64
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000
  config_lib.trainer_defaults(config)

  if arg.runlocal:
    config.model = config_lib.model_config(
        'mu/8', 'video', num_tokens=4, tokenlearner_loc=None if loc is None
        else 1, use_v11=arg.use_v11, use_tokenfuse=arg.use_tokenfuse,
        classifier='token')
    config.dataset_configs.num_frames = 4
    config.dataset_configs.crop_size = 32
    config.batch_size = 4
    config.eval_batch_size = 4
    config.num_training_steps = 2
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
    config.dataset_configs.min_resize = 36
    config.dataset_configs.stride = 1
    config.dataset_configs.tables = dict(
        train='train.tfrecord@1', validation='validation@1', test='test@1')
    config.dataset_configs.examples_per_subset = dict(train=8, validation=4,
                                                      test=4)
  return config
