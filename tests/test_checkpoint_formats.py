"""Tests of `tokenlearner_jax.checkpoint_formats`: every checkpoint format,
written as its producer writes it, round-trips into our layout; reference
(scenic) trees are checked against their config."""

import os

from absl.testing import absltest
from absl.testing import parameterized
import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from tests.testing import assert_trees_equal
from tests.testing import batchnorm_config
from tests.testing import batchnorm_state
from tests.testing import flat
from tests.testing import init
from tests.testing import manager_config
from tests.testing import mu_config as make_config
from tests.testing import randomized
from tokenlearner_jax import checkpoint
from tokenlearner_jax import checkpoint_formats
from tokenlearner_jax import train_steps
from tokenlearner_jax.configs import common
from tokenlearner_jax.configs.init_from_config import InitFromConfig
from tokenlearner_jax.models import build_model

IMAGE = (16, 16, 3)  # 4x4 patches of 4x4.
POSEMB = checkpoint_formats.POSEMB
# Our encoder-block children -> the pre-linen names of vision_transformer.
TO_VIT_JAX = {
    'LayerNorm_0': 'LayerNorm_0',
    'MultiHeadDotProductAttention_0': 'MultiHeadDotProductAttention_1',
    'LayerNorm_1': 'LayerNorm_2',
    'MlpBlock_0': 'MlpBlock_3',
}


def to_vit_jax(params):
  """Flat vision_transformer names: pre-linen blocks, `head`."""
  out = {}
  for name, value in flat(params).items():
    parts = name.split('/')
    if parts[0] == 'output_projection':
      parts[0] = 'head'
    if parts[0] == 'Transformer' and parts[1].startswith('encoderblock_'):
      parts[2] = TO_VIT_JAX[parts[2]]
    out['/'.join(parts)] = np.asarray(value)
  return out


def to_big_vision(params, scanned: bool, num_layers: int = 2):
  """Flat big_vision names: top-level `pos_embedding`, `head`, optionally
  scanned blocks `[depth, ...]`."""
  out = {}
  for name, value in flat(params).items():
    if name == POSEMB:
      name = 'pos_embedding'
    elif name.startswith('output_projection/'):
      name = 'head/' + name[len('output_projection/'):]
    out[name] = np.asarray(value)
  if scanned:
    blocks = [{k[len(f'Transformer/encoderblock_{i}/'):]: out.pop(k)
               for k in list(out)
               if k.startswith(f'Transformer/encoderblock_{i}/')}
              for i in range(num_layers)]
    for rest in blocks[0]:
      out[f'Transformer/encoderblock/{rest}'] = np.stack(
          [block[rest] for block in blocks])  # [depth, ...]
  return out


