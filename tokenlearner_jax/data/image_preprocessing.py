"""Image preprocessing for classification: inception crop, central crop, flip.

`dataset_configs` keys (all optional):
  image_size: Output side; None keeps the stored size (no crop or resize).
  inception_crop: Train with a random-area (8%-100%), random-aspect (3/4-4/3)
    crop resized to `image_size` (default True), else a plain resize.
  eval_crop_fraction: Eval resizes the smaller side to image_size / fraction
    and takes the central crop (default 0.875, the usual ImageNet protocol);
    1.0 resizes the whole image.
  random_flip: Horizontal flips in training (default True).
Random draws come from a stateless seed per example.
"""

from typing import Optional

import tensorflow as tf

from tokenlearner_jax.configs.data_config import DataConfig


def inception_crop(image: tf.Tensor, size: int, seed: tf.Tensor) -> tf.Tensor:
  """Random-area, random-aspect crop of `[H, W, 3]`, resized to `size`."""
  begin, crop_size, _ = tf.image.stateless_sample_distorted_bounding_box(
      tf.shape(image), tf.zeros([0, 0, 4], tf.float32), seed,
      area_range=(0.08, 1.0), aspect_ratio_range=(3 / 4, 4 / 3),
      min_object_covered=0.0, max_attempts=10,
      use_image_if_no_bounding_boxes=True)
  crop = tf.slice(image, begin, crop_size)
  return tf.image.resize(crop, (size, size))


def central_crop(image: tf.Tensor, size: int, fraction: float) -> tf.Tensor:
  """Smaller side resized to size / fraction, then the central `size` crop."""
  shape = tf.cast(tf.shape(image)[:2], tf.float32)
  scale = size / fraction / tf.reduce_min(shape)
  resized = tf.image.resize(
      image, tf.maximum(tf.cast(tf.round(shape * scale), tf.int32), size))
  offset = (tf.shape(resized)[:2] - size) // 2
  return resized[offset[0]:offset[0] + size, offset[1]:offset[1] + size]


def preprocess_image(image: tf.Tensor, dc: DataConfig,
                     seed: Optional[tf.Tensor]) -> tf.Tensor:
  """`[H, W, 3]` uint8 -> float32 in [-1, 1]; train when given a `seed`."""
  size = dc.image_size
  if seed is None:  # Eval.
    if size:
      fraction = dc.eval_crop_fraction
      image = (tf.image.resize(image, (size, size)) if fraction >= 1.0
               else central_crop(image, size, fraction))
  else:
    crop_seed, flip_seed = tf.unstack(
        tf.random.experimental.stateless_split(seed, 2))
    if size:
      image = (inception_crop(image, size, crop_seed)
               if dc.inception_crop
               else tf.image.resize(image, (size, size)))
    if dc.random_flip:
      image = tf.image.stateless_random_flip_left_right(image, flip_seed)
  return tf.cast(image, tf.float32) / 127.5 - 1.0
