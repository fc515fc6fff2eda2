"""Tests of `from_scenic_params`: reference trees load, wrong trees are named."""

from absl.testing import absltest
import flax
import jax
import jax.numpy as jnp
import numpy as np

from tests.models.test_build import make_config
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import from_scenic_params
from tokenlearner_jax.models.scenic_params import expected_modules


def reference_tree(config, shape=(1, 16, 16, 3)):
  model = build_model(config, 5)
  return flax.linen.meta.unbox(jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.ones(shape), train=False))['params'])


def numpy_tree(tree):
  return jax.tree_util.tree_map(lambda s: np.ones(s.shape, s.dtype), tree)


class FromScenicParamsTest(absltest.TestCase):

  def test_identity_on_reference_layout_frozen_and_wrapped(self):
    config = make_config(tokenlearner_loc=1, num_tokens=2, use_tokenfuse=True)
    tree = numpy_tree(reference_tree(config))
    for given in (tree, flax.core.freeze(tree), {'params': tree}):
      loaded = from_scenic_params(given, config)
      self.assertIsInstance(loaded, dict)
      flat_in = flax.traverse_util.flatten_dict(tree)
      flat_out = flax.traverse_util.flatten_dict(loaded)
      self.assertEqual(set(flat_in), set(flat_out))
      for key, value in flat_in.items():
        np.testing.assert_array_equal(flat_out[key], value)

  def test_reference_module_names(self):
    config = make_config(tokenlearner_loc=1, num_tokens=2, use_tokenfuse=True,
                         representation_size=8)
    self.assertEqual(expected_modules(config), {
        'embedding', 'pre_logits', 'output_projection',
        'Transformer/posembed_input', 'Transformer/encoder_norm',
        'Transformer/encoderblock_0', 'Transformer/encoderblock_1',
        'Transformer/encoderblock_2', 'Transformer/TokenLearnerModuleV11_0',
        'Transformer/TokenLearnerModuleV11_1', 'Transformer/TokenFuser_0',
        'Transformer/TokenFuser_1'})

  def test_tree_of_another_config_is_named(self):
    v10 = make_config(tokenlearner_loc=1, num_tokens=2, use_v11=False)
    tree = numpy_tree(reference_tree(v10))
    v11 = make_config(tokenlearner_loc=1, num_tokens=2)
    with self.assertRaisesRegex(
        ValueError, r"missing \['Transformer/TokenLearnerModuleV11_0'\], "
        r"unexpected \['Transformer/TokenLearnerModule_0'\]"):
      from_scenic_params(tree, v11)


if __name__ == '__main__':
  absltest.main()
