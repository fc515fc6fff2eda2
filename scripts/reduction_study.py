r"""TokenLearner against ToMe, EViT, ATS and PatchMerger at matched compute.

  python scripts/reduction_study.py --workdir=/tmp/reduction_study --out=docs
  python scripts/reduction_study.py --workdir=/tmp/reduction_study \
      --out=docs --report_only   # the tables from the runs finished so far

On each of `--datasets` (`DATASETS`: `multi_digits` images on the few-shot
study's narrowed ViT, `moving_digits` clips on the demo's ViViT; both with a
class token, by which EViT and ATS rank tokens), trained for the dataset's
steps (`--steps` for all) per seed and tested by its metric (mAP, accuracy).
Variants (`WORKDIR/<dataset>/<name>_seed<s>`, through `scripts/sweep.py`'s
runner: finished runs are skipped):

* `plain`: no reduction, from scratch.
* `<method>_<pct>`: each method trained from scratch with its setting closest
  to `pct`% of the plain model's multiply-adds (`--budgets`, default 50 and
  75; `matched_setting` searches each method's settings with
  `tokenlearner_jax.flops`).
* `<method>_<pct>_ft` and `plain_ft` (`--finetune_steps`, default a quarter
  of the steps; 0: none): the same seed's `plain` run fine-tuned for that
  many steps with the method and the same schedule (`init_from`, the head
  copied too, any new module initialised); `plain_ft` is the plain model
  under the same protocol.
* `<method>_<pct>_offshelf` (ToMe and ATS, whose selling point this is):
  each seed's `plain` run evaluated with the method at that budget, without
  retraining (`python -m tokenlearner_jax.evaluate` with the method's
  overrides; `WORKDIR/<dataset>/offshelf/`).

With `--time_steps` (default on), the train step of every variant is timed in
this process (`scripts/benchmark.py`'s functions, the study's batch) and
kept in `WORKDIR/<dataset>/step_times.json`. Then it writes, between
`<!-- reduction_study -->` markers in `OUT/results.md`, a table per dataset
(setting, MMACs, step time against the plain model's, metric mean +- std over
seeds, per seed), TokenLearner against each method at each budget and
training on differences paired by seed (`reproduce.verdict`), and
`OUT/results_reduction_study[_<dataset>].png` (the metric against MMACs and
against step time). Exits non-zero if a run failed.
"""

import argparse
import dataclasses
import functools
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

BEGIN, END = '<!-- reduction_study -->', '<!-- /reduction_study -->'
LABELS = {'plain': 'no reduction', 'tokenlearner': 'TokenLearner',
          'patchmerger': 'PatchMerger', 'tome': 'ToMe', 'evit': 'EViT',
          'ats': 'ATS'}
METHODS = ('tokenlearner', 'patchmerger', 'tome', 'evit', 'ats')
OFF_THE_SHELF = ('tome', 'ats')
Setting = Tuple[Tuple[str, Any], ...]  # (tokenizer key, value) pairs.


@dataclasses.dataclass(frozen=True)
class Dataset:
  """One dataset of the comparison, with its model.

  Attributes:
    name: The `--datasets` key and the runs' folder under the workdir.
    config: The config file (its `tokenlearner_loc=None` form is the plain
      model).
    shape: One example's shape.
    num_classes: Its classes.
    metric: The final-metrics key compared.
    metric_label: The metric's name in tables.
    fixed: Overrides of every run but the runlocal ones.
    steps: Training steps from scratch (`--steps` overrides).
    plot: The plot's file name under `--out`.
    model: The model, in words, for the report.
  """
  name: str
  config: str
  shape: Tuple[int, ...]
  num_classes: int
  metric: str
  metric_label: str
  fixed: Tuple[str, ...]
  steps: int
  plot: str
  model: str


