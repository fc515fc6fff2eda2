"""Every config key the trainer knows, and `check_config`, which refuses others.

`KEYS` is the one table of the keys outside `config.model`: each is
'implemented' (with the module that reads it), a 'no-op' (accepted, with why
it changes nothing here) or 'unsupported' (a key of the reference's that
switches on something this trainer does not have: only its "off" values are
accepted). `config.model` is `tokenlearner_jax.models.config.ModelConfig`'s:
its keys are checked there (an unknown one names the closest known one).

`check_config(config)` walks the whole config (nested ConfigDicts and dicts;
a key whose value is free-form, such as `dataset_configs.tables`, is a leaf)
and raises a `ValueError` for a key the table does not know, naming the
closest known key, for a value a no-op or unsupported key does not accept, or
for a count (`batch_size`, `num_training_steps`, `checkpoint_steps`, ...) that
is set but not > 0.
The entry points (`train`, `evaluate`, `visualize`, `summary`) call it before
any data is read or anything compiles. docs/config_keys.md renders the table,
with `config.model`'s keys from `ModelConfig` (`model_keys`), as
`python scripts/config_keys.py --markdown` writes it.
"""

import dataclasses
import difflib
import numbers
from typing import Any, Dict, Iterator, List, Optional, Tuple

import ml_collections

from tokenlearner_jax import errors
from tokenlearner_jax import models
from tokenlearner_jax import sharding
from tokenlearner_jax.configs import fields
from tokenlearner_jax.configs.data_config import AugmentationConfig
from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.configs.fewshot_config import FewshotConfig
from tokenlearner_jax.configs.init_from_config import InitFromConfig
from tokenlearner_jax.configs.objective_config import ObjectiveConfig
from tokenlearner_jax.configs.optim_config import OptimizerConfig
from tokenlearner_jax.configs.optim_config import ScheduleConfig
from tokenlearner_jax.models import config as model_lib

IMPLEMENTED = 'implemented'
NO_DEFAULT = object()  # `ConfigKey.default` of keys without one.


@dataclasses.dataclass(frozen=True)
class SameAs:
  """A default that follows another top-level key (a `FieldReference`)."""
  key: str
NO_OP = 'no-op'
UNSUPPORTED = 'unsupported'
STATUSES = (IMPLEMENTED, NO_OP, UNSUPPORTED)


@dataclasses.dataclass(frozen=True)
class ConfigKey:
  """One config key.

  Attributes:
    key: Its path under `config`, e.g. 'lr_configs.warmup_steps'.
    status: One of `STATUSES`.
    description: What it sets, in one line.
    module: The module that reads it ('implemented' keys).
    why: Why it changes nothing here ('no-op') or is refused ('unsupported').
    accepts: The values accepted (None: any); None (an unset placeholder) is
      always accepted. Others raise, with `why`.
    section: Its value is a ConfigDict of keys that the table lists; any
      other key is a leaf, whatever its value (`dataset_configs.tables` is a
      dict of split names, not of config keys).
    reference: A config file of the reference (Scenic's token_learner and
      ViViT Kinetics configs) sets it.
    default: What `complete` sets where a config has no value (the key is
      read with attribute access then); `NO_DEFAULT`: none.
    positive: A count or length: a set value must be a number > 0 (None, an
      unset placeholder, is accepted).
  """
  key: str
  status: str
  description: str
  module: str = ''
  why: str = ''
  accepts: Optional[Tuple[Any, ...]] = None
  section: bool = False
  reference: bool = False
  default: Any = NO_DEFAULT
  positive: bool = False


def _implemented(key: str, module: str, description: str,
                 **kwargs: Any) -> ConfigKey:
  return ConfigKey(key, IMPLEMENTED, description,
                   module=f'tokenlearner_jax.{module}', **kwargs)


def _no_op(key: str, why: str, description: str, **kwargs: Any) -> ConfigKey:
  return ConfigKey(key, NO_OP, description, why=why, **kwargs)


