r"""TokenLearner against ToMe, EViT, ATS and PatchMerger at matched compute.

  python scripts/reduction_study.py --workdir=/tmp/reduction_study --out=docs
  python scripts/reduction_study.py --workdir=/tmp/reduction_study \
      --out=docs --report_only   # the tables from the runs finished so far

The model is scripts/fewshot_location.py's narrowed `demo_multi_digits` ViT
(width 64, 4 blocks, 4 heads, 8x8 patches of 64x64 images: 64 tokens) with a
class token (EViT and ATS rank tokens by its attention), trained from scratch
on `multi_digits` (multi-label, 10 classes) for `--steps` steps per seed and
tested by mAP. Variants (`WORKDIR/<name>_seed<s>`, through
`scripts/sweep.py`'s runner: finished runs are skipped):

* `plain`: no reduction.
* `<method>_<pct>`: each method trained with its setting closest to `pct`%
  of the plain model's multiply-adds (`--budgets`, default 50 and 75;
  `matched_setting` searches each method's settings with
  `tokenlearner_jax.flops`).
* `<method>_<pct>_offshelf` (ToMe and ATS, whose selling point this is):
  each seed's `plain` run evaluated with the method at that budget, without
  retraining (`python -m tokenlearner_jax.evaluate` with the method's
  overrides; `WORKDIR/offshelf/`).

With `--time_steps` (default on), the train step of every variant is timed in
this process (`scripts/benchmark.py`'s functions, the study's batch) and
kept in `WORKDIR/step_times.json`. Then it writes, between
`<!-- reduction_study -->` markers in `OUT/results.md`, the table (setting,
MMACs, step time against the plain model's, mAP mean +- std over seeds, per
seed), TokenLearner against each method at each budget on differences paired
by seed (`reproduce.verdict`), and `OUT/results_reduction_study.png` (mAP
against MMACs and against step time). Exits non-zero if a run failed.
"""

import argparse
import ast
import dataclasses
import json
import math
import os
import subprocess
import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from tokenlearner_jax import flops

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fewshot_location  # pylint: disable=g-import-not-at-top
import reproduce  # pylint: disable=g-import-not-at-top
import sweep  # pylint: disable=g-import-not-at-top

CONFIG = fewshot_location.CONFIG
IMAGE = (64, 64, 3)
NUM_CLASSES = 10
METRIC = 'mean_average_precision'
FIXED = (*fewshot_location.FIXED, 'model.classifier=token')
BEGIN, END = '<!-- reduction_study -->', '<!-- /reduction_study -->'
LABELS = {'plain': 'plain ViT', 'tokenlearner': 'TokenLearner',
          'patchmerger': 'PatchMerger', 'tome': 'ToMe', 'evit': 'EViT',
          'ats': 'ATS'}
METHODS = ('tokenlearner', 'patchmerger', 'tome', 'evit', 'ats')
OFF_THE_SHELF = ('tome', 'ats')
Setting = Tuple[Tuple[str, Any], ...]  # (tokenizer key, value) pairs.


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the comparison.

  Attributes:
    method: A `token_reduction`, or None for the plain model.
    setting: Its tokenizer settings.
    pct: The budget, % of the plain model's multiply-adds (100: plain).
    offshelf: Evaluated on the plain runs, not trained with the method.
  """
  method: Optional[str] = None
  setting: Setting = ()
  pct: int = 100
  offshelf: bool = False

  @property
  def label(self) -> str:
    text = LABELS[self.method or 'plain']
    text += ' off the shelf' if self.offshelf else ''
    return text if self.method is None else f'{text} @ {self.pct}%'


def candidates(method: str, num_layers: int) -> List[Setting]:
  """Every setting of `method` the budget search considers."""
  locs = range(1, num_layers)
  if method in ('tokenlearner', 'patchmerger'):
    return [(('tokenlearner_loc', loc), ('num_tokens', s))
            for loc in locs for s in (2, 4, 8, 12, 16, 24, 32)]
  if method == 'tome':
    return [(('tokenlearner_loc', 0), ('tome_r', r)) for r in range(1, 33)]
  if method == 'evit':
    return [(('tokenlearner_loc', loc), ('keep_rate', k / 10))
            for loc in locs for k in range(1, 10)]
  return [(('tokenlearner_loc', loc), ('num_tokens', s))
          for loc in locs for s in (2, 4, 8, 12, 16, 24, 32, 48)]


def base_config(runlocal: bool,
                extra: Sequence[str] = ()) -> ml_collections.ConfigDict:
  """The plain model's config: FIXED (runlocal: the class token) and the
  `extra` `key=value` overrides applied, as the train commands apply them."""
  config = reproduce.load_config(
      CONFIG, 'tokenlearner_loc=None' + (',runlocal' if runlocal else ''))
  items = (('model.classifier=token',) if runlocal else FIXED) + tuple(extra)
  for item in items:
    key, value = item.split('=', 1)
    *parents, leaf = key.split('.')
    node = config
    for part in parents:
      node = node[part]
    try:
      node[leaf] = ast.literal_eval(value)
    except (ValueError, SyntaxError):
      node[leaf] = value  # A string.
  return config


def with_setting(config: ml_collections.ConfigDict, method: str,
                 setting: Setting) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.tokenizer.token_reduction = method
  for key, value in setting:
    config.model.tokenizer[key] = value
  return config


def gmacs_of(config: ml_collections.ConfigDict) -> float:
  return flops.gmacs(config, IMAGE, NUM_CLASSES)


def matched_setting(method: str, fraction: float, runlocal: bool = False,
                    extra: Sequence[str] = ()) -> Tuple[Setting, float]:
  """`method`'s setting whose multiply-adds are closest to `fraction` of the
  plain model's, and its GMACs."""
  base = base_config(runlocal, extra)
  target = fraction * gmacs_of(base)
  best = None
  for setting in candidates(method, base.model.num_layers):
    gmacs = gmacs_of(with_setting(base, method, setting))
    if best is None or abs(gmacs - target) < abs(best[1] - target):
      best = (setting, gmacs)
  return best


