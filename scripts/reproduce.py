"""The paper's ablations in miniature: tables, plots and verdicts, one command.

Trains the `configs/demo_moving_digits.py` model (ViViT-mu, 4 blocks, 8-frame
32x32 clips, 40 classes) under each variant of each study for `--steps` steps
and `--seeds` seeds, one `python -m tokenlearner_jax.train` run per point in
`WORKDIR/<variant>_seed<s>` (via `scripts/sweep.py`'s runner: finished runs
are skipped, interrupted ones resume), then writes `OUT/results.md` (mean +-
std over seeds, the paper's claim and whether the miniature agrees) and
`OUT/results_*.png` (accuracy against GMACs):

  python scripts/reproduce.py --workdir=/tmp/reproduce --out=docs
  python scripts/reproduce.py --workdir=/tmp/reproduce --out=docs \\
      --report_only   # tables and plots from the runs finished so far

Studies (`--studies`, default all): location (TokenLearner before block 0,
1, 2, 3 of 4 = 0, 0.25, 0.5, 0.75, or none), tokens (4, 8, 16), version
(v1.1 vs v1.0), fuser (none, TokenFuser, unpool, reprojection), reduction
(TokenLearner vs 2x2 pooling vs fully connected tokens), transfer
(pre-training the same model on `multi_digits` images, then fine-tuning
with `init_from`: tubelet kernel inflation, position embedding resized and
tiled, vs training from scratch for the same steps); `--variants` keeps
only some of their variants, e.g. a longer budget for a few:

  python scripts/reproduce.py --workdir=/tmp/reproduce_3000 --steps=3000 \
      --studies=location --variants=no_tl,tl8_at0,tl8_at05 \
      --out=docs/location_3000_steps

Exits non-zero if a run failed.
"""

import argparse
import dataclasses
import json
import math
import os
import re
import statistics
import sys
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import scipy.stats

from tokenlearner_jax.configs import common

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sweep  # pylint: disable=g-import-not-at-top

MOVING = 'configs/demo_moving_digits.py'
MULTI = 'configs/demo_multi_digits.py'
# Points within which a 'similar' claim holds.
SIMILAR = 2.0
# Model fields the pre-training run copies from the fine-tuning config.
SHARED_MODEL_FIELDS = ('hidden_size', 'num_heads', 'mlp_dim', 'num_layers',
                       'tokenizer.num_tokens', 'tokenizer.tokenlearner_loc')


