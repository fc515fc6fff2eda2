"""What a study reads from its runs and writes: final metrics by seed,
tables, plots, and sections of a results file between markers."""

import dataclasses
import json
import math
import os
import re
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from tokenlearner_jax.studies import stats

Runs = Dict[str, List[Dict[str, Any]]]  # Name -> final metrics with 'seed'.


def run_dir(root: str, name: str, seed: int) -> str:
  """Where a study's run of `name` with `seed` lives."""
  return os.path.join(root, f'{name}_seed{seed}')


def read_metrics(paths: Mapping[int, str]) -> List[Dict[str, Any]]:
  """The metrics JSON files among `paths` (seed -> path) that exist, each
  with its 'seed'."""
  out = []
  for seed, path in paths.items():
    if os.path.exists(path):
      with open(path) as f:
        out.append(dict(json.load(f), seed=seed))
  return out


def final_metrics(root: str, names: Sequence[str],
                  seeds: Sequence[int]) -> Runs:
  """The final metrics of each finished run `root/<name>_seed<s>`."""
  return {name: read_metrics({
      seed: os.path.join(run_dir(root, name, seed), 'final_metrics.json')
      for seed in seeds}) for name in names}


def by_seed(runs: Runs, name: str, metric: str) -> Dict[int, float]:
  """`metric` of `name`'s finished runs, by seed."""
  return {r['seed']: r[metric] for r in runs.get(name, []) if metric in r}


def percent(values: Sequence[float]) -> List[float]:
  return [100 * v for v in values]


def per_seed(values: Sequence[float]) -> str:
  """Fractions as comma-separated percentages."""
  return ', '.join(f'{100 * v:.1f}' for v in values)


def markdown(rows: Sequence[Mapping[str, Any]]) -> str:
  """A markdown table of `rows` (columns: every key, in first-seen order)."""
  if not rows:
    return '(no finished runs)'
  columns = list(dict.fromkeys(k for row in rows for k in row))
  lines = ['| ' + ' | '.join(columns) + ' |', '|' + '---|' * len(columns)]
  for row in rows:
    cells = [f'{v:.4g}' if isinstance(v, float) else str(v)
             for v in (row.get(c, '') for c in columns)]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def claim_line(claim: stats.Claim, label_a: str, label_b: str,
               runs: Runs, metric: str, prefix: str = '') -> str:
  """'A beats B — <verdict>' (or 'is similar to') for `metric`."""
  relation = 'beats' if claim.relation == 'higher' else 'is similar to'
  verdict = stats.verdict(claim, by_seed(runs, claim.a, metric),
                          by_seed(runs, claim.b, metric))
  return f'{prefix}{label_a} {relation} {label_b} — {verdict}'


def verdict_note(count: int) -> str:
  """What the verdicts above it mean together: the sign of d and how many
  of `count` 95% intervals would exclude 0 by chance alone."""
  sign = "(d: the first-named model's score minus the second's, per seed, in "
  if count == 1:
    return (sign + 'points. With no true difference a 95% interval excludes 0 '
            'by chance one time in 20.)')
  return (sign + f'points. {count} verdicts at 95% each, not corrected for '
          'multiple comparisons: with no true difference about '
          f'{count / 20:.1f} of them would exclude 0 by chance alone.)')


def heading(title: str, invocation: str, setting: str,
            plot: Optional[Tuple[str, str]] = None) -> List[str]:
  """A section's first lines: its title, the command that regenerates it,
  its plot ((alt text, file)) and its setting in one sentence."""
  return [f'## {title}', '', f'Regenerate: `{invocation}`', '',
          *([f'![{plot[0]}]({plot[1]})', ''] if plot else []), setting, '']


def seeds_and_interval(seeds: Sequence[int]) -> str:
  """'seed (0, 1, 2); with 3 seeds the 95% interval's half-width is 4.3
  standard errors.'"""
  return (f'seed ({", ".join(map(str, seeds))}); with {len(seeds)} seeds the '
          f'95% interval\'s half-width is {stats.t_factor(len(seeds)):.1f} '
          'standard errors.')


def section(name: str, lines: Sequence[str]) -> str:
  """`lines` between the markers of section `name`."""
  return '\n'.join([f'<!-- {name} -->', *lines, f'<!-- /{name} -->'])


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


@dataclasses.dataclass(frozen=True)
class Point:
  """One variant in a plot: its seeds' scores (fractions) at `x`.

  Attributes:
    label: Legend entry (None: none, e.g. a repeated one).
    x: Position on the x axis.
    values: One score per seed.
    style: More `errorbar` arguments (fmt, color, mfc).
  """
  label: Optional[str]
  x: float
  values: Tuple[float, ...]
  style: Tuple[Tuple[str, Any], ...] = ()


def plot(path: str, panels: Sequence[Tuple[str, Sequence[Point]]],
         ylabel: str, title: str, seeds: bool = True,
         xticks: Optional[Tuple[Sequence[float], Sequence[str]]] = None,
         legend_right: bool = False) -> None:
  """Mean +- std over seeds (and each seed, if `seeds`) of each point, one
  panel per (x label, points); `xticks` for the first panel."""
  import matplotlib  # pylint: disable=g-import-not-at-top
  matplotlib.use('Agg')
  from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
  width = {1: 6.4, 2: 10.0}.get(len(panels), 6.5 * len(panels))
  figure, axes_list = pyplot.subplots(
      1, len(panels), figsize=(width + 3 * legend_right, 4.2), squeeze=False)
  for axes, (xlabel, points) in zip(axes_list[0], panels):
    for point in points:
      values = percent(point.values)
      mean, std = stats.mean_std(values)
      style = {'fmt': 'o', 'capsize': 4, **dict(point.style)}
      bar = axes.errorbar(point.x, mean, yerr=0 if math.isnan(std) else std,
                          label=point.label, **style)
      if seeds:
        axes.scatter([point.x] * len(values), values, s=12, marker='x',
                     color=bar[0].get_color(), alpha=0.6)
    axes.set_xlabel(xlabel)
    axes.set_ylabel(ylabel)
    axes.grid(alpha=0.3)
  if xticks:
    axes_list[0][0].set_xticks(*xticks)
  if legend_right:
    figure.legend(fontsize=7, loc='center right')
  else:
    axes_list[0][-1].legend(fontsize=8)
  if len(panels) > 1:
    figure.suptitle(title)
  else:
    axes_list[0][0].set_title(title)
  figure.tight_layout(rect=(0, 0, 0.82, 1) if legend_right else None)
  figure.savefig(path, dpi=100)
  pyplot.close(figure)
