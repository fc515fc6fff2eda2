r"""JFT-style multi-label pretraining of ViT + TokenLearner at 224x224.

Default: ViT-B/16 with 8 tokens learned before block 6 (TokenLearner v1.0, the
paper's module), no TokenFuser: the "0.5" point of the paper's "where should
we have TokenLearner?" figure (JFT-300M pretrained, ImageNet 5-shot linear,
about as accurate as ViT-B/16 at about half its GFLOPs). These models are what
the paper fine-tunes on ImageNet (`configs/vit_imagenet.py`) and Kinetics
(`configs/vivit_k400.py`, `configs/vivit_k600.py`).

The recipe is ViT's JFT-300M one (the paper: "same as ViT"): Adam (b1 0.9, b2
0.999) with weight decay 0.1, batch 4096, 7 epochs, 10k linear warmup steps
then linear decay to 1e-5, base LR 8e-4 for B (4e-4 for L, 3e-4 for H, 1e-3
for smaller), clip 1, no dropout, a tanh pre-logits layer of the hidden width
(dropped at fine-tuning). The head is sigmoid cross-entropy over JFT's 18,291
classes (`token_learner_multilabel_classification`, `init_head_bias=-10`);
the class count is BiT's for JFT-300M (the paper does not restate it).

Data: `tf.train.Example` TFRecords with a JPEG under 'image/encoded' and the
class ids under 'image/class/label' (`tokenlearner_jax.data.image_tfrecords`);
inception crop + flip for training, central crop for eval. JFT is not public:
set `dataset_configs.base_dir`, `tables` and `examples_per_subset` (the train
size sets the step count) to your copy.

Train:
  python -m tokenlearner_jax.train --config=configs/jft_pretrain.py \
      --workdir=DIR --config.dataset_configs.base_dir=/path/to/jft_tfrecords
Model summary (parameters and GMACs per image):
  python -m tokenlearner_jax.summary --config=configs/jft_pretrain.py

Args (`--config=configs/jft_pretrain.py:ARGS`, comma-separated): variant=B/16,
num_tokens=8, tokenlearner_loc=6 (None: plain ViT), use_v11=False,
use_tokenfuse=False, extra_layers=0, image_size=224, runlocal (a tiny 'mu/8'
model at 32x32 with 10 classes for a CPU smoke run).

Every 25,000 steps and at the end, few-shot linear accuracy (1, 5, 10, 25
shots, 3 seeds) on the paper's nine datasets (`FEWSHOT_DATASETS`, tfds names;
`--config.fewshot.datasets=...` to change), standalone on a checkpoint:
  python -m tokenlearner_jax.fewshot --config=configs/jft_pretrain.py \
      --workdir=DIR

The paper's points (the location and few-shot figures: each model's ARGS, its
GFLOPs and 5-shot accuracy, and our GMACs) are listed in docs/flops.md, made
from `tokenlearner_jax/paper.py` by `python scripts/flops_table.py
--markdown`.
"""

from typing import Optional

import ml_collections

from tokenlearner_jax.configs import common

