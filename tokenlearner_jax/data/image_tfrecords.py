"""JFT-style multi-label images from TFRecords of `tf.train.Example`s.

Each example holds a JPEG (or PNG) under 'image/encoded' and its class ids
under 'image/class/label' (an int64 list), read into multi-hot labels for the
sigmoid head (`model_name='token_learner_multilabel_classification'`).
`config.dataset_name='multilabel_image_tfrecords'` with `dataset_configs`:
  base_dir, tables ({split: 'name@N' or a glob}), examples_per_subset,
  num_classes, label_offset, shuffle_buffer_size, eval_split, and the image
  keys of `tokenlearner_jax.data.image_preprocessing` (image_size,
  inception_crop, eval_crop_fraction, random_flip).
"""

from typing import Dict

import ml_collections
import tensorflow as tf

from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import batching
from tokenlearner_jax.data import image_preprocessing
from tokenlearner_jax.data import tfrecord_tables

IMAGE_KEY = 'image/encoded'
LABEL_KEY = 'image/class/label'


def parse_example(serialized: tf.Tensor) -> Dict[str, tf.Tensor]:
  features = tf.io.parse_single_example(serialized, {
      IMAGE_KEY: tf.io.FixedLenFeature([], tf.string),
      LABEL_KEY: tf.io.VarLenFeature(tf.int64)})
  return {'image': features[IMAGE_KEY],
          'label': tf.sparse.to_dense(features[LABEL_KEY])}


def multi_hot(label: tf.Tensor, dc: DataConfig) -> tf.Tensor:
  """`[num_classes]` multi-hot of class ids, checked for range."""
  index = label - dc.label_offset
  checks = [
      tf.debugging.assert_less(
          index, tf.constant(dc.num_classes, tf.int64),
          message=f'image/class/label >= dataset_configs.num_classes='
          f'{dc.num_classes} (after label_offset)'),
      tf.debugging.assert_non_negative(
          index, message='image/class/label < 0 after label_offset')]
  with tf.control_dependencies(checks):
    return tf.minimum(tf.reduce_sum(tf.one_hot(index, dc.num_classes), 0),
                      1.0)


def get_data(config: ml_collections.ConfigDict, start_step: int = 0, *,
             train: bool = True) -> batching.Data:
  """`batching.Data` for `dataset_name='multilabel_image_tfrecords'`.

  The train stream starts after `start_step` batches (for resuming). With
  `train=False` there is none (`train_iter` is None) and `tables` needs no
  'train' entry.
  """
  dc = DataConfig.from_config(config)
  if not dc.image_size:
    raise ValueError('dataset_configs.image_size must be set for '
                     'multilabel_image_tfrecords (stored images vary in size).')

  def example(serialized, seed=None):
    parsed = parse_example(serialized)
    image = tf.io.decode_image(parsed['image'], channels=3,
                               expand_animations=False)
    image = image_preprocessing.preprocess_image(image, dc, seed)
    size = dc.image_size
    return {'inputs': tf.ensure_shape(image, (size, size, 3)),
            'label': multi_hot(parsed['label'], dc)}

  train_iter = None
  if train:
    train_ds = batching.skip_to_step(
        tf.data.TFRecordDataset(tfrecord_tables.split_files(
            dc, 'train')).repeat().shuffle(
                dc.shuffle_buffer_size or 10_000,
                seed=config.rng_seed).enumerate(),
        config.batch_size, start_step)
    train_ds = train_ds.map(
        lambda i, r: example(r, batching.example_seed(config.rng_seed, i)),
        num_parallel_calls=tf.data.AUTOTUNE)
    train_iter = batching.to_numpy(batching.with_options(
        train_ds.batch(batching.per_process(config.batch_size, 'batch_size'),
                       drop_remainder=True).prefetch(2), dc))
  eval_split = dc.eval_split or 'validation'
  eval_files = tfrecord_tables.split_files(dc, eval_split)
  eval_bs = batching.padded_eval_batch_size(config.eval_batch_size,
                                            'eval_batch_size')

  def eval_ds(split: str) -> tf.data.Dataset:
    return batching.with_options(tf.data.TFRecordDataset(
        eval_files if split == eval_split else
        tfrecord_tables.split_files(dc, split)).map(
            example, num_parallel_calls=tf.data.AUTOTUNE), dc)

  sizes = dc.examples_per_subset or {}
  return batching.Data(
      train_iter=train_iter,
      eval_batches=lambda: batching.padded(eval_ds(eval_split), eval_bs),
      test_batches=lambda split: batching.padded(eval_ds(split).map(
          lambda e: {**e, 'inputs': e['inputs'][None]}), eval_bs),
      num_classes=dc.num_classes,
      input_shape=(dc.image_size, dc.image_size, 3),
      num_train_examples=sizes.get('train', 0),
      num_eval_examples=sizes.get(eval_split, 0))
