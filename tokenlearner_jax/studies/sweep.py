"""A grid of `--config.x=y` overrides, one run each, tabled.

Each point of the grid is one trainer run in `WORKDIR/<point>` through
`runs.run_all` (finished runs of the requested config skipped, interrupted
ones resumed, stale ones set aside and rerun). At the end every
`final_metrics.json` (with its `gmacs_per_example`) is collected into
`WORKDIR/results.csv` and `WORKDIR/results.md`; `--group_over=rng_seed` adds
mean +- std over seeds. `scripts/sweep.py` is its command line.
"""

import argparse
import csv
import itertools
import json
import os
import statistics
from typing import Any, Dict, List, Mapping, Sequence, Tuple

from tokenlearner_jax import errors
from tokenlearner_jax.configs import common
from tokenlearner_jax.studies import launchers
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib
from tokenlearner_jax.studies import study

Point = Dict[str, str]


def parse_grid(items: Sequence[str]) -> List[Tuple[str, List[str]]]:
  """`['a.b=1,2', 'c=x']` -> `[('a.b', ['1', '2']), ('c', ['x'])]`."""
  grid = []
  for item in items:
    key, sep, values = item.partition('=')
    if not sep or not key or not values:
      raise errors.UsageError(f'--grid {item!r}: expected key=v1,v2,...')
    grid.append((key, values.split(',')))
  return grid


def grid_points(grid: Sequence[Tuple[str, List[str]]]) -> List[Point]:
  """The cartesian product of `grid`, in order (the last key varies fastest)."""
  keys = [key for key, _ in grid]
  return [dict(zip(keys, values))
          for values in itertools.product(*(v for _, v in grid))]


def config_sweep(config: str) -> List[Point]:
  """The points of `sweep()` in the config file of `--config` (arg ignored)."""
  path = runs_lib.config_flag(config).split(':')[0]
  module = common.load_module(path)
  if not hasattr(module, 'sweep'):
    raise errors.UsageError(f'{path} has no sweep() function; use --grid.')
  return [{key: str(value) for key, value in point.items()}
          for point in module.sweep()]


def run_name(point: Mapping[str, str]) -> str:
  """A directory name for `point`: 'key=value,key=value'."""
  return ','.join(f'{k}={v}' for k, v in point.items()).replace('/', '_') or (
      'default')


def point_run(root: str, config: str, point: Mapping[str, str],
              fixed: Mapping[str, str]) -> runs_lib.Run:
  """The run of `point` (the `--set` overrides `fixed` first)."""
  return runs_lib.Run(os.path.join(root, run_name(point)), config,
                      {**fixed, **point})


def collect(points: Sequence[Point], runs: Sequence[runs_lib.Run],
            codes: Mapping[str, int],
            records: Mapping[str, runs_lib.Record]) -> List[Dict[str, Any]]:
  """One row per point (`runs[i]` runs `points[i]`): its overrides and its
  final metrics, or a status. `codes`: exit codes of this invocation's runs;
  `records`: the config each run asks for, by workdir. A finished run of
  another config is 'stale', without its metrics."""
  rows = []
  for point, run in zip(points, runs):
    row: Dict[str, Any] = dict(run=run_name(point), **point)
    if run.finished() and runs_lib.differences(
        runs_lib.read_record(run.workdir), records[run.workdir]):
      row['status'] = 'stale'
    elif run.finished():
      with open(run.result) as f:
        row.update(json.load(f))
      row['status'] = 'done'
    elif codes.get(run.result):
      row['status'] = f'failed (exit {codes[run.result]})'
    else:
      row['status'] = 'missing'
    rows.append(row)
  return rows


def group(rows: Sequence[Dict[str, Any]], keys: Sequence[str],
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


def parse_args(argv, doc: str) -> argparse.Namespace:
  parser = argparse.ArgumentParser(
      description=doc.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
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
  parser.add_argument('--launcher', default='local',
                      choices=('local', 'slurm', 'command'),
                      help='Where each point runs (studies.launchers).')
  parser.add_argument('--launch_template', default=None,
                      help="--launcher=command's line, with {cmd}.")
  parser.add_argument('--slurm_nodes', type=int, default=1)
  parser.add_argument('--slurm_tasks_per_node', type=int, default=1,
                      help='Processes per node (per host, or per GPU).')
  parser.add_argument('--slurm_gpus_per_node', type=int, default=0)
  parser.add_argument('--slurm_timeout_min', type=int, default=24 * 60)
  parser.add_argument('--slurm_partition', default=None)
  parser.add_argument('--slurm_cluster', default=None,
                      help="submitit's cluster ('local': its local executor).")
  parser.add_argument('--cancel', action='store_true',
                      help="Cancel the sweep's submitted jobs and exit.")
  return parser.parse_args(argv)


def launcher_of(args: argparse.Namespace) -> Any:
  """The launcher the flags ask for."""
  return launchers.from_flags(
      args.launcher, args.launch_template, nodes=args.slurm_nodes,
      tasks_per_node=args.slurm_tasks_per_node,
      gpus_per_node=args.slurm_gpus_per_node,
      timeout_min=args.slurm_timeout_min, partition=args.slurm_partition,
      cluster=args.slurm_cluster)


def main(argv=None, doc: str = __doc__) -> int:
  """Runs the sweep; exits non-zero if a run failed or a point is stale."""
  args = parse_args(argv, doc)
  points = (config_sweep(args.config) if args.from_config
            else grid_points(parse_grid(args.grid)))
  if not points:
    raise errors.UsageError('No points: give --grid or --from_config.')
  keys = list(dict.fromkeys(k for p in points for k in p))
  if args.group_over and args.group_over not in keys:
    raise errors.UsageError(f'--group_over={args.group_over!r} is not a grid '
                            f'key ({keys}).')
  root = os.path.abspath(args.workdir)
  fixed = study.set_overrides(args.set)
  runs = [point_run(root, args.config, p, fixed) for p in points]
  if args.cancel:
    for run in runs:
      job = launchers.cancel(run.workdir)
      if job:
        print(f'cancelled: {run.name} (job {job})', flush=True)
    return 0
  records = {run.workdir: run.record() for run in runs}
  codes = runs_lib.run_all(runs, args.parallel, records, launcher_of(args))
  rows = collect(points, runs, codes, records)
  columns = list(dict.fromkeys(['run', *keys, 'status'] +
                               [k for r in rows for k in r]))
  with open(os.path.join(root, 'results.csv'), 'w', newline='') as f:
    writer = csv.DictWriter(f, fieldnames=columns)
    writer.writeheader()
    writer.writerows(rows)
  table = report.markdown(rows)
  if args.group_over:
    table += '\n\n' + report.markdown(group(rows, keys, args.group_over))
  with open(os.path.join(root, 'results.md'), 'w') as f:
    f.write(table + '\n')
  print(table)
  failed = [key for key, code in codes.items() if code != 0]
  stale = [row['run'] for row in rows if row['status'] == 'stale']
  return 1 if failed or stale else 0