def variants(budgets: Sequence[int], runlocal: bool = False,
             methods: Sequence[str] = METHODS,
             extra: Sequence[str] = ()) -> Dict[str, Variant]:
  """The comparison's rows by name (`<method>_<pct>[_offshelf]`)."""
  out = {'plain': Variant()}
  for pct in budgets:
    for method in methods:
      setting, _ = matched_setting(method, pct / 100, runlocal, extra)
      out[f'{method}_{pct}'] = Variant(method, setting, pct)
      if method in OFF_THE_SHELF:
        out[f'{method}_{pct}_offshelf'] = Variant(method, setting, pct, True)
  return out


def overrides(method: Optional[str], setting: Setting) -> List[str]:
  if method is None:
    return []
  items = [f'model.tokenizer.token_reduction={method}']
  items += [f'model.tokenizer.{k}={v}' for k, v in setting
            if k != 'tokenlearner_loc']
  return items


def config_arg(setting: Setting, runlocal: bool) -> str:
  loc = dict(setting).get('tokenlearner_loc')
  return f'tokenlearner_loc={loc}' + (',runlocal' if runlocal else '')


def model_overrides(method, setting, seed: int, runlocal: bool,
                    extra: Sequence[str]) -> List[str]:
  """A variant's `key=value` overrides of the config file's model."""
  fixed = ['model.classifier=token'] if runlocal else list(FIXED)
  return [*fixed, f'rng_seed={seed}', *overrides(method, setting), *extra]


def train_command(method, setting, seed: int, workdir: str, steps: int,
                  runlocal: bool, extra: Sequence[str] = ()) -> List[str]:
  """The train command of one trained variant's run."""
  fixed = model_overrides(method, setting, seed, runlocal, extra)
  if not runlocal:
    fixed[len(FIXED):len(FIXED)] = [
        f'num_training_steps={steps}', f'log_eval_steps={steps}',
        f'checkpoint_steps={steps}', f'fewshot.log_steps={steps}',
        f'lr_configs.warmup_steps={max(1, steps // 10)}']
  return sweep.train_command(
      os.path.join(sweep.ROOT, f'{CONFIG}:{config_arg(setting, runlocal)}'),
      workdir, {}, fixed)


def eval_command(method, setting, seed: int, plain_dir: str, out: str,
                 runlocal: bool, extra: Sequence[str] = ()) -> List[str]:
  """Evaluates the `plain` run of `seed` with `method` (None: as trained)
  and no retraining, writing `out`."""
  command = sweep.train_command(
      os.path.join(sweep.ROOT, f'{CONFIG}:{config_arg(setting, runlocal)}'),
      plain_dir, {}, model_overrides(method, setting, seed, runlocal, extra))
  command[2] = 'tokenlearner_jax.evaluate'
  return command + [f'--out={out}']


def offshelf_path(root: str, name: str, seed: int) -> str:
  return os.path.join(root, 'offshelf', f'{name}_seed{seed}.json')


