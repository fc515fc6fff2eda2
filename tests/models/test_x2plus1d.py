"""The X(2+1)D network: X3D-M's size, every module row builds and trains,
its config errors, and its train step on a 2x2x2 mesh of 8 CPU devices."""

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests import testing
from tokenlearner_jax import errors
from tokenlearner_jax import paper
from tokenlearner_jax.models import X2Plus1D
from tokenlearner_jax.models import X2Plus1DConfig

CLIP = (4, 64, 64, 3)  # res5 on a 2 x 2 grid.


def count(tree) -> int:
  return sum(x.size for x in jax.tree_util.tree_leaves(tree))


def param_count(c: X2Plus1DConfig, shape=(16, 224, 224, 3)) -> int:
  variables = jax.eval_shape(lambda: X2Plus1D(c).init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + shape), train=False))
  return count(nn.unbox(variables['params']))


class X2Plus1DTest(parameterized.TestCase):

  def test_x3d_m_has_its_published_size(self):
    # X3D-M (Feichtenhofer 2020, Table 3): 3.8M parameters at 400 classes.
    x3d = param_count(X2Plus1DConfig(num_classes=400, conv_type='3d'))
    self.assertEqual(x3d, 3_794_322)
    self.assertEqual(round(x3d / 1e6, 1), 3.8)
    # (2+1)D: each channel-wise 3x3x3 kernel (27 weights per channel) becomes
    # 1x3x3 + 3x1x1 (12): 15 fewer per channel of every block's middle.
    c = X2Plus1DConfig(num_classes=400)
    inner = sum(d * c.inner_width(s) for s, d in zip(range(2, 6), c.depths))
    self.assertEqual(param_count(c), x3d - 15 * inner)

  @parameterized.parameters(*[(row.parts,) for row in paper.MODULE_ROWS])
  def test_every_module_row_trains_and_updates_batch_stats(self, parts):
    c = testing.tiny_x2plus1d(parts=parts)
    model = X2Plus1D(c)
    x = np.random.default_rng(0).normal(size=(2,) + CLIP).astype(np.float32)
    variables = model.init(jax.random.PRNGKey(0), x, train=False)
    module = nn.unbox(variables['params'])['res5_block1']['module']
    self.assertEqual(sorted(module), sorted(parts))
    logits, state = model.apply(variables, x, train=True,
                                mutable=['batch_stats'],
                                rngs={'dropout': jax.random.PRNGKey(1)})
    self.assertEqual(logits.shape, (2, testing.NUM_CLASSES))
    before = variables['batch_stats']['res5_block1']['bn_c']['mean']
    after = state['batch_stats']['res5_block1']['bn_c']['mean']
    self.assertGreater(np.abs(after - before).max(), 1e-4)
    eval_logits = model.apply(variables, x, train=False)
    self.assertTrue(np.isfinite(eval_logits).all())
    # Every parameter of the module gets a gradient (away from the init,
    # where TokenFuser's zero mixing kernel holds back what lies before it).
    def loss(params):
      out, _ = model.apply({**variables, 'params': params}, x, train=True,
                           mutable=['batch_stats'],
                           rngs={'dropout': jax.random.PRNGKey(1)})
      return jnp.mean(out * np.arange(out.shape[-1]))
    grads = jax.grad(loss)(testing.perturbed(nn.unbox(variables['params'])))
    for name, g in testing.flat(grads['res5_block1']['module']).items():
      self.assertTrue(np.isfinite(g).all(), name)
      self.assertGreater(np.abs(g).max(), 1e-9, name)

  @parameterized.parameters('2plus1d', '3d')
  def test_shifted_sums_equal_the_grouped_convolutions(self, conv_type):
    x = np.random.default_rng(0).normal(size=(2, 3, 17, 14, 3)).astype(
        np.float32)  # Odd sizes: every stride-2 edge case.
    models = [X2Plus1D(testing.tiny_x2plus1d(conv_type=conv_type,
                                             channelwise_impl=impl,
                                             dropout_rate=0.0))
              for impl in ('conv', 'shifts')]
    variables = models[0].init(jax.random.PRNGKey(0), x, train=False)
    variables = {**variables,
                 'params': testing.perturbed(variables['params'])}
    for train in (False, True):
      outs = [m.apply(variables, x, train=train, mutable=['batch_stats'])[0]
              for m in models]
      np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    grads = [jax.grad(lambda p, m=m: m.apply(
        {**variables, 'params': p}, x, train=False).sum())(
            variables['params']) for m in models]
    for name, g in testing.flat(grads[0]).items():
      np.testing.assert_allclose(testing.flat(grads[1])[name], g, rtol=1e-3,
                                 atol=1e-4, err_msg=name)

  def test_backbone_has_no_module(self):
    c = testing.tiny_x2plus1d()
    variables = jax.eval_shape(lambda: X2Plus1D(c).init(
        jax.random.PRNGKey(0), jnp.zeros((1,) + CLIP), train=False))
    self.assertNotIn('module', nn.unbox(variables['params'])['res5_block1'])
    self.assertIn('conv_b_temporal',
                  nn.unbox(variables['params'])['res5_block1'])

  @parameterized.parameters(
      (dict(parts=('conv2d', 'attention')), "'attention' is not a part"),
      (dict(parts=('tokenlearner',), blocks=(0,)), 'first block of res5'),
      (dict(parts=('tokenlearner',), blocks=(5,)), 'model.module.blocks'),
      (dict(parts=('tokenlearner',), relation_group_size=7),
       'relation_group_size=7 must divide the module width 36'),
      (dict(parts=('mhsa',), attention_dim=15), 'attention_dim=15'),
      (dict(depths=(1, 1, 1)), 'model.depths'),
      (dict(token_maker='learned'), 'model.module.token_maker'),
  )
  def test_bad_settings_name_their_key(self, fields, message):
    with self.assertRaisesRegex(errors.ConfigError, message):
      testing.tiny_x2plus1d(**fields)

  def test_a_two_step_train_on_1_and_on_8_devices_gives_the_same_losses(self):
    eight = testing.on_eight_devices(self, EIGHT_DEVICES)
    # Every parameter of 64 or more values is split over fsdp or model as
    # the rules say, and lies on the devices so.
    self.assertEqual(eight['unsharded'], [])
    self.assertEqual(eight['misplaced'], [])
    self.assertGreater(eight['sharded'], 40)
    losses = train_two_steps((1, 1, 1), jax.devices()[:1])
    np.testing.assert_allclose(eight['losses'], losses, rtol=2e-5)


