"""Every config in configs/ loads, builds and has its exact size; each paper
row's config arguments build the row's model at the paper's GFLOPs."""

import glob
import os
import re

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections

from tokenlearner_jax import flops
from tokenlearner_jax import paper
from tokenlearner_jax import summary
from tokenlearner_jax.configs import common
from tokenlearner_jax.models import build_model

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIGS = sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py')))

# (config, arg): (parameters, GMACs per example) as `tokenlearner_jax.summary`
# prints them. The defaults that are paper rows are also checked against the
# paper below (vit_imagenet: T4's 28.3; jft_pretrain: 9.15; vivit_k400/600:
# 1105).
SIZES = {
    ('avid_x2plus1d_tl', None): (23_002_035, 182.956754),
    ('avid_x2plus1d_tl', 'runlocal'): (87_211, 0.008744),
    ('charades_x2plus1d_tl', None): (26_547_705, 198.757086),
    ('charades_x2plus1d_tl', 'network=channelwise'): (5_694_725, 24.415319),
    ('charades_x2plus1d_tl', 'runlocal'): (74_857, 0.008908),
    ('demo_event_digits', None): (46_520, 0.02175),
    ('demo_event_digits', 'runlocal'): (46_520, 0.02175),
    ('demo_moving_digits', None): (170_160, 0.009505),
    ('demo_moving_digits', 'runlocal'): (103_216, 0.005704),
    ('demo_multi_digits', None): (838_354, 0.025331),
    ('demo_multi_digits', 'runlocal'): (308_434, 0.012699),
    ('im1k_token_learner', None): (86_617_912, 13.485992),
    ('im1k_token_learner', 'runlocal'): (59_276, 0.000350),
    ('jft_pretrain', None): (100_512_051, 9.160590),
    ('jft_pretrain', 'runlocal'): (26_874, 0.000308),
    ('vit_imagenet', None): (86_916_520, 28.236048),
    ('vit_imagenet', 'runlocal'): (58_488, 0.000339),
    ('vivit_k400', None): (307_586_128, 1088.415707),
    ('vivit_k400', 'runlocal'): (45_408, 0.000880),
    ('vivit_k600', None): (307_791_128, 1088.415912),
    ('vivit_k600', 'runlocal'): (52_008, 0.000886),
}


# The configs whose runlocal form no test trains (the others:
# tests/test_train.py ConfigsTrainTest): their model is built and applied here.
NOT_TRAINED = ('vivit_k600',)


def config_path(name: str) -> str:
  return os.path.join(ROOT, 'configs', f'{name}.py')


class ConfigFilesTest(parameterized.TestCase):

  def test_config_files_import_the_package_not_each_other(self):
    # Shared config code lives in tokenlearner_jax/configs/ (big_vision's
    # configs/common.py manner): no config file loads another by path.
    for path in CONFIGS:
      with open(path) as f:
        text = f.read()
      self.assertIsNone(re.search(r'load_module\(|load_config\(|sys\.path',
                                  text), os.path.basename(path))

  def test_every_config_takes_fast(self):
    for path in sorted(glob.glob(os.path.join(ROOT, 'configs', '*.py'))):
      self.assertTrue(common.load_config(path, 'fast').fast, path)
      self.assertFalse(common.load_config(path, None).fast, path)

  def test_every_config_file_has_sizes(self):
    names = {os.path.basename(path)[:-3] for path in CONFIGS}
    self.assertEqual({name for name, _ in SIZES}, names)

  @parameterized.parameters(*SIZES)
  def test_loads_and_has_its_size(self, name, arg):
    module = common.load_module(config_path(name))
    self.assertIn('python -m tokenlearner_jax', module.__doc__)
    config = module.get_config(arg)
    info = summary.summarize(config)
    num_params, gmacs = SIZES[name, arg]
    self.assertEqual(info['num_params'], num_params)
    self.assertAlmostEqual(info['gmacs'], gmacs, places=6)
    if arg == 'runlocal' and name in NOT_TRAINED:
      model = build_model(config, config.dataset_configs.num_classes)
      x = jnp.zeros((2,) + info['input_shape'])
      logits = jax.jit(lambda x: model.apply(
          model.init(jax.random.PRNGKey(0), x, train=False), x,
          train=False))(x)
      self.assertEqual(logits.shape, (2, config.dataset_configs.num_classes))

  @parameterized.parameters(*sorted({r.config for r in paper.ROWS
                                     if r.config}))
  def test_docstrings_point_to_the_paper_rows(self, name):
    module = common.load_module(config_path(name))
    self.assertIn('docs/flops.md', module.__doc__)


def _generic_model(row: paper.Row) -> ml_collections.ConfigDict:
  """The model `scripts/flops_table.py` counts for `row`."""
  args = dict(row.args)
  return common.model_config(args.pop('variant'), row.tokenizer_type,
                             use_v11=False, **args)


class PaperRowsTest(parameterized.TestCase):
  """Each row's `config:config_arg` is the row's model at its input size."""

  @parameterized.named_parameters(*[
      (re.sub(r'\W+', '_', f'{row.config}_{row.table}_{row.name}'), row)
      for row in paper.ROWS if row.config])
  def test_the_config_is_the_rows_model(self, row):
    config = common.load_config(config_path(row.config), row.config_arg)
    model, expected = config.model, _generic_model(row)
    for key in ('hidden_size', 'num_heads', 'mlp_dim', 'num_layers'):
      self.assertEqual(model[key], expected[key], key)
    tokenizer = model.tokenizer
    self.assertEqual(tuple(tokenizer.patches.size)[:2],
                     tuple(expected.tokenizer.patches.size)[:2])
    self.assertEqual(tokenizer.tokenlearner_loc,
                     expected.tokenizer.tokenlearner_loc)
    self.assertEqual(tokenizer.num_tokens, expected.tokenizer.num_tokens)
    self.assertEqual(tokenizer.get('use_tokenfuse', False),
                     expected.tokenizer.get('use_tokenfuse', False))
    self.assertFalse(tokenizer.use_v11)  # The paper's v1.0.
    shape = summary.example_input_shape(config)
    self.assertEqual(shape, row.input_shape)
    if row.gflops is not None and row.checked:
      # What `python -m tokenlearner_jax.summary` prints, without the build.
      ours = flops.gmacs(config, shape)
      self.assertLess(abs(ours / row.gflops - 1), paper.TOLERANCE,
                      f'{row.name} ({row.table}): {ours}')


if __name__ == '__main__':
  absltest.main()
