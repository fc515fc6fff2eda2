r"""Where to put TokenLearner, measured the paper's way: few-shot linear
accuracy of multi-label pre-trained models.

  python scripts/fewshot_location.py --workdir=/tmp/fewshot_location --out=docs
  python scripts/fewshot_location.py --workdir=/tmp/fewshot_location \
      --out=docs --report_only   # the table from the runs finished so far

The paper's location figure pre-trains ViT-B/16 on JFT with TokenLearner (8
tokens) at relative depths 0, 0.25, 0.5, 0.75, or none, and compares the
models by 5-shot linear accuracy. Here `configs/demo_multi_digits.py`'s ViT,
narrowed (width 64, MLP 128, 4 heads, 4 blocks, 8x8 patches of 64x64 images:
64 tokens, 8 learned), is pre-trained on `multi_digits` (multi-label, the
JFT stand-in) with TokenLearner before block 0, 1, 2 or 3 of 4, or without,
for `--steps` steps per seed (`WORKDIR/<variant>_seed<s>`, run through
`scripts/sweep.py`'s runner: finished runs are skipped). Each run ends with
the few-shot evaluation on `fewshot_digits` (`tokenlearner_jax.fewshot`:
1/5/10/25 shots, 3 few-shot seeds, l2 2^10), recorded in its
`final_metrics.json`.

Then it writes, between `<!-- fewshot_location -->` markers in
`OUT/results.md` (the rest of the file kept; `scripts/reproduce.py` keeps
the section when it rewrites the file), the table (5-shot accuracy, mean +-
std over pre-training seeds, per seed, 1/10/25-shot means, GMACs), the
paper's claims checked on differences paired by seed (`reproduce.verdict`)
and `OUT/results_fewshot_location.png` (5-shot accuracy against the location
and against MMACs). Exits non-zero if a run failed.
"""

import os
import sys
from typing import Dict, List, Optional, Sequence

import scipy.stats

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reproduce  # pylint: disable=g-import-not-at-top
import sweep  # pylint: disable=g-import-not-at-top

CONFIG = 'configs/demo_multi_digits.py'
NUM_LAYERS = 4
# The narrowed model and its short schedule (every run the same but the
# location and the seed).
FIXED = ('model.hidden_size=64', 'model.mlp_dim=128', 'model.num_heads=4',
         f'model.num_layers={NUM_LAYERS}', 'model.tokenizer.num_tokens=8',
         'lr_configs.base_learning_rate=0.002')
BEGIN, END = '<!-- fewshot_location -->', '<!-- /fewshot_location -->'
METRIC = 'fewshot_digits_5shot'
LOCATIONS = {'no_tl': None, 'tl8_at0': 0.0, 'tl8_at025': 0.25,
             'tl8_at05': 0.5, 'tl8_at075': 0.75}
LABELS = {'no_tl': 'no TokenLearner', 'tl8_at0': 'TL 8 at 0',
          'tl8_at025': 'TL 8 at 0.25', 'tl8_at05': 'TL 8 at 0.5',
          'tl8_at075': 'TL 8 at 0.75'}
FIGURE = 'Location figure (ViT-B/16, JFT, ImageNet 5-shot)'
CLAIMS = (
    reproduce.Claim('tl8_at05', 'no_tl', 'similar',
                    f'{FIGURE}: at 0.5, 63.7 vs 62.9 without TokenLearner, at '
                    '9.1 vs 17.5 GFLOPs'),
    reproduce.Claim('tl8_at075', 'no_tl', 'higher',
                    f'{FIGURE}: at 0.75, 67.9 vs 62.9'),
    reproduce.Claim('tl8_at05', 'tl8_at0', 'higher',
                    f'{FIGURE}: at 0, 20.9 (a large drop)'),
)


def block(name: str) -> Optional[int]:
  """The block TokenLearner comes before (None: no TokenLearner)."""
  loc = LOCATIONS[name]
  return None if loc is None else round(loc * NUM_LAYERS)


def command(name: str, seed: int, workdir: str, steps: int, runlocal: bool,
            extra: Sequence[str] = ()) -> List[str]:
  """The train command of one (variant, seed) run."""
  arg = f'tokenlearner_loc={block(name)}' + (',runlocal' if runlocal else '')
  fixed = [f'rng_seed={seed}', *(() if runlocal else FIXED), *extra]
  if not runlocal:  # runlocal keeps its few steps, evaluations and model.
    fixed += [f'num_training_steps={steps}', f'log_eval_steps={steps}',
              f'checkpoint_steps={steps}', f'fewshot.log_steps={steps}',
              f'lr_configs.warmup_steps={max(1, steps // 10)}']
  return sweep.train_command(os.path.join(sweep.ROOT, f'{CONFIG}:{arg}'),
                             workdir, {}, fixed)


def run_dir(root: str, name: str, seed: int) -> str:
  return os.path.join(root, f'{name}_seed{seed}')


def accuracies(runs: Dict[str, List[dict]], name: str,
               key: str = METRIC) -> Dict[int, float]:
  return {r['seed']: r[key] for r in runs.get(name, []) if key in r}


