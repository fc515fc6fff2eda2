"""The flags and the flow every miniature study shares.

A study trains its runs in stages (a stage's runs may depend on an earlier
stage's finished runs: fine-tuning after pre-training), unless
`--report_only`, then writes its sections between markers in
`OUT/results.md` (the rest of the file kept) and prints them.
"""

import argparse
import dataclasses
import os
import sys
import time
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from tokenlearner_jax import errors
from tokenlearner_jax.studies import report
from tokenlearner_jax.studies import runs as runs_lib

Stage = Callable[[str, List[int]], Sequence[runs_lib.Run]]
Report = Callable[[str, List[int], str], Sequence[str]]


def arguments(doc: str, steps: Optional[int], seeds: str = '0,1,2',
              parallel: int = 1) -> argparse.ArgumentParser:
  """The flags every study takes (add its own to it)."""
  parser = argparse.ArgumentParser(
      description=doc.split('\n')[0],
      formatter_class=argparse.RawDescriptionHelpFormatter, epilog=doc)
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


def set_overrides(items: Sequence[str]) -> Dict[str, str]:
  """`--set key=value` flags as overrides."""
  out = {}
  for item in items:
    key, sep, value = item.partition('=')
    if not sep or not key:
      raise errors.UsageError(f'--set {item!r}: expected key=value.')
    out[key] = value
  return out


def check_choices(flag: str, values: Sequence[str], known) -> None:
  unknown = [v for v in values if v not in known]
  if unknown:
    raise errors.UsageError(
        f'--{flag}: unknown {unknown}; known: {list(known)}.')


def invocation(script: str, argv: Optional[Sequence[str]]) -> str:
  """The command that regenerates a report (without --report_only)."""
  args = argv if argv is not None else sys.argv[1:]
  return ' '.join([f'python scripts/{script}'] + [
      a for a in args if not a.startswith('--report_only')])


def run(args: argparse.Namespace, stages: Sequence[Stage],
        sections: Report) -> int:
  """Trains each stage's runs in turn (`--parallel` at a time) unless
  --report_only, then writes each of `sections(root, seeds, out)` (which may
  write plots to `out`) between its markers in `OUT/results.md` and prints
  them. Returns 1 if a run failed, else 0."""
  seeds = [int(s) for s in args.seeds.split(',')]
  root = os.path.abspath(args.workdir)
  out = args.out or root
  os.makedirs(out, exist_ok=True)
  codes: Dict[str, int] = {}
  if not args.report_only:
    start = time.time()
    for stage in stages:
      codes.update(runs_lib.run_all(stage(root, seeds), args.parallel))
    print(f'Done in {time.time() - start:.0f} s.', flush=True)
  for text in sections(root, seeds, out):
    report.write_section(os.path.join(out, 'results.md'), text)
    print(text)
  return 1 if any(code != 0 for code in codes.values()) else 0


@dataclasses.dataclass(frozen=True)
class Grid:
  """A study of named variants, each trained once per seed in one stage.

  Attributes:
    script: Its `scripts/` file (for the regenerate line).
    doc: Its description (`--help`).
    flag: The flag that picks some of `names` (e.g. 'rows').
    names: Its variants, in table order.
    metric: The final-metrics key it compares.
    steps: Default `--steps`.
    seeds: Default `--seeds`.
    run: (name, seed, root, steps, runlocal, `--set` overrides) -> its run.
    plot: (runs, path) -> None; `plot_file` under `--out`.
    plot_file: The plot's file name.
    section: (runs, regenerate command, steps, seeds) -> its section.
  """
  script: str
  doc: str
  flag: str
  names: Sequence[str]
  metric: str
  steps: int
  seeds: str
  run: Callable[..., runs_lib.Run]
  plot: Callable[[Mapping[str, Any], str], None]
  plot_file: str
  section: Callable[..., str]


def grid_main(grid: Grid, argv: Optional[Sequence[str]] = None) -> int:
  """The command line of `grid`: trains the picked variants for each seed,
  then writes its section and plot."""
  parser = arguments(grid.doc, steps=grid.steps, seeds=grid.seeds)
  parser.add_argument(f'--{grid.flag}', default=','.join(grid.names))
  args = parser.parse_args(argv)
  names = getattr(args, grid.flag).split(',')
  check_choices(grid.flag, names, grid.names)
  extra = set_overrides(args.set)

  def stage(root: str, seeds: List[int]) -> List[runs_lib.Run]:
    return [grid.run(name, seed, root, args.steps, args.runlocal, extra)
            for seed in seeds for name in names]

  def write(root: str, seeds: List[int], out: str) -> List[str]:
    runs = report.final_metrics(root, grid.names, seeds)
    if any(report.by_seed(runs, n, grid.metric) for n in grid.names):
      grid.plot(runs, os.path.join(out, grid.plot_file))
    return [grid.section(runs, invocation(grid.script, argv), args.steps,
                         seeds)]

  return run(args, [stage], write)
