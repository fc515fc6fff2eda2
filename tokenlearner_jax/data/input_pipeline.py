"""Input pipelines: tfds by name, and Kinetics-style SequenceExample TFRecords.

What they return is `tokenlearner_jax.data.batching.Data`; inputs are float32 in
[-1, 1]. `config.dataset_name` selects the source:
  * 'moving_digits', 'multi_digits': the offline demo builders
    (`dataset_configs.crop_padding`: random translations by up to that many
    pixels in training);
  * 'imagenet' (tfds 'imagenet2012') or any tfds image classification name,
    with `tokenlearner_jax.data.image_preprocessing` (inception crop, central
    crop, flips); `dataset_configs.label_key` picks another label feature, e.g.
    'real_label' of 'imagenet2012_real' (multi-hot; images without a ReaL
    label are left out of the metrics). `eval_dataset_name` (and
    `eval_label_key`) evaluate on another tfds dataset, e.g. train on
    'imagenet2012' and evaluate on the ReaL labels of 'imagenet2012_real',
    which has no train split;
  * 'multilabel_image_tfrecords': JFT-style `tf.Example`s with 'image/encoded'
    and a list of class ids under 'image/class/label'
    (`tokenlearner_jax.data.image_tfrecords`);
  * 'video_tfrecord_dataset': `tf.SequenceExample`s with JPEG frames under
    'image/encoded' and labels under 'clip/label/index', as the reference reads
    (`tokenlearner_jax.data.video_tfrecords`).

For tfds datasets, `dataset_configs.global_order=True` makes every process
read the whole train split in one global order and keep its rows of each
global batch, so batches (and losses) are the same for any number of
processes, at the cost of each process reading every record (meant for
small datasets and reproducibility checks). By default each process reads
its own share (`tfds.split_for_jax_process`).

`get_data(config, train=False)` builds the eval side alone (eval and test
batches, the number of classes, the input shape): no train split is read or
needs to exist, and with `eval_dataset_name` the train dataset is not even
prepared. `tokenlearner_jax.evaluate` and `tokenlearner_jax.visualize` use it.
"""

from typing import Any, Callable, Iterator, NamedTuple, Tuple

from absl import logging
import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import batching
# Registers the demo builders with tfds.
from tokenlearner_jax.data import datasets as _  # pylint: disable=unused-import
from tokenlearner_jax.data import image_preprocessing
from tokenlearner_jax.data import image_tfrecords
from tokenlearner_jax.data import video_tfrecords

TFDS_NAMES = {'imagenet': 'imagenet2012'}


def _tfds_split(builder, split: str, seed: int,
                whole: bool = False) -> tf.data.Dataset:
  """This process's share of `split`, or the `whole` split."""
  return builder.as_dataset(
      split=split if whole else tfds.split_for_jax_process(split),
      shuffle_files=split == 'train',
      read_config=tfds.ReadConfig(shuffle_seed=seed))


def _tfds_builder(name: str, dc: DataConfig):
  name = TFDS_NAMES.get(name, name)
  if dc.builder_config:
    name = f'{name}/{dc.builder_config}'
  builder = tfds.builder(name, data_dir=dc.data_dir)
  try:
    builder.download_and_prepare()
  except FileExistsError:
    # Another process (a parallel sweep run, another host) generated the same
    # dataset first and won the final rename: use its copy.
    builder = tfds.builder(name, data_dir=dc.data_dir)
    if not builder.is_prepared():
      raise
    logging.info('%s was prepared by another process meanwhile.', name)
  return builder


def _check_num_classes(builder, label_key: str, num_classes: int) -> None:
  """`dataset_configs.num_classes` must match a ClassLabel feature."""
  feature = builder.info.features[label_key]
  if isinstance(feature, tfds.features.Sequence):  # A list of labels.
    feature = feature.feature
  if (isinstance(feature, tfds.features.ClassLabel) and
      feature.num_classes != num_classes):
    raise ValueError(
        f'dataset_configs.num_classes={num_classes} but {builder.name} '
        f"'{label_key}' has {feature.num_classes} classes.")


class _Source(NamedTuple):
  """A prepared tfds dataset and the features read from it.

  Attributes:
    builder: Its builder.
    input_key: The input feature.
    label_key: The label feature.
  """
  builder: Any
  input_key: str
  label_key: str


def _tfds_source(name: str, label_key_field: str,
                 dc: DataConfig) -> _Source:
  """The dataset `name`: its supervised input, and its label under
  `dataset_configs[label_key_field]` or the supervised one, checked against
  `num_classes`."""
  builder = _tfds_builder(name, dc)
  input_key, label_key = builder.info.supervised_keys
  label_key = getattr(dc, label_key_field) or label_key
  _check_num_classes(builder, label_key, dc.num_classes)
  return _Source(builder, input_key, label_key)


