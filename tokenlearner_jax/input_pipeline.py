"""Input pipelines: tfds by name, and Kinetics-style SequenceExample TFRecords.

Batches are dicts of NumPy arrays for this process: `inputs` (float32 in
[-1, 1]), `label` (one-hot or multi-hot float32) and, for eval, `batch_mask`
(1 for real examples, 0 for padding, so every example counts exactly once).
`config.dataset_name` selects the source:
  * 'moving_digits', 'multi_digits': the offline demo builders
    (`dataset_configs.crop_padding`: random translations by up to that many
    pixels in training);
  * 'imagenet' (tfds 'imagenet2012') or any tfds image classification name;
  * 'video_tfrecord_dataset': `tf.SequenceExample`s with JPEG frames under
    'image/encoded' and labels under 'clip/label/index', as the reference reads.
"""

import dataclasses
import glob
import os
from typing import Callable, Dict, Iterator, Tuple

import jax
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_datasets as tfds

from tokenlearner_jax import datasets as _  # pylint: disable=unused-import  # Registers the demo builders.

Batch = Dict[str, np.ndarray]
TFDS_NAMES = {'imagenet': 'imagenet2012'}


@dataclasses.dataclass
class Data:
  """An endless train iterator, a way to iterate over eval once, and facts.

  Attributes:
    train_iter: Endless iterator of train batches for this process.
    eval_batches: Returns a fresh iterator over the eval split, padded.
    num_classes: Classes of the label.
    input_shape: Shape of one example's input.
    num_train_examples: Examples in the train split (all processes).
    num_eval_examples: Examples in the eval split (all processes).
  """
  train_iter: Iterator[Batch]
  eval_batches: Callable[[], Iterator[Batch]]
  num_classes: int
  input_shape: Tuple[int, ...]
  num_train_examples: int
  num_eval_examples: int


def _per_process(batch_size: int, field: str) -> int:
  if batch_size % jax.process_count():
    raise ValueError(f'{field}={batch_size} must be divisible by the number of '
                     f'processes {jax.process_count()}.')
  return batch_size // jax.process_count()


def _to_numpy(ds: tf.data.Dataset) -> Iterator[Batch]:
  return ({k: np.asarray(v) for k, v in b.items()}
          for b in tfds.as_numpy(ds))


def _padded(ds: tf.data.Dataset, batch_size: int) -> Iterator[Batch]:
  """Batches `ds` once, padding the last batch with masked zeros."""
  for batch in _to_numpy(ds.batch(batch_size)):
    n = len(next(iter(batch.values())))
    batch = {k: np.concatenate([v, np.zeros((batch_size - n,) + v.shape[1:],
                                            v.dtype)]) for k, v in batch.items()}
    batch['batch_mask'] = (np.arange(batch_size) < n).astype(np.float32)
    yield batch


def _scale(x: tf.Tensor) -> tf.Tensor:
  return tf.cast(x, tf.float32) / 127.5 - 1.0


def _example_seed(rng_seed: int, index: tf.Tensor) -> tf.Tensor:
  """A stateless seed for the `index`-th train example of this process.

  Augmentation draws from it, so a run's inputs depend only on `rng_seed`
  and the example's position in the stream, never on thread timing.
  """
  stream = index * jax.process_count() + jax.process_index()
  return tf.stack([tf.constant(rng_seed, tf.int64), stream])


def _tfds_split(builder, split: str, seed: int) -> tf.data.Dataset:
  return builder.as_dataset(
      split=tfds.split_for_jax_process(split), shuffle_files=split == 'train',
      read_config=tfds.ReadConfig(shuffle_seed=seed))


def _tfds_data(config: ml_collections.ConfigDict) -> Data:
  """Image or video classification from a tfds builder."""
  dc = config.dataset_configs
  name = TFDS_NAMES.get(config.dataset_name, config.dataset_name)
  if dc.get('builder_config'):
    name = f'{name}/{dc.builder_config}'
  builder = tfds.builder(name, data_dir=dc.get('data_dir'))
  builder.download_and_prepare()
  info = builder.info
  input_key, label_key = info.supervised_keys
  num_classes = dc.num_classes
  image_size = dc.get('image_size')
  eval_split = dc.get('eval_split', 'test' if 'test' in info.splits
                      else 'validation')

  pad = dc.get('crop_padding', 0)

  def preprocess(example, seed=None):
    """Eval preprocessing, or train augmentation when given a `seed`."""
    x = example[input_key]
    train = seed is not None
    if train:
      flip_seed, crop_seed = tf.unstack(
          tf.random.experimental.stateless_split(seed, 2))
    if image_size and x.shape.rank == 3:
      x = tf.image.resize(x, (image_size, image_size))
      if train:
        x = tf.image.stateless_random_flip_left_right(x, flip_seed)
    if train and pad:  # Random translation, the same for all frames.
      paddings = [[0, 0]] * (x.shape.rank - 3) + [[pad, pad]] * 2 + [[0, 0]]
      x = tf.image.stateless_random_crop(
          tf.pad(x, paddings, mode='REFLECT'), x.shape, crop_seed)
    label = example[label_key]
    if label.shape.rank == 0:  # A class index: one-hot, also for multi-label.
      label = tf.one_hot(label, num_classes)
    return {'inputs': _scale(x), 'label': tf.cast(label, tf.float32)}

  train = _tfds_split(builder, 'train', config.rng_seed)
  if dc.get('cache', True):
    train = train.cache()
  train = train.repeat().shuffle(dc.get('shuffle_buffer_size', 10_000),
                                 seed=config.rng_seed).enumerate()
  train = train.map(
      lambda i, e: preprocess(e, seed=_example_seed(config.rng_seed, i)),
      num_parallel_calls=tf.data.AUTOTUNE)
  train = train.batch(_per_process(config.batch_size, 'batch_size'),
                      drop_remainder=True).prefetch(2)
  eval_ds = _tfds_split(builder, eval_split, config.rng_seed).map(
      preprocess, num_parallel_calls=tf.data.AUTOTUNE)
  if dc.get('cache', True):
    eval_ds = eval_ds.cache()
  eval_bs = _per_process(config.eval_batch_size, 'eval_batch_size')
  shape = tuple(next(iter(_padded(eval_ds.take(1), 1)))['inputs'].shape[1:])
  sizes = {k: v.num_examples for k, v in info.splits.items()}  # {} if mocked
  return Data(
      train_iter=_to_numpy(train),
      eval_batches=lambda: _padded(eval_ds, eval_bs),
      num_classes=num_classes, input_shape=shape,
      num_train_examples=sizes.get('train', 0),
      num_eval_examples=sizes.get(eval_split, 0))


