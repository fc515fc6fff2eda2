"""Exact parameter counts of every paper model a config trains.

vit_jax's `MODEL_SIZES` idea: each row of `tokenlearner_jax.paper` with a
config has its exact parameter count here (`python -m tokenlearner_jax.summary
--config=configs/<config>.py:<args>` prints it), and `test_all_tested` fails
when a row is added without one. The counts are read from each config's
`model.scan_layers=True` form, which holds the same parameters stacked by
layer and traces one block per run of blocks instead of every block (4x
faster over the 48 configs); `test_scanned_form_counts_as_the_unrolled_one`
checks that on the largest row, TokenFuser included.
"""

import functools
import os

from absl.testing import absltest
from absl.testing import parameterized

from tests.testing import ROOT
from tokenlearner_jax import paper
from tokenlearner_jax import summary
from tokenlearner_jax.configs import common

# (table, row name): parameters, classifier head included.
PARAMS = {
    ('location fig.', 'ViT-B/16 @224'):
        100_453_491,
    ('location fig.', 'B/16 @224, 8-TL at 0'):
        100_512_051,
    ('location fig.', 'B/16 @224, 8-TL at 3'):
        100_512_051,
    ('location fig.', 'B/16 @224, 8-TL at 6'):
        100_512_051,
    ('location fig.', 'B/16 @224, 8-TL at 9'):
        100_512_051,
    ('location fig.', 'B/16 @224, 16-TL at 0'):
        100_572_531,
    ('location fig.', 'B/16 @224, 16-TL at 3'):
        100_572_531,
    ('location fig.', 'B/16 @224, 16-TL at 6'):
        100_572_531,
    ('location fig.', 'B/16 @224, 16-TL at 9'):
        100_572_531,
    ('few-shot fig.', 'ViT-S/32 @224'):
        29_683_059,
    ('few-shot fig.', 'TL-S/32'):
        29_713_203,
    ('few-shot fig.', 'TL-S/32 (22)'):
        47_457_843,
    ('few-shot fig.', 'ViT-B/32 @224'):
        102_110_067,
    ('few-shot fig.', 'TL-B/32 (20)'):
        158_871_603,
    ('few-shot fig.', 'ViT-B/16 @224'):
        100_453_491,
    ('few-shot fig.', 'TL-B/16'):
        100_572_531,
    ('few-shot fig.', 'TL-B/16 (21)'):
        164_302_899,
    ('T1', 'ViT S/32 @384'):
        22_914_664,
    ('T1', 'ViT B/32 @384'):
        88_295_656,
    ('T1', 'ViT-B/16 @384'):
        86_857_960,
    ('T1', 'TokenLearner S/32'):
        22_944_808,
    ('T1', 'TokenLearner B/16'):
        86_977_000,
    ('T1', 'TokenLearner S/32 (22)'):
        40_689_448,
    ('T1', 'TokenLearner B/32 (20)'):
        145_057_192,
    ('T1', 'TokenLearner B/16 (21)'):
        150_707_368,
    ('T1', '16-TokenLearner B/16 (21)'):
        150_767_848,
    ('T4', 'B/16 @384, 8-TL at 6'):
        86_916_520,
    ('T4', 'B/16 @384, 8-TL at 6 + Fuser'):
        87_535_816,
    ('T4', 'B/16 @384, 16-TL at 6'):
        86_977_000,
    ('T4', 'B/16 @384, 16-TL at 6 + Fuser'):
        87_903_016,
    ('T2', 'ViT-L/16 @512'):
        305_172_456,
    ('T4, T5', 'L/16 @512, 16-TL at 12'):
        305_328_872,
    ('T2', 'L/16 @512, 16-TL at 12'):
        305_328_872,
    ('T4', 'L/16 @512, 16-TL at 12 + Fuser'):
        307_926_120,
    ('T4', 'L/16 @512, 8-TL at 18'):
        305_249_960,
    ('T4', 'L/16 @512, 8-TL at 18 + Fuser'):
        306_071_496,
    ('T2', 'L/16 @512 (24+11), 16-TL at 12'):
        443_887_336,
    ('T2', 'L/16 @512 (24+6), 8-TL at 18'):
        380_827_304,
    ('T2', 'L/14 @512 (24+11), 16-TL at 18'):
        443_981_544,
    ('T4', 'L/10 @512 (24+11), 16-TL at 18'):
        445_022_952,
    ('T4', 'L/10 @512 (24+11), 16-TL at 18 + Fuser'):
        448_767_560,
    ('T3', 'TokenLearner L/8 (24+11)'):
        446_443_240,
    ('Fuser fig.', 'B/16 @384, 8-TL at 6 + TokenFuser'):
        87_535_816,
    ('Fuser fig.', 'B/16 @384, 16-TL at 6 + TokenFuser'):
        87_903_016,
    ('T6', 'ViViT-L/16x2, 32x224x224'):
        307_508_624,
    ('T6', 'TokenLearner 16at12 + L/16'):
        307_665_040,
    ('T6', 'TokenLearner 8at18 + L/16'):
        307_586_128,
    ('T6', 'TokenLearner 16at18 + L/14 (24+11)'):
        446_837_904,
    ('T6', 'TokenLearner 16at18 + L/10 (24+11)'):
        449_983_632,
    ('T7', 'TokenLearner 16at12 + L/16'):
        307_665_040,
    ('T7', 'TokenLearner 8at18 + L/16'):
        307_586_128,
    ('T8', 'ViViT-L/16x2, 32x224x224'):
        307_713_624,
    ('T8', 'TokenLearner 16at12 + L/16'):
        307_870_040,
    ('T8', 'TokenLearner 8at18 + L/16'):
        307_791_128,
    ('T8', 'TokenLearner 16at18 + L/10 (24+11)'):
        450_188_632,
    ('T8', 'TokenLearner 16at18 + L/10 (24+11) + Fuser'):
        453_933_240,
}


def rows_with_config():
  return [row for row in paper.ROWS if row.config]


class PaperModelSizesTest(parameterized.TestCase):

  def test_all_tested(self):
    self.assertEqual(set(PARAMS),
                     {(row.table, row.name) for row in rows_with_config()})

  @parameterized.named_parameters(
      *[(f'{i}_{row.config}', row) for i, row in enumerate(
          rows_with_config())])
  def test_parameter_count(self, row):
    self.assertEqual(num_params(row.config, row.config_arg),
                     PARAMS[row.table, row.name])

  def test_scanned_form_counts_as_the_unrolled_one(self):
    row = max(rows_with_config(), key=lambda r: PARAMS[r.table, r.name])
    self.assertTrue(row.name.endswith('+ Fuser'))
    self.assertEqual(
        num_params(row.config, row.config_arg, scan_layers=False),
        PARAMS[row.table, row.name])


@functools.lru_cache(maxsize=None)
def num_params(config_name: str, config_arg: str,
               scan_layers: bool = True) -> int:
  """What `summary` prints for `configs/<config_name>.py:<config_arg>` (rows
  of several tables share a config), from its `scan_layers` form."""
  config = common.load_config(
      os.path.join(ROOT, 'configs', f'{config_name}.py'), config_arg)
  config.model.scan_layers = scan_layers
  return summary.summarize(config)['num_params']


if __name__ == '__main__':
  absltest.main()