@dataclasses.dataclass(frozen=True)
class Variant:
  """One trained configuration (run once per seed).

  Attributes:
    name: Directory name under the workdir.
    label: Name in tables and plots.
    loc: `tokenlearner_loc` as a fraction of the depth; None: no TokenLearner.
    overrides: `--config.key=value` pairs on top of the moving_digits config.
    pretrain: Pre-train on multi_digits (the same model) instead.
    init_from: Name of the pre-training variant whose same-seed run this one
      fine-tunes from.
  """
  name: str
  label: str
  loc: Optional[float] = 0.5
  overrides: Tuple[Tuple[str, str], ...] = ()
  pretrain: bool = False
  init_from: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim of the paper, as a comparison of two variants' mean accuracy.

  Attributes:
    a: The variant the paper favours (or calls similar to `b`).
    b: The variant it is compared with.
    relation: 'higher' (a beats b) or 'similar' (within about a point).
    source: Where the paper says it, with its numbers.
  """
  a: str
  b: str
  relation: str
  source: str


@dataclasses.dataclass(frozen=True)
class Study:
  """Variants compared together, in one table and one plot.

  Attributes:
    name: `--studies` key and plot file suffix.
    title: Section title.
    variants: Variant names, in table order.
    claims: What the paper says about them.
    note: How the miniature's setting differs from the paper's, for this
      study.
  """
  name: str
  title: str
  variants: Tuple[str, ...]
  claims: Tuple[Claim, ...]
  note: str = ''


def _tl(**overrides: str) -> Tuple[Tuple[str, str], ...]:
  return tuple((f'model.tokenizer.{k}', v) for k, v in overrides.items())


VARIANTS = {v.name: v for v in (
    Variant('no_tl', 'no TokenLearner', loc=None),
    Variant('tl8_at0', 'TL 8 at 0', loc=0.0),
    Variant('tl8_at025', 'TL 8 at 0.25', loc=0.25),
    Variant('tl8_at05', 'TL 8 at 0.5'),
    Variant('tl8_at075', 'TL 8 at 0.75', loc=0.75),
    Variant('tl4_at05', 'TL 4 at 0.5', overrides=_tl(num_tokens='4')),
    Variant('tl16_at05', 'TL 16 at 0.5', overrides=_tl(num_tokens='16')),
    Variant('tl8_v10', 'TL v1.0 (sum) 8 at 0.5',
            overrides=_tl(use_v11='False')),
    Variant('tl8_fuser', 'TL 8 + TokenFuser at 0.5',
            overrides=_tl(use_tokenfuse='True')),
    Variant('tl8_unpool', 'TL 8 + unpool at 0.5',
            overrides=_tl(use_tokenfuse='True', fuser_type='unpool')),
    Variant('tl8_reprojection', 'TL 8 + reprojection at 0.5',
            overrides=_tl(use_tokenfuse='True', fuser_type='reprojection')),
    Variant('pool2x2_at05', '2x2 pooling at 0.5',
            overrides=_tl(token_reduction='pooling', pooling_window='2')),
    Variant('dense8_at05', 'FC 8 tokens at 0.5',
            overrides=_tl(token_reduction='dense')),
    Variant('pretrain_multi', 'pre-training on multi_digits', pretrain=True),
    Variant('tl8_finetuned', 'TL 8 at 0.5, pre-trained',
            init_from='pretrain_multi'),
)}

LOCATION = 'Figure "where should we have TokenLearner?" (ViT-B/16, 5-shot)'
STUDIES = {s.name: s for s in (
    Study('location', 'Where to put TokenLearner',
          ('no_tl', 'tl8_at0', 'tl8_at025', 'tl8_at05', 'tl8_at075'),
          (Claim('tl8_at05', 'no_tl', 'similar',
                 f'{LOCATION}: at 0.5, 63.7 vs 62.9 (no TL) at 9.1 vs 17.5 '
                 'GMACs'),
           Claim('tl8_at075', 'no_tl', 'higher',
                 f'{LOCATION}: at 0.75, 67.9 vs 62.9'),
           Claim('tl8_at05', 'tl8_at0', 'higher',
                 f'{LOCATION}: at 0, 20.9 (a large drop)')),
          'Here a temporal slice has 4x4 = 16 positions and TokenLearner '
          'keeps 8 (the paper: 196 -> 8), so it saves less compute (at 0.5, '
          '79% of the MMACs; the paper 52%) and discards less at 0.'),
    Study('tokens', 'How many tokens',
          ('tl4_at05', 'tl8_at05', 'tl16_at05'),
          (Claim('tl16_at05', 'tl8_at05', 'similar',
                 'Table 4: 8-TL and 16-TL at 6 both 83.2 (B/16); location '
                 'figure at 0.5: 63.7 vs 63.5'),),
          '16 tokens of a 16-position slice reduce nothing: they re-mix.'),
    Study('version', 'TokenLearner v1.1 vs v1.0',
          ('tl8_at05', 'tl8_v10'),
          (Claim('tl8_at05', 'tl8_v10', 'higher',
                 'Code only (no paper number): the v1.1 docstring, "we '
                 'confirmed that this version works better in general"'),)),
    Study('fuser', 'TokenFuser and its alternatives',
          ('tl8_at05', 'tl8_fuser', 'tl8_unpool', 'tl8_reprojection'),
          (Claim('tl8_fuser', 'tl8_at05', 'higher',
                 'Table 4: B/16 8-TL at 6, 83.7 with TokenFuser vs 83.2 '
                 'without'),
           Claim('tl8_fuser', 'tl8_unpool', 'higher',
                 'Fuser figure: TokenFuser 83.70 vs unpool 82.75 (8 tokens)'),
           Claim('tl8_reprojection', 'tl8_fuser', 'similar',
                 'Fuser figure: reprojection 83.65 vs TokenFuser 83.70, at '
                 '32.7 vs 28.6 GFLOPs'))),
    Study('reduction', 'Learned tokens vs pooling and FC tokens',
          ('tl8_at05', 'tl4_at05', 'pool2x2_at05', 'dense8_at05'),
          (Claim('tl4_at05', 'pool2x2_at05', 'higher',
                 'Table 5: 16-TL at 12, 87.68 vs 4x4 pool at 12, 83.93 (the '
                 'same GFLOPs; here 4 tokens a slice each)'),
           Claim('tl8_at05', 'dense8_at05', 'higher',
                 'Charades text (via the review): spatial attention 59.6 vs '
                 'fully connected tokens 56.6'))),
    Study('transfer', 'Pre-training on images, fine-tuning on video',
          ('tl8_at05', 'tl8_finetuned'),
          (Claim('tl8_finetuned', 'tl8_at05', 'higher',
                 'Every video result of the paper starts from an '
                 'image-pretrained (JFT) ViT, inflated to tubelets'),),
          'The same fine-tuning steps as from scratch, so the pre-trained '
          'model has had the pre-training steps more in all.'),
)}


def load_config(path: str, arg: str):
  """`get_config(arg)` of the config file at `path` (relative to the repo)."""
  return common.load_config(os.path.join(sweep.ROOT, path), arg or None)


def config_arg(loc: Optional[int], runlocal: bool) -> str:
  return ','.join([f'tokenlearner_loc={loc}'] + (['runlocal'] if runlocal
                                                  else []))


def block_index(variant: Variant, num_layers: int) -> Optional[int]:
  """The block the variant's TokenLearner comes before (None: none)."""
  return None if variant.loc is None else round(variant.loc * num_layers)


