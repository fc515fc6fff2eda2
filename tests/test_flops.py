"""Tests of the analytic GMACs: against XLA's count and against the paper."""

import dataclasses
import os

from absl.testing import absltest
from absl.testing import parameterized
import jax
import jax.numpy as jnp
import ml_collections

from tokenlearner_jax import flops
from tokenlearner_jax import paper
from tokenlearner_jax import summary
from tokenlearner_jax.configs import charades
from tokenlearner_jax.configs import common
from tokenlearner_jax.flops import gmacs
from tokenlearner_jax.models import build_model
from tokenlearner_jax.models import video_modules
from tokenlearner_jax.models import X2Plus1D
from tokenlearner_jax.models import X2Plus1DConfig
from tokenlearner_jax.models.x2plus1d_config import PARTS as X2PLUS1D_PARTS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def small_config(tokenizer_type='dynamic', **kwargs):
  config = ml_collections.ConfigDict()
  config.model = common.model_config('Ti/8', tokenizer_type, **kwargs)
  config.model.num_layers = 4
  return config


def forward_of(config, shape) -> jax.stages.Lowered:
  """The lowered inference forward pass of `config`'s model (10 classes) on
  one example of `shape`."""
  model = build_model(config, 10)
  x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
  variables = jax.eval_shape(
      lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
  return jax.jit(lambda v, x: model.apply(v, x, train=False)).lower(
      variables, x)


def xla_macs(lowered: jax.stages.Lowered, compiled: bool) -> float:
  """Half of XLA's flops for `lowered` (compiled first if `compiled`)."""
  cost = (lowered.compile() if compiled else lowered).cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return cost['flops'] / 2


class GmacsTest(parameterized.TestCase):

  def test_vit_b16_by_hand(self):
    config = ml_collections.ConfigDict()
    config.model = common.model_config('B/16', 'patch')
    n, d = 196, 768
    block = 4 * n * d * d + 2 * n * n * d + 2 * n * d * 3072
    expected = n * 16 * 16 * 3 * d + 12 * block + d * 1000
    self.assertAlmostEqual(gmacs(config, (224, 224, 3), 1000), expected / 1e9)

  @parameterized.named_parameters(
      ('vit', 'patch', {}, (64, 64, 3)),
      ('v11', 'dynamic', dict(tokenlearner_loc=2), (64, 64, 3)),
      ('v10', 'dynamic', dict(tokenlearner_loc=2, use_v11=False), (64, 64, 3)),
      ('fuser_token_rep', 'dynamic', dict(tokenlearner_loc=1, use_v11=False,
                                          use_tokenfuse=True,
                                          classifier='token',
                                          representation_size=64), (64, 64, 3)),
      ('video', 'video', dict(tokenlearner_loc=2), (4, 64, 64, 3)),
      ('video_fuser', 'video', dict(tokenlearner_loc=2, use_tokenfuse=True),
       (4, 64, 64, 3)),
      ('pooling_2x2', 'dynamic', dict(tokenlearner_loc=1,
                                      token_reduction='pooling'), (64, 64, 3)),
      ('dense_tokens_video', 'video', dict(tokenlearner_loc=1,
                                           token_reduction='dense'),
       (4, 64, 64, 3)),
      ('pooling_twice', 'dynamic', dict(tokenlearner_loc=1,
                                        token_reduction='pooling',
                                        pooling_locs=(2,)), (64, 64, 3)),
      ('unpool', 'dynamic', dict(tokenlearner_loc=1, use_tokenfuse=True,
                                 fuser_type='unpool'), (64, 64, 3)),
      ('reprojection_video', 'video', dict(tokenlearner_loc=1,
                                           use_tokenfuse=True,
                                           fuser_type='reprojection'),
       (4, 64, 64, 3)),
      ('tome', 'dynamic', dict(tokenlearner_loc=0, token_reduction='tome',
                               tome_r=24), (64, 64, 3)),
      ('tome_token_video', 'video', dict(tokenlearner_loc=1,
                                         token_reduction='tome', tome_r=40,
                                         classifier='token'), (4, 64, 64, 3)),
      ('evit', 'dynamic', dict(tokenlearner_loc=1, token_reduction='evit',
                               keep_rate=0.5, pooling_locs=(2,),
                               classifier='token'), (64, 64, 3)),
      ('ats', 'dynamic', dict(tokenlearner_loc=1, token_reduction='ats',
                              num_tokens=40, classifier='token'), (64, 64, 3)),
      ('patchmerger_video', 'video', dict(tokenlearner_loc=1,
                                          token_reduction='patchmerger'),
       (4, 64, 64, 3)),
  )
  def test_matches_xla_cost_analysis(self, tokenizer_type, kwargs, shape):
    # XLA counts 2 flops per multiply-add plus elementwise work, which we do
    # not count: its half must lie just above our count. The model is unrolled
    # (no scan), so every block is counted.
    # XLA's count of the lowered program, as compiled within 0.2%
    # (`test_the_lowered_count_is_the_compiled_one`).
    config = small_config(tokenizer_type, **kwargs)
    xla = xla_macs(forward_of(config, shape), compiled=False) / 1e9
    self.assertBetween(xla / gmacs(config, shape, 10), 1.0, 1.03)

  def test_the_lowered_count_is_the_compiled_one(self):
    for tokenizer_type, kwargs in (
        ('dynamic', dict(tokenlearner_loc=2)),
        ('dynamic', dict(tokenlearner_loc=0, token_reduction='tome',
                         tome_r=24))):
      lowered = forward_of(small_config(tokenizer_type, **kwargs),
                           (64, 64, 3))
      self.assertAlmostEqual(xla_macs(lowered, compiled=False) /
                             xla_macs(lowered, compiled=True), 1.0, delta=0.002)

  def test_reprojection_costs_what_the_papers_figure_adds(self):
    # The TokenFuser-alternatives figure (ViT-B/16 at 384, TL at 6): how far
    # right of TokenFuser's the reprojection points lie (read from pixels,
    # +-0.1 each).
    for num_tokens in (8, 16):
      name = f'B/16 @384, {num_tokens}-TL at 6 + '
      paper_delta = (paper.find(name + 'reprojection', 'Fuser fig.').gflops -
                     paper.find(name + 'TokenFuser', 'Fuser fig.').gflops)
      cost = {}
      for fuser_type in ('tokenfuser', 'reprojection'):
        config = ml_collections.ConfigDict()
        config.model = common.model_config(
            'B/16', 'dynamic', num_tokens=num_tokens, tokenlearner_loc=6,
            use_tokenfuse=True, fuser_type=fuser_type)
        cost[fuser_type] = gmacs(config, (384, 384, 3), 1000)
      self.assertBetween(cost['reprojection'] - cost['tokenfuser'],
                         paper_delta - 0.2, paper_delta + 0.2)


class X2Plus1DGmacsTest(parameterized.TestCase):
  """The X(2+1)D counts (`flops.x2plus1d_macs`): XLA's and the paper's."""

  @staticmethod
  def xla_macs(fn, *args) -> float:
    return xla_macs(jax.jit(fn).lower(*args), compiled=True)

  @parameterized.parameters(*[(p, 'none') for p in X2PLUS1D_PARTS],
                            ('mhsa', 'factorized'))
  def test_each_part_matches_xla_cost_analysis(self, part, position):
    # One module part at the paper's width on 8 frames of 8 x 8. XLA counts
    # no multiply-add on a convolution's zero padding: the count here puts
    # those back, (k n - (k // 2)(k // 2 + 1)) taps per axis of size n.
    c = X2Plus1DConfig(num_classes=10, parts=(part,), mhsa_position=position)
    t, h, w, d = 8, 8, 8, c.inner_width(5)
    module = video_modules.ModuleSlot(c)
    x = jax.ShapeDtypeStruct((1, t, h, w, d), jnp.float32)
    variables = jax.eval_shape(
        lambda x: module.init(jax.random.PRNGKey(0), x, train=False), x)
    xla = self.xla_macs(lambda v, x: module.apply(v, x, train=False),
                        variables, x)
    ours = flops.module_part_macs(c, part, t, h, w, d)
    taps = lambda n: 3 * n - 2  # A 3-wide 'SAME' kernel along n.
    if part == 'conv2d':
      xla += t * d * d * (9 * h * w - taps(h) * taps(w))
    elif part == 'conv1d':
      xla += h * w * d * d * (3 * t - taps(t))
    self.assertBetween(xla / ours, 1.0, 1.10)

  @parameterized.parameters(
      ((), 'channelwise', (-1,)),
      (('conv2d', 'tokenlearner'), 'full', (-3, -2, -1)))
  def test_the_network_matches_xla_cost_analysis(self, parts, middle, blocks):
    # X(2+1)D-M at 16 x 224 x 224 (compiled, not run): elementwise work
    # (BatchNorm, swish, gates) is what XLA counts beyond our multiply-adds.
    # XLA counts no multiply-add on the zero padding of the full middle
    # convolutions and the module's Conv2D: put those back, as for the parts.
    c = X2Plus1DConfig(num_classes=157, parts=parts, middle_conv=middle,
                       blocks=blocks)
    shape = (16, 224, 224, 3)
    model = X2Plus1D(c)
    x = jax.ShapeDtypeStruct((1,) + shape, jnp.float32)
    variables = jax.eval_shape(
        lambda x: model.init(jax.random.PRNGKey(0), x, train=False), x)
    xla = self.xla_macs(lambda v, x: model.apply(v, x, train=False),
                        variables, x)
    if middle == 'full':
      xla += self.full_conv_padding_macs(c, shape)
    self.assertBetween(xla / flops.x2plus1d_macs(c, shape)['total'], 1.0,
                       1.10)

  @staticmethod
  def full_conv_padding_macs(c, shape) -> int:
    """Multiply-adds of the full middle convolutions (and the module's
    Conv2D) on zero padding."""
    def taps(n_in, stride):  # A 3-wide kernel, padding 1, along one axis.
      return sum(sum(0 <= i * stride + k - 1 < n_in for k in range(3))
                 for i in range((n_in - 1) // stride + 1))
    t, side = shape[0], (shape[1] - 1) // 2 + 1  # After the stem.
    padding = 0
    for stage, depth in enumerate(c.depths, start=2):
      d = c.inner_width(stage)
      carries = c.module_blocks() if stage == c.stage else ()
      for i in range(depth):
        stride = 2 if i == 0 else 1
        out = (side - 1) // stride + 1
        if i not in carries:
          padding += t * d * d * (9 * out * out - taps(side, stride)**2)
          padding += out * out * d * d * (3 * t - taps(t, 1))
        elif 'conv2d' in c.parts:
          padding += t * d * d * (9 * out * out - taps(out, 1)**2)
        side = out
    return padding

  def test_table_10_networks_within_seven_percent(self):
    # The whole network per view at 64 x 256 x 256, 2 FLOPs a multiply-add:
    # the backbone, the disjoint space + time transformer and Ours.
    want = {'backbone': 519.5, 'spatial_temporal': 480.5,
            'tokenlearner': 475.1}
    for row in paper.NETWORK_ROWS:
      config = common.load_module(os.path.join(
          ROOT, 'configs', 'avid_x2plus1d_tl.py')).get_config(
              f'row={row.preset}')
      net = summary.network_gflops(X2Plus1DConfig.from_config(config, 887))
      self.assertIs(net['row'], row)
      self.assertAlmostEqual(net['gflops'], want[row.preset], places=1)
      self.assertLess(abs(net['diff']), paper.NETWORK_TOLERANCE, row.name)

  def test_x3d_m_multiply_adds(self):
    # X3D-M: 6.2 GFLOPs (multiply-adds) per 16 x 256 x 256 view (its paper's
    # test size; 4.73 at 224).
    c = X2Plus1DConfig(num_classes=400, conv_type='3d')
    self.assertEqual(round(flops.x2plus1d_macs(c, (16, 256, 256, 3))[
        'total'] / 1e9, 1), 6.2)

  def test_module_rows_within_ten_percent_of_tables_11_and_12(self):
    # The paper's network (configs/charades_x2plus1d_tl.py).
    c = X2Plus1DConfig.from_config(charades.charades_config(), 157)
    table = summary.module_table(c)
    self.assertLen(table, len(paper.MODULE_ROWS))
    for r in table:
      self.assertLess(abs(r['params_diff']), paper.MODULE_TOLERANCE,
                      r['row'].name)
      within = abs(r['gflops_diff']) < paper.MODULE_TOLERANCE
      # A row the design cannot meet says why; the others meet it.
      self.assertEqual(within, not r['row'].note, r['row'].name)
    ours = {r['row'].preset: r for r in table}
    self.assertAlmostEqual(ours['conv2d_tokenlearner']['gflops'] -
                           ours['tokenlearner']['gflops'], 13.76, places=2)
    # The MHSA rows: 20.21 and 33.97 with the Bottleneck Transformer's
    # position logits as its Figure 4 draws them; 14.30 and 28.06 (-35%,
    # -22%) with plain logits.
    plain = {r['row'].preset: r['gflops'] for r in summary.module_table(
        dataclasses.replace(c, mhsa_position='none'))}
    self.assertEqual(
        [round(x, 2) for x in (ours['mhsa']['gflops'],
                               ours['conv2d_mhsa']['gflops'], plain['mhsa'],
                               plain['conv2d_mhsa'])],
        [20.21, 33.97, 14.30, 28.06])


if __name__ == '__main__':
  absltest.main()
