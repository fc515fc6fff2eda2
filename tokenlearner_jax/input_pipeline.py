"""Input pipelines: tfds by name, and Kinetics-style SequenceExample TFRecords.

What they return is `tokenlearner_jax.batching.Data`; inputs are float32 in
[-1, 1]. `config.dataset_name` selects the source:
  * 'moving_digits', 'multi_digits': the offline demo builders
    (`dataset_configs.crop_padding`: random translations by up to that many
    pixels in training);
  * 'imagenet' (tfds 'imagenet2012') or any tfds image classification name;
  * 'video_tfrecord_dataset': `tf.SequenceExample`s with JPEG frames under
    'image/encoded' and labels under 'clip/label/index', as the reference reads
    (`tokenlearner_jax.video_tfrecords`).
"""

import ml_collections
import tensorflow as tf
import tensorflow_datasets as tfds

from tokenlearner_jax import batching
from tokenlearner_jax import datasets as _  # pylint: disable=unused-import  # Registers the demo builders.
from tokenlearner_jax import video_tfrecords

TFDS_NAMES = {'imagenet': 'imagenet2012'}


def _scale(x: tf.Tensor) -> tf.Tensor:
  return tf.cast(x, tf.float32) / 127.5 - 1.0


def _tfds_split(builder, split: str, seed: int) -> tf.data.Dataset:
  return builder.as_dataset(
      split=tfds.split_for_jax_process(split), shuffle_files=split == 'train',
      read_config=tfds.ReadConfig(shuffle_seed=seed))


def _tfds_data(config: ml_collections.ConfigDict) -> batching.Data:
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
      lambda i, e: preprocess(e, batching.example_seed(config.rng_seed, i)),
      num_parallel_calls=tf.data.AUTOTUNE)
  train = train.batch(batching.per_process(config.batch_size, 'batch_size'),
                      drop_remainder=True).prefetch(2)

  def eval_split_ds(split: str) -> tf.data.Dataset:
    return _tfds_split(builder, split, config.rng_seed).map(
        preprocess, num_parallel_calls=tf.data.AUTOTUNE)

  eval_ds = eval_split_ds(eval_split)
  if dc.get('cache', True):
    eval_ds = eval_ds.cache()
  eval_bs = batching.padded_eval_batch_size(config.eval_batch_size,
                                            'eval_batch_size')
  shape = tuple(next(iter(batching.to_numpy(eval_ds.take(1).batch(1))))[
      'inputs'].shape[1:])
  sizes = {k: v.num_examples for k, v in info.splits.items()}  # {} if mocked
  return batching.Data(
      train_iter=batching.to_numpy(train),
      eval_batches=lambda: batching.padded(eval_ds, eval_bs),
      test_batches=lambda split: batching.padded(  # One view per example.
          eval_split_ds(split).map(
              lambda e: {**e, 'inputs': e['inputs'][None]}), eval_bs),
      num_classes=num_classes, input_shape=shape,
      num_train_examples=sizes.get('train', 0),
      num_eval_examples=sizes.get(eval_split, 0))


def get_data(config: ml_collections.ConfigDict) -> batching.Data:
  """The `batching.Data` of `config.dataset_name`."""
  if config.dataset_name == 'video_tfrecord_dataset':
    return video_tfrecords.get_data(config)
  return _tfds_data(config)
