"""Prints the paper's GFLOPs next to our analytic GMACs, as a Markdown table.

The paper's "GFLOPS" are multiply-adds per image or per view (see
`tokenlearner_jax.flops`). Rows use the paper's TokenLearner v1.0 module; the
L/14 and L/10 models are the "24+11" ones (35 blocks), as Tables 2-4 state.

  python scripts/flops_table.py           # the table
  python scripts/flops_table.py --check   # exit 1 if a row is off by > 2%
"""

import sys

import ml_collections

from tokenlearner_jax.configs import common
from tokenlearner_jax.flops import gmacs

IMG224, IMG384, IMG512 = (224, 224, 3), (384, 384, 3), (512, 512, 3)
VIDEO = (32, 224, 224, 3)  # 32 frames at 224, tubelet 16x16x2
TOLERANCE = 0.02

# (row, paper table, paper GFLOPs, variant, input, model_config kwargs, note)
ROWS = [
    ('ViT-B/16 @224', 'location fig.', 17.5, 'B/16', IMG224,
     dict(tokenizer_type='patch'), ''),
    ('ViT-B/16 @384', 'T1', 55.6, 'B/16', IMG384,
     dict(tokenizer_type='patch'), ''),
    ('B/16 @384, 8-TL at 6', 'T4', 28.3, 'B/16', IMG384,
     dict(tokenlearner_loc=6), ''),
    ('B/16 @384, 8-TL at 6 + Fuser', 'T4', 28.5, 'B/16', IMG384,
     dict(tokenlearner_loc=6, use_tokenfuse=True), ''),
    ('B/16 @384, 16-TL at 6', 'T4', 28.7, 'B/16', IMG384,
     dict(tokenlearner_loc=6, num_tokens=16), ''),
    ('B/16 @384, 16-TL at 6 + Fuser', 'T4', 29.1, 'B/16', IMG384,
     dict(tokenlearner_loc=6, num_tokens=16, use_tokenfuse=True), ''),
    ('ViT-L/16 @512', 'T2', 363.1, 'L/16', IMG512,
     dict(tokenizer_type='patch'), ''),
    ('L/16 @512, 16-TL at 12', 'T4, T5', 184.6, 'L/16', IMG512,
     dict(tokenlearner_loc=12, num_tokens=16), ''),
    ('L/16 @512, 16-TL at 12', 'T2', 178.1, 'L/16', IMG512,
     dict(tokenlearner_loc=12, num_tokens=16),
     'paper inconsistency: the same model is 184.6 in T4/T5'),
    ('L/16 @512, 16-TL at 12 + Fuser', 'T4', 187.1, 'L/16', IMG512,
     dict(tokenlearner_loc=12, num_tokens=16, use_tokenfuse=True), ''),
    ('L/16 @512, 8-TL at 18', 'T4', 273.2, 'L/16', IMG512,
     dict(tokenlearner_loc=18), ''),
    ('L/16 @512, 8-TL at 18 + Fuser', 'T4', 273.8, 'L/16', IMG512,
     dict(tokenlearner_loc=18, use_tokenfuse=True), ''),
    ('L/16 @512 (24+11), 16-TL at 12', 'T2', 186.8, 'L/16', IMG512,
     dict(tokenlearner_loc=12, num_tokens=16, extra_layers=11), ''),
    ('L/16 @512 (24+6), 8-TL at 18', 'T2', 274.2, 'L/16', IMG512,
     dict(tokenlearner_loc=18, extra_layers=6), ''),
    ('L/10 @512 (24+11), 16-TL at 18', 'T4', 849.0, 'L/10', IMG512,
     dict(tokenlearner_loc=18, num_tokens=16, extra_layers=11), ''),
    ('L/10 @512 (24+11), 16-TL at 18 + Fuser', 'T4', 856.9, 'L/10', IMG512,
     dict(tokenlearner_loc=18, num_tokens=16, extra_layers=11,
          use_tokenfuse=True), ''),
    ('ViViT-L/16x2, 32x224x224', 'T6', 1446, 'L/16', VIDEO,
     dict(tokenizer_type='video'), ''),
    ('TokenLearner 16at12 + L/16', 'T6', 766, 'L/16', VIDEO,
     dict(tokenizer_type='video', tokenlearner_loc=12, num_tokens=16), ''),
    ('TokenLearner 8at18 + L/16', 'T6', 1105, 'L/16', VIDEO,
     dict(tokenizer_type='video', tokenlearner_loc=18), ''),
    ('TokenLearner 16at18 + L/14 (24+11)', 'T6', 1621, 'L/14', VIDEO,
     dict(tokenizer_type='video', tokenlearner_loc=18, num_tokens=16,
          extra_layers=11), ''),
    ('TokenLearner 16at18 + L/10 (24+11)', 'T6', 4076, 'L/10', VIDEO,
     dict(tokenizer_type='video', tokenlearner_loc=18, num_tokens=16,
          extra_layers=11), ''),
    ('TokenLearner 16at18 + L/10 (24+11) + Fuser', 'T8', 4100, 'L/10', VIDEO,
     dict(tokenizer_type='video', tokenlearner_loc=18, num_tokens=16,
          extra_layers=11, use_tokenfuse=True), ''),
]


def table_rows():
  """Yields (row, table, paper, ours, relative difference, note)."""
  for name, table, paper, variant, shape, kwargs, note in ROWS:
    config = ml_collections.ConfigDict()
    config.model = common.model_config(variant, use_v11=False, **kwargs)
    ours = gmacs(config, shape, num_classes=1000)
    yield name, table, paper, ours, ours / paper - 1, note


def main(argv) -> int:
  print('| Model | Paper table | Paper GFLOPs | Ours (GMACs) | Diff | Note |')
  print('|---|---|---:|---:|---:|---|')
  failures = []
  for name, table, paper, ours, diff, note in table_rows():
    print(f'| {name} | {table} | {paper:g} | {ours:.1f} | {diff:+.1%} | '
          f'{note} |')
    if abs(diff) > TOLERANCE and not note.startswith('paper inconsistency'):
      failures.append(name)
  if '--check' in argv and failures:
    print(f'Off by more than {TOLERANCE:.0%}: {failures}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