class LoadParamsTest(parameterized.TestCase):
  """Each format, written as its producer writes it, loads to our arrays."""

  @classmethod
  def setUpClass(cls):
    super().setUpClass()
    config = make_config('dynamic', tokenlearner_loc=1)
    cls.params = randomized(init(config, IMAGE)[1])

  def load(self, path, fmt):
    return checkpoint_formats.load_params(InitFromConfig(
        checkpoint_path=path, checkpoint_format=fmt))

  def test_our_workdir_latest_checkpoint_params_only(self):
    workdir = self.create_tempdir().full_path
    manager = checkpoint.make_manager(
        workdir, manager_config(1))
    tx = optax.adam(1e-3)
    for step, params in ((1, jax.tree_util.tree_map(np.zeros_like,
                                                    self.params)),
                         (2, self.params)):
      state = train_steps.TrainState(step=jnp.asarray(step), params=params,
                                     opt_state=tx.init(params),
                                     rng=jax.random.PRNGKey(0),
                                     model_state={})
      checkpoint.save(manager, step, state)
    manager.wait_until_finished()
    loaded = checkpoint_formats.load_params(
        InitFromConfig(checkpoint_path=workdir))
    assert_trees_equal(self, loaded, self.params)
    self.assertIsInstance(loaded['embedding']['kernel'], np.ndarray)
    variables = checkpoint_formats.load_variables(
        InitFromConfig(checkpoint_path=workdir))
    self.assertEqual(sorted(variables), ['params'])  # No model state.
    assert_trees_equal(self, variables['params'], self.params)

  def test_our_workdir_model_state_fits_a_new_model_where_shapes_do(self):
    # A BatchNorm model's run: its batch_stats come with its parameters.
    workdir = self.create_tempdir().full_path
    fresh = batchnorm_state(batchnorm_config(), jax.devices()[:1])
    stats = {'BatchNorm_0': {'mean': np.arange(4, dtype=np.float32),
                             'var': np.arange(1, 5, dtype=np.float32)}}
    manager = checkpoint.make_manager(
        workdir, manager_config(1))
    checkpoint.save(manager, 1, fresh.state.replace(
        model_state={'batch_stats': stats}))
    manager.close()
    variables = checkpoint_formats.load_variables(
        InitFromConfig(checkpoint_path=workdir))
    self.assertEqual(sorted(variables), ['batch_stats', 'params'])
    assert_trees_equal(self, variables['params'], fresh.state.params)
    new = fresh.state.model_state
    fitted = checkpoint_formats.fit_model_state(
        new, {'batch_stats': variables['batch_stats']})
    assert_trees_equal(self, fitted, {'batch_stats': stats})
    self.assertEqual(fitted['batch_stats']['BatchNorm_0']['var'].sharding,
                     new['batch_stats']['BatchNorm_0']['var'].sharding)
    # A statistic of another shape stays new.
    other = {'BatchNorm_0': {'mean': np.full(5, 7.0, np.float32),
                             'var': stats['BatchNorm_0']['var']}}
    fitted = checkpoint_formats.fit_model_state(new, {'batch_stats': other})
    assert_trees_equal(self, fitted, {'batch_stats': {'BatchNorm_0': {
        'mean': np.zeros(4, np.float32), 'var': stats['BatchNorm_0']['var']}}})
    self.assertEqual(checkpoint_formats.fit_model_state({}, variables), {})

  @parameterized.parameters('params', 'optimizer.target')
  def test_scenic_msgpack(self, layout):
    if layout == 'params':
      tree = {'global_step': 3, 'params': self.params,
              'opt_state': {'mu': self.params}}
    else:
      tree = {'optimizer': {'target': self.params, 'state': {'step': 3}}}
    path = self.create_tempfile(
        'checkpoint_3', content=flax.serialization.msgpack_serialize(tree),
        mode='wb').full_path
    assert_trees_equal(self, self.load(path, 'scenic'), self.params)

  def test_scenic_directory_reads_the_largest_step(self):
    directory = self.create_tempdir()
    for step in (9, 10):
      params = self.params if step == 10 else randomized(self.params, step)
      directory.create_file(
          f'checkpoint_{step}', mode='wb',
          content=flax.serialization.msgpack_serialize({'params': params}))
    assert_trees_equal(self, self.load(directory.full_path, 'scenic'),
                       self.params)

  def write_npz(self, arrays):
    path = os.path.join(self.create_tempdir().full_path, 'ckpt.npz')
    np.savez(path, **arrays)
    return path

  def test_vision_transformer_npz_with_cls_and_pre_logits(self):
    config = make_config('patch', classifier='token', representation_size=8)
    params = randomized(init(config, IMAGE)[1])
    path = self.write_npz(to_vit_jax(params))
    self.assertIn('Transformer/encoderblock_1/MlpBlock_3/Dense_0/kernel',
                  np.load(path).files)
    assert_trees_equal(self, self.load(path, 'big_vision'), params)

  @parameterized.parameters(False, True)
  def test_big_vision_npz(self, scanned):
    arrays = to_big_vision(self.params, scanned)
    arrays = {f'params/{k}': v for k, v in arrays.items()}
    arrays['opt/mu/embedding/kernel'] = np.ones(3)  # Not parameters: dropped.
    assert_trees_equal(self, self.load(self.write_npz(arrays), 'big_vision'),
                       self.params)

  def test_big_vision_cls_gets_a_zero_position(self):
    """big_vision adds the embedding before prepending `cls`; we add it after,
    so the `cls` row must be zero (an old combined `1 + s*s` one is kept)."""
    config = make_config('patch', classifier='token')
    params = flat(randomized(init(config, IMAGE)[1]))
    arrays = to_big_vision(flax.traverse_util.unflatten_dict(params, sep='/'),
                           scanned=True)
    combined = self.load(self.write_npz(arrays), 'big_vision')
    np.testing.assert_array_equal(combined['Transformer']['posembed_input'][
        'pos_embedding'], params[POSEMB])  # 1 + 16 rows: kept.
    arrays['pos_embedding'] = arrays['pos_embedding'][:, 1:]  # 16 rows.
    loaded = self.load(self.write_npz(arrays), 'big_vision')
    posemb = loaded['Transformer']['posembed_input']['pos_embedding']
    np.testing.assert_array_equal(posemb[:, 0], 0.0)
    np.testing.assert_array_equal(posemb[:, 1:], params[POSEMB][:, 1:])
    np.testing.assert_array_equal(loaded['cls'], params['cls'])

  def test_big_vision_bfloat16_arrays(self):
    arrays = to_big_vision(self.params, scanned=False)
    arrays['embedding/kernel'] = arrays['embedding/kernel'].astype(
        jnp.bfloat16)
    loaded = self.load(self.write_npz(arrays), 'big_vision')
    self.assertEqual(loaded['embedding']['kernel'].dtype, jnp.bfloat16)
    np.testing.assert_array_equal(loaded['embedding']['kernel'],
                                  arrays['embedding/kernel'])

  def test_unknown_format(self):
    with self.assertRaisesRegex(
        ValueError, r"init_from.checkpoint_format must be one of "
        r"\('tokenlearner_jax', 'scenic', 'big_vision'\), got 'torch'"):
      self.load('/tmp/x', 'torch')

  @parameterized.parameters('tokenlearner_jax', 'scenic', 'big_vision')
  def test_missing_path(self, fmt):
    path = os.path.join(self.create_tempdir().full_path, 'nothing_here')
    with self.assertRaisesRegex(FileNotFoundError, 'nothing_here'):
      self.load(path, fmt)

  def test_workdir_without_checkpoints(self):
    workdir = self.create_tempdir()
    workdir.mkdir('checkpoints')
    with self.assertRaisesRegex(FileNotFoundError, 'no checkpoint in'):
      self.load(workdir.full_path, 'tokenlearner_jax')

  def test_unset_path(self):
    with self.assertRaisesRegex(ValueError, 'init_from.checkpoint_path'):
      checkpoint_formats.load_params(InitFromConfig(checkpoint_path=None))


