r"""Table 11 in miniature: X(2+1)D's module slot on multi-label digit events.

  python scripts/event_study.py --workdir=/tmp/event_study --out=docs
  python scripts/event_study.py --workdir=/tmp/event_study --out=docs \
      --report_only   # the table from the runs finished so far

Trains `configs/demo_event_digits.py` (a narrowed X(2+1)D on `event_digits`:
32-frame 32x32 clips in which 1-3 digits appear, move and vanish at random
times; 20 multi-hot classes, digit x direction) from scratch with each
module of the paper's Table 11 — none (the backbone), joint space-time MHSA,
TokenLearner, Conv2D + TokenLearner — for `--steps` steps per seed
(`WORKDIR/<row>_seed<s>`, through `scripts/sweep.py`'s runner: finished runs
are skipped), and tests each on the 400 test clips (digit images training
never saw) by mAP over the 20 classes.

Then it writes, between `<!-- event_study -->` markers in `OUT/results.md`
(the rest of the file kept), the table (mAP mean +- std over seeds, per seed,
prec@1, MMACs of the network and of the module per clip), the paper's
orderings checked on differences paired by seed (`reproduce.verdict`) and
`OUT/results_event_study.png` (mAP against MMACs). Exits non-zero if a run
failed.
"""

import os
import sys
from typing import Dict, List, Sequence

import scipy.stats

from tokenlearner_jax import flops
from tokenlearner_jax import models

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduce  # pylint: disable=g-import-not-at-top
import sweep  # pylint: disable=g-import-not-at-top

CONFIG = 'configs/demo_event_digits.py'
CLIP = (32, 32, 32, 3)
METRIC = 'mean_average_precision'
BEGIN, END = '<!-- event_study -->', '<!-- /event_study -->'
ROWS = {'backbone': 'backbone alone', 'mhsa': 'joint space-time MHSA',
        'tokenlearner': 'TokenLearner',
        'conv2d_tokenlearner': 'Conv2D + TokenLearner'}
TABLE = 'Table 11 (Charades 6 fps, mAP)'
CLAIMS = (
    reproduce.Claim('conv2d_tokenlearner', 'mhsa', 'higher',
                    f'{TABLE}: Conv2D + TokenLearner 59.6 vs joint MHSA 57.9'),
    reproduce.Claim('tokenlearner', 'mhsa', 'higher',
                    f'{TABLE}: TokenLearner 58.8 vs joint MHSA 57.9, at 3.4 '
                    'vs 22.0 GFLOPs'),
    reproduce.Claim('conv2d_tokenlearner', 'tokenlearner', 'higher',
                    f'{TABLE}: Conv2D + TokenLearner 59.6 vs TokenLearner '
                    '58.8'),
    reproduce.Claim('conv2d_tokenlearner', 'backbone', 'higher',
                    'Table 10 (AViD, accuracy): Ours 53.8 vs the X(2+1)D-M '
                    'backbone 48.6'),
)


def command(row: str, seed: int, workdir: str, steps: int, runlocal: bool,
            extra: Sequence[str] = ()) -> List[str]:
  """The train command of one (row, seed) run."""
  arg = f'row={row}' + (',runlocal' if runlocal else '')
  fixed = [f'rng_seed={seed}', *extra]
  if not runlocal:  # runlocal keeps its few steps and evaluations.
    fixed += [f'num_training_steps={steps}', f'log_eval_steps={steps}',
              f'checkpoint_steps={steps}',
              f'lr_configs.warmup_steps={max(1, steps // 10)}']
  return sweep.train_command(os.path.join(sweep.ROOT, f'{CONFIG}:{arg}'),
                             workdir, {}, fixed)


def module_mmacs(row: str) -> float:
  """The module slot's multiply-adds per clip, in millions."""
  config = reproduce.load_config(CONFIG, f'row={row}')
  checked = models.model_config(config, config.dataset_configs.num_classes)
  return flops.x2plus1d_macs(checked, CLIP)['module'] / 1e6


def by_seed(runs: Dict[str, List[dict]], name: str) -> Dict[int, float]:
  return {r['seed']: r[METRIC] for r in runs.get(name, []) if METRIC in r}