def _unsupported(key: str, why: str, description: str,
                 **kwargs: Any) -> ConfigKey:
  return ConfigKey(key, UNSUPPORTED, description, why=why, **kwargs)


_REF = dict(reference=True)
_MULTICROP = ('the 4x3-view test runs after training, with `python -m '
              'tokenlearner_jax.evaluate`, not during it')

KEYS: Tuple[ConfigKey, ...] = (
    # ---------------------------------------------------------- the run
    _no_op('experiment_name', 'a label: nothing is named by it (outputs go '
           'to --workdir)', 'Name of the experiment.', **_REF),
    _no_op('trainer_name', 'one trainer runs ViT and ViViT alike',
           "The reference's trainer ('classification_trainer' or "
           "'vivit_trainer').", accepts=('classification_trainer',
                                         'vivit_trainer'), **_REF),
    _implemented('rng_seed', 'train_steps', 'Seeds initialisation, dropout '
                 'and the input order.', **_REF),
    _implemented('batch_size', 'train', 'Global train batch size.',
                 positive=True, **_REF),
    _implemented('eval_batch_size', 'data.input_pipeline',
                 'Global eval batch size.', default=SameAs('batch_size'),
                 positive=True),
    _implemented('num_training_steps', 'train',
                 'Run length in steps (wins over num_training_epochs).',
                 positive=True),
    _implemented('num_training_epochs', 'train',
                 'Run length in epochs of the train split.', **_REF),
    _implemented('log_summary_steps', 'train',
                 'Steps between train summaries.', positive=True, **_REF),
    _implemented('log_eval_steps', 'train', 'Steps between evaluations.',
                 positive=True, **_REF),
    _implemented('checkpoint_steps', 'checkpoint',
                 'Steps between checkpoints.', positive=True, **_REF),
    _implemented('max_checkpoints_to_keep', 'checkpoint',
                 'Checkpoints kept.', default=3),
    _implemented('checkpoint_fallback', 'checkpoint', 'Resuming skips an '
                 'unreadable latest checkpoint (corrupt, truncated, empty) '
                 'with a warning and restores the newest good one; False '
                 'stops with one line instead.', default=True),
    _implemented('workdir_lock_stale_seconds', 'train', 'A workdir lock '
                 'whose heartbeat is older is taken over, as is one whose '
                 'process on this host is dead (default 600).', default=600,
                 positive=True),
    _no_op('checkpoint', 'the trainer always checkpoints, every '
           '`checkpoint_steps`', 'Whether to checkpoint.', accepts=(True,),
           **_REF),
    _no_op('write_summary', 'the trainer always writes TensorBoard events and '
           'metrics.jsonl', 'Whether to write summaries.', accepts=(True,),
           **_REF),
    _no_op('xprof', 'profile with `jax.profiler` or scripts/benchmark.py '
           '--profile', 'Profile the run with xprof.', **_REF),
    _no_op('debug_train', "the reference's debug flag of its model's apply; "
           'ours has none', 'Debug mode in training.', **_REF),
    _no_op('debug_eval', "the reference's debug flag of its model's apply; "
           'ours has none', 'Debug mode in evaluation.', **_REF),
    _implemented('donate_train_state', 'train_steps', 'The train step reuses '
                 "the old state's buffers.", default=True),
    # ---------------------------------------------------------- the data
    _implemented('dataset_name', 'data.input_pipeline', "The data source: a "
                 "tfds name, 'moving_digits', 'multi_digits', "
                 "'multilabel_image_tfrecords' or 'video_tfrecord_dataset'.",
                 **_REF),
    _no_op('datset_configs', "the reference ViViT configs' misspelt, empty "
           'ConfigDict; keys belong in `dataset_configs`',
           'Accepted empty only.', accepts=({},), **_REF),
    _no_op('data_dtype_str', 'inputs are float32; `model_dtype_str` sets the '
           'compute dtype', 'Dtype of the input batches.',
           accepts=('float32',), **_REF),
    _no_op('multicrop_clips_per_device', _MULTICROP, 'Clips per device in the '
           "reference's multi-crop test during training.", **_REF),
    # ---------------------------------------------------------- the model
    _implemented('model', 'models.config', "The model: `ModelConfig`'s keys "
                 '(below).', section=True, **_REF),
    _implemented('model_name', 'metrics', "The head's loss and metrics: "
                 "'token_learner_classification' or 'vivit_classification' "
                 "(softmax), 'token_learner_multilabel_classification' or "
                 "'vivit_multilabel_classification' (sigmoid); "
                 "'x2plus1d_classification' or "
                 "'x2plus1d_multilabel_classification' select the X(2+1)D "
                 'network (`X2Plus1DConfig`).', **_REF),
    _implemented('model_dtype_str', 'models.config', 'Compute dtype of the '
                 "encoder blocks ('float32', 'bfloat16', 'float16').", **_REF),
    # ---------------------------------------------------------- training
    _implemented('mixup', 'configs.objective_config', 'Mixup settings.',
                 section=True),
    # ---------------------------------------------------------- parallelism
    _implemented('mesh', 'sharding', 'Device mesh axis sizes.', section=True),
    _implemented('logical_axis_rules', 'sharding', 'Logical axis name -> mesh '
                 'axes rules.',
                 default=[list(rule) for rule in sharding.DEFAULT_RULES]),
)

