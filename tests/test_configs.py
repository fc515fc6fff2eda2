"""Every config in configs/ loads, validates and builds; the summary runs."""

import glob
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp

from tokenlearner_jax.configs import common
from tokenlearner_jax.configs import kinetics
from tokenlearner_jax import flops
from tokenlearner_jax import summary
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))


load = common.load_module


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


# (config, documented arg string, the paper's GFLOPs = multiply-adds per view):
# the rows each config's docstring lists, within TOLERANCE as in
# scripts/flops_table.py.
PAPER_ROWS = [
    # Kinetics-400/600 (Tables 6-8), 32x224x224 views.
    ('vivit_k400', None, 1105),
    ('vivit_k400', 'tokenlearner_loc=None', 1446),
    ('vivit_k400', 'num_tokens=16,tokenlearner_loc=12', 766),
    ('vivit_k400', 'variant=L/14,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11', 1621),
    ('vivit_k400', 'variant=L/10,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11', 4076),
    ('vivit_k400', 'variant=L/10,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11,use_tokenfuse=True', 4100),
    ('vivit_k400', 'row=L14_16at18', 1621),
    ('vivit_k400', 'row=L10_16at18_fuser', 4100),
    ('vivit_k600', None, 1105),
    ('vivit_k600', 'row=L16', 1446),
    ('vivit_k600', 'row=L16_16at12', 766),
    ('vivit_k600', 'row=L10_16at18', 4076),
    ('vivit_k600', 'row=L10_16at18_fuser', 4100),
    # ImageNet fine-tuning (Tables 1, 2, 4) at 384 (S, B) and 512 (L).
    ('vit_imagenet', None, 28.3),
    ('vit_imagenet', 'variant=S/32,tokenlearner_loc=None', 3.4),
    ('vit_imagenet', 'variant=B/16,tokenlearner_loc=None', 55.6),
    ('vit_imagenet', 'variant=S/32,tokenlearner_loc=6', 1.9),
    ('vit_imagenet', 'variant=S/32,tokenlearner_loc=11,extra_layers=10', 3.3),
    ('vit_imagenet', 'variant=B/32,tokenlearner_loc=10,extra_layers=8', 11.5),
    ('vit_imagenet', 'tokenlearner_loc=10,extra_layers=9', 47.1),
    ('vit_imagenet', 'num_tokens=16,tokenlearner_loc=10,extra_layers=9', 47.7),
    ('vit_imagenet', 'use_tokenfuse=True', 28.5),
    ('vit_imagenet', 'num_tokens=16', 28.7),
    ('vit_imagenet', 'num_tokens=16,use_tokenfuse=True', 29.1),
    ('vit_imagenet', 'variant=L/16,tokenlearner_loc=None', 363.1),
    ('vit_imagenet', 'variant=L/16,num_tokens=16,tokenlearner_loc=12', 184.6),
    ('vit_imagenet', 'variant=L/16,num_tokens=16,tokenlearner_loc=12,'
     'use_tokenfuse=True', 187.1),
    ('vit_imagenet', 'variant=L/16,tokenlearner_loc=18', 273.2),
    ('vit_imagenet', 'variant=L/16,tokenlearner_loc=18,use_tokenfuse=True',
     273.8),
    ('vit_imagenet', 'variant=L/16,num_tokens=16,tokenlearner_loc=12,'
     'extra_layers=11', 186.8),
    ('vit_imagenet', 'variant=L/16,tokenlearner_loc=18,extra_layers=6', 274.2),
    ('vit_imagenet', 'variant=L/14,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11', 361.6),
    ('vit_imagenet', 'variant=L/10,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11', 849.0),
    ('vit_imagenet', 'variant=L/10,num_tokens=16,tokenlearner_loc=18,'
     'extra_layers=11,use_tokenfuse=True', 856.9),
    # JFT pretraining at 224 (values read from the figures).
    ('jft_pretrain', None, 9.15),
    ('jft_pretrain', 'tokenlearner_loc=None', 17.53),
    ('jft_pretrain', 'tokenlearner_loc=3', 4.98),
    ('jft_pretrain', 'tokenlearner_loc=9', 13.37),
    ('jft_pretrain', 'num_tokens=16,tokenlearner_loc=0', 1.52),
    ('jft_pretrain', 'num_tokens=16,tokenlearner_loc=3', 5.49),
    ('jft_pretrain', 'num_tokens=16', 9.50),
    ('jft_pretrain', 'num_tokens=16,tokenlearner_loc=9', 13.52),
    ('jft_pretrain', 'tokenlearner_loc=10,extra_layers=9', 15.29),
    ('jft_pretrain', 'variant=S/32,tokenlearner_loc=6', 0.68),
    ('jft_pretrain', 'variant=B/32,tokenlearner_loc=None', 4.34),
    ('jft_pretrain', 'variant=B/32,tokenlearner_loc=10,extra_layers=8', 4.22),
]
TOLERANCE = 0.02


class PaperRowsTest(parameterized.TestCase):
  """The documented arg strings give the paper's GFLOPs (multiply-adds)."""

  @parameterized.parameters(*PAPER_ROWS)
  def test_gmacs_match_the_paper(self, name, arg, paper):
    module = load(os.path.join(ROOT, 'configs', f'{name}.py'))
    if arg:  # Documented (the docstring may wrap it over lines).
      self.assertIn(arg.replace('row=', ''), ''.join(module.__doc__.split()))
    config = module.get_config(arg)
    self.assertFalse(config.model.tokenizer.use_v11)  # The paper's v1.0.
    # What `python -m tokenlearner_jax.summary` prints, without the build.
    ours = flops.gmacs(config, summary.example_input_shape(config))
    self.assertLess(abs(ours / paper - 1), TOLERANCE, f'{name}:{arg}: {ours}')

  def test_the_default_summary(self):
    config = load(os.path.join(ROOT, 'configs', 'vit_imagenet.py')).get_config()
    info = summary.summarize(config)
    self.assertEqual(info['input_shape'], (384, 384, 3))
    self.assertAlmostEqual(info['gmacs'] / 28.3, 1, delta=TOLERANCE)

  @parameterized.parameters('vivit_k400', 'vivit_k600')
  def test_vivit_rows_equal_their_explicit_args(self, name):
    module = load(os.path.join(ROOT, 'configs', f'{name}.py'))
    rows = kinetics.ROWS
    for row, args in rows.items():
      explicit = ','.join(f'{k}={v}' for k, v in args.items())
      self.assertEqual(module.get_config(f'row={row}'),
                       module.get_config(explicit), row)
      self.assertIn(row, module.__doc__)
    # Explicit args override the row's.
    config = module.get_config('row=L10_16at18,num_tokens=8')
    self.assertEqual(config.model.tokenizer.num_tokens, 8)
    self.assertEqual(config.model.num_layers, 35)
    with self.assertRaisesRegex(ValueError, 'L16_9at18'):
      module.get_config('row=L16_9at18')


class ParseArgTest(absltest.TestCase):

  def test_types_and_flags(self):
    arg = common.parse_arg('num_tokens=16,runlocal,name=x',
                               num_tokens=8, runlocal=False, name=None)
    self.assertEqual((arg.num_tokens, arg.runlocal, arg.name), (16, True, 'x'))

  def test_unknown_key_raises(self):
    with self.assertRaisesRegex(ValueError, 'nmu_tokens'):
      common.parse_arg('nmu_tokens=4', num_tokens=8)


if __name__ == '__main__':
  absltest.main()