def command(variant: Variant, seed: int, workdir: str, root: str, steps: int,
            runlocal: bool, extra: Sequence[str] = ()) -> List[str]:
  """The train command of one (variant, seed) run; `extra`: more
  `key=value` overrides (e.g. `dataset_configs.data_dir=...`)."""
  depth = load_config(MOVING, config_arg(2, runlocal)).model.num_layers
  loc = block_index(variant, depth)
  moving = load_config(MOVING, config_arg(loc, runlocal))
  fixed = [f'{k}={v}' for k, v in variant.overrides]
  fixed += [f'rng_seed={seed}', *extra]
  if not runlocal:  # runlocal keeps its few steps, evals and checkpoints.
    fixed += [f'num_training_steps={steps}', f'log_eval_steps={steps}',
              f'checkpoint_steps={steps}',
              f'lr_configs.warmup_steps={min(200, steps // 5)}']
  if variant.init_from:
    source = run_dir(root, VARIANTS[variant.init_from], seed)
    fixed += [f'init_from.checkpoint_path={source}',
              'init_from.positional_embed_size_change=resize_tile']
  if not variant.pretrain:
    return sweep.train_command(
        os.path.join(sweep.ROOT, f'{MOVING}:{config_arg(loc, runlocal)}'),
        workdir, {}, fixed)
  # The same model on multi_digits images: 2-D patches, one 8x8 grid.
  for field in SHARED_MODEL_FIELDS:
    value = moving.model
    for part in field.split('.'):
      value = value[part]
    fixed.append(f'model.{field}={value}')
  fixed += [f'batch_size={moving.batch_size}']
  return sweep.train_command(
      os.path.join(sweep.ROOT, MULTI + (':runlocal' if runlocal else '')),
      workdir, {}, fixed)


def only_variants(study: Study, names: Sequence[str]) -> Study:
  """`study` with only the variants `names` and the claims between them."""
  unknown = [n for n in names if n not in VARIANTS]
  if unknown:
    raise ValueError(f'--variants: unknown {unknown}; known: '
                     f'{list(VARIANTS)}.')
  kept = tuple(n for n in study.variants if n in names)
  return dataclasses.replace(
      study, variants=kept,
      claims=tuple(c for c in study.claims if c.a in kept and c.b in kept))


def needed_variants(studies: Sequence[Study]) -> List[Variant]:
  """The variants of `studies` and the pre-training runs they start from."""
  names = list(dict.fromkeys(n for s in studies for n in s.variants))
  extra = [VARIANTS[n].init_from for n in names if VARIANTS[n].init_from]
  return [VARIANTS[n] for n in dict.fromkeys(extra + names)]


def run_dir(root: str, variant: Variant, seed: int) -> str:
  return os.path.join(root, f'{variant.name}_seed{seed}')


def run_all(root: str, variants: Sequence[Variant], seeds: Sequence[int],
            steps: int, parallel: int, runlocal: bool,
            extra: Sequence[str] = ()) -> Dict[str, int]:
  """Trains every (variant, seed); fine-tuning runs after pre-training."""
  codes = {}
  for phase in (False, True):  # Without, then with, an init_from source.
    jobs = []
    for variant in variants:
      if bool(variant.init_from) != phase:
        continue
      for seed in seeds:
        workdir = run_dir(root, variant, seed)
        jobs.append((workdir, command(variant, seed, workdir, root, steps,
                                      runlocal, extra)))
    codes.update(sweep.run_all(jobs, parallel))
  return codes