KEYS += (
    _no_op('init_from.model_config', "the checkpoint's layout (class token, "
           'grid) is read from its parameters', "The restored model's "
           'config.', **_REF),
    _implemented('mesh.data', 'sharding', 'Data-parallel devices (-1: the '
                 'rest).', default=sharding.MESH_DEFAULTS['data']),
    _implemented('mesh.fsdp', 'sharding', 'Devices the parameters are '
                 'sharded over (FSDP).', default=sharding.MESH_DEFAULTS['fsdp']),
    _implemented('mesh.model', 'sharding', 'Tensor-parallel devices.',
                 default=sharding.MESH_DEFAULTS['model']),
)

def section_keys(cls: Any, section: str, module: str, description: str,
                 filled: Tuple[str, ...] = (), reference: bool = False,
                 section_module: Optional[str] = None
                 ) -> Tuple[ConfigKey, ...]:
  """The table's rows of a typed section (`fields.field`s of `cls`): the
  section, then each field (under the section, or at the top for '/key')
  with its `Attributes:` text and default. `filled`: the fields whose
  defaults `complete` writes into every config (and so into its record);
  the others the section's own `from_config` fills, so a config without
  the section stays without it. `reference`: the reference's configs set
  the section. `module` reads the fields that name no reader of their own;
  `section_module` (default `module`) reads the section. A section of
  top-level keys only (`section` '') has no row of its own."""
  docs = fields.attribute_docs(cls.__doc__ or '')
  rows = [_implemented(section, section_module or module, description,
                       section=True, reference=reference)] if section else []
  for f in dataclasses.fields(cls):
    if dataclasses.is_dataclass(f.default):  # A typed section of its own.
      continue
    default = '' if f.default in (dataclasses.MISSING, None) else (
        f' (default {f.default!r})')
    rows.append(_implemented(
        fields.key_name(f, section), f.metadata['reader'] or module,
        docs.get(f.name, '').rstrip('.') + default + '.',
        positive=f.metadata['check'] in ('positive', 'optional_positive',
                                         'number'),
        reference=f.metadata['reference'],
        default=f.default if f.name in filled else NO_DEFAULT))
  return tuple(rows)


KEYS += section_keys(ObjectiveConfig, '', 'train_steps', '',
                     filled=('fast',))
KEYS += section_keys(
    OptimizerConfig, 'optimizer_configs', 'optim', "The optimizer's settings "
    '(below, with the top-level keys of `configs.optim_config`\'s '
    '`OptimizerConfig`).', filled=('grad_clip_per_shard',
                                   'skip_nonfinite_steps'), reference=True)
