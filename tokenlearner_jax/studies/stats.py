"""Claims of the paper and their verdicts on runs paired by seed."""

import dataclasses
import math
import statistics
from typing import Dict, Optional, Sequence, Tuple

import scipy.stats

from tokenlearner_jax import paper

# Points within which a 'similar' claim holds.
SIMILAR = 2.0
RELATIONS = ('higher', 'similar')


@dataclasses.dataclass(frozen=True)
class Claim:
  """A claim of the paper, as a comparison of two variants.

  Attributes:
    a: The variant the paper favours (or calls similar to `b`).
    b: The variant it is compared with.
    relation: 'higher' (a beats b) or 'similar' (within about a point).
    source: Where the paper says it, with its numbers.
  """
  a: str
  b: str
  relation: str
  source: str = ''

  def __post_init__(self):
    if self.relation not in RELATIONS:
      raise ValueError(f'Claim.relation={self.relation!r}: one of '
                       f'{RELATIONS}.')


def from_paper(a: str, b: str, relation: str, table: str, row_a: str,
               row_b: str, gflops: bool = False) -> Claim:
  """A claim whose source is two rows of `tokenlearner_jax.paper` (`table`,
  named `row_a` and `row_b`): their accuracies, and GFLOPs if `gflops`."""
  first, second = paper.find(row_a, table), paper.find(row_b, table)
  text = (f'{table}, {paper.METRICS[table]}: "{first.name}" {first.accuracy} '
          f'vs "{second.name}" {second.accuracy}')
  if gflops:
    text += f', at {first.gflops} vs {second.gflops} GFLOPs'
  return Claim(a, b, relation, text)


# The location figure's claims, in the variant names of both location
# studies (`ablations`, `fewshot_location`): TokenLearner (8 tokens) before
# block 0, 6 and 9 of ViT-B/16's 12, or none.
_FIGURE = 'location fig.'
LOCATION_CLAIMS = (
    from_paper('tl8_at05', 'no_tl', 'similar', _FIGURE,
               'B/16 @224, 8-TL at 6', 'ViT-B/16 @224', gflops=True),
    from_paper('tl8_at075', 'no_tl', 'higher', _FIGURE,
               'B/16 @224, 8-TL at 9', 'ViT-B/16 @224'),
    from_paper('tl8_at05', 'tl8_at0', 'higher', _FIGURE,
               'B/16 @224, 8-TL at 6', 'B/16 @224, 8-TL at 0'),
)


def mean_std(values: Sequence[float]) -> Tuple[float, float]:
  """Mean and sample standard deviation (NaN for one value)."""
  std = statistics.stdev(values) if len(values) > 1 else float('nan')
  return statistics.mean(values), std


def pm(values: Sequence[float]) -> str:
  """'mean ± std' of `values` (just the mean for one value)."""
  mean, std = mean_std(values)
  return f'{mean:.1f}' if math.isnan(std) else f'{mean:.1f} ± {std:.1f}'


def t_factor(n: int) -> float:
  """The 95% Student-t factor of a mean of `n` values (n >= 2)."""
  return scipy.stats.t.ppf(0.975, max(n - 1, 1))


def paired_interval(a: Dict[int, float], b: Dict[int, float]
                    ) -> Optional[Tuple[float, float, float, int]]:
  """(d, low, high, n): the mean per-seed difference of `a` and `b`
  (fractions, by seed) in points, its 95% Student-t interval, and the number
  of seeds both have; None under two seeds."""
  seeds = sorted(set(a) & set(b))
  if len(seeds) < 2:
    return None
  diffs = [100 * (a[s] - b[s]) for s in seeds]
  d = statistics.mean(diffs)
  half = t_factor(len(diffs)) * statistics.stdev(diffs) / math.sqrt(
      len(diffs))
  return d, d - half, d + half, len(diffs)


def verdict(claim: Claim, a: Dict[int, float], b: Dict[int, float]) -> str:
  """Whether scores `a` and `b` (fractions, by seed) bear `claim`.

  Paired by seed: a seed fixes the data order and augmentation (the same
  batches for every variant), so d is the mean over seeds of the per-seed
  difference, in points, with a 95% Student-t interval. 'higher' agrees when
  the interval lies above 0, disagrees when below, else cannot tell;
  'similar' agrees when it lies within +-SIMILAR points, disagrees when it
  excludes 0 and |d| > SIMILAR, else cannot tell.
  """
  paired = paired_interval(a, b)
  if paired is None:
    return 'not enough seeds'
  d, low, high, n = paired
  figure = (f'd = {d:+.1f} points, 95% interval [{low:+.1f}, {high:+.1f}] '
            f'over {n} seeds')
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
