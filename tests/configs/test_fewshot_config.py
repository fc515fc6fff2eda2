"""configs.fewshot_config: `config.fewshot` read, checked and completed."""

from absl.testing import absltest

from tests.testing import config_for
from tests.testing import demo_config
from tokenlearner_jax import errors
from tokenlearner_jax.configs.fewshot_config import FewshotConfig


class FewshotConfigTest(absltest.TestCase):

  def test_malformed_values_name_the_key(self):
    for key, value, message in (
        ('datasets', {'digits': ('fewshot_digits', 'train')},
         r'config\.fewshot\.datasets\.digits'),
        ('shots', (1, 0), r'config\.fewshot\.shots'),
        ('num_seeds', 0, r'config\.fewshot\.num_seeds must be a positive '
         'integer'),
        ('crop_fraction', -1.0, r'config\.fewshot\.crop_fraction must be a '
         r'number > 0')):
      config = demo_config('demo_multi_digits')
      config.fewshot[key] = value
      with self.assertRaisesRegex(errors.ConfigError, message):
        FewshotConfig.from_config(config)

  def test_defaults_fill_what_the_section_leaves_unset(self):
    config = demo_config('demo_multi_digits')
    config.eval_batch_size = 12
    for key in ('num_seeds', 'l2_reg', 'batch_size', 'crop_fraction'):
      if key in config.fewshot:
        del config.fewshot[key]
    settings = FewshotConfig.from_config(config)
    self.assertEqual((settings.num_seeds, settings.l2_reg,
                      settings.crop_fraction, settings.batch_size),
                     (3, 2.0**10, 0.875, 12))
    self.assertEqual(settings.data_dir, config.dataset_configs.data_dir)

  def test_jft_pretrain_lists_the_papers_nine_datasets(self):
    settings = FewshotConfig.from_config(config_for('jft_pretrain', ''))
    self.assertSameElements(
        [tfds_name for tfds_name, _, _ in settings.datasets.values()],
        ['caltech101', 'caltech_birds2011', 'cars196', 'cifar100',
         'colorectal_histology', 'dtd', 'imagenet2012', 'oxford_iiit_pet',
         'uc_merced'])
    # Disjoint few-shot pools and test splits where a dataset has one split.
    self.assertEqual(settings.datasets['uc_merced'],
                     ('uc_merced', 'train[:1000]', 'train[1000:]'))
    self.assertEqual(settings.shots, (1, 5, 10, 25))
    self.assertEqual(settings.l2_reg, 2.0**10)


if __name__ == '__main__':
  absltest.main()