KEYS += section_keys(
    ScheduleConfig, 'lr_configs', 'optim', 'The learning-rate schedule '
    "(`configs.optim_config`'s `ScheduleConfig`).", reference=True)
KEYS += section_keys(
    InitFromConfig, 'init_from', 'train', 'The checkpoint to fine-tune from '
    "(`configs.init_from_config`'s `InitFromConfig`).",
    filled=tuple(f.name for f in dataclasses.fields(InitFromConfig)),
    reference=True)
KEYS += section_keys(
    FewshotConfig, 'fewshot', 'fewshot', 'Few-shot linear evaluation of the '
    'frozen pre-logits (below; `configs.fewshot_config`); unset: none.')
KEYS += section_keys(
    DataConfig, 'dataset_configs', 'data.input_pipeline', "The data source's "
    "settings (below; `configs.data_config`'s `DataConfig`).",
    filled=('skip_corrupt_examples', 'clip_labels', 'test_pooling'),
    reference=True, section_module='configs.data_config')
KEYS += section_keys(
    AugmentationConfig, 'dataset_configs.augmentation_params',
    'data.video_tfrecords', 'Train augmentations of videos '
    "(`configs.data_config`'s `AugmentationConfig`).", reference=True)
_DC = 'dataset_configs.'
_AUG = _DC + 'augmentation_params.'
KEYS += (
    _no_op(_DC + 'one_hot_labels', "the reference ViViT configs' misspelling "
           'of one_hot_label, which its loader never reads',
           'One-hot labels.', **_REF),
    _no_op(_DC + 'one_hot_label', 'labels are always one-hot (or multi-hot)',
           'One-hot labels.', accepts=(True,)),
    _no_op(_DC + 'keep_test_key', 'test batches carry no example key',
           "Keep each test example's key.", accepts=(False,)),
    _unsupported(_DC + 'num_train_val_clips', 'evaluation during training '
                 'takes the middle clip of each video', 'Clips per video in '
                 'training and validation.', accepts=(1,)),
    _no_op(_DC + 'do_multicrop_test', _MULTICROP, 'Run the multi-crop test '
           'during training.', **_REF),
    _no_op(_DC + 'log_test_epochs', _MULTICROP, 'Epochs between multi-crop '
           'tests during training.', **_REF),
    _no_op(_DC + 'prefetch_to_device', 'jax.jit places each batch; there is '
           'no device prefetch queue', 'Batches prefetched to the devices.',
           **_REF),
    _unsupported(_AUG + 'do_rand_augment', 'RandAugment is not implemented',
                 'RandAugment.', accepts=(False,)),
    _unsupported(_AUG + 'do_random_erasing', 'random erasing is not '
                 'implemented', 'Random erasing.', accepts=(False,)),
    _unsupported(_AUG + 'do_simclr_crop_resize', 'SimCLR crops are not '
                 'implemented', 'SimCLR-style crop and resize.',
                 accepts=(False,)),
    _unsupported(_AUG + 'do_simclr_style_augmentations', 'SimCLR '
                 'augmentations are not implemented', 'SimCLR-style '
                 'augmentations.', accepts=(False,)),
)


TABLE: Dict[str, ConfigKey] = {k.key: k for k in KEYS}


def model_keys(cls: Any = model_lib.ModelConfig
               ) -> List[Tuple[str, str, Any, str]]:
  """`config.model`'s keys: (key, field, default, description) per field.

  From the fields of `cls` (`ModelConfig` or `models.X2Plus1DConfig`:
  `metadata['key']`) and its `Attributes:` docstring; keys are under
  `config.model` unless they start with '/'.
  """
  docs = fields.attribute_docs(cls.__doc__ or '')
  rows = []
  for f in dataclasses.fields(cls):
    key = f.metadata['key']
    if not key:  # num_classes: from the dataset.
      continue
    default = (None if f.default is dataclasses.MISSING else f.default)
    rows.append((key, f.name, default, docs.get(f.name, '')))
  return rows


