"""Image preprocessing: inception crop, central crop, flips; deterministic."""

from absl.testing import absltest
import numpy as np
import tensorflow as tf

from tokenlearner_jax.configs.data_config import DataConfig
from tokenlearner_jax.data import image_preprocessing


def grid_image(height: int, width: int) -> tf.Tensor:
  """Pixel (y, x) holds (y, x, 0), so crops tell where they come from."""
  y, x = np.mgrid[:height, :width]
  return tf.constant(np.stack([y, x, np.zeros_like(y)], -1).astype(np.uint8))


class ImagePreprocessingTest(absltest.TestCase):

  def test_central_crop_takes_the_centre_after_resizing(self):
    image = grid_image(40, 80)
    crop = image_preprocessing.central_crop(tf.cast(image, tf.float32), 20,
                                            fraction=0.5).numpy()
    # Smaller side 40 -> 20 / 0.5 = 40: no resize; the central 20x20 crop.
    self.assertEqual(crop.shape, (20, 20, 3))
    np.testing.assert_array_equal(crop[0, 0, :2], [10, 30])
    np.testing.assert_array_equal(crop[-1, -1, :2], [29, 49])

  def test_eval_resize_and_range(self):
    dc = DataConfig(image_size=16, eval_crop_fraction=1.0)
    out = image_preprocessing.preprocess_image(grid_image(40, 80), dc, None)
    self.assertEqual(out.shape, (16, 16, 3))
    self.assertBetween(float(tf.reduce_min(out)), -1.0, 1.0)
    self.assertBetween(float(tf.reduce_max(out)), -1.0, 1.0)

  def test_train_crops_are_seeded_and_vary(self):
    dc = DataConfig(image_size=16)
    image = grid_image(64, 64)
    seeds = [tf.constant([0, i], tf.int64) for i in range(6)]
    first = [image_preprocessing.preprocess_image(image, dc, s).numpy()
             for s in seeds]
    again = [image_preprocessing.preprocess_image(image, dc, s).numpy()
             for s in seeds]
    for a, b in zip(first, again):
      np.testing.assert_array_equal(a, b)
      self.assertEqual(a.shape, (16, 16, 3))
    corners = {tuple(np.round(a[0, 0, :2], 3)) for a in first}
    self.assertGreater(len(corners), 3)  # Different crops (and flips).

  def test_flip_only_when_asked(self):
    dc = DataConfig(random_flip=False)
    image = grid_image(8, 8)
    for i in range(8):
      out = image_preprocessing.preprocess_image(
          image, dc, tf.constant([1, i], tf.int64)).numpy()
      np.testing.assert_allclose(out, image.numpy() / 127.5 - 1.0)
    dc = DataConfig(random_flip=True)
    flipped = [image_preprocessing.preprocess_image(
        image, dc, tf.constant([1, i], tf.int64)).numpy()[0, 0, 1]
               for i in range(16)]
    self.assertSetEqual(set(np.round((np.array(flipped) + 1) * 127.5)),
                        {0.0, 7.0})


if __name__ == '__main__':
  absltest.main()