DATASETS = {d.name: d for d in (
    Dataset('multi_digits', fewshot_location.CONFIG, (64, 64, 3), 10,
            'mean_average_precision', 'mAP',
            (*fewshot_location.FIXED, 'model.classifier=token'), 500,
            'results_reduction_study.png',
            'the few-shot study\'s ViT (width 64, 4 blocks, 4 heads, 64 '
            'tokens of 64x64 images), multi-label over 10 digit classes'),
    Dataset('moving_digits', reproduce.MOVING, (8, 32, 32, 3), 40,
            'accuracy', 'accuracy', ('model.classifier=token',), 1000,
            'results_reduction_study_moving_digits.png',
            'the demo\'s ViViT (width 64, 4 blocks, 64 tubelets of 8-frame '
            '32x32 clips), 40 classes of digit and motion'),
)}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the comparison.

  Attributes:
    method: A `token_reduction`, or None for the plain model.
    setting: Its tokenizer settings.
    pct: The budget, % of the plain model's multiply-adds (100: plain).
    offshelf: Evaluated on the plain runs, not trained with the method.
    finetuned: Fine-tuned from the plain runs, not trained from scratch.
  """
  method: Optional[str] = None
  setting: Setting = ()
  pct: int = 100
  offshelf: bool = False
  finetuned: bool = False

  @property
  def label(self) -> str:
    text = LABELS[self.method or 'plain']
    text += ' off the shelf' if self.offshelf else ''
    text += ' fine-tuned' if self.finetuned else ''
    return text if self.method is None else f'{text} @ {self.pct}%'

  @property
  def trained_from_scratch(self) -> bool:
    return not (self.offshelf or self.finetuned)


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


def fixed_overrides(data: Dataset, runlocal: bool) -> Tuple[str, ...]:
  """The overrides of every run (runlocal: only the class token)."""
  return ('model.classifier=token',) if runlocal else data.fixed


def base_config(runlocal: bool, extra: Sequence[str] = (),
                data: Dataset = DATASETS['multi_digits']
                ) -> ml_collections.ConfigDict:
  """The plain model's config: the fixed and the `extra` `key=value`
  overrides applied by the trainer's config flag (`sweep.resolved_config`)."""
  arg = 'tokenlearner_loc=None' + (',runlocal' if runlocal else '')
  items = fixed_overrides(data, runlocal) + tuple(extra)
  return ml_collections.ConfigDict(sweep.resolved_config(
      f'{data.config}:{arg}', [f'--config.{item}' for item in items]))


def with_setting(config: ml_collections.ConfigDict, method: str,
                 setting: Setting) -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict(config.to_dict())
  config.model.tokenizer.token_reduction = method
  for key, value in setting:
    config.model.tokenizer[key] = value
  return config


def gmacs_of(config: ml_collections.ConfigDict,
             data: Dataset = DATASETS['multi_digits']) -> float:
  return flops.gmacs(config, data.shape, data.num_classes)


def matched_setting(method: str, fraction: float, runlocal: bool = False,
                    extra: Sequence[str] = (),
                    data: Dataset = DATASETS['multi_digits']
                    ) -> Tuple[Setting, float]:
  """`method`'s setting whose multiply-adds are closest to `fraction` of the
  plain model's, and its GMACs."""
  base = base_config(runlocal, extra, data)
  target = fraction * gmacs_of(base, data)
  best = None
  for setting in candidates(method, base.model.num_layers):
    gmacs = gmacs_of(with_setting(base, method, setting), data)
    if best is None or abs(gmacs - target) < abs(best[1] - target):
      best = (setting, gmacs)
  return best


def variants(budgets: Sequence[int], runlocal: bool = False,
             methods: Sequence[str] = METHODS,
             extra: Sequence[str] = (), finetune: bool = False,
             data: Dataset = DATASETS['multi_digits']) -> Dict[str, Variant]:
  """The comparison's rows by name (`<method>_<pct>[_offshelf|_ft]`)."""
  out = {'plain': Variant()}
  if finetune:
    out['plain_ft'] = Variant(finetuned=True)
  for pct in budgets:
    for method in methods:
      setting, _ = matched_setting(method, pct / 100, runlocal, extra, data)
      out[f'{method}_{pct}'] = Variant(method, setting, pct)
      if method in OFF_THE_SHELF:
        out[f'{method}_{pct}_offshelf'] = Variant(method, setting, pct, True)
      if finetune:
        out[f'{method}_{pct}_ft'] = Variant(method, setting, pct,
                                            finetuned=True)
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