def plot(runs: Dict[str, List[dict]], path: str) -> None:
  """5-shot accuracy against the location and against MMACs."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, (by_loc, by_macs) = pyplot.subplots(1, 2, figsize=(10, 4))
  for name in LOCATIONS:
    values = [100 * v for v in accuracies(runs, name).values()]
    if not values:
      continue
    mean, std = reproduce.mean_std(values)
    std = 0 if std != std else std  # NaN for one seed.
    x = 1.0 if LOCATIONS[name] is None else LOCATIONS[name]
    mmacs = 1000 * runs[name][0]['gmacs_per_example']
    for axes, at in ((by_loc, x), (by_macs, mmacs)):
      bar = axes.errorbar(at, mean, yerr=std, fmt='o', capsize=4,
                          label=LABELS[name])
      axes.scatter([at] * len(values), values, s=12, marker='x',
                   color=bar[0].get_color(), alpha=0.6)
  by_loc.set_xticks([0, 0.25, 0.5, 0.75, 1.0],
                    ['0', '0.25', '0.5', '0.75', 'none'])
  by_loc.set_xlabel('TokenLearner location (fraction of the depth)')
  by_macs.set_xlabel('MMACs per image')
  for axes in (by_loc, by_macs):
    axes.set_ylabel('5-shot accuracy (%), mean ± std; x: seeds')
    axes.grid(alpha=0.3)
  by_macs.legend(fontsize=8)
  figure.suptitle('Where to put TokenLearner: 5-shot linear accuracy after '
                  'multi_digits pre-training')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def section(runs: Dict[str, List[dict]], invocation: str, steps: int,
            seeds: Sequence[int]) -> str:
  """The results.md section, markers included."""
  lines = [
      BEGIN, '## Where to put TokenLearner, measured by few-shot accuracy', '',
      f'Regenerate: `{invocation}`', '',
      '![Location, 5-shot](results_fewshot_location.png)', '',
      'The paper\'s way: each model is pre-trained (multi-label, sigmoid '
      'cross-entropy) on `multi_digits`, the JFT stand-in, then its frozen '
      'pre-logits are scored by few-shot linear regression on '
      '`fewshot_digits` (single digits drawn from digit images pre-training '
      'never saw; 10 classes, 1,000 test images; 3 few-shot seeds, l2 2^10; '
      '[how](fewshot.md)). The model is the demo\'s ViT narrowed to width '
      f'64, {NUM_LAYERS} blocks, 8x8 patches of 64x64 images (64 tokens; '
      f'TokenLearner keeps 8), pre-trained {steps} steps of 64 images from '
      f'scratch per seed ({", ".join(map(str, seeds))}); a seed fixes the '
      'initialisation and the data order. Claims are checked on the '
      'per-seed differences of 5-shot accuracy with a 95% Student-t '
      f'interval, as above (with {len(seeds)} seeds its half-width is '
      f'{scipy.stats.t.ppf(0.975, max(len(seeds) - 1, 1)):.1f} standard '
      'errors).', '',
      'How the miniature differs from the paper\'s figure: TokenLearner at 0 '
      'keeps 8 of 64 tokens of images that hold 1 to 3 digits (the paper: 8 '
      'of 196 tokens of natural images), so it discards less; the models '
      f'are pre-trained briefly ({steps} steps: 1.5 to 6 minutes each on 2 '
      'CPU cores shared with other work), far from convergence (mAP about a '
      'third), so the figures measure early representations.', '',
      '| variant | block | MMACs/image | 5-shot (%) | per seed | 1-shot | '
      '10-shot | 25-shot | pre-training mAP (%) |',
      '|---|---|---|---|---|---|---|---|---|']
  for name in LOCATIONS:
    done = [r for r in runs.get(name, []) if METRIC in r]
    where = 'none' if block(name) is None else f'{block(name)} of {NUM_LAYERS}'
    if not done:
      lines.append(f'| {LABELS[name]} | {where} | | (no finished run) '
                   '| | | | | |')
      continue

    def pm(key: str, rows=done) -> str:
      return reproduce.pm([100 * r[key] for r in rows])

    per_seed = ', '.join(f'{100 * r[METRIC]:.1f}' for r in done)
    lines.append(
        f'| {LABELS[name]} | {where} | '
        f'{1000 * done[0]["gmacs_per_example"]:.2f} | {pm(METRIC)} | '
        f'{per_seed} | {pm("fewshot_digits_1shot")} | '
        f'{pm("fewshot_digits_10shot")} | {pm("fewshot_digits_25shot")} | '
        f'{pm("mean_average_precision")} |')
  lines.append('')
  for claim in CLAIMS:
    relation = 'beats' if claim.relation == 'higher' else 'is similar to'
    verdict = reproduce.verdict(claim, accuracies(runs, claim.a),
                                accuracies(runs, claim.b))
    lines.append(f'* Paper: {claim.source}. Miniature (5-shot): '
                 f'{LABELS[claim.a]} {relation} {LABELS[claim.b]} — '
                 f'{verdict}.')
  lines += ['', END]
  return '\n'.join(lines)


def parse_args(argv):
  parser = reproduce.study_arguments(__doc__, steps=500, seeds='0,1')
  parser.add_argument('--variants', default=','.join(LOCATIONS))
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  names = args.variants.split(',')
  unknown = [n for n in names if n not in LOCATIONS]
  if unknown:
    raise ValueError(f'--variants: unknown {unknown}; known: '
                     f'{list(LOCATIONS)}.')
  def report(root: str, seeds: List[int], out: str) -> str:
    runs = reproduce.final_metrics(root, list(LOCATIONS), seeds)
    if any(accuracies(runs, n) for n in LOCATIONS):
      plot(runs, os.path.join(out, 'results_fewshot_location.png'))
    return section(runs, reproduce.invocation('fewshot_location.py', argv),
                   args.steps, seeds)

  return reproduce.run_study(
      args, names, lambda name, seed, workdir: command(
          name, seed, workdir, args.steps, args.runlocal, args.set), report)


if __name__ == '__main__':
  sys.exit(main())