def plot(runs: Dict[str, List[dict]], path: str) -> None:
  """mAP (mean +- std over seeds, and each seed) against MMACs per clip."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
  for row, label in ROWS.items():
    values = [100 * v for v in by_seed(runs, row).values()]
    if not values:
      continue
    mean, std = reproduce.mean_std(values)
    mmacs = 1000 * runs[row][0]['gmacs_per_example']
    bar = axes.errorbar(mmacs, mean, yerr=0 if std != std else std, fmt='o',
                        capsize=4, label=label)
    axes.scatter([mmacs] * len(values), values, s=12, marker='x',
                 color=bar[0].get_color(), alpha=0.6)
  axes.set_xlabel('MMACs per clip (the whole network)')
  axes.set_ylabel('test mAP (%): mean ± std, x: seeds')
  axes.set_title('X(2+1)D modules on event_digits (Table 11 in miniature)')
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def section(runs: Dict[str, List[dict]], invocation: str, steps: int,
            seeds: Sequence[int]) -> str:
  """The results.md section, markers included."""
  t = scipy.stats.t.ppf(0.975, max(len(seeds) - 1, 1))
  lines = [
      BEGIN, '## X(2+1)D modules on multi-label events (Table 11 in '
      'miniature)', '', f'Regenerate: `{invocation}`', '',
      '![event_study](results_event_study.png)', '',
      'Each row trains `configs/demo_event_digits.py` from scratch: X(2+1)D '
      'narrowed to widths 8/16/24/32 (depths 1, 2, 1, 1), the module in the '
      'last block of res3 (32 frames x 4x4 positions at width 36; res5 of '
      'a 32x32 clip is a single position, where tokens have nothing to '
      'select), 4 tokens per frame, 4 heads of width 8, a sigmoid head over '
      'the 20 event classes, batch 32, AdamW, '
      f'{steps} steps per seed ({", ".join(map(str, seeds))}); a seed fixes '
      'the initialisation and the data order. The test set is 400 clips '
      'whose digit images training never saw; mAP is over the 20 classes, '
      'as Charades\' official evaluation (classes without a positive '
      'skipped); each class is positive in about a tenth of the clips, so a '
      'random ranking scores about 10%. The runs are short: every model '
      'ends far from what the task allows. Orderings are checked on '
      'per-seed differences of mAP with '
      f'a 95% Student-t interval (with {len(seeds)} seeds its half-width is '
      f'{t:.1f} standard errors).', '',
      '| module | MMACs/clip (network) | MMACs/clip (module) | mAP (%) | '
      'per seed | prec@1 (%) |', '|---|---|---|---|---|---|']
  for row, label in ROWS.items():
    done = [r for r in runs.get(row, []) if METRIC in r]
    module = f'{module_mmacs(row):.2f}'
    if not done:
      lines.append(f'| {label} | | {module} | (no finished run) | | |')
      continue
    per_seed = ', '.join(f'{100 * r[METRIC]:.1f}' for r in done)
    lines.append(
        f'| {label} | {1000 * done[0]["gmacs_per_example"]:.2f} | {module} | '
        f'{reproduce.pm([100 * r[METRIC] for r in done])} | {per_seed} | '
        f'{reproduce.pm([100 * r["prec@1"] for r in done])} |')
  lines.append('')
  for claim in CLAIMS:
    verdict = reproduce.verdict(claim, by_seed(runs, claim.a),
                                by_seed(runs, claim.b))
    lines.append(f'* Paper: {claim.source}. Miniature (mAP): {ROWS[claim.a]} '
                 f'beats {ROWS[claim.b]} — {verdict}.')
  lines += ['', END]
  return '\n'.join(lines)


def parse_args(argv):
  parser = reproduce.study_arguments(__doc__, steps=400)
  parser.add_argument('--rows', default=','.join(ROWS))
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  rows = args.rows.split(',')
  unknown = [r for r in rows if r not in ROWS]
  if unknown:
    raise ValueError(f'--rows: unknown {unknown}; known: {list(ROWS)}.')

  def report(root: str, seeds: List[int], out: str) -> str:
    runs = reproduce.final_metrics(root, list(ROWS), seeds)
    if any(by_seed(runs, r) for r in ROWS):
      plot(runs, os.path.join(out, 'results_event_study.png'))
    return section(runs, reproduce.invocation('event_study.py', argv),
                   args.steps, seeds)

  return reproduce.run_study(
      args, rows, lambda row, seed, workdir: command(
          row, seed, workdir, args.steps, args.runlocal, args.set), report)


if __name__ == '__main__':
  sys.exit(main())
