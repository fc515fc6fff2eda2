"""Where to put TokenLearner, measured the paper's way: few-shot linear
accuracy of multi-label pre-trained models (`scripts/fewshot_location.py`).

`configs/demo_multi_digits.py`'s ViT, narrowed (`FIXED`: width 64, 4 blocks,
64 tokens of 64x64 images, 8 learned), is pre-trained on `multi_digits` with
TokenLearner before block 0, 1, 2 or 3 of 4, or without, for `--steps` steps
per seed (`WORKDIR/<variant>_seed<s>`); each run ends with the few-shot
evaluation on `fewshot_digits`, recorded in its `final_metrics.json`. The
table, the location figure's claims checked on 5-shot accuracy and the plot
go between `<!-- fewshot_location -->` markers in `OUT/results.md`.
"""

from typing import Dict, Optional, Sequence

from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib
from tokenlearner_jax.studies import stats
from tokenlearner_jax.studies import study as study_lib

CONFIG = 'configs/demo_multi_digits.py'
NUM_LAYERS = 4
# The narrowed model and its learning rate (every run the same but the
# location and the seed), and 30 few-shot sets per shots: each model's score
# is a mean over 30 draws of the sets, so that the draw's own spread adds
# little to the differences between pre-training seeds.
FIXED = {'model.hidden_size': 64, 'model.mlp_dim': 128, 'model.num_heads': 4,
         'model.num_layers': NUM_LAYERS, 'model.tokenizer.num_tokens': 8,
         'lr_configs.base_learning_rate': 0.002, 'fewshot.num_seeds': 30}
SECTION = 'fewshot_location'
METRIC = 'fewshot_digits_5shot'
# The location study's variants (`ablations.VARIANTS`' names and labels).
NAMES = ('no_tl', 'tl8_at0', 'tl8_at025', 'tl8_at05', 'tl8_at075')


def block(name: str) -> Optional[int]:
  """The block TokenLearner comes before (None: no TokenLearner)."""
  return ablations.block_index(ablations.VARIANTS[name], NUM_LAYERS)


def run(name: str, seed: int, root: str, steps: int, runlocal: bool,
        extra: Dict[str, str] = ()) -> runs_lib.Run:
  """The run of one (variant, seed)."""
  arg = f'tokenlearner_loc={block(name)}' + (',runlocal' if runlocal else '')
  overrides = {'rng_seed': seed, **({} if runlocal else FIXED), **dict(extra)}
  if not runlocal:  # runlocal keeps its few steps, evaluations and model.
    overrides.update(ablations.schedule(steps, max(1, steps // 10)))
    overrides['fewshot.log_steps'] = steps
  return runs_lib.Run(report.run_dir(root, name, seed), f'{CONFIG}:{arg}',
                      overrides)


def label(name: str) -> str:
  return ablations.VARIANTS[name].label


def plot(runs: report.Runs, path: str) -> None:
  """5-shot accuracy against the location and against MMACs."""
  by_loc, by_macs = [], []
  for name in NAMES:
    values = tuple(report.by_seed(runs, name, METRIC).values())
    if not values:
      continue
    loc = ablations.VARIANTS[name].loc
    by_loc.append(report.Point(label(name), 1.0 if loc is None else loc,
                               values))
    by_macs.append(report.Point(label(name),
                                1000 * runs[name][0]['gmacs_per_example'],
                                values))
  report.plot(path, [('TokenLearner location (fraction of the depth)', by_loc),
                     ('MMACs per image', by_macs)],
              '5-shot accuracy (%), mean ± std; x: seeds',
              'Where to put TokenLearner: 5-shot linear accuracy after '
              'multi_digits pre-training',
              xticks=([0, 0.25, 0.5, 0.75, 1.0],
                      ['0', '0.25', '0.5', '0.75', 'none']))


def section(runs: report.Runs, invocation: str, steps: int,
            seeds: Sequence[int]) -> str:
  """The results.md section, markers included."""
  lines = report.heading(
      'Where to put TokenLearner, measured by few-shot accuracy', invocation,
      f'Pre-trained {steps} steps per {report.seeds_and_interval(seeds)}',
      ('Location, 5-shot', 'results_fewshot_location.png')) + [
      '| variant | block | MMACs/image | 5-shot (%) | per seed | 1-shot | '
      '10-shot | 25-shot | pre-training mAP (%) |',
      '|---|---|---|---|---|---|---|---|---|']
  for name in NAMES:
    done = [r for r in runs.get(name, []) if METRIC in r]
    where = 'none' if block(name) is None else f'{block(name)} of {NUM_LAYERS}'
    if not done:
      lines.append(f'| {label(name)} | {where} | | (no finished run) '
                   '| | | | | |')
      continue

    def pm(key: str, rows=done) -> str:
      return stats.pm(report.percent([r[key] for r in rows]))

    lines.append(
        f'| {label(name)} | {where} | '
        f'{1000 * done[0]["gmacs_per_example"]:.2f} | {pm(METRIC)} | '
        f'{report.per_seed([r[METRIC] for r in done])} | '
        f'{pm("fewshot_digits_1shot")} | {pm("fewshot_digits_10shot")} | '
        f'{pm("fewshot_digits_25shot")} | {pm("mean_average_precision")} |')
  lines.append('')
  lines += [f'* Paper: {c.source}. Miniature (5-shot): '
            f'{report.claim_line(c, label(c.a), label(c.b), runs, METRIC)}.'
            for c in stats.LOCATION_CLAIMS]
  lines += ['', report.verdict_note(len(stats.LOCATION_CLAIMS))]
  return report.section(SECTION, lines)


GRID = study_lib.Grid(
    script='fewshot_location.py', doc=__doc__, flag='variants', names=NAMES,
    metric=METRIC, steps=500, seeds='0,1', run=run, plot=plot,
    plot_file='results_fewshot_location.png', section=section)


def main(argv=None) -> int:
  return study_lib.grid_main(GRID, argv)