class BigVisionNamesTest(absltest.TestCase):

  def test_big_vision_names(self):
    self.assertEqual(checkpoint_formats.big_vision_name('pos_embedding'),
                     POSEMB)
    self.assertEqual(checkpoint_formats.big_vision_name('head/bias'),
                     'output_projection/bias')
    self.assertEqual(
        checkpoint_formats.big_vision_name(
            'Transformer/encoderblock_3/MultiHeadDotProductAttention_1/out/'
            'kernel'),
        'Transformer/encoderblock_3/MultiHeadDotProductAttention_0/out/kernel')
    self.assertEqual(
        checkpoint_formats.big_vision_name(
            'Transformer/encoderblock_0/LayerNorm_1/scale'),
        'Transformer/encoderblock_0/LayerNorm_1/scale')

  def test_scanned_blocks_unstack_like_ours(self):
    flat_arrays = {'Transformer/encoderblock/LayerNorm_0/scale':
                       np.arange(6.0).reshape(3, 2),  # [depth, ...]
                   'embedding/bias': np.zeros(2)}
    self.assertEqual(
        sorted(checkpoint_formats.scanned_as_ours(flat_arrays)),
        ['Transformer/encoderblock_0_to_2/LayerNorm_0/scale',
         'embedding/bias'])
    tree = checkpoint_formats.from_big_vision(flat_arrays)
    np.testing.assert_array_equal(
        tree['Transformer']['encoderblock_2']['LayerNorm_0']['scale'],
        [4.0, 5.0])

  def test_scanned_blocks_of_two_depths_or_both_layouts_are_named(self):
    with self.assertRaisesRegex(ValueError, r'leading axes \[2, 3\]'):
      checkpoint_formats.from_big_vision({
          'Transformer/encoderblock/a': np.zeros((2, 4)),
          'Transformer/encoderblock/b': np.zeros((3, 4))})
    with self.assertRaisesRegex(
        ValueError, 'Transformer/encoderblock_1/a is both scanned'):
      checkpoint_formats.from_big_vision({
          'Transformer/encoderblock/a': np.zeros((2, 4)),
          'Transformer/encoderblock_1/a': np.zeros(4)})