def _tfds_data(config: ml_collections.ConfigDict, start_step: int,
               train: bool) -> batching.Data:
  """Image or video classification from a tfds builder.

  Without `train`, the train dataset is not read, nor even built when the
  eval side has its own (`eval_dataset_name`).
  """
  dc = DataConfig.from_config(config)
  num_classes = dc.num_classes
  train_source = None
  if train or not dc.eval_dataset_name:
    train_source = _tfds_source(config.dataset_name, 'label_key', dc)
  eval_source = train_source
  if dc.eval_dataset_name:
    eval_source = _tfds_source(dc.eval_dataset_name, 'eval_label_key', dc)
  eval_splits = eval_source.builder.info.splits
  eval_split = dc.eval_split or ('test' if 'test' in eval_splits
                                  else 'validation')
  pad = dc.crop_padding

  def preprocess(example, input_key: str, label_key: str, seed=None):
    """Eval preprocessing, or train augmentation when given a `seed`."""
    x = example[input_key]
    if x.shape.rank == 3:  # An image.
      x = image_preprocessing.preprocess_image(x, dc, seed)
    else:  # A video: `[T, H, W, 3]`.
      if seed is not None and pad:  # Random translation, alike for all frames.
        paddings = [[0, 0]] + [[pad, pad]] * 2 + [[0, 0]]
        x = tf.image.stateless_random_crop(
            tf.pad(x, paddings, mode='REFLECT'), x.shape, seed)
      x = tf.cast(x, tf.float32) / 127.5 - 1.0
    label = example[label_key]
    if label.dtype.is_integer:  # Class indices: one-hot or multi-hot.
      label = tf.one_hot(label, num_classes)
      if label.shape.rank == 2:  # A list of labels, e.g. ImageNet ReaL.
        label = tf.minimum(tf.reduce_sum(label, 0), 1.0)
    label = tf.cast(label, tf.float32)
    # Examples without any label (some ReaL images) are left out of eval.
    return {'inputs': x, 'label': label,
            'example_mask': tf.cast(tf.reduce_any(label > 0), tf.float32)}

  train_iter, train_size = None, 0
  if train:
    train_iter, train_size = _tfds_train(config, train_source, preprocess,
                                         start_step)

  def eval_split_ds(split: str) -> tf.data.Dataset:
    return batching.with_options(
        _tfds_split(eval_source.builder, split, config.rng_seed).map(
            lambda e: preprocess(e, eval_source.input_key,
                                 eval_source.label_key),
            num_parallel_calls=tf.data.AUTOTUNE), dc)

  eval_ds = eval_split_ds(eval_split)
  if dc.cache:
    eval_ds = eval_ds.cache()
  eval_bs = batching.padded_eval_batch_size(config.eval_batch_size,
                                            'eval_batch_size')
  shape = tuple(next(iter(batching.to_numpy(eval_ds.take(1).batch(1))))[
      'inputs'].shape[1:])
  # {} if mocked.
  eval_size = {k: v.num_examples for k, v in eval_splits.items()}.get(
      eval_split)
  return batching.Data(
      train_iter=train_iter,
      eval_batches=lambda: batching.padded(eval_ds, eval_bs),
      test_batches=lambda split: batching.padded(  # One view per example.
          eval_split_ds(split).map(
              lambda e: {**e, 'inputs': e['inputs'][None]}), eval_bs),
      num_classes=num_classes, input_shape=shape,
      num_train_examples=train_size,
      num_eval_examples=eval_size or 0)


def _tfds_train(config: ml_collections.ConfigDict, source: _Source,
                preprocess: Callable[..., Any],
                start_step: int) -> Tuple[Iterator[batching.Batch], int]:
  """The train batches of `source` from `start_step` on, and the number of
  train examples."""
  dc = DataConfig.from_config(config)
  builder, input_key, label_key = source
  # {} if mocked.
  train_size = {k: v.num_examples for k, v in
                builder.info.splits.items()}.get('train')
  if train_size == 0:
    raise ValueError(f"{builder.name}'s train split is empty "
                     f'({builder.data_dir}).')
  global_order = dc.global_order
  train = _tfds_split(builder, 'train', config.rng_seed, global_order)
  if dc.cache:
    train = train.cache()
  train = batching.skip_to_step(
      train.repeat().shuffle(dc.shuffle_buffer_size or 10_000,
                             seed=config.rng_seed).enumerate(),
      config.batch_size, start_step, global_order)
  if global_order:
    train = batching.keep_process_rows(train, config.batch_size)
  train = train.map(
      lambda i, e: preprocess(e, input_key, label_key, batching.example_seed(
          config.rng_seed, i, global_order)),
      num_parallel_calls=tf.data.AUTOTUNE).map(
          lambda e: {'inputs': e['inputs'], 'label': e['label']})
  train = batching.with_options(
      train.batch(batching.per_process(config.batch_size, 'batch_size'),
                  drop_remainder=True).prefetch(2), dc)
  return batching.to_numpy(train), train_size or 0


def get_data(config: ml_collections.ConfigDict, start_step: int = 0, *,
             train: bool = True) -> batching.Data:
  """The `batching.Data` of `config.dataset_name`.

  The train stream starts where an uninterrupted run is after `start_step`
  steps (for resuming). With `train=False` only the eval side is built (no
  train split is read or needed; `train_iter` is None): what evaluating or
  inspecting a checkpoint uses.
  """
  if config.dataset_name == 'video_tfrecord_dataset':
    return video_tfrecords.get_data(config, start_step, train=train)
  if config.dataset_name == 'multilabel_image_tfrecords':
    return image_tfrecords.get_data(config, start_step, train=train)
  return _tfds_data(config, start_step, train)
