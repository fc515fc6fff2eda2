"""Runs a grid of `--config.x=y` overrides, one workdir each, and tables them.

Each point of the grid is one `python -m tokenlearner_jax.train` run in
`WORKDIR/<point>` (its log in `WORKDIR/<point>/train.log`). Before a run
starts, the config it runs with (the config file with its `--config.x=y`
overrides, resolved as the trainer's `--config` flag resolves them) is written
to `WORKDIR/<point>/sweep_point.json`. Finished runs (with a
`final_metrics.json`) whose recorded config is the one requested now are
skipped, and an interrupted one resumes from its last checkpoint, so re-running
the same command after an interruption finishes only what is missing.

A point whose recorded config differs from the requested one (a changed
`--set` or grid value, an edited config file), or that has no record, is
stale: its workdir is moved to `WORKDIR/stale/<point>.<n>` (kept, never
tabled) and the point is rerun from scratch, so the tables only ever hold
results of the config asked for. The keys that differ are printed. A key the
recorded config lacks whose requested value is its default in
`tokenlearner_jax.configs.schema` (a default added since) is no difference.

At the end every `final_metrics.json` (with its `gmacs_per_example`) is
collected into `WORKDIR/results.csv` and `WORKDIR/results.md`;
`--group_over=rng_seed` adds mean +- std over seeds.

  python scripts/sweep.py --config=configs/demo_moving_digits.py \\
      --workdir=/tmp/sweep --grid=model.tokenizer.tokenlearner_loc=0,1,2,3 \\
      --grid=rng_seed=0,1,2 --set=num_training_steps=2000 --parallel=2 \\
      --group_over=rng_seed
  python scripts/sweep.py --config=configs/demo_moving_digits.py \\
      --workdir=/tmp/sweep --from_config   # the grid of the config's sweep()

Exits non-zero if a run failed (the others still run and are tabled).
"""

import argparse
import csv
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import flags
from ml_collections import config_flags

from tokenlearner_jax import run_config
from tokenlearner_jax.configs import common

Point = Dict[str, str]
Record = Dict[str, Any]
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECORD = 'sweep_point.json'


def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[str]]]:
  """`['a.b=1,2', 'c=x']` -> `[('a.b', ['1', '2']), ('c', ['x'])]`."""
  grid = []
  for item in items:
    key, sep, values = item.partition('=')
    if not sep or not key or not values:
      raise ValueError(f'--grid {item!r}: expected key=v1,v2,...')
    grid.append((key, values.split(',')))
  return grid


def grid_points(grid: Sequence[Tuple[str, List[str]]]) -> List[Point]:
  """The cartesian product of `grid`, in order (the last key varies fastest)."""
  keys = [key for key, _ in grid]
  return [dict(zip(keys, values))
          for values in itertools.product(*(v for _, v in grid))]


def config_sweep(config: str) -> List[Point]:
  """The points of `sweep()` in the config file of `--config` (arg ignored)."""
  path = config.split(':')[0]
  module = common.load_module(path)
  if not hasattr(module, 'sweep'):
    raise ValueError(f'{path} has no sweep() function; use --grid.')
  return [{key: str(value) for key, value in point.items()}
          for point in module.sweep()]


def run_name(point: Point) -> str:
  """A directory name for `point`: 'key=value,key=value'."""
  return ','.join(f'{k}={v}' for k, v in point.items()).replace('/', '_') or (
      'default')


def train_command(config: str, workdir: str, point: Point,
                  fixed: Sequence[str]) -> List[str]:
  overrides = [f'--config.{item}' for item in fixed]
  overrides += [f'--config.{key}={value}' for key, value in point.items()]
  return [sys.executable, '-m', 'tokenlearner_jax.train', f'--config={config}',
          f'--workdir={workdir}', *overrides]


def finished(workdir: str) -> bool:
  return os.path.exists(os.path.join(workdir, 'final_metrics.json'))


def resolved_config(config: str, overrides: Sequence[str]) -> Dict[str, Any]:
  """The config the trainer runs with, as JSON: `config` (a `--config` value,
  relative paths from the repository root, the trainer's working directory)
  with `overrides` (`--config.x=y` flags) applied by the same config flag."""
  path, sep, arg = config.partition(':')
  config = os.path.join(ROOT, path) + sep + arg
  argv = ['train', f'--config={config}', *overrides]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values,
                                  lock_config=True, sys_argv=argv)
  flag_values(argv)
  return json.loads(flag_values.config.to_json_best_effort(sort_keys=True))


