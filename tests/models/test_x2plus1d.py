"""The X(2+1)D network: X3D-M's size, every module row builds and trains,
its config errors (its train step on 8 CPU devices:
tests/integration/test_eight_devices.py)."""

import re

from absl.testing import absltest
from absl.testing import parameterized
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from tests import testing
from tokenlearner_jax import errors
from tokenlearner_jax import paper
from tokenlearner_jax.models import X2Plus1D
from tokenlearner_jax.models import X2Plus1DConfig
from tokenlearner_jax.models.x2plus1d import ChannelwiseConv

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

  @parameterized.parameters(((5, 1, 1), 1), ((3, 3, 3), 1), ((3, 3, 3), 2),
                            ((1, 3, 3), 1), ((1, 3, 3), 2), ((3, 1, 1), 1))
  def test_shifted_sums_equal_the_grouped_convolution(self, kernel, stride):
    # Every kernel and stride the network uses (the stem's temporal conv;
    # the blocks' 3-D, or spatial then temporal, middles); odd sizes: every
    # stride-2 edge case.
    x = np.random.default_rng(0).normal(size=(2, 3, 17, 14, 6)).astype(
        np.float32)
    strides = (1, stride, stride)
    convs = [ChannelwiseConv(kernel, strides, impl) for impl in
             ('conv', 'shifts')]
    variables = testing.perturbed(convs[0].init(jax.random.PRNGKey(0), x))
    for impl, conv in zip(('conv', 'shifts'), convs):  # The same parameters.
      self.assertEqual(testing.param_shapes(variables),
                       testing.param_shapes(conv.init(jax.random.PRNGKey(0),
                                                      x)), impl)
    outs = [jax.jit(conv.apply)(variables, x) for conv in convs]
    np.testing.assert_allclose(outs[1], outs[0], rtol=1e-4, atol=1e-5)
    cotangent = np.random.default_rng(1).normal(size=outs[0].shape)
    grads = [jax.jit(jax.grad(lambda v, x, conv=conv: jnp.sum(
        conv.apply(v, x) * cotangent), (0, 1)))(variables, x)
             for conv in convs]
    for name, g in testing.flat({'params': grads[0][0], 'x': grads[0][1]}
                                ).items():
      np.testing.assert_allclose(
          testing.flat({'params': grads[1][0], 'x': grads[1][1]})[name], g,
          rtol=1e-3, atol=1e-4, err_msg=name)

  def test_the_network_uses_the_chosen_channelwise_impl(self):
    for impl, grouped in (('conv', True), ('shifts', False)):
      c = testing.tiny_x2plus1d(channelwise_impl=impl)
      hlo = jax.jit(lambda x, c=c: X2Plus1D(c).init_with_output(
          jax.random.PRNGKey(0), x, train=False)[0]).lower(
              jnp.zeros((1,) + CLIP)).as_text()
      groups = {int(g) for g in re.findall(r'feature_group_count = (\d+)',
                                           hlo)}
      self.assertEqual(max(groups) > 1, grouped, (impl, groups))

  def test_full_middles_with_x3d_initialisation(self):
    c = testing.tiny_x2plus1d(middle_conv='full', x3d_init=True)
    x = np.random.default_rng(0).normal(size=(2,) + CLIP).astype(np.float32)
    variables = jax.jit(lambda: X2Plus1D(c).init(jax.random.PRNGKey(0), x,
                                                 train=False))()
    params = nn.unbox(variables['params'])
    d = c.inner_width(5)  # 36
    block = params['res5_block1']
    # Full 1x3x3 and 3x1x1 convolutions at the inner width, R(2+1)D's
    # BatchNorm between them.
    self.assertEqual(block['conv_b_spatial']['kernel'].shape, (1, 3, 3, d, d))
    self.assertEqual(block['conv_b_temporal']['kernel'].shape,
                     (3, 1, 1, d, d))
    self.assertIn('bn_b_spatial', block)
    # X3D's: each block's last BatchNorm scale zero (the others one), He
    # normal over the fan-out (16 -> 36: std sqrt(2 / 36), not sqrt(2 / 16)).
    for name, values in testing.flat(params).items():
      if name.endswith('/scale'):
        self.assertEqual(float(np.abs(values - (not name.endswith(
            'bn_c/scale'))).max()), 0.0, name)
    self.assertLess(abs(np.std(params['res5_block1']['conv_a']['kernel']) /
                        np.sqrt(2 / d) - 1), 0.15)
    logits, state = jax.jit(lambda v: X2Plus1D(c).apply(
        v, x, train=True, mutable=['batch_stats'],
        rngs={'dropout': jax.random.PRNGKey(1)}))(variables)
    self.assertTrue(np.isfinite(logits).all())
    self.assertGreater(np.abs(
        state['batch_stats']['res5_block1']['bn_b_spatial']['mean']).max(),
                       1e-4)

  def test_bfloat16_computes_in_bf16_with_fp32_parameters(self):
    # Every part of the module slot, with the backbone around it.
    parts = ('conv2d', 'mlp_mixer', 'mhsa', 'tokenlearner')
    x = np.random.default_rng(0).normal(size=(2,) + CLIP).astype(np.float32)
    fp32 = X2Plus1D(testing.tiny_x2plus1d(parts=parts))
    bf16 = X2Plus1D(testing.tiny_x2plus1d(parts=parts, dtype='bfloat16'))
    variables = jax.jit(lambda: fp32.init(jax.random.PRNGKey(0), x,
                                          train=False))()
    self.assertEqual(
        {p.dtype for p in jax.tree_util.tree_leaves(jax.eval_shape(
            lambda: bf16.init(jax.random.PRNGKey(0), x, train=False)))},
        {jnp.dtype(jnp.float32)})
    # Each module's output dtype, traced (not run).
    logits, state = jax.eval_shape(lambda: bf16.apply(
        variables, x, train=True, capture_intermediates=True,
        mutable=['batch_stats', 'intermediates'],
        rngs={'dropout': jax.random.PRNGKey(1)}))
    calls = {'/'.join(path[:-1]): out for path, out in
             flax.traverse_util.flatten_dict(state['intermediates']).items()
             if path[-1] == '__call__'}
    # The convolutions, normalisations and dense layers of the backbone and
    # of each module part give bf16; only the classifier is fp32.
    wide = [name for name, (out,) in calls.items()
            if name and out.dtype != jnp.bfloat16 and 'fuser' not in name]
    self.assertEqual(wide, ['output_projection'])
    for name in ('stem_spatial', 'res5_block1/conv_c', 'res5_block1/bn_c',
                 'res5_block1/module/mhsa/query', 'conv5', 'fc'):
      self.assertIn(name, calls)
    self.assertEqual(logits.dtype, jnp.float32)
    self.assertEqual({s.dtype for s in jax.tree_util.tree_leaves(
        state['batch_stats'])}, {jnp.dtype(jnp.float32)})
    apply = lambda model: jax.jit(  # pylint: disable=g-long-lambda
        lambda v: model.apply(v, x, train=False))(variables)
    reference = apply(fp32)
    scale = float(jnp.max(jnp.abs(reference)))
    np.testing.assert_allclose(apply(bf16), reference, atol=0.05 * scale)

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


if __name__ == '__main__':
  absltest.main()
