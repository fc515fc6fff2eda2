r"""ViT + TokenLearner fine-tuned on ImageNet (paper Tables 1, 2 and 4).

Default: ViT-B/16 with 8 tokens learned before block 6, no TokenFuser, at
384x384 (Table 4's first row). TokenLearner v1.0
(the paper's module). Fine-tuning at 384 for Ti/S/B and 512 for L/H, as the
paper does, with ViT's fine-tuning recipe (vision_transformer
`vit_jax/configs/common.py`, ImageNet preset): SGD momentum 0.9, batch 512,
20k steps, base LR 0.03 (ViT sweeps 0.003-0.06), cosine decay after 500 warmup
steps, global-norm clip 1, no weight decay, softmax cross-entropy; tfds
`imagenet2012`, inception crop + flip in training, central crop (0.875) for
eval (ViT resizes the whole image: `eval_crop_fraction=1.0`).

Initialised from `init_from.checkpoint_path` (left unset, the run trains from
scratch): a big_vision / vision_transformer `.npz` by default, its position
embedding resized to the new grid ('resize'), and the TokenLearner (and
TokenFuser, and any extra blocks) the plain ViT lacks newly initialised
(`init_missing_from_scratch`). The paper fine-tunes models pretrained with
TokenLearner on JFT: for a `configs/jft_pretrain.py` workdir with the same
model args, add `--config.init_from.checkpoint_format=tokenlearner_jax`.

Train:
  python -m tokenlearner_jax.train --config=configs/vit_imagenet.py \
      --workdir=DIR --config.init_from.checkpoint_path=/path/to/ckpt
Model summary (parameters and GMACs per image):
  python -m tokenlearner_jax.summary --config=configs/vit_imagenet.py

Args (`--config=configs/vit_imagenet.py:ARGS`, comma-separated): variant=B/16,
num_tokens=8, tokenlearner_loc=6 (None: plain ViT), use_v11=False,
use_tokenfuse=False, extra_layers=0 (blocks added after the base depth; the
paper's "(21)", "24+11"), image_size=0 (0: 384 for Ti/S/B, 512 for L/H),
classifier=gap ('token' for a class token, as the public ViT weights have),
runlocal (a tiny 'mu/8' model at 32x32 for a CPU smoke run).

The paper's ImageNet rows (Tables 1-4 and the TokenFuser figure: each model's
ARGS, its GFLOPs and top-1, and our GMACs) are listed in docs/flops.md, made
from `tokenlearner_jax/paper.py` by `python scripts/flops_table.py
--markdown`. Table 1 gives no TokenLearner locations; the S/32 and B/32
locations and the "(21)"/"(22)"/"(20)" splits there are the ones whose
multiply-adds match its GFLOPs.
"""

from typing import Optional

import ml_collections

from tokenlearner_jax.configs import common

IMAGENET_TRAIN_SIZE = 1_281_167


def get_config(arg=None):
  """Returns the config; see the module docstring for `arg`."""
  arg = common.parse_arg(
      arg, types=dict(tokenlearner_loc=Optional[int]), variant='B/16',
      num_tokens=8, tokenlearner_loc=6, use_v11=False, use_tokenfuse=False,
      extra_layers=0, image_size=0, classifier='gap', runlocal=False)
  loc = arg.tokenlearner_loc
  image_size = arg.image_size or (
      512 if arg.variant.split('/')[0] in ('L', 'H') else 384)
  config = ml_collections.ConfigDict()
  config.fast = arg.fast  # `train_steps.fast_config`.
  config.experiment_name = 'vit_imagenet_tokenlearner'
  config.dataset_name = 'imagenet'  # tfds imagenet2012.
  config.dataset_configs = ml_collections.ConfigDict(dict(
      num_classes=1000, image_size=image_size, inception_crop=True,
      random_flip=True, eval_crop_fraction=0.875, eval_split='validation',
      shuffle_buffer_size=50_000,
      cache=False))  # Decoded ImageNet does not fit in memory.

  config.model_name = 'token_learner_classification'
  config.model = common.model_config(
      arg.variant, 'dynamic', num_tokens=arg.num_tokens,
      tokenlearner_loc=loc, use_v11=arg.use_v11,
      use_tokenfuse=arg.use_tokenfuse, extra_layers=arg.extra_layers,
      classifier=arg.classifier, dropout_rate=0.0, attention_dropout_rate=0.0)
  config.model_dtype_str = 'float32'

  config.optimizer = 'momentum'
  config.optimizer_configs = ml_collections.ConfigDict(dict(momentum=0.9))
  config.max_grad_norm = 1.0
  config.label_smoothing = ml_collections.config_dict.placeholder(float)
  config.batch_size = 512
  config.num_training_steps = 20_000
  config.num_training_epochs = ml_collections.config_dict.placeholder(float)
  config.lr_configs = ml_collections.ConfigDict(dict(
      learning_rate_schedule='compound',
      factors='constant * cosine_decay * linear_warmup',
      warmup_steps=500,  # The cosine cycle is the whole run.
      base_learning_rate=0.03))
  config.rng_seed = 0

  config.mixup = ml_collections.ConfigDict(dict(
      alpha=ml_collections.config_dict.placeholder(float)))
  config.eval_batch_size = 512
  config.log_summary_steps = 100
  config.log_eval_steps = 1000
  config.checkpoint_steps = 1000
  common.trainer_defaults(config)
  config.init_from.checkpoint_format = 'big_vision'
  config.init_from.positional_embed_size_change = 'resize'
  config.init_from.init_missing_from_scratch = (
      loc is not None or arg.extra_layers > 0)

  if arg.runlocal:
    config.model = common.model_config(
        'mu/8', 'dynamic', num_tokens=4,
        tokenlearner_loc=None if loc is None else 1, use_v11=arg.use_v11,
        use_tokenfuse=arg.use_tokenfuse, classifier=arg.classifier,
        dropout_rate=0.0, attention_dropout_rate=0.0)
    config.dataset_configs.image_size = 32
    config.dataset_configs.shuffle_buffer_size = 16
    config.batch_size = 8
    config.eval_batch_size = 8
    config.num_training_steps = 2
    config.lr_configs.warmup_steps = 1
    config.log_summary_steps = 1
    config.log_eval_steps = 2
    config.checkpoint_steps = 2
  return config