def point_record(command: Sequence[str]) -> Record:
  """What `RECORD` holds for a train `command`: its `--config` and overrides,
  and the config they resolve to (None, with the error, where they do not
  resolve: the run then fails and says why)."""
  config = next(a for a in command if a.startswith('--config='))
  overrides = [a for a in command if a.startswith('--config.')]
  record: Record = dict(config=config.split('=', 1)[1], overrides=overrides)
  try:
    record['resolved'] = resolved_config(record['config'], overrides)
  except Exception as e:  # pylint: disable=broad-except
    lines = str(e).strip().splitlines() or [type(e).__name__]
    record.update(resolved=None, error=lines[0])
  return record


def read_record(workdir: str) -> Optional[Record]:
  path = os.path.join(workdir, RECORD)
  if not os.path.exists(path):
    return None
  with open(path) as f:
    return json.load(f)


def differences(recorded: Optional[Record], requested: Record) -> List[str]:
  """Why a run recorded as `recorded` is not the run `requested` ([]: it is).

  One 'key: old -> new' per differing config key; a key missing from the
  recorded config is no difference when the requested value is its schema
  default. Configs that do not resolve are compared by their overrides.
  """
  if recorded is None:
    return [f'no {RECORD}: the config it ran with is unknown']
  if recorded.get('resolved') is None or requested['resolved'] is None:
    if (recorded.get('config'), recorded.get('overrides')) == (
        requested['config'], requested['overrides']):
      return []
    return [f'overrides {recorded.get("overrides")} -> '
            f'{requested["overrides"]}']
  changes = run_config.changes(recorded['resolved'], requested['resolved'])
  show = lambda value: value if value == run_config.UNSET else repr(value)
  return [f'{key}: {show(before)} -> {show(after)}'
          for key, (before, after) in changes.items()]


def move_stale(workdir: str) -> str:
  """Moves `workdir` to `<its parent>/stale/<name>.<n>` (the first free n)."""
  stale = os.path.join(os.path.dirname(workdir), 'stale')
  os.makedirs(stale, exist_ok=True)
  n = 1
  while os.path.exists(os.path.join(stale, f'{os.path.basename(workdir)}.{n}')):
    n += 1
  target = os.path.join(stale, f'{os.path.basename(workdir)}.{n}')
  os.rename(workdir, target)
  return target


def set_aside_stale(jobs: List[Tuple[str, List[str]]],
                    records: Dict[str, Record]) -> None:
  """Moves the workdir of each job that was run with another config than
  `records[workdir]` (or has no record) out of the way, saying why."""
  for workdir, _ in jobs:
    if not os.path.isdir(workdir) or not os.listdir(workdir):
      continue
    diffs = differences(read_record(workdir), records[workdir])
    if diffs:
      target = move_stale(workdir)
      print(f'stale: {os.path.basename(workdir)} ran with another config '
            f'({"; ".join(diffs)}); moved to {target}, rerunning.',
            flush=True)


def run_all(jobs: List[Tuple[str, List[str]]], parallel: int,
            records: Optional[Dict[str, Record]] = None) -> Dict[str, int]:
  """Runs `(workdir, command)` jobs, `parallel` at a time; returns exit codes.

  `records`: the config each job runs with, by workdir (default: each
  command's `point_record`). A workdir holding a run of another config (or
  one without a record) is moved aside first (`set_aside_stale`); a finished
  run of the same config is skipped. Each run's record is written to its
  `RECORD` before it starts.
  """
  if records is None:
    records = {workdir: point_record(command) for workdir, command in jobs}
  set_aside_stale(jobs, records)
  waiting = [job for job in jobs if not finished(job[0])]
  print(f'{len(jobs) - len(waiting)} of {len(jobs)} runs already finished; '
        f'running {len(waiting)}, {parallel} at a time.', flush=True)
  running: Dict[str, Tuple[subprocess.Popen, Any, float]] = {}
  codes: Dict[str, int] = {}
  while waiting or running:
    while waiting and len(running) < parallel:
      workdir, command = waiting.pop(0)
      os.makedirs(workdir, exist_ok=True)
      with open(os.path.join(workdir, RECORD), 'w') as f:
        json.dump(records[workdir], f, indent=1, sort_keys=True)
      log = open(os.path.join(workdir, 'train.log'), 'a')
      print(f'start {os.path.basename(workdir)}', flush=True)
      running[workdir] = (subprocess.Popen(command, stdout=log,
                                           stderr=subprocess.STDOUT, cwd=ROOT),
                          log, time.time())
    time.sleep(0.5)
    for workdir, (process, log, start) in list(running.items()):
      if process.poll() is None:
        continue
      log.close()
      codes[workdir] = process.returncode
      status = 'done' if process.returncode == 0 else (
          f'FAILED (exit {process.returncode}, see {workdir}/train.log)')
      print(f'{status}: {os.path.basename(workdir)} in '
            f'{time.time() - start:.0f} s', flush=True)
      del running[workdir]
  return codes


