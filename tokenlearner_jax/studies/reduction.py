"""TokenLearner against ToMe, EViT, ATS and PatchMerger at matched compute
(`scripts/reduction_study.py`).

On each of `--datasets` (`DATASETS`), every model with a class token, per
seed (`WORKDIR/<dataset>/<name>_seed<s>`):

* `plain`: no reduction, from scratch.
* `<method>_<pct>`: each method from scratch with its setting closest to
  `pct`% of the plain model's multiply-adds (`matched_setting`), reducing
  in one block; EViT and ATS also as their authors use them, in every block
  from the first they reduce in (`<method>_multi_<pct>`; EViT's own recipe
  is a keep rate of 0.7 at three blocks).
* `<method>_<pct>_ft` and `plain_ft` (`--finetune_steps`, default a quarter
  of the steps; 0: none): the same seed's `plain` run fine-tuned with the
  method on the same schedule (`init_from`, the head copied too, a new module
  initialised); `plain_ft` is the plain model under the same protocol.
* `<method>_<pct>_offshelf` (ToMe and ATS): each seed's `plain` run
  evaluated with the method, without retraining
  (`WORKDIR/<dataset>/offshelf/`), against the same evaluation of the plain
  run as trained; `<method>_<pct>_offshelf_ft` the same of `plain_ft`, so
  that every comparison is between models trained for as many steps.

With `--time_steps` (default on) the train step of every variant trained
from scratch is timed in this process (`tokenlearner_jax.step_timing`) and
kept in `WORKDIR/<dataset>/step_times.json`. Each dataset's table, verdicts
and plot go between its own `<!-- reduction_study_<dataset> -->` markers in
`OUT/results.md`, so that `--datasets` regenerates some of them only.
"""

import argparse
import dataclasses
import functools
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import ml_collections

from tokenlearner_jax import flops
from tokenlearner_jax.models.reduction import ATS_MIN_TOKENS
from tokenlearner_jax.studies import ablations
from tokenlearner_jax.studies import fewshot_location
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib
from tokenlearner_jax.studies import stats
from tokenlearner_jax.studies import study as study_lib

SECTION = 'reduction_study'  # `<SECTION>_<dataset>` per dataset.
LABELS = {'plain': 'no reduction', 'tokenlearner': 'TokenLearner',
          'patchmerger': 'PatchMerger', 'tome': 'ToMe', 'evit': 'EViT',
          'evit_multi': 'EViT every block', 'ats': 'ATS',
          'ats_multi': 'ATS every block'}
