"""The X(2+1)D module slot's parts against float64 NumPy transcriptions of
their definitions (tests/numpy_reference.py), and their invariants."""

from absl.testing import absltest
from absl.testing import parameterized
import flax.linen as nn
import jax
import numpy as np

from tests import numpy_reference as ref
from tests.testing import randomized
from tokenlearner_jax.models import video_modules

RTOL, ATOL = 2e-4, 2e-5


def _init(module, x, **kwargs):
  params = nn.unbox(module.init(jax.random.PRNGKey(0), x, **kwargs)['params'])
  return randomized(params)


def _video(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


class VideoModulesTest(parameterized.TestCase):

  def test_vector_attention_matches_its_definition(self):
    x = _video((2, 6, 18))
    module = video_modules.VectorAttention(relation_group_size=9)
    params = _init(module, x)
    out = module.apply({'params': params}, x)
    expected = ref.vector_attention(x.astype(np.float64), params, 9)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)

  def test_vector_attention_weights_depend_on_the_query(self):
    # With a linear relation function softmax_j(G(q_i - k_j)) would not
    # depend on i; the ReLU makes each query's weights its own.
    x = _video((1, 5, 18))
    module = video_modules.VectorAttention(relation_group_size=9)
    params = _init(module, x)
    params['out'] = {'kernel': np.eye(18, dtype=np.float32),
                     'bias': np.zeros(18, np.float32)}
    params['value'] = params['out']
    out = np.asarray(module.apply({'params': params}, x))
    self.assertGreater(np.abs(out[0, 0] - out[0, 1]).max(), 1e-3)

  def test_frame_tokens_match_a_single_conv_tokenlearner(self):
    frames = _video((3, 4, 5, 6))
    module = video_modules.FrameTokens(num_tokens=4)
    params = _init(module, frames)
    out, state = module.apply({'params': params}, frames,
                              mutable=['intermediates'])
    np.testing.assert_allclose(
        out, ref.frame_tokens(frames.astype(np.float64), params, 4),
        rtol=RTOL, atol=ATOL)
    maps = state['intermediates']['attention_maps'][0]
    self.assertEqual(maps.shape, (3, 4, 20))  # [N, S, HW]

  def test_region_pooling_averages_each_region_once(self):
    for h, w, s in ((8, 8, 8), (7, 7, 8), (2, 2, 4), (5, 3, 6)):
      weights = video_modules.region_pooling_matrix(h, w, s)
      np.testing.assert_allclose(weights.sum(0), np.ones(s), rtol=1e-6)
      self.assertTrue(((weights > 0).sum(1) >= 1).all())  # Every position.
    weights = video_modules.region_pooling_matrix(8, 8, 8)  # 2 x 4 regions.
    grid = np.arange(64, dtype=np.float32).reshape(8, 8)
    np.testing.assert_allclose(grid.reshape(-1) @ weights,
                               grid.reshape(2, 4, 4, 2).mean((1, 3)).reshape(
                                   -1), rtol=1e-6)

  @parameterized.parameters('tokenlearner', 'fixed', 'dense', 'pooling')
  def test_token_makers_give_s_tokens(self, maker):
    frames = _video((3, 4, 4, 6))
    module = video_modules.FrameTokens(num_tokens=4, maker=maker)
    variables = module.init(jax.random.PRNGKey(0), frames)
    self.assertEqual(module.apply(variables, frames).shape, (3, 4, 6))

  def test_token_module_matches_its_definition_and_is_identity_at_init(self):
    x = _video((2, 3, 4, 4, 18))
    module = video_modules.TokenModule(4, 'tokenlearner', 9)
    # TokenFuser's token mixing starts at zero: the module adds nothing.
    variables = module.init(jax.random.PRNGKey(0), x, train=False)
    np.testing.assert_allclose(module.apply(variables, x, train=False), x,
                               rtol=1e-6)
    params = _init(module, x, train=False)
    out = module.apply({'params': params}, x, train=False)
    expected = ref.token_module(x.astype(np.float64), params, 4, 9)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)

  @parameterized.product(axes=('joint', 'spatial', 'temporal'),
                          position=('none', 'factorized'))
  def test_spacetime_attention_matches_its_definition(self, axes, position):
    x = _video((2, 3, 2, 4, 8))
    module = video_modules.SpaceTimeAttention(axes, num_heads=2,
                                              attention_dim=6,
                                              position=position)
    params = _init(module, x, train=False)
    tables = {'joint': ['pos_h', 'pos_t', 'pos_w'], 'spatial': ['pos_h',
                                                                 'pos_w'],
              'temporal': ['pos_t']}[axes] if position != 'none' else []
    self.assertEqual(sorted(k for k in params if k.startswith('pos_')),
                     tables)
    out = module.apply({'params': params}, x, train=False)
    expected = ref.spacetime_attention(x.astype(np.float64), params, axes, 2)
    np.testing.assert_allclose(out, expected, rtol=RTOL, atol=ATOL)

  def test_position_tables_are_resized_to_another_clip(self):
    # Learned on 3 x 2 x 4 (a train crop), applied to 5 x 3 x 6 (a test
    # crop): each table linearly resized to its axis.
    module = video_modules.SpaceTimeAttention('joint', 2, 6, position=
                                              'factorized')
    params = _init(module, _video((1, 3, 2, 4, 8)), train=False)
    x = _video((1, 5, 3, 6, 8), seed=1)
    resized = dict(params)
    for name, length in (('pos_t', 5), ('pos_h', 3), ('pos_w', 6)):
      resized[name] = jax.image.resize(params[name], (length, 6), 'linear')
    np.testing.assert_allclose(
        module.apply({'params': params}, x, train=False),
        ref.spacetime_attention(x.astype(np.float64), resized, 'joint', 2),
        rtol=RTOL, atol=ATOL)

  def test_spatial_and_temporal_attention_mix_only_their_axis(self):
    x = _video((1, 3, 2, 2, 8))
    for axes, moved in (('spatial', (0, 1, 1)), ('temporal', (1, 0, 0))):
      module = video_modules.SpaceTimeAttention(axes, 2, 6)
      params = nn.unbox(module.init(jax.random.PRNGKey(0), x,
                                    train=False)['params'])
      poked = x.copy()
      poked[0, 0, 0, 0, 0] += 1.0  # One channel: LayerNorm keeps it.
      diff = np.abs(module.apply({'params': params}, poked, train=False) -
                    module.apply({'params': params}, x, train=False))
      self.assertGreater(diff[(0,) + moved].max(), 1e-4)  # Same group.
      other = (0, 1, 1, 1) if axes == 'spatial' else (0, 1, 0, 1)
      self.assertEqual(diff[other].max(), 0.0)  # Another group.

  def test_temporal_mixer_adds_one_update_per_frame(self):
    x = _video((2, 4, 3, 3, 8))
    module = video_modules.TemporalMixer()
    params = _init(module, x, train=False)
    delta = np.asarray(module.apply({'params': params}, x, train=False)) - x
    np.testing.assert_allclose(delta, np.broadcast_to(
        delta[:, :, :1, :1], delta.shape), rtol=1e-5, atol=1e-5)
    frames = x.mean((2, 3)).astype(np.float64)
    y = ref.layer_norm(frames, params['token_norm']).transpose(0, 2, 1)
    y = ref.dense(ref.gelu(ref.dense(y, params['token_mlp_0'])),
                  params['token_mlp_1'])
    mixed = frames + y.transpose(0, 2, 1)
    y = ref.dense(ref.layer_norm(mixed, params['channel_norm']),
                  params['channel_mlp_0'])
    mixed = mixed + ref.dense(ref.gelu(y), params['channel_mlp_1'])
    np.testing.assert_allclose(delta[:, :, 0, 0], mixed - frames, rtol=2e-4,
                               atol=2e-4)


if __name__ == '__main__':
  absltest.main()