def build_config(**kwargs):
  """A 3-block 'mu' ViT + TokenLearner; kwargs go to `model_config`."""
  config = ml_collections.ConfigDict()
  config.model = common.model_config('mu/4', 'dynamic', extra_layers=1,
                                     **kwargs)
  return config


def reference_tree(config, shape=(1, 16, 16, 3)):
  model = build_model(config, 5)
  return flax.linen.meta.unbox(jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.ones(shape), train=False))['params'])


def numpy_tree(tree):
  return jax.tree_util.tree_map(lambda s: np.ones(s.shape, s.dtype), tree)


class FromScenicParamsTest(absltest.TestCase):

  def test_identity_on_reference_layout_frozen_and_wrapped(self):
    config = build_config(tokenlearner_loc=1, num_tokens=2, use_tokenfuse=True)
    tree = numpy_tree(reference_tree(config))
    for given in (tree, flax.core.freeze(tree), {'params': tree}):
      loaded = checkpoint_formats.from_scenic_params(given, config)
      self.assertIsInstance(loaded, dict)
      flat_in = flax.traverse_util.flatten_dict(tree)
      flat_out = flax.traverse_util.flatten_dict(loaded)
      self.assertEqual(set(flat_in), set(flat_out))
      for key, value in flat_in.items():
        np.testing.assert_array_equal(flat_out[key], value)

  def test_reference_module_names(self):
    config = build_config(tokenlearner_loc=1, num_tokens=2, use_tokenfuse=True,
                         representation_size=8)
    self.assertEqual(checkpoint_formats.expected_modules(config), {
        'embedding', 'pre_logits', 'output_projection',
        'Transformer/posembed_input', 'Transformer/encoder_norm',
        'Transformer/encoderblock_0', 'Transformer/encoderblock_1',
        'Transformer/encoderblock_2', 'Transformer/TokenLearnerModuleV11_0',
        'Transformer/TokenLearnerModuleV11_1', 'Transformer/TokenFuser_0',
        'Transformer/TokenFuser_1'})

  def test_tree_of_another_config_is_named(self):
    v10 = build_config(tokenlearner_loc=1, num_tokens=2, use_v11=False)
    tree = numpy_tree(reference_tree(v10))
    v11 = build_config(tokenlearner_loc=1, num_tokens=2)
    with self.assertRaisesRegex(
        ValueError, r"missing \['Transformer/TokenLearnerModuleV11_0'\], "
        r"unexpected \['Transformer/TokenLearnerModule_0'\]"):
      checkpoint_formats.from_scenic_params(tree, v11)


if __name__ == '__main__':
  absltest.main()