METHODS = ('tokenlearner', 'patchmerger', 'tome', 'evit', 'ats')
OFF_THE_SHELF = ('tome', 'ats')
MULTI_BLOCK = ('evit', 'ats')  # Also tried in every block from the first.
# From its authors' minimum (the class token aside).
ATS_SIZES = (ATS_MIN_TOKENS - 1, 8, 12, 16, 24, 32, 48)
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
  """
  name: str
  config: str
  shape: Tuple[int, ...]
  num_classes: int
  metric: str
  metric_label: str
  fixed: Tuple[Tuple[str, Any], ...]
  steps: int
  plot: str


TOKEN = (('model.classifier', 'token'),)
DATASETS = {d.name: d for d in (
    Dataset('multi_digits', fewshot_location.CONFIG, (64, 64, 3), 10,
            'mean_average_precision', 'mAP',
            tuple(fewshot_location.FIXED.items()) + TOKEN, 500,
            'results_reduction_study.png'),
    Dataset('moving_digits', ablations.MOVING, (8, 32, 32, 3), 40,
            'accuracy', 'accuracy', TOKEN, 1000,
            'results_reduction_study_moving_digits.png'),
)}


@dataclasses.dataclass(frozen=True)
class Variant:
  """One row of the comparison.

  Attributes:
    method: A `token_reduction`, or None for the plain model.
    setting: Its tokenizer settings.
    pct: The budget, % of the plain model's multiply-adds (100: plain).
    offshelf: Evaluated on the plain runs, not trained with the method.
    finetuned: Fine-tuned from the plain runs, not trained from scratch
      (with `offshelf`: evaluated on the fine-tuned plain runs).
    multi: Reduces in every block from `tokenlearner_loc` on (EViT, ATS).
  """
  method: Optional[str] = None
  setting: Setting = ()
  pct: int = 100
  offshelf: bool = False
  finetuned: bool = False
  multi: bool = False

  @property
  def key(self) -> str:
    """Its method and recipe, a `LABELS` key."""
    return (self.method or 'plain') + ('_multi' if self.multi else '')

  @property
  def label(self) -> str:
    text = LABELS[self.key]
    if self.offshelf:
      text += ' off the shelf' + (' of plain fine-tuned' if self.finetuned
                                  else '')
    elif self.finetuned:
      text += ' fine-tuned'
    return text if self.method is None else f'{text} @ {self.pct}%'

  @property
  def trained_from_scratch(self) -> bool:
    return not (self.offshelf or self.finetuned)

  @property
  def overrides(self) -> Dict[str, Any]:
    """Its model overrides (the location is the config's argument)."""
    if self.method is None:
      return {}
    return {'model.tokenizer.token_reduction': self.method,
            **{f'model.tokenizer.{k}': v for k, v in self.setting
               if k != 'tokenlearner_loc'}}


def candidates(method: str, num_layers: int,
               multi: bool = False) -> List[Setting]:
  """Every setting of `method` the budget search considers (`multi`: EViT
  or ATS in every block from the first one, at least two blocks)."""
  if multi:
    places = [(('tokenlearner_loc', loc),
               ('pooling_locs', tuple(range(loc + 1, num_layers))))
              for loc in range(1, num_layers - 1)]
  else:
    places = [(('tokenlearner_loc', loc),) for loc in range(1, num_layers)]
  if method in ('tokenlearner', 'patchmerger'):
    return [p + (('num_tokens', s),)
            for p in places for s in (2, 4, 8, 12, 16, 24, 32)]
  if method == 'tome':
    return [(('tokenlearner_loc', 0), ('tome_r', r)) for r in range(1, 33)]
  if method == 'evit':
    return [p + (('keep_rate', k / 10),) for p in places for k in range(1, 10)]
  return [p + (('num_tokens', s),) for p in places for s in ATS_SIZES]


def fixed_overrides(data: Dataset, runlocal: bool) -> Dict[str, Any]:
  """The overrides of every run (runlocal: only the class token)."""
  return dict(TOKEN if runlocal else data.fixed)


def config_of(data: Dataset, loc: Optional[int], runlocal: bool) -> str:
  """The `--config` value of a run with TokenLearner's location `loc`."""
  return (f'{data.config}:tokenlearner_loc={loc}' +
          (',runlocal' if runlocal else ''))


def base_config(runlocal: bool, extra: Mapping[str, Any] = (),
                data: Dataset = DATASETS['multi_digits']
                ) -> ml_collections.ConfigDict:
  """The plain model's config: the fixed and the `extra` overrides applied
  by the trainer's config flag."""
  return runs_lib.resolve(config_of(data, None, runlocal),
                          {**fixed_overrides(data, runlocal), **dict(extra)})


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


def matched_setting(method: str, fraction: float,
                    base: ml_collections.ConfigDict,
                    data: Dataset = DATASETS['multi_digits'],
                    multi: bool = False) -> Optional[Tuple[Setting, float]]:
  """`method`'s setting (`multi`: in every block from the first) whose
  multiply-adds are closest to `fraction` of the plain model's (`base`,
  `base_config`'s), and its GMACs; None without a candidate (`multi` in a
  model of fewer than 3 blocks)."""
  target = fraction * gmacs_of(base, data)
  best = None
  for setting in candidates(method, base.model.num_layers, multi):
    gmacs = gmacs_of(with_setting(base, method, setting), data)
    if best is None or abs(gmacs - target) < abs(best[1] - target):
      best = (setting, gmacs)
  return best


def variants(budgets: Sequence[int], runlocal: bool = False,
             methods: Sequence[str] = METHODS,
             extra: Mapping[str, Any] = (), finetune: bool = False,
             data: Dataset = DATASETS['multi_digits']) -> Dict[str, Variant]:
  """The comparison's rows by name
  (`<method>[_multi]_<pct>[_offshelf][_ft]`)."""
  base = base_config(runlocal, extra, data)
  out = {'plain': Variant()}
  if finetune:
    out['plain_ft'] = Variant(finetuned=True)
  for pct in budgets:
    for method in methods:
      for multi in (False, True) if method in MULTI_BLOCK else (False,):
        matched = matched_setting(method, pct / 100, base, data, multi)
        if matched is None:
          continue
        v = Variant(method, matched[0], pct, multi=multi)
        name = f'{v.key}_{pct}'
        out[name] = v
        if method in OFF_THE_SHELF:
          out[f'{name}_offshelf'] = dataclasses.replace(v, offshelf=True)
        if finetune:
          out[f'{name}_ft'] = dataclasses.replace(v, finetuned=True)
        if finetune and method in OFF_THE_SHELF:
          out[f'{name}_offshelf_ft'] = dataclasses.replace(
              v, offshelf=True, finetuned=True)
  return out


@functools.lru_cache(maxsize=None)
def evaluates_fewshot(data: Dataset) -> bool:
  """Whether `data`'s config evaluates few-shot (then on the runs' schedule
  too); read once per dataset."""
  return 'fewshot' in ablations.load_config(data.config,
                                            'tokenlearner_loc=None')


def model_overrides(variant: Variant, seed: int, runlocal: bool,
                    extra: Mapping[str, Any], data: Dataset,
                    steps: Optional[int] = None) -> Dict[str, Any]:
  """A variant's overrides: the fixed ones, the schedule of `steps` (not
  runlocal), the seed, the method's and `extra`."""
  overrides = fixed_overrides(data, runlocal)
  if steps is not None and not runlocal:
    overrides.update(ablations.schedule(steps, max(1, steps // 10)))
    if evaluates_fewshot(data):
      overrides['fewshot.log_steps'] = steps
  return {**overrides, 'rng_seed': seed, **variant.overrides, **dict(extra)}


def train_run(name: str, variant: Variant, seed: int, root: str, steps: int,
              runlocal: bool, extra: Mapping[str, Any] = (),
              data: Dataset = DATASETS['multi_digits']) -> runs_lib.Run:
  """The run of one trained variant (fine-tuned: from the same seed's plain
  run)."""
  overrides = model_overrides(variant, seed, runlocal, extra, data, steps)
  if variant.finetuned:
    overrides.update({
        'init_from.checkpoint_path': report.run_dir(root, 'plain', seed),
        'init_from.init_missing_from_scratch': True,
        'init_from.restore_output_proj': True})
  return runs_lib.Run(report.run_dir(root, name, seed),
                      config_of(data, dict(variant.setting).get(
                          'tokenlearner_loc'), runlocal), overrides)


def offshelf_path(root: str, name: str, seed: int) -> str:
  return os.path.join(root, 'offshelf', f'{name}_seed{seed}.json')


def eval_run(name: str, variant: Variant, seed: int, root: str,
             runlocal: bool, extra: Mapping[str, Any] = (),
             data: Dataset = DATASETS['multi_digits']) -> runs_lib.Run:
  """The `plain` run of `seed` (finetuned: `plain_ft`) evaluated with
  `variant`'s method (plain: as trained), without retraining."""
  return runs_lib.Run(
      report.run_dir(root, baseline(variant), seed),
      config_of(data, dict(variant.setting).get('tokenlearner_loc'),
                runlocal),
      model_overrides(variant, seed, runlocal, extra, data),
      entry='evaluate', out=offshelf_path(root, name, seed))


def baseline(variant: Variant) -> str:
  """The plain run `variant` is compared with at as many steps: `plain_ft`
  for the fine-tuned variants, else `plain` (off the shelf: the run it
  evaluates; fine-tuned ones all start from `plain`)."""
  return 'plain_ft' if variant.finetuned else 'plain'


def is_baseline(variant: Variant) -> bool:
  """`plain` or `plain_ft`, evaluated as trained beside the off-the-shelf
  variants."""
  return variant.method is None


def plain_finished(root: str, seeds: Sequence[int],
                   name: str = 'plain') -> List[int]:
  """The seeds whose run `name` (`plain` or `plain_ft`) under `root` has
  finished."""
  return [seed for seed in seeds if os.path.exists(os.path.join(
      report.run_dir(root, name, seed), 'final_metrics.json'))]


def finetune_runs(root: str, table: Mapping[str, Variant],
                  seeds: Sequence[int], steps: int, runlocal: bool,
                  extra: Mapping[str, Any], data: Dataset
                  ) -> List[runs_lib.Run]:
  """The fine-tuned variants' runs of the seeds whose plain run has
  finished."""
  return [train_run(name, v, seed, root, steps, runlocal, extra, data)
          for seed in plain_finished(root, seeds)
          for name, v in table.items() if v.finetuned and not v.offshelf]


def offshelf_runs(root: str, table: Mapping[str, Variant],
                  seeds: Sequence[int], runlocal: bool,
                  extra: Mapping[str, Any], data: Dataset
                  ) -> List[runs_lib.Run]:
  """Every finished `plain` and `plain_ft` run evaluated as trained (the
  baselines of the off-the-shelf verdicts) and with each off-the-shelf
  variant."""
  return [eval_run(name, v, seed, root, runlocal, extra, data)
          for name, v in table.items() if v.offshelf or is_baseline(v)
          for seed in plain_finished(root, seeds, baseline(v))]


def time_steps(table: Mapping[str, Variant],
               base: ml_collections.ConfigDict, path: str,
               data: Dataset = DATASETS['multi_digits']) -> None:
  """Median train-step seconds of every variant trained from scratch (the
  others run the same programs) at `base`'s batch (`base_config`'s), in one
  process."""
  from tokenlearner_jax import step_timing  # pylint: disable=g-import-not-at-top
  times = {}
  for name, v in table.items():
    if not v.trained_from_scratch:
      continue
    config = base if v.method is None else with_setting(base, v.method,
                                                        v.setting)
    compiled, state, batch_data, _ = step_timing.compiled_train_step(
        config, data.shape, data.num_classes)
    seconds, _, _ = step_timing.time_steps(compiled, state, batch_data, 2, 10)
    times[name] = sorted(seconds)[len(seconds) // 2]
  with open(path, 'w') as f:
    json.dump(times, f, indent=1)


def results(root: str, table: Mapping[str, Variant],
            seeds: Sequence[int]) -> report.Runs:
  """Final metrics of the trained variants, the off-the-shelf evaluations
  (and the plain runs', as 'plain_evaluated' and 'plain_ft_evaluated')."""
  runs = report.final_metrics(
      root, [n for n, v in table.items() if not v.offshelf], seeds)
  for name, v in table.items():
    if v.offshelf or is_baseline(v):
      key = name if v.offshelf else f'{name}_evaluated'
      runs[key] = report.read_metrics(
          {seed: offshelf_path(root, name, seed) for seed in seeds})
  return runs


def describe(variant: Variant) -> str:
  if variant.method is None:
    return '64 tokens throughout'
  setting = dict(variant.setting)
  loc, again = setting.pop('tokenlearner_loc'), setting.pop('pooling_locs', ())
  where = f'blocks {loc} to {again[-1]}' if again else f'loc={loc}'
  return ', '.join([where, *(f'{k}={v}' for k, v in setting.items())])


def timed_name(name: str) -> str:
  """The variant trained from scratch whose program `name` runs."""
  return name.replace('_offshelf', '').replace('_ft', '')


def plot(table: Mapping[str, Variant], runs: report.Runs,
         times: Mapping[str, float], path: str, data: Dataset) -> None:
  """The metric against MMACs and against the measured step time."""
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  colors = dict(zip(LABELS, pyplot.rcParams['axes.prop_cycle'].by_key()[
      'color']))
  markers = {'off the shelf': 's', 'off the shelf of plain fine-tuned': 'D',
             'fine-tuned': '^', 'from scratch': 'o'}
  by_macs, by_time, labelled = [], [], set()
  for name, v in table.items():
    values = tuple(report.by_seed(runs, name, data.metric).values())
    if not values:
      continue
    key = v.key
    kind = ('off the shelf of plain fine-tuned' if v.offshelf and v.finetuned
            else 'off the shelf' if v.offshelf else
            'fine-tuned' if v.finetuned else 'from scratch')
    label = f'{LABELS[key]} ({kind})'
    style = (('fmt', markers[kind]), ('capsize', 3), ('color', colors[key]),
             ('mfc', 'none' if v.offshelf else colors[key]))
    by_macs.append(report.Point(None if label in labelled else label,
                                1000 * runs[name][0]['gmacs_per_example'],
                                values, style))
    labelled.add(label)
    if timed_name(name) in times:
      by_time.append(report.Point(None, 1000 * times[timed_name(name)],
                                  values, style))
  report.plot(path, [
      (f'MMACs per {"clip" if len(data.shape) == 4 else "image"}', by_macs),
      ('train step (ms, this machine)', by_time)],
              f'test {data.metric_label} (%), mean ± std over seeds',
              'TokenLearner and the later token-reduction methods on '
              f'{data.name}', seeds=False, legend_right=True)


def claims(table: Mapping[str, Variant]) -> List[stats.Claim]:
  """The verdicts, each between models trained for as many steps:
  TokenLearner against each method at each budget, from scratch against
  from scratch and off the shelf of `plain`, fine-tuned against fine-tuned
  and off the shelf of `plain_ft`; each off-the-shelf variant against the
  same plain run's evaluation."""
  out = []
  for name, v in table.items():
    tl = f'tokenlearner_{v.pct}' + ('_ft' if v.finetuned else '')
    if v.method not in (None, 'tokenlearner') and tl in table:
      out.append(stats.Claim(tl, name, 'higher'))
  out += [stats.Claim(f'{baseline(v)}_evaluated', n, 'similar')
          for n, v in table.items() if v.offshelf]
  return out


def table_lines(table: Mapping[str, Variant], runs: report.Runs,
                times: Mapping[str, float], data: Dataset) -> List[str]:
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
    row = f'| {v.label} | {describe(v)} |'
    if not done:
      lines.append(f'{row} | {step} | {ratio} | (no finished run) | |')
      continue
    values = report.percent([r[data.metric] for r in done])
    lines.append(f'{row} {1000 * done[0]["gmacs_per_example"]:.2f} | {step} '
                 f'| {ratio} | {stats.pm(values)} | '
                 f'{", ".join(f"{x:.1f}" for x in values)} |')
  lines.append('')
  listed = claims(table)
  for claim in listed:
    first, second = ((claim.b, claim.a) if claim.relation == 'similar' else
                     (claim.a, claim.b))  # The method named first.
    verdict = stats.verdict(claim,
                            report.by_seed(runs, first, data.metric),
                            report.by_seed(runs, second, data.metric))
    if claim.relation == 'similar':
      plain = 'fine-tuned plain' if table[first].finetuned else 'plain'
      lines.append(f'* {table[first].label} keeps the {plain} model\'s '
                   f'{label} — {verdict}.')
    else:
      lines.append(f'* {table[first].label} beats {table[second].label} '
                   f'— {verdict}.')
  lines += ['', report.verdict_note(len(listed))]
  return lines


@dataclasses.dataclass(frozen=True)
class Part:
  """One dataset's share of the study.

  Attributes:
    data: The dataset.
    base: The plain model's config (`base_config`).
    table: Its variants by name.
    steps: Steps from scratch.
    finetune_steps: Steps of the fine-tuned variants (0: none).
  """
  data: Dataset
  base: ml_collections.ConfigDict
  table: Mapping[str, Variant]
  steps: int
  finetune_steps: int


def section(part: Part, root: str, out: str, invocation: str,
            seeds: Sequence[int], budgets: Sequence[int]) -> str:
  """One dataset's results.md section, markers included (its plot written to
  `out`)."""
  data, table, batch = part.data, part.table, part.base.batch_size
  folder = os.path.join(root, data.name)
  times = {}
  if os.path.exists(os.path.join(folder, 'step_times.json')):
    with open(os.path.join(folder, 'step_times.json')) as f:
      times = json.load(f)
  runs = results(folder, table, seeds)
  plotted = any(report.by_seed(runs, n, data.metric) for n in table)
  if plotted:
    plot(table, runs, times, os.path.join(out, data.plot), data)
  finetuned = (f' and fine-tuned for {part.finetune_steps} more'
               if part.finetune_steps else '')
  lines = [f'### {data.name}', '', f'Regenerate: `{invocation}`', '',
           *([f'![{data.name}]({data.plot})', ''] if plotted else []),
           f'Seeds {", ".join(map(str, seeds))}; budgets '
           f'{" and ".join(map(str, budgets))}% of the plain model\'s '
           f'multiply-adds. Trained from scratch for {part.steps} steps of '
           f'{batch}{finetuned}, tested by {data.metric_label}.', '',
           *table_lines(table, runs, times, data)]
  return report.section(f'{SECTION}_{data.name}', lines)


def parse_args(argv):
  parser = study_lib.arguments(__doc__, steps=None)
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


def main(argv=None) -> int:
  args = parse_args(argv)
  budgets = [int(b) for b in args.budgets.split(',')]
  methods, names = args.methods.split(','), args.datasets.split(',')
  study_lib.check_choices('methods', methods, METHODS)
  study_lib.check_choices('datasets', names, DATASETS)
  extra = study_lib.set_overrides(args.set)
  parts = []
  for data in (DATASETS[n] for n in names):
    steps = args.steps or data.steps
    ft_steps = (steps // 4 if args.finetune_steps is None
                else args.finetune_steps)
    parts.append(Part(data, base_config(args.runlocal, extra, data),
                      variants(budgets, args.runlocal, methods, extra,
                               ft_steps > 0, data), steps, ft_steps))

  def folder(root: str, part: Part) -> str:
    return os.path.join(root, part.data.name)

  def from_scratch(root: str, seeds: List[int]) -> List[runs_lib.Run]:
    return [train_run(name, v, seed, folder(root, p), p.steps, args.runlocal,
                      extra, p.data)
            for seed in seeds for p in parts
            for name, v in p.table.items() if v.trained_from_scratch]

  def finetuned(root: str, seeds: List[int]) -> List[runs_lib.Run]:
    return [run for p in parts for run in finetune_runs(
        folder(root, p), p.table, seeds, p.finetune_steps, args.runlocal,
        extra, p.data)]

  def offshelf(root: str, seeds: List[int]) -> List[runs_lib.Run]:
    if args.time_steps:  # In this process, between the stages.
      for p in parts:
        time_steps(p.table, p.base,
                   os.path.join(folder(root, p), 'step_times.json'), p.data)
    return [run for p in parts for run in offshelf_runs(
        folder(root, p), p.table, seeds, args.runlocal, extra, p.data)]

  def write(root: str, seeds: List[int], out: str) -> List[str]:
    return [section(p, root, out,
                    study_lib.invocation('reduction_study.py', argv), seeds,
                    budgets) for p in parts]

  return study_lib.run(args, [from_scratch, finetuned, offshelf], write)