def train_two_steps(mesh_shape, devices, report=None):
  """Losses of two SGD steps of a tiny Conv2D + TokenLearner network (batch
  8); `report(state, shardings, boxed)` sees the fresh state."""
  from tokenlearner_jax import optim  # pylint: disable=g-import-not-at-top
  from tokenlearner_jax import sharding  # pylint: disable=g-import-not-at-top
  from tokenlearner_jax import train_steps  # pylint: disable=g-import-not-at-top
  config = testing.batchnorm_config(mesh_shape, batch_size=8)
  model = X2Plus1D(testing.tiny_x2plus1d(parts=('conv2d', 'tokenlearner'),
                                         dropout_rate=0.0))
  tx, schedule = optim.make_optimizer(config, 10)
  mesh = jax.sharding.Mesh(np.asarray(devices).reshape(mesh_shape),
                           sharding.MESH_AXES)
  state, shardings = train_steps.create_train_state(config, model, tx, CLIP,
                                                    mesh)
  if report:
    report(state, shardings, config, model)
  batch_sharding = sharding.batch_sharding(mesh)
  step = train_steps.make_train_step(config, model, tx, schedule, shardings,
                                     batch_sharding, multilabel=True)
  losses = []
  for seed in (0, 1):
    rng = np.random.default_rng(seed)
    batch = {'inputs': rng.normal(size=(8,) + CLIP).astype(np.float32),
             'label': (rng.random((8, testing.NUM_CLASSES)) < 0.3).astype(
                 np.float32)}
    state, metrics = step(state, jax.device_put(batch, batch_sharding))
    losses.append(float(metrics['loss']))
  return losses


EIGHT_DEVICES = '''
import json
import flax.linen as nn
import jax
import jax.numpy as jnp
from tests.models import test_x2plus1d as t
from tokenlearner_jax import sharding

out = {}
def report(state, shardings, config, model):
  boxed = jax.eval_shape(lambda: model.init(
      jax.random.PRNGKey(0), jnp.zeros((1,) + t.CLIP), train=False))['params']
  specs = sharding.param_specs(boxed, config)
  flat_specs = jax.tree_util.tree_flatten_with_path(
      specs, is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0]
  params = jax.tree_util.tree_leaves(state.params)
  unsharded, misplaced, sharded = [], [], 0
  for (path, spec), leaf in zip(flat_specs, params):
    name = jax.tree_util.keystr(path)
    axes = {a for part in spec for a in (part if isinstance(part, tuple)
                                          else (part,)) if a}
    if leaf.size >= 64 and not axes & {'fsdp', 'model'}:
      unsharded.append(name)
    if axes:
      sharded += 1
    if leaf.sharding.spec != spec and tuple(leaf.sharding.spec) != tuple(
        spec):
      misplaced.append(name)
  out.update(unsharded=unsharded, misplaced=misplaced, sharded=sharded)
out['losses'] = t.train_two_steps((2, 2, 2), jax.devices(), report)
print(json.dumps(out))
'''


if __name__ == '__main__':
  absltest.main()