def final_metrics(root: str, names: Sequence[str],
                  seeds: Sequence[int]) -> Dict[str, List[dict]]:
  """The final metrics (with 'seed') of each finished run
  `root/<name>_seed<s>`, by name."""
  out: Dict[str, List[dict]] = {}
  for name in names:
    out[name] = []
    for seed in seeds:
      path = os.path.join(root, f'{name}_seed{seed}', 'final_metrics.json')
      if os.path.exists(path):
        with open(path) as f:
          out[name].append(dict(json.load(f), seed=seed))
  return out


def results(root: str, variants: Sequence[Variant],
            seeds: Sequence[int]) -> Dict[str, List[dict]]:
  """Each variant's finished runs' final metrics (with 'seed')."""
  return final_metrics(root, [v.name for v in variants], seeds)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
  std = statistics.stdev(values) if len(values) > 1 else float('nan')
  return statistics.mean(values), std


def by_seed(runs: Dict[str, List[dict]], name: str) -> Dict[int, float]:
  return {r['seed']: r['accuracy'] for r in runs.get(name, [])}


def pm(values: Sequence[float]) -> str:
  """'mean ± std' of `values` (just the mean for one value)."""
  mean, std = mean_std(values)
  return f'{mean:.1f}' if math.isnan(std) else f'{mean:.1f} ± {std:.1f}'


def verdict(claim: Claim, a: Dict[int, float], b: Dict[int, float]) -> str:
  """Whether accuracies `a` and `b` (fractions, by seed) bear `claim`.

  Paired by seed: a seed fixes the data order and augmentation (the same
  batches for every variant), so d is the mean over seeds of the per-seed
  difference, in points, with a 95% Student-t interval. 'higher' agrees when
  the interval lies above 0, disagrees when below, else cannot tell;
  'similar' agrees when it lies within +-SIMILAR points, disagrees when it
  excludes 0 and |d| > SIMILAR, else cannot tell.
  """
  seeds = sorted(set(a) & set(b))
  if len(seeds) < 2:
    return 'not enough seeds'
  diffs = [100 * (a[s] - b[s]) for s in seeds]
  d = statistics.mean(diffs)
  half = (scipy.stats.t.ppf(0.975, len(diffs) - 1) *
          statistics.stdev(diffs) / math.sqrt(len(diffs)))
  low, high = d - half, d + half
  figure = (f'd = {d:+.1f} points, 95% interval [{low:+.1f}, {high:+.1f}] '
            f'over {len(diffs)} seeds')
  if claim.relation == 'similar':
    if -SIMILAR <= low and high <= SIMILAR:
      word = 'agrees'
    elif (low > 0 or high < 0) and abs(d) > SIMILAR:
      word = 'disagrees'
    else:
      word = 'cannot tell'
  elif low > 0:
    word = 'agrees'
  elif high < 0:
    word = 'disagrees'
  else:
    word = 'cannot tell'
  return f'{word} ({figure})'