JFT_NUM_CLASSES = 18_291
JFT_TRAIN_SIZE = 303_000_000  # About; set to your copy's count.
# The paper's nine few-shot datasets (its 5-shot average; ImageNet alone is
# its other few-shot figure) as tfds has them: name -> (tfds name, few-shot
# pool split, test split), with the splits of big_vision's few-shot configs
# (UC Merced and colorectal_histology have one split; the first 65,000
# ImageNet train images hold at least 30 of every class). tfds prepares each
# on first use, ImageNet from the files a user downloads (its manual_dir).
FEWSHOT_DATASETS = {
    'caltech': ('caltech101', 'train', 'test'),
    'birds': ('caltech_birds2011', 'train', 'test'),
    'cars': ('cars196', 'train', 'test'),
    'cifar100': ('cifar100', 'train', 'test'),
    'col_hist': ('colorectal_histology', 'train[:2000]', 'train[2000:]'),
    'dtd': ('dtd', 'train', 'test'),
    'imagenet': ('imagenet2012', 'train[:65000]', 'validation'),
    'pets': ('oxford_iiit_pet', 'train', 'test'),
    'uc_merced': ('uc_merced', 'train[:1000]', 'train[1000:]'),
}
# ViT's JFT-300M base learning rates per model size.
BASE_LEARNING_RATES = {'mu': 1e-3, 'Ti': 1e-3, 'S': 1e-3, 'B': 8e-4,
                       'L': 4e-4, 'H': 3e-4}


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(
      arg, types=dict(tokenlearner_loc=Optional[int]), variant='B/16',
      num_tokens=8, tokenlearner_loc=6, use_v11=False, use_tokenfuse=False,
      extra_layers=0, image_size=224, runlocal=False)
  loc = arg.tokenlearner_loc
  size = arg.variant.split('/')[0]
  if size not in BASE_LEARNING_RATES:
    raise ValueError(f'variant={arg.variant!r}: size must be one of '
                     f'{sorted(BASE_LEARNING_RATES)}.')
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = 'jft_pretrain_tokenlearner'
  config.dataset_name = 'multilabel_image_tfrecords'
  config.dataset_configs = ml_collections.ConfigDict(dict(
      base_dir='/path/to/jft_tfrecords',
      tables=dict(train='train@1024', validation='validation@64'),
      examples_per_subset=dict(train=JFT_TRAIN_SIZE),
      num_classes=JFT_NUM_CLASSES, label_offset=0,
      image_size=arg.image_size, inception_crop=True, random_flip=True,
      eval_crop_fraction=0.875, eval_split='validation',
      shuffle_buffer_size=250_000))

  config.model_name = 'token_learner_multilabel_classification'
  hidden_size = common.VIT_SIZES[size][0]
  config.model = common.model_config(
      arg.variant, 'dynamic', num_tokens=arg.num_tokens,
      tokenlearner_loc=loc, use_v11=arg.use_v11,
      use_tokenfuse=arg.use_tokenfuse, extra_layers=arg.extra_layers,
      representation_size=hidden_size, dropout_rate=0.0,
      attention_dropout_rate=0.0)
  config.model_dtype_str = 'float32'
  config.init_head_bias = -10.0

  config.optimizer = 'adam'
  config.optimizer_configs = ml_collections.ConfigDict(dict(
      beta1=0.9, beta2=0.999, weight_decay=0.1))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 4096
  config.num_training_epochs = 7
  config.num_training_steps = ml_collections.config_dict.placeholder(int)
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * linear_warmup * linear_decay',
      warmup_steps=10_000, end_learning_rate=1e-5,
      base_learning_rate=BASE_LEARNING_RATES[size]))
  config.rng_seed = 0

  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.eval_batch_size = 1024
  config.log_summary_steps = 100
  config.log_eval_steps = 5000
  config.checkpoint_steps = 5000
  # The paper's metric: few-shot linear accuracy of the frozen pre-logits
  # (`tokenlearner_jax.fewshot`), images resized to 256 and cropped to 224.
  config.fewshot = ml_collections.ConfigDict(dict(
      datasets=dict(FEWSHOT_DATASETS), shots=(1, 5, 10, 25), num_seeds=3,
      l2_reg=2.0**10, log_steps=25_000, crop_fraction=0.875,
      batch_size=512, data_dir=ml_collections.config_dict.placeholder(str)))
  common.trainer_defaults(config)

  if arg.runlocal:
    config.model = common.model_config(
        'mu/8', 'dynamic', num_tokens=4,
        tokenlearner_loc=None if loc is None else 1, use_v11=arg.use_v11,
        use_tokenfuse=arg.use_tokenfuse, representation_size=32,
        dropout_rate=0.0, attention_dropout_rate=0.0)
    config.dataset_configs.num_classes = 10
    config.dataset_configs.image_size = 32
    config.dataset_configs.shuffle_buffer_size = 16
    config.dataset_configs.tables = dict(train='train@1',
                                         validation='validation@1')
    config.dataset_configs.examples_per_subset = dict(train=16, validation=8)
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_training_steps = 2
    config.lr_configs.warmup_steps = 1
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
    del config['fewshot']  # The nine datasets are not at hand for a smoke run.
  return config