def run_offshelf(root: str, table, seeds, runlocal: bool,
                 extra: Sequence[str]) -> Dict[str, int]:
  """Evaluates every finished plain run as trained (`plain`, the baseline
  of the off-the-shelf verdicts: the same evaluation) and with each
  off-the-shelf variant."""
  codes = {}
  os.makedirs(os.path.join(root, 'offshelf'), exist_ok=True)
  for name, v in table.items():
    for seed in seeds if v.offshelf or v.method is None else ():
      out = offshelf_path(root, name, seed)
      plain = os.path.join(root, f'plain_seed{seed}')
      if os.path.exists(out) or not sweep.finished(plain):
        continue
      command = eval_command(v.method, v.setting, seed, plain, out, runlocal,
                             extra)
      with open(out + '.log', 'w') as log:
        codes[out] = subprocess.call(command, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=sweep.ROOT)
      print(f'{"done" if codes[out] == 0 else "FAILED"}: {name} seed {seed}',
            flush=True)
  return codes


def time_steps(table, runlocal: bool, path: str, batch: int,
               extra: Sequence[str] = ()) -> None:
  """Median train-step seconds of every trained variant, in one process."""
  import benchmark  # pylint: disable=g-import-not-at-top
  times = {}
  base = base_config(runlocal, extra)
  base.batch_size = batch
  for name, v in table.items():
    if v.offshelf:  # The same program as the trained variant's.
      continue
    config = base if v.method is None else with_setting(base, v.method,
                                                        v.setting)
    compiled, state, data, _ = benchmark.compiled_train_step(
        config, IMAGE, NUM_CLASSES)
    seconds, _, _ = benchmark.time_steps(compiled, state, data, 2, 10)
    times[name] = sorted(seconds)[len(seconds) // 2]
  with open(path, 'w') as f:
    json.dump(times, f, indent=1)


def results(root: str, table, seeds) -> Dict[str, List[dict]]:
  runs = reproduce.final_metrics(
      root, [n for n, v in table.items() if not v.offshelf], seeds)
  for name, v in table.items():
    if v.offshelf or v.method is None:
      runs[f'{name}_evaluated' if v.method is None else name] = []
      for seed in seeds:
        path = offshelf_path(root, name, seed)
        if os.path.exists(path):
          with open(path) as f:
            runs[f'{name}_evaluated' if v.method is None else name].append(
                dict(json.load(f), seed=seed))
  return runs


def by_seed(runs, name) -> Dict[int, float]:
  return {r['seed']: r[METRIC] for r in runs.get(name, []) if METRIC in r}


def describe(method: Optional[str], setting: Setting) -> str:
  if method is None:
    return '64 tokens throughout'
  return ', '.join(f'{k.replace("tokenlearner_loc", "loc")}={v}'
                   for k, v in setting)


def plot(table, runs, times, path: str) -> None:
  """mAP against MMACs and against the measured step time."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, (by_macs, by_time) = pyplot.subplots(1, 2, figsize=(11, 4.2))
  colors = dict(zip(['plain', *METHODS], pyplot.rcParams[
      'axes.prop_cycle'].by_key()['color']))
  labelled = set()
  for name, v in table.items():
    values = [100 * x for x in by_seed(runs, name).values()]
    if not values:
      continue
    mean, std = reproduce.mean_std(values)
    key = v.method or 'plain'
    label = LABELS[key] + (' (off the shelf)' if v.offshelf else '')
    style = dict(fmt='s' if v.offshelf else 'o', capsize=3, color=colors[key],
                 mfc='none' if v.offshelf else colors[key],
                 label=None if label in labelled else label)
    labelled.add(label)
    mmacs = 1000 * runs[name][0]['gmacs_per_example']
    by_macs.errorbar(mmacs, mean, yerr=0 if math.isnan(std) else std, **style)
    timed = name.replace('_offshelf', '')
    if timed in times:
      style['label'] = None
      by_time.errorbar(1000 * times[timed], mean,
                       yerr=0 if math.isnan(std) else std, **style)
  by_macs.set_xlabel('MMACs per image')
  by_time.set_xlabel('train step (ms, this machine; off the shelf: the '
                     'same program)')
  for axes in (by_macs, by_time):
    axes.set_ylabel('test mAP (%), mean ± std over seeds')
    axes.grid(alpha=0.3)
  by_macs.legend(fontsize=7)
  figure.suptitle('TokenLearner and the later token-reduction methods on '
                  'multi_digits')
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def section(table, runs, times, invocation: str, steps: int,
            seeds: Sequence[int], budgets: Sequence[int], batch: int) -> str:
  """The results.md section, markers included."""
  plain_time = times.get('plain')
  lines = [
      BEGIN, '## TokenLearner against ToMe, EViT, ATS and PatchMerger', '',
      f'Regenerate: `{invocation}`', '',
      '![reduction_study](results_reduction_study.png)', '',
      'Every trained variant is the few-shot study\'s ViT (width 64, 4 '
      'blocks, 64 tokens of 64x64 `multi_digits` images) with a class '
      f'token, trained from scratch for {steps} steps of {batch} images per '
      'seed '
      f'({", ".join(map(str, seeds))}; a seed fixes the initialisation and '
      'the data order) and tested by mAP over the 10 digit classes. Each '
      f'method takes its setting closest to {" and ".join(map(str, budgets))}'
      '% of the plain model\'s multiply-adds (the MMACs column shows how '
      'close). "Off the shelf" evaluates the same seed\'s plain run with '
      'the method and no retraining, against the same evaluation of the '
      'plain run as trained. Step times are medians of 10 train '
      'steps of every variant measured in one process, with the ratio to '
      'the plain model\'s. '
      'Differences are paired by seed with a 95% Student-t interval.', '',
      '| variant | setting | MMACs/image | step (ms) | vs plain | mAP (%) | '
      'per seed |', '|---|---|---|---|---|---|---|']
  for name, v in table.items():
    done = [r for r in runs.get(name, []) if METRIC in r]
    label, setting = v.label, describe(v.method, v.setting)
    timed = times.get(name.replace('_offshelf', ''))
    step = f'{1000 * timed:.1f}' if timed else ''
    ratio = f'{timed / plain_time:.2f}x' if timed and plain_time else ''
    if not done:
      lines.append(f'| {label} | {setting} | | {step} | {ratio} | (no '
                   'finished run) | |')
      continue
    per_seed = ', '.join(f'{100 * r[METRIC]:.1f}' for r in done)
    lines.append(
        f'| {label} | {setting} | '
        f'{1000 * done[0]["gmacs_per_example"]:.2f} | {step} | {ratio} | '
        f'{reproduce.pm([100 * r[METRIC] for r in done])} | {per_seed} |')
  lines.append('')
  for name, v in table.items():  # TokenLearner against each, per budget.
    if v.method in (None, 'tokenlearner'):
      continue
    tl = f'tokenlearner_{v.pct}'
    if tl not in table:
      continue
    verdict = reproduce.verdict(reproduce.Claim(tl, name, 'higher', ''),
                                by_seed(runs, tl), by_seed(runs, name))
    lines.append(f'* {table[tl].label} beats {v.label} — {verdict}.')
  for name, v in table.items():  # What skipping the retraining costs.
    if v.offshelf:
      verdict = reproduce.verdict(
          reproduce.Claim('plain_evaluated', name, 'similar', ''),
          by_seed(runs, 'plain_evaluated'), by_seed(runs, name))
      lines.append(f'* {v.label} keeps the plain model\'s mAP — {verdict}.')
  lines += ['', END]
  return '\n'.join(lines)


def parse_args(argv):
  parser = reproduce.study_arguments(__doc__, steps=500)
  parser.add_argument('--budgets', default='50,75',
                      help='Percentages of the plain model\'s MMACs.')
  parser.add_argument('--methods', default=','.join(METHODS),
                      help='Comma-separated, of ' + ', '.join(METHODS) + '.')
  parser.add_argument('--time_steps', default=True,
                      action=argparse.BooleanOptionalAction)
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  budgets = [int(b) for b in args.budgets.split(',')]
  methods = args.methods.split(',')
  unknown = [m for m in methods if m not in METHODS]
  if unknown:
    raise ValueError(f'--methods: unknown {unknown}; known: {METHODS}.')
  table = variants(budgets, args.runlocal, methods, args.set)
  batch = base_config(args.runlocal, args.set).batch_size

  def train(name: str, seed: int, workdir: str) -> List[str]:
    v = table[name]
    return train_command(v.method, v.setting, seed, workdir, args.steps,
                         args.runlocal, args.set)

  def after(root: str, seeds: List[int]) -> Dict[str, int]:
    codes = run_offshelf(root, table, seeds, args.runlocal, args.set)
    if args.time_steps:
      time_steps(table, args.runlocal, os.path.join(root, 'step_times.json'),
                 batch, args.set)
    return codes

  def report(root: str, seeds: List[int], out: str) -> str:
    times = {}
    if os.path.exists(os.path.join(root, 'step_times.json')):
      with open(os.path.join(root, 'step_times.json')) as f:
        times = json.load(f)
    runs = results(root, table, seeds)
    if any(by_seed(runs, n) for n in table):
      plot(table, runs, times,
           os.path.join(out, 'results_reduction_study.png'))
    return section(table, runs, times,
                   reproduce.invocation('reduction_study.py', argv),
                   args.steps, seeds, budgets, batch)

  trained = [name for name, v in table.items() if not v.offshelf]
  return reproduce.run_study(args, trained, train, report, after)


if __name__ == '__main__':
  sys.exit(main())