def _parse_sequence_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  context, sequence = tf.io.parse_single_sequence_example(
      serialized,
      context_features={'clip/label/index': tf.io.VarLenFeature(tf.int64)},
      sequence_features={'image/encoded': tf.io.FixedLenSequenceFeature(
          [], tf.string)})
  return {'frames': sequence['image/encoded'],
          'label': tf.sparse.to_dense(context['clip/label/index'])}


def _video_clip(example, dc, train: bool, seed: int):
  """Samples `num_frames` at `stride`, decodes, resizes, crops, scales."""
  frames = example['frames']
  length = tf.shape(frames)[0]
  span = (dc.num_frames - 1) * dc.stride + 1
  if train:
    start = tf.random.uniform((), 0, tf.maximum(length - span, 0) + 1,
                              tf.int32, seed=seed)
  else:
    start = tf.maximum(length - span, 0) // 2
  index = tf.minimum(start + tf.range(dc.num_frames) * dc.stride, length - 1)
  video = tf.map_fn(lambda f: tf.io.decode_jpeg(f, channels=3),
                    tf.gather(frames, index), fn_output_signature=tf.uint8)
  shape = tf.cast(tf.shape(video)[1:3], tf.float32)
  scale = dc.min_resize / tf.reduce_min(shape)
  video = tf.image.resize(video, tf.cast(tf.round(shape * scale), tf.int32))
  crop = (dc.num_frames, dc.crop_size, dc.crop_size, 3)
  if train:
    video = tf.image.random_crop(video, crop, seed=seed)
    video = tf.cond(tf.random.uniform((), seed=seed) < 0.5,
                    lambda: tf.reverse(video, [2]), lambda: video)
  else:
    offset = (tf.shape(video)[1:3] - dc.crop_size) // 2
    video = video[:, offset[0]:offset[0] + dc.crop_size,
                  offset[1]:offset[1] + dc.crop_size]
  label = tf.reduce_sum(tf.one_hot(example['label'] - dc.get('label_offset', 0),
                                   dc.num_classes), axis=0)
  return {'inputs': tf.ensure_shape(_scale(video), crop),
          'label': tf.minimum(label, 1.0)}


def _video_tfrecord_data(config: ml_collections.ConfigDict) -> Data:
  """Kinetics-style SequenceExample TFRecords under `dataset_configs.base_dir`."""
  dc = config.dataset_configs

  def files(split: str):
    pattern = os.path.join(dc.base_dir, dc.tables[split].split('@')[0] + '*')
    found = sorted(glob.glob(pattern))
    if not found:
      raise ValueError(f'dataset_configs.tables.{split}: no file matches '
                       f'{pattern}.')
    return found[jax.process_index()::jax.process_count()]

  def dataset(split: str, train: bool) -> tf.data.Dataset:
    ds = tf.data.TFRecordDataset(files(split)).map(_parse_sequence_example)
    if train:
      ds = ds.repeat().shuffle(dc.get('shuffle_buffer_size', 1024),
                               seed=config.rng_seed)
    return ds.map(lambda e: _video_clip(e, dc, train, config.rng_seed),
                  num_parallel_calls=tf.data.AUTOTUNE)

  train = dataset('train', True).batch(
      _per_process(config.batch_size, 'batch_size'),
      drop_remainder=True).prefetch(2)
  eval_split = dc.get('eval_split', 'validation')
  eval_bs = _per_process(config.eval_batch_size, 'eval_batch_size')
  return Data(
      train_iter=_to_numpy(train),
      eval_batches=lambda: _padded(dataset(eval_split, False), eval_bs),
      num_classes=dc.num_classes,
      input_shape=(dc.num_frames, dc.crop_size, dc.crop_size, 3),
      num_train_examples=dc.examples_per_subset.train,
      num_eval_examples=dc.examples_per_subset[eval_split])


def get_data(config: ml_collections.ConfigDict) -> Data:
  """The `Data` of `config.dataset_name`."""
  if config.dataset_name == 'video_tfrecord_dataset':
    return _video_tfrecord_data(config)
  return _tfds_data(config)