def config_path(data: Dataset, setting: Setting, runlocal: bool) -> str:
  """The `--config` value of a variant's runs."""
  return os.path.join(sweep.ROOT,
                      f'{data.config}:{config_arg(setting, runlocal)}')


def model_overrides(method, setting, seed: int, runlocal: bool,
                    extra: Sequence[str],
                    data: Dataset = DATASETS['multi_digits']) -> List[str]:
  """A variant's `key=value` overrides of the config file's model."""
  return [*fixed_overrides(data, runlocal), f'rng_seed={seed}',
          *overrides(method, setting), *extra]


@functools.lru_cache(maxsize=None)
def evaluates_fewshot(data: Dataset) -> bool:
  """Whether `data`'s config evaluates few-shot (then on the runs' schedule
  too); read once per dataset."""
  return 'fewshot' in reproduce.load_config(data.config,
                                            'tokenlearner_loc=None')


def train_command(method, setting, seed: int, workdir: str, steps: int,
                  runlocal: bool, extra: Sequence[str] = (),
                  data: Dataset = DATASETS['multi_digits'],
                  init_from: Optional[str] = None) -> List[str]:
  """The train command of one trained variant's run (`init_from`: the run
  it fine-tunes)."""
  fixed = model_overrides(method, setting, seed, runlocal, extra, data)
  if not runlocal:
    schedule = [f'num_training_steps={steps}', f'log_eval_steps={steps}',
                f'checkpoint_steps={steps}']
    if evaluates_fewshot(data):
      schedule.append(f'fewshot.log_steps={steps}')
    schedule.append(f'lr_configs.warmup_steps={max(1, steps // 10)}')
    fixed[len(data.fixed):len(data.fixed)] = schedule
  if init_from:
    fixed += [f'init_from.checkpoint_path={init_from}',
              'init_from.init_missing_from_scratch=True',
              'init_from.restore_output_proj=True']
  return sweep.train_command(config_path(data, setting, runlocal), workdir,
                             {}, fixed)


def eval_command(method, setting, seed: int, plain_dir: str, out: str,
                 runlocal: bool, extra: Sequence[str] = (),
                 data: Dataset = DATASETS['multi_digits']) -> List[str]:
  """Evaluates the `plain` run of `seed` with `method` (None: as trained)
  and no retraining, writing `out`."""
  command = sweep.train_command(
      config_path(data, setting, runlocal), plain_dir, {},
      model_overrides(method, setting, seed, runlocal, extra, data))
  command[2] = 'tokenlearner_jax.evaluate'
  return command + [f'--out={out}']


def offshelf_path(root: str, name: str, seed: int) -> str:
  return os.path.join(root, 'offshelf', f'{name}_seed{seed}.json')


def finetune_jobs(root: str, table, seeds, steps: int, runlocal: bool,
                  extra: Sequence[str], data: Dataset
                  ) -> List[Tuple[str, List[str]]]:
  """The fine-tuned variants' `(workdir, command)` jobs of the seeds whose
  plain run has finished."""
  jobs = []
  for seed in seeds:
    plain = os.path.join(root, f'plain_seed{seed}')
    for name, v in table.items():
      if v.finetuned and sweep.finished(plain):
        workdir = os.path.join(root, f'{name}_seed{seed}')
        jobs.append((workdir, train_command(
            v.method, v.setting, seed, workdir, steps, runlocal, extra, data,
            init_from=plain)))
  return jobs


def run_offshelf(root: str, table, seeds, runlocal: bool,
                 extra: Sequence[str],
                 data: Dataset = DATASETS['multi_digits']) -> Dict[str, int]:
  """Evaluates every finished plain run as trained (`plain`, the baseline
  of the off-the-shelf verdicts: the same evaluation) and with each
  off-the-shelf variant."""
  codes = {}
  os.makedirs(os.path.join(root, 'offshelf'), exist_ok=True)
  for name, v in table.items():
    for seed in seeds if v.offshelf or v == Variant() else ():
      out = offshelf_path(root, name, seed)
      plain = os.path.join(root, f'plain_seed{seed}')
      if os.path.exists(out) or not sweep.finished(plain):
        continue
      command = eval_command(v.method, v.setting, seed, plain, out, runlocal,
                             extra, data)
      with open(out + '.log', 'w') as log:
        codes[out] = subprocess.call(command, stdout=log,
                                     stderr=subprocess.STDOUT, cwd=sweep.ROOT)
      print(f'{"done" if codes[out] == 0 else "FAILED"}: {data.name} {name} '
            f'seed {seed}', flush=True)
  return codes