def collect(root: str, points: List[Point], codes: Dict[str, int],
            records: Dict[str, Record]) -> List[Dict[str, Any]]:
  """One row per point: its overrides and its final metrics (or a status).

  `codes`: exit codes of this invocation's runs, by workdir; `records`: the
  config each point asks for, by workdir. A finished run of another config
  is 'stale', without its metrics.
  """
  rows = []
  for point in points:
    workdir = os.path.join(root, run_name(point))
    row: Dict[str, Any] = dict(run=run_name(point), **point)
    if finished(workdir) and differences(read_record(workdir),
                                         records[workdir]):
      row['status'] = 'stale'
    elif finished(workdir):
      with open(os.path.join(workdir, 'final_metrics.json')) as f:
        row.update(json.load(f))
      row['status'] = 'done'
    elif codes.get(workdir):
      row['status'] = f'failed (exit {codes[workdir]})'
    else:
      row['status'] = 'missing'
    rows.append(row)
  return rows


def group(rows: List[Dict[str, Any]], keys: Sequence[str],
          over: str) -> List[Dict[str, Any]]:
  """Mean +- std of every numeric metric over `over`, per other key."""
  groups: Dict[Tuple[str, ...], List[Dict[str, Any]]] = {}
  for row in rows:
    if row['status'] == 'done':
      groups.setdefault(tuple(row[k] for k in keys if k != over),
                        []).append(row)
  out = []
  for values, members in groups.items():
    summary: Dict[str, Any] = dict(zip([k for k in keys if k != over], values))
    summary[f'n ({over})'] = len(members)
    for metric in members[0]:
      numbers = [m[metric] for m in members if isinstance(m.get(metric),
                                                          (int, float))]
      if metric in keys or metric == 'step' or len(numbers) != len(members):
        continue
      std = statistics.stdev(numbers) if len(numbers) > 1 else 0.0
      summary[metric] = f'{statistics.mean(numbers):.4g} ± {std:.2g}'
    out.append(summary)
  return out


def markdown(rows: List[Dict[str, Any]]) -> str:
  if not rows:
    return '(no finished runs)'
  columns = list(dict.fromkeys(k for row in rows for k in row))
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = [f'{v:.4g}' if isinstance(v, float) else str(v)
             for v in (row.get(c, '') for c in columns)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def parse_args(argv):
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--config', required=True,
                      help='configs/<x>.py[:arg], as for the trainer.')
  parser.add_argument('--workdir', required=True,
                      help='One subdirectory per run, and the results.')
  parser.add_argument('--grid', action='append', default=[],
                      help='key=v1,v2,... (repeat for a product).')
  parser.add_argument('--from_config', action='store_true',
                      help="Use the config file's sweep() points.")
  parser.add_argument('--set', action='append', default=[],
                      help='key=value for every run.')
  parser.add_argument('--parallel', type=int, default=1)
  parser.add_argument('--group_over', default='',
                      help='A grid key (e.g. rng_seed) to average over.')
  return parser.parse_args(argv)


def main(argv=None) -> int:
  args = parse_args(argv)
  points = (config_sweep(args.config) if args.from_config
            else grid_points(parse_grid(args.grid)))
  if not points:
    raise ValueError('No points: give --grid or --from_config.')
  root = os.path.abspath(args.workdir)
  jobs = [(os.path.join(root, run_name(p)),
           train_command(args.config, os.path.join(root, run_name(p)), p,
                         args.set)) for p in points]
  records = {workdir: point_record(command) for workdir, command in jobs}
  codes = run_all(jobs, max(args.parallel, 1), records)
  rows = collect(root, points, codes, records)
  keys = list(dict.fromkeys(k for p in points for k in p))
  columns = list(dict.fromkeys(['run', *keys, 'status'] +
                               [k for r in rows for k in r]))
  with open(os.path.join(root, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  table = markdown(rows)
  if args.group_over:
    if args.group_over not in keys:
      raise ValueError(f'--group_over={args.group_over!r} is not a grid key '
                       f'({keys}).')
    table += '\n\n' + markdown(group(rows, keys, args.group_over))
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  failed = [w for w, code in codes.items() if code != 0]
  stale = [row['run'] for row in rows if row['status'] == 'stale']
  return 1 if failed or stale else 0


if __name__ == '__main__':
  sys.exit(main())
