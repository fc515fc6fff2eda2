"""Table 11 in miniature: X(2+1)D's module slot on multi-label digit events
(`scripts/event_study.py`).

Trains `configs/demo_event_digits.py` (a narrowed X(2+1)D on `event_digits`,
20 multi-hot classes) from scratch with each module of the paper's Table 11
— none (the backbone), joint space-time MHSA, TokenLearner, Conv2D +
TokenLearner — for `--steps` steps per seed (`WORKDIR/<row>_seed<s>`), tested
by mAP; the table, the paper's orderings checked on differences paired by
seed, and the plot go between `<!-- event_study -->` markers in
`OUT/results.md`.
"""

from typing import Sequence

from tokenlearner_jax import flops
from tokenlearner_jax import models
from tokenlearner_jax import paper
from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib
from tokenlearner_jax.studies import stats
from tokenlearner_jax.studies import study as study_lib

CONFIG = 'configs/demo_event_digits.py'
CLIP = (32, 32, 32, 3)
METRIC = 'mean_average_precision'
SECTION = 'event_study'
ROWS = {'backbone': 'backbone alone', 'mhsa': 'joint space-time MHSA',
        'tokenlearner': 'TokenLearner',
        'conv2d_tokenlearner': 'Conv2D + TokenLearner'}


def module_claim(a: str, b: str, gflops: bool = False) -> stats.Claim:
  """'a beats b' with Table 11's Charades mAP of the two `paper.MODULE_ROWS`
  presets (and their GFLOPs if `gflops`)."""
  first, second = (next(r for r in paper.MODULE_ROWS if r.preset == name)
                   for name in (a, b))
  text = (f'Table 11, Charades 6 fps mAP: "{first.name}" '
          f'{first.charades_6fps} vs "{second.name}" {second.charades_6fps}')
  if gflops:
    text += f', at {first.gflops} vs {second.gflops} GFLOPs'
  return stats.Claim(a, b, 'higher', text)


CLAIMS = (
    module_claim('conv2d_tokenlearner', 'mhsa'),
    module_claim('tokenlearner', 'mhsa', gflops=True),
    module_claim('conv2d_tokenlearner', 'tokenlearner'),
    stats.Claim('conv2d_tokenlearner', 'backbone', 'higher',
                'Table 10 (AViD, accuracy): Ours 53.8 vs the X(2+1)D-M '
                'backbone 48.6'),
)


def run(row: str, seed: int, root: str, steps: int, runlocal: bool,
        extra=()) -> runs_lib.Run:
  """The run of one (row, seed)."""
  arg = f'row={row}' + (',runlocal' if runlocal else '')
  overrides = {'rng_seed': seed, **dict(extra)}
  if not runlocal:  # runlocal keeps its few steps and evaluations.
    overrides.update(ablations.schedule(steps, max(1, steps // 10)))
  return runs_lib.Run(report.run_dir(root, row, seed), f'{CONFIG}:{arg}',
                      overrides)


def module_mmacs(row: str) -> float:
  """The module slot's multiply-adds per clip, in millions."""
  config = ablations.load_config(CONFIG, f'row={row}')
  checked = models.model_config(config, config.dataset_configs.num_classes)
  return flops.x2plus1d_macs(checked, CLIP)['module'] / 1e6


def plot(runs: report.Runs, path: str) -> None:
  """mAP (mean +- std over seeds, and each seed) against MMACs per clip."""
  points = [report.Point(label, 1000 * runs[row][0]['gmacs_per_example'],
                         tuple(report.by_seed(runs, row, METRIC).values()))
            for row, label in ROWS.items()
            if report.by_seed(runs, row, METRIC)]
  report.plot(path, [('MMACs per clip (the whole network)', points)],
              'test mAP (%): mean ± std, x: seeds',
              'X(2+1)D modules on event_digits (Table 11 in miniature)')


def section(runs: report.Runs, invocation: str, steps: int,
            seeds: Sequence[int]) -> str:
  """The results.md section, markers included."""
  lines = report.heading(
      'X(2+1)D modules on multi-label events (Table 11 in miniature)',
      invocation,
      f'{steps} steps per {report.seeds_and_interval(seeds)}',
      ('event_study', 'results_event_study.png')) + [
      '| module | MMACs/clip (network) | MMACs/clip (module) | mAP (%) | '
      'per seed | prec@1 (%) |', '|---|---|---|---|---|---|']
  for row, label in ROWS.items():
    done = [r for r in runs.get(row, []) if METRIC in r]
    module = f'{module_mmacs(row):.2f}'
    if not done:
      lines.append(f'| {label} | | {module} | (no finished run) | | |')
      continue
    lines.append(
        f'| {label} | {1000 * done[0]["gmacs_per_example"]:.2f} | {module} | '
        f'{stats.pm(report.percent([r[METRIC] for r in done]))} | '
        f'{report.per_seed([r[METRIC] for r in done])} | '
        f'{stats.pm(report.percent([r["prec@1"] for r in done]))} |')
  lines.append('')
  lines += [f'* Paper: {c.source}. Miniature (mAP): '
            f'{report.claim_line(c, ROWS[c.a], ROWS[c.b], runs, METRIC)}.'
            for c in CLAIMS]
  lines += ['', report.verdict_note(len(CLAIMS))]
  return report.section(SECTION, lines)


GRID = study_lib.Grid(
    script='event_study.py', doc=__doc__, flag='rows', names=tuple(ROWS),
    metric=METRIC, steps=400, seeds='0,1,2', run=run, plot=plot,
    plot_file='results_event_study.png', section=section)


def main(argv=None) -> int:
  return study_lib.grid_main(GRID, argv)
