"""tokenlearner_jax.configs.kinetics: the paper-row presets of the ViViT
configs (`row=NAME`), which come from tokenlearner_jax.paper."""

import os

from absl.testing import absltest
from absl.testing import parameterized

from tokenlearner_jax import paper
from tokenlearner_jax.configs import common
from tokenlearner_jax.configs import kinetics

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def kinetics_config(name, arg=None):
  return common.load_config(os.path.join(ROOT, 'configs', f'{name}.py'), arg)


class PresetsTest(parameterized.TestCase):

  def test_the_presets_are_the_paper_rows(self):
    self.assertEqual(
        sorted(kinetics.PRESETS),
        ['L10_16at18', 'L10_16at18_fuser', 'L14_16at18', 'L16', 'L16_16at12',
         'L16_8at18'])
    for name, row in paper.presets().items():
      self.assertEqual(kinetics.PRESETS[name], row.args)
      self.assertEqual(row.input_shape, paper.VIDEO)

  @parameterized.parameters('vivit_k400', 'vivit_k600')
  def test_a_preset_equals_its_explicit_args(self, name):
    module = common.load_module(os.path.join(ROOT, 'configs', f'{name}.py'))
    for preset, row in paper.presets().items():
      self.assertEqual(module.get_config(f'row={preset}'),
                       module.get_config(row.config_arg), preset)

  def test_the_presets_are_documented(self):
    doc = ''.join(common.load_module(
        os.path.join(ROOT, 'configs', 'vivit_k400.py')).__doc__.split())
    for preset in kinetics.PRESETS:
      self.assertIn(preset, doc)

  def test_the_default_is_the_8at18_row(self):
    self.assertEqual(kinetics_config('vivit_k400'),
                     kinetics_config('vivit_k400', 'row=L16_8at18'))

  def test_explicit_args_override_the_preset(self):
    config = kinetics_config('vivit_k400', 'row=L10_16at18,num_tokens=8')
    self.assertEqual(config.model.tokenizer.num_tokens, 8)
    self.assertEqual(config.model.num_layers, 35)
    self.assertEqual(config.model.tokenizer.patches.size, (10, 10, 2))
    config = kinetics_config('vivit_k400', 'row=L16,tokenlearner_loc=12')
    self.assertEqual(config.model.tokenizer.tokenlearner_loc, 12)

  def test_an_unknown_row_raises(self):
    with self.assertRaisesRegex(ValueError, 'L16_9at18'):
      kinetics_config('vivit_k400', 'row=L16_9at18')

  def test_k400_and_k600_differ_in_the_dataset_only(self):
    k400, k600 = kinetics_config('vivit_k400'), kinetics_config('vivit_k600')
    self.assertEqual(k400.model, k600.model)
    self.assertEqual((k400.dataset_configs.num_classes,
                      k600.dataset_configs.num_classes), (400, 600))
    self.assertEqual((k400.lr_configs.base_learning_rate,
                      k600.lr_configs.base_learning_rate), (0.1, 0.05))

  def test_baseline(self):
    config = kinetics_config('vivit_k400', 'tokenlearner_loc=None')
    self.assertIsNone(config.model.tokenizer.tokenlearner_loc)
    self.assertFalse(config.init_from.init_missing_from_scratch)


if __name__ == '__main__':
  absltest.main()
