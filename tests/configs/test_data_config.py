"""configs.data_config: `config.dataset_configs` read, checked and completed;
the schema's rows of the section are its fields."""

from absl.testing import absltest
import ml_collections

from tests.testing import config_for
from tokenlearner_jax import errors
from tokenlearner_jax.configs import schema
from tokenlearner_jax.configs.data_config import AugmentationConfig
from tokenlearner_jax.configs.data_config import DataConfig


class DataConfigTest(absltest.TestCase):

  def test_a_config_file_is_read_with_the_defaults_it_leaves_unset(self):
    config = config_for('vivit_k400')
    dc = DataConfig.from_config(config)
    self.assertEqual((dc.num_frames, dc.stride, dc.crop_size),
                     (config.dataset_configs.num_frames,
                      config.dataset_configs.stride,
                      config.dataset_configs.crop_size))
    self.assertEqual(dc.augmentation_params.do_jitter_scale,
                     config.dataset_configs.augmentation_params.do_jitter_scale)
    self.assertTrue(dc.is_video)
    # Keys the file leaves unset: each field's one default.
    for key in ('label_offset', 'eval_crop_fraction', 'test_split'):
      self.assertNotIn(key, config.dataset_configs)
    self.assertEqual((dc.label_offset, dc.eval_crop_fraction, dc.test_split),
                     (0, 0.875, 'test'))
    image = DataConfig.from_config(ml_collections.ConfigDict())
    self.assertEqual(image, DataConfig())
    self.assertFalse(image.is_video)

  def test_malformed_values_name_the_key_before_anything_runs(self):
    for key, value, message in (
        ('stride', 0, r'config\.dataset_configs\.stride=0: must be a number'),
        ('clip_labels', 'frames',
         r"config\.dataset_configs\.clip_labels must be one of \('video', "
         r"'segments'\), got 'frames'"),
        ('crop_padding', -2, r'config\.dataset_configs\.crop_padding must be '
         r'an integer >= 0'),
        ('augmentation_params.prob_color_drop', 1.5,
         r'config\.dataset_configs\.augmentation_params\.prob_color_drop '
         r'must be in \[0, 1\], got 1\.5')):
      config = config_for('vivit_k400')
      *parents, leaf = key.split('.')
      node = config.dataset_configs
      for parent in parents:
        node = node[parent]
      node[leaf] = value
      with self.assertRaisesRegex(errors.ConfigError, message):
        schema.complete(config)
    config = config_for('demo_moving_digits')  # Sets no tables.
    config.dataset_configs.tables = 'train@4'
    with self.assertRaisesRegex(errors.ConfigError,
                                r'config\.dataset_configs\.tables must map'):
      schema.complete(config)

  def test_the_schema_rows_are_the_fields(self):
    for cls, section in ((DataConfig, 'dataset_configs'),
                         (AugmentationConfig,
                          'dataset_configs.augmentation_params')):
      rows = {k.key for k in schema.KEYS if k.key.startswith(section + '.')
              and k.status == schema.IMPLEMENTED and k.key.count('.') ==
              section.count('.') + 1}
      self.assertEqual(rows, {f'{section}.{name}' for name in
                              cls.__dataclass_fields__})


if __name__ == '__main__':
  absltest.main()