def plot(study: Study, runs: Dict[str, List[dict]], path: str) -> None:
  """Accuracy (mean +- std over seeds) against MMACs per clip."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, axes = pyplot.subplots(figsize=(6.4, 4.2))
  for name in study.variants:
    if not runs.get(name):
      continue
    accuracies = [100 * r['accuracy'] for r in runs[name]]
    mean, std = mean_std(accuracies)
    mmacs = 1000 * runs[name][0]['gmacs_per_example']
    bar = axes.errorbar(mmacs, mean, yerr=0 if math.isnan(std) else std,
                        fmt='o', capsize=4, label=VARIANTS[name].label)
    axes.scatter([mmacs] * len(accuracies), accuracies, s=12, marker='x',
                 color=bar[0].get_color(), alpha=0.6)  # Each seed.
  axes.set_xlabel('MMACs per clip (multiply-adds, one view)')
  axes.set_ylabel('test accuracy (%): mean ± std, x: seeds')
  axes.set_title(study.title)
  axes.grid(alpha=0.3)
  axes.legend(fontsize=8)
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def report(studies: Sequence[Study], runs: Dict[str, List[dict]],
           out: str, invocation: str, steps: int, seeds: Sequence[int]) -> str:
  """`results.md` (returned) with a plot per study written to `out`."""
  lines = [
      '# The paper\'s ablations in miniature', '',
      f'Regenerate (tables, plots, verdicts): `{invocation}`', '',
      'Every variant trains the `configs/demo_moving_digits.py` model '
      '(ViViT-mu: width 64, 4 blocks, 8-frame 32x32 clips in 4x4x4 tubelets, '
      f'40 classes) for {steps} steps of 24 clips from scratch, once per seed '
      f'({", ".join(map(str, seeds))}), and is tested on the 2,000 test '
      'clips. Accuracy is mean ± std over seeds. A seed fixes the data order '
      'and augmentation (the same batches for every variant), so claims are '
      'checked on differences paired by seed: d is the mean per-seed '
      'difference in points with its 95% Student-t interval. A claim that A '
      'beats B "agrees" when the interval lies above 0, "disagrees" when it '
      f'lies below, else "cannot tell"; "similar" agrees when the interval '
      f'lies within ±{SIMILAR:g} points and disagrees when it excludes 0 '
      f'with |d| > {SIMILAR:g}.', '']
  summary, sections = [], []
  for study in studies:
    sections += [f'## {study.title}', '',
                 f'![{study.title}](results_{study.name}.png)', '',
                 *([study.note, ''] if study.note else []),
                 '| variant | overrides | MMACs/clip | accuracy (%) '
                 '| top-5 (%) | per seed |', '|---|---|---|---|---|---|']
    for name in study.variants:
      variant, done = VARIANTS[name], runs.get(name, [])
      where = ('no TokenLearner' if variant.loc is None
               else f'loc {variant.loc}')
      setting = ', '.join([where] + [f'{k.split(".")[-1]}={v}'
                                     for k, v in variant.overrides] +
                          ([f'init_from {variant.init_from}']
                           if variant.init_from else []))
      if not done:
        sections.append(f'| {variant.label} | {setting} | | (no finished '
                        'run) | | |')
        continue
      seeds_text = ', '.join(f'{100 * r["accuracy"]:.1f}' for r in done)
      sections.append(
          f'| {variant.label} | {setting} | '
          f'{1000 * done[0]["gmacs_per_example"]:.2f} | '
          f'{pm([100 * r["accuracy"] for r in done])} | '
          f'{pm([100 * r["accuracy_top_5"] for r in done])} | {seeds_text} |')
    sections.append('')
    for source in dict.fromkeys(VARIANTS[n].init_from for n in study.variants
                                if VARIANTS[n].init_from):
      done = runs.get(source, [])
      if done:
        sections += [
            f'{VARIANTS[source].label} (the same model on 2-D patches of '
            f'64x64 multi_digits images, multi-label, {len(done)} seed(s)): '
            f'prec@1 {pm([100 * r["prec@1"] for r in done])}%, mAP '
            f'{pm([100 * r["mean_average_precision"] for r in done])}%.', '']
    for claim in study.claims:
      relation = 'beats' if claim.relation == 'higher' else 'is similar to'
      text = (
          f'{VARIANTS[claim.a].label} {relation} {VARIANTS[claim.b].label} — '
          f'{verdict(claim, by_seed(runs, claim.a), by_seed(runs, claim.b))}')
      sections.append(f'* Paper: {claim.source}. Miniature: {text}.')
      summary.append(f'* {study.title}: {text}.')
    sections.append('')
    if any(runs.get(n) for n in study.variants):
      plot(study, runs, os.path.join(out, f'results_{study.name}.png'))
  return '\n'.join(lines + ['## Verdicts', ''] + summary + [''] + sections)


def write_section(path: str, text: str) -> None:
  """Replaces the section of `path` between the markers that start and end
  `text` (`<!-- name -->` ... `<!-- /name -->`), or appends it; the rest of
  the file stays."""
  name = re.match(r'<!-- (\w+) -->', text).group(1)
  old = ''
  if os.path.exists(path):
    with open(path) as f:
      old = f.read()
  pattern = re.compile(f'<!-- {name} -->.*?<!-- /{name} -->', re.S)
  if pattern.search(old):
    new = pattern.sub(lambda _: text, old)
  else:
    new = (old.rstrip('\n') + '\n\n' if old else '') + text + '\n'
  with open(path, 'w') as f:
    f.write(new)


def kept_sections(path: str) -> str:
  """The sections of `path` between `<!-- name -->` and `<!-- /name -->`
  markers (what scripts/fewshot_location.py writes there), which a rewrite
  of the file carries over."""
  if not os.path.exists(path):
    return ''
  with open(path) as f:
    old = f.read()
  return ''.join(f'\n{m.group(0)}\n' for m in re.finditer(
      r'<!-- (\w+) -->.*?<!-- /\1 -->', old, re.S))


def study_arguments(doc: str, steps: int, seeds: str = '0,1,2',
                    parallel: int = 1) -> argparse.ArgumentParser:
  """The flags every miniature study script takes (add its own to it)."""
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--workdir', required=True,
                      help='Run directories (WORKDIR/<name>_seed<s>).')
  parser.add_argument('--out', default='', help='Where results.md and the '
                      'plots go (default: the workdir).')
  parser.add_argument('--seeds', default=seeds)
  parser.add_argument('--steps', type=int, default=steps)
  parser.add_argument('--parallel', type=int, default=parallel)
  parser.add_argument('--set', action='append', default=[],
                      help='key=value for every run.')
  parser.add_argument('--report_only', action='store_true',
                      help='Train nothing; report the finished runs.')
  parser.add_argument('--runlocal', action='store_true',
                      help="The configs' runlocal form (tests).")
  return parser


def invocation(script: str, argv: Optional[Sequence[str]]) -> str:
  """The command that regenerates a report (without --report_only)."""
  args = argv if argv is not None else sys.argv[1:]
  return ' '.join([f'python scripts/{script}'] + [
      a for a in args if not a.startswith('--report_only')])


def run_study(args: argparse.Namespace, names: Sequence[str],
              command: Callable[[str, int, str], List[str]],
              report: Callable[[str, List[int], str], str],
              after: Optional[Callable[[str, List[int]], Dict[str, int]]] = None
              ) -> int:
  """A sibling study script's flow (`study_arguments`' flags in `args`).

  Trains each of `names` for each seed in `WORKDIR/<name>_seed<s>` (every
  name of a seed first; `command(name, seed, workdir)` is its train command)
  unless --report_only, then runs `after(root, seeds)` (more work, returning
  exit codes), then replaces its marked section of `OUT/results.md` with
  `report(root, seeds, out)` (which may write plots to `out`) and prints it.
  Returns 1 if a run failed, else 0.
  """
  seeds = [int(s) for s in args.seeds.split(',')]
  root = os.path.abspath(args.workdir)
  out = args.out or root
  os.makedirs(out, exist_ok=True)
  codes: Dict[str, int] = {}
  if not args.report_only:
    start = time.time()
    jobs = []
    for seed in seeds:
      for name in names:
        workdir = os.path.join(root, f'{name}_seed{seed}')
        jobs.append((workdir, command(name, seed, workdir)))
    codes = sweep.run_all(jobs, max(args.parallel, 1))
    if after is not None:
      codes.update(after(root, seeds))
    print(f'Done in {time.time() - start:.0f} s.', flush=True)
  text = report(root, seeds, out)
  write_section(os.path.join(out, 'results.md'), text)
  print(text)
  return 1 if any(code != 0 for code in codes.values()) else 0


def parse_args(argv):
  parser = study_arguments(__doc__, steps=1500, parallel=2)
  parser.add_argument('--studies', default=','.join(STUDIES),
                      help=f'Comma-separated, of {list(STUDIES)}.')
  parser.add_argument('--variants', default='',
                      help='Comma-separated variant names: only these (and '
                      'the claims between them) of the studies.')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  unknown = [s for s in args.studies.split(',') if s not in STUDIES]
  if unknown:
    raise ValueError(f'--studies: unknown {unknown}; known: {list(STUDIES)}.')
  studies = [STUDIES[s] for s in args.studies.split(',')]
  if args.variants:
    studies = [only_variants(s, args.variants.split(',')) for s in studies]
  seeds = [int(s) for s in args.seeds.split(',')]
  root = os.path.abspath(args.workdir)
  out = args.out or root
  os.makedirs(out, exist_ok=True)
  variants = needed_variants(studies)
  start, codes = time.time(), {}
  if not args.report_only:
    codes = run_all(root, variants, seeds, args.steps, max(args.parallel, 1),
                    args.runlocal, args.set)
    print(f'Trained in {time.time() - start:.0f} s.', flush=True)
  text = report(studies, results(root, variants, seeds), out,
                invocation('reproduce.py', argv), args.steps, seeds)
  path = os.path.join(out, 'results.md')
  text += kept_sections(path)  # Other scripts' sections stay.
  with open(path, 'w') as f:
    f.write(text + '\n')
  print(text)
  return 1 if any(code != 0 for code in codes.values()) else 0


if __name__ == '__main__':
  sys.exit(main())
