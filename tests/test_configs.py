"""Every config in configs/ loads, validates and builds; the summary runs."""

import glob
import importlib.util
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

from tokenlearner_jax import config_lib
from tokenlearner_jax import summary
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


def load(path):
  spec = importlib.util.spec_from_file_location(
      os.path.basename(path)[:-3], path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


class ConfigsTest(parameterized.TestCase):

  def test_found_configs(self):
    self.assertNotEmpty(CONFIGS)

  @parameterized.parameters(*[(p, a) for p in CONFIGS
                              for a in (None, 'runlocal')])
  def test_loads_and_builds(self, path, arg):
    module = load(path)
    self.assertIn('python -m tokenlearner_jax', module.__doc__)
    config = module.get_config(arg)
    info = summary.summarize(config)
    self.assertGreater(info['num_params'], 0)
    self.assertGreater(info['gmacs'], 0)
    if arg == 'runlocal':
      model = build_model(config, config.dataset_configs.num_classes)
      x = jnp.zeros((2,) + info['input_shape'])
      logits = jax.jit(lambda x: model.apply(
          model.init(jax.random.PRNGKey(0), x, train=False), x,
          train=False))(x)
      self.assertEqual(logits.shape, (2, config.dataset_configs.num_classes))

  def test_vivit_k400_is_the_paper_model(self):
    config = load(os.path.join(ROOT, 'configs', 'vivit_k400.py')).get_config()
    info = summary.summarize(config)
    self.assertEqual(info['input_shape'], (32, 224, 224, 3))
    # Paper: 1105; 1087.9 in the table with gap and 1000 classes.
    self.assertAlmostEqual(info['gmacs'], 1088.4, delta=0.05)
    baseline = load(os.path.join(ROOT, 'configs', 'vivit_k400.py')).get_config(
        'tokenlearner_loc=None')
    self.assertIsNone(baseline.model.tokenizer.tokenlearner_loc)


class ParseArgTest(absltest.TestCase):

  def test_types_and_flags(self):
    arg = config_lib.parse_arg('num_tokens=16,runlocal,name=x',
                               num_tokens=8, runlocal=False, name=None)
    self.assertEqual((arg.num_tokens, arg.runlocal, arg.name), (16, True, 'x'))

  def test_unknown_key_raises(self):
    with self.assertRaisesRegex(ValueError, 'nmu_tokens'):
      config_lib.parse_arg('nmu_tokens=4', num_tokens=8)


if __name__ == '__main__':
  absltest.main()