def time_steps(table, runlocal: bool, path: str, batch: int,
               extra: Sequence[str] = (),
               data: Dataset = DATASETS['multi_digits']) -> None:
  """Median train-step seconds of every variant trained from scratch (the
  others run the same programs), in one process."""
  import benchmark  # pylint: disable=g-import-not-at-top
  times = {}
  base = base_config(runlocal, extra, data)
  base.batch_size = batch
  for name, v in table.items():
    if not v.trained_from_scratch:
      continue
    config = base if v.method is None else with_setting(base, v.method,
                                                        v.setting)
    compiled, state, batch_data, _ = benchmark.compiled_train_step(
        config, data.shape, data.num_classes)
    seconds, _, _ = benchmark.time_steps(compiled, state, batch_data, 2, 10)
    times[name] = sorted(seconds)[len(seconds) // 2]
  with open(path, 'w') as f:
    json.dump(times, f, indent=1)


def results(root: str, table, seeds) -> Dict[str, List[dict]]:
  runs = reproduce.final_metrics(
      root, [n for n, v in table.items() if not v.offshelf], seeds)
  for name, v in table.items():
    if v.offshelf or v == Variant():
      key = name if v.offshelf else f'{name}_evaluated'
      runs[key] = []
      for seed in seeds:
        path = offshelf_path(root, name, seed)
        if os.path.exists(path):
          with open(path) as f:
            runs[key].append(dict(json.load(f), seed=seed))
  return runs


def by_seed(runs, name, metric: str = 'mean_average_precision'
            ) -> Dict[int, float]:
  return {r['seed']: r[metric] for r in runs.get(name, []) if metric in r}


def describe(method: Optional[str], setting: Setting) -> str:
  if method is None:
    return '64 tokens throughout'
  return ', '.join(f'{k.replace("tokenlearner_loc", "loc")}={v}'
                   for k, v in setting)


def timed_name(name: str) -> str:
  """The variant trained from scratch whose program `name` runs."""
  return name.replace('_offshelf', '').replace('_ft', '')


def plot(table, runs, times, path: str, data: Dataset) -> None:
  """The metric against MMACs and against the measured step time."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  figure, (by_macs, by_time) = pyplot.subplots(1, 2, figsize=(13, 4.2))
  colors = dict(zip(['plain', *METHODS], pyplot.rcParams[
      'axes.prop_cycle'].by_key()['color']))
  labelled = set()
  for name, v in table.items():
    values = [100 * x for x in by_seed(runs, name, data.metric).values()]
    if not values:
      continue
    mean, std = reproduce.mean_std(values)
    key = v.method or 'plain'
    kind = ('off the shelf' if v.offshelf else
            'fine-tuned' if v.finetuned else 'from scratch')
    label = f'{LABELS[key]} ({kind})'
    style = dict(fmt={'off the shelf': 's', 'fine-tuned': '^'}.get(kind, 'o'),
                 capsize=3, color=colors[key],
                 mfc='none' if v.offshelf else colors[key],
                 label=None if label in labelled else label)
    labelled.add(label)
    error = 0 if math.isnan(std) else std
    by_macs.errorbar(1000 * runs[name][0]['gmacs_per_example'], mean,
                     yerr=error, **style)
    if timed_name(name) in times:
      style['label'] = None
      by_time.errorbar(1000 * times[timed_name(name)], mean, yerr=error,
                       **style)
  by_macs.set_xlabel(f'MMACs per {"clip" if len(data.shape) == 4 else "image"}')
  by_time.set_xlabel('train step (ms, this machine)')
  for axes in (by_macs, by_time):
    axes.set_ylabel(f'test {data.metric_label} (%), mean ± std over seeds')
    axes.grid(alpha=0.3)
  figure.legend(fontsize=7, loc='center right')
  figure.suptitle('TokenLearner and the later token-reduction methods on '
                  f'{data.name}')
  figure.tight_layout(rect=(0, 0, 0.82, 1))
  figure.savefig(path, dpi=100)
  pyplot.close(figure)


def claims(table) -> List[Tuple[str, str, str]]:
  """(a, b, relation) of the verdicts: TokenLearner against each method at
  each budget, trained alike and against the off-the-shelf ones; each
  off-the-shelf variant against the plain model's evaluation."""
  out = []
  for name, v in table.items():
    if v.method in (None, 'tokenlearner'):
      continue
    for suffix in ('', '_ft'):
      tl = f'tokenlearner_{v.pct}{suffix}'
      if tl in table and (v.offshelf or table[tl].finetuned == v.finetuned):
        out.append((tl, name, 'higher'))
  out += [('plain_evaluated', n, 'similar') for n, v in table.items()
          if v.offshelf]
  return out


def table_lines(table, runs, times, data: Dataset) -> List[str]:
  """The dataset's table and verdicts."""
  plain_time = times.get('plain')
  label = data.metric_label
  lines = [f'| variant | setting | MMACs | step (ms) | vs plain | {label} (%) '
           '| per seed |', '|---|---|---|---|---|---|---|']
  for name, v in table.items():
    done = [r for r in runs.get(name, []) if data.metric in r]
    timed = times.get(timed_name(name))
    step = f'{1000 * timed:.1f}' if timed else ''
    ratio = f'{timed / plain_time:.2f}x' if timed and plain_time else ''
    row = f'| {v.label} | {describe(v.method, v.setting)} |'
    if not done:
      lines.append(f'{row} | {step} | {ratio} | (no finished run) | |')
      continue
    values = [100 * r[data.metric] for r in done]
    lines.append(f'{row} {1000 * done[0]["gmacs_per_example"]:.2f} | {step} '
                 f'| {ratio} | {reproduce.pm(values)} | '
                 f'{", ".join(f"{x:.1f}" for x in values)} |')
  lines.append('')
  for a, b, relation in claims(table):
    verdict = reproduce.verdict(reproduce.Claim(a, b, relation, ''),
                                by_seed(runs, a, data.metric),
                                by_seed(runs, b, data.metric))
    if relation == 'similar':
      lines.append(f'* {table[b].label} keeps the plain model\'s {label} — '
                   f'{verdict}.')
    else:
      lines.append(f'* {table[a].label} beats {table[b].label} — {verdict}.')
  return lines


def section(parts, invocation: str, seeds: Sequence[int],
            budgets: Sequence[int]) -> str:
  """The results.md section, markers included; `parts`: (dataset, table,
  runs, times, steps, finetune_steps, batch) per dataset."""
  lines = [
      BEGIN, '## TokenLearner against ToMe, EViT, ATS and PatchMerger', '',
      f'Regenerate: `{invocation}`', '',
      'Each model has a class token (EViT and ATS rank tokens by its '
      f'attention) and is trained once per seed ({", ".join(map(str, seeds))};'
      ' a seed fixes the initialisation and the data order). Each method '
      'takes its setting closest to '
      f'{" and ".join(map(str, budgets))}% of the plain model\'s '
      'multiply-adds (the MMACs column shows how close). "Fine-tuned" starts '
      'from the same seed\'s plain run (every parameter copied, the head '
      'too; a new module, TokenLearner\'s or PatchMerger\'s, initialised) '
      'and trains with the method on the same schedule, warm-up included; '
      '"no reduction fine-tuned" is the plain model under the same '
      'protocol (fine-tuned rows have had those steps more than the others: '
      'compare them with it). "Off the shelf" evaluates the same seed\'s plain run with '
      'the method and no retraining, against the same evaluation of the '
      'plain run as trained. Step times are medians of 10 train steps of '
      'every variant measured in one process, with the ratio to the plain '
      'model\'s (fine-tuned and off the shelf run the same programs). '
      'Differences are paired by seed with a 95% Student-t interval.']
  for data, table, runs, times, steps, ft_steps, batch in parts:
    plot_line = (f'![{data.name}]({data.plot})' if any(
        by_seed(runs, n, data.metric) for n in table) else '')
    finetuned = (f' and fine-tuned for {ft_steps} more' if ft_steps else '')
    lines += ['', f'### {data.name}', '', plot_line, '',
              f'{data.model[0].upper()}{data.model[1:]}; trained from '
              f'scratch for {steps} steps of {batch}{finetuned}, tested by '
              f'{data.metric_label}.', '',
              *table_lines(table, runs, times, data)]
  lines += ['', END]
  return '\n'.join(lines)


def parse_args(argv):
  parser = reproduce.study_arguments(__doc__, steps=0)
  parser.set_defaults(steps=None)
  parser.add_argument('--datasets', default=','.join(DATASETS),
                      help='Comma-separated, of ' + ', '.join(DATASETS) +
                      '; --steps (default: each dataset\'s) for all.')
  parser.add_argument('--budgets', default='50,75',
                      help='Percentages of the plain model\'s MMACs.')
  parser.add_argument('--methods', default=','.join(METHODS),
                      help='Comma-separated, of ' + ', '.join(METHODS) + '.')
  parser.add_argument('--finetune_steps', type=int, default=None,
                      help='Steps of the fine-tuned variants (default: a '
                      'quarter of the steps; 0: none).')
  parser.add_argument('--time_steps', default=True,
                      action=argparse.BooleanOptionalAction)
  return parser.parse_args(argv)


def check_choices(flag: str, values: Sequence[str], known) -> None:
  unknown = [v for v in values if v not in known]
  if unknown:
    raise ValueError(f'--{flag}: unknown {unknown}; known: {list(known)}.')


def main(argv=None) -> int:
  args = parse_args(argv)
  budgets = [int(b) for b in args.budgets.split(',')]
  methods, names = args.methods.split(','), args.datasets.split(',')
  check_choices('methods', methods, METHODS)
  check_choices('datasets', names, DATASETS)
  setups = {}  # Dataset name -> (dataset, table, steps, fine-tuning steps).
  for data in (DATASETS[n] for n in names):
    steps = args.steps or data.steps
    ft_steps = (steps // 4 if args.finetune_steps is None
                else args.finetune_steps)
    table = variants(budgets, args.runlocal, methods, args.set, ft_steps > 0,
                     data)
    setups[data.name] = (data, table, steps, ft_steps)

  def train(name: str, seed: int, workdir: str) -> List[str]:
    data, table, steps, _ = setups[name.split('/')[0]]
    v = table[name.split('/')[1]]
    return train_command(v.method, v.setting, seed, workdir, steps,
                         args.runlocal, args.set, data)

  def after(root: str, seeds: List[int]) -> Dict[str, int]:
    codes = {}
    jobs = []
    for data, table, _, ft_steps in setups.values():
      jobs += finetune_jobs(os.path.join(root, data.name), table, seeds,
                            ft_steps, args.runlocal, args.set, data)
    codes.update(sweep.run_all(jobs, max(args.parallel, 1)))
    for data, table, _, _ in setups.values():
      folder = os.path.join(root, data.name)
      codes.update(run_offshelf(folder, table, seeds, args.runlocal,
                                args.set, data))
      if args.time_steps:
        time_steps(table, args.runlocal,
                   os.path.join(folder, 'step_times.json'),
                   base_config(args.runlocal, args.set, data).batch_size,
                   args.set, data)
    return codes

  def report(root: str, seeds: List[int], out: str) -> str:
    parts = []
    for data, table, steps, ft_steps in setups.values():
      folder = os.path.join(root, data.name)
      times = {}
      if os.path.exists(os.path.join(folder, 'step_times.json')):
        with open(os.path.join(folder, 'step_times.json')) as f:
          times = json.load(f)
      runs = results(folder, table, seeds)
      if any(by_seed(runs, n, data.metric) for n in table):
        plot(table, runs, times, os.path.join(out, data.plot), data)
      batch = base_config(args.runlocal, args.set, data).batch_size
      parts.append((data, table, runs, times, steps, ft_steps, batch))
    return section(parts, reproduce.invocation('reduction_study.py', argv),
                   seeds, budgets)

  trained = [f'{n}/{name}' for n, (_, table, _, _) in setups.items()
             for name, v in table.items() if v.trained_from_scratch]
  return reproduce.run_study(args, trained, train, report, after)


if __name__ == '__main__':
  sys.exit(main())