# ------------------------------------------------------------------ checking


def _plain(value: Any) -> Any:
  if isinstance(value, ml_collections.ConfigDict):
    return value.to_dict()
  return value


def _is_node(value: Any) -> bool:
  return isinstance(value, (dict, ml_collections.ConfigDict))


def _unknown(path: str) -> errors.ConfigError:
  close = difflib.get_close_matches(path, list(TABLE), n=1)
  hint = (f'; did you mean config.{close[0]}?' if close else
          ' (docs/config_keys.md lists the known keys).')
  return errors.ConfigError(f'config.{path} is not a known config key{hint}')


def _check_value(entry: ConfigKey, value: Any) -> None:
  if entry.positive and value is not None and (
      isinstance(value, bool) or not isinstance(value, numbers.Real) or
      not value > 0):
    raise errors.ConfigError(
        f'config.{entry.key}={_plain(value)!r}: must be a number > 0.')
  if entry.accepts is None or value is None:
    return
  if _plain(value) not in entry.accepts:
    accepted = ', '.join(repr(v) for v in entry.accepts)
    raise errors.ConfigError(
        f'config.{entry.key}={_plain(value)!r} is not supported '
        f'(accepted: {accepted}): {entry.why}.')


def _walk(node: Any, prefix: str = '') -> Iterator[Tuple[str, Any]]:
  """(path, value) of every key the walk reaches, checking each is known."""
  for name in node.keys():
    path = f'{prefix}{name}'
    entry = TABLE.get(path)
    if entry is None:
      raise _unknown(path)
    value = node[name]
    yield path, value
    if entry.section and path != 'model' and _is_node(value):
      yield from _walk(value, path + '.')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Raises a `ValueError` for a key (or value) the trainer would not honour.

  Every key of `config` must be in `TABLE` (with the value a no-op or
  unsupported key accepts); `config.model` is checked by
  `ModelConfig.from_config`, which also checks its values, as the optimizer,
  the schedule and `init_from` are by their typed sections
  (`configs.optim_config`, `configs.init_from_config`).

  Raises:
    ValueError: Naming the unknown key and the closest known one, e.g.
      'config.lr_configs.warmup_stepz is not a known config key; did you mean
      config.lr_configs.warmup_steps?'.
  """
  for path, value in _walk(config):
    _check_value(TABLE[path], value)
  if config.get('model') is not None:
    models.model_config(config, num_classes=1)
  # The typed sections check their values (a schedule factor's keys, say).
  if config.get('optimizer') is not None:
    OptimizerConfig.from_config(config)
  if config.get('lr_configs') is not None:
    ScheduleConfig.from_config(config)
  InitFromConfig.from_config(config)
  DataConfig.from_config(config)
  ObjectiveConfig.from_config(config)


def fill_defaults(config: ml_collections.ConfigDict) -> None:
  """Sets each `KEYS` default where `config` (unlocked) has no value yet."""
  for entry in KEYS:
    if entry.default is NO_DEFAULT:
      continue
    *parents, leaf = entry.key.split('.')
    node = config
    for parent in parents:
      if node.get(parent) is None:
        node[parent] = ml_collections.ConfigDict()
      node = node[parent]
    if leaf in node:
      continue
    value = entry.default
    if isinstance(value, SameAs):
      if value.key not in config:
        continue
      value = config.get_ref(value.key)
    elif value is None:  # A placeholder keeps the key overridable.
      value = ml_collections.config_dict.placeholder(str)
    node[leaf] = value


def complete(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """`check_config`, then a copy of `config` with every default filled in.

  What the entry points run on: a config file of the reference (which sets no
  `mesh`, say) gets the trainer's defaults; the caller's config is left as
  it is.
  """
  check_config(config)
  config = ml_collections.ConfigDict(config.to_dict())
  fill_defaults(config)
  return config
