"""studies.stats: paired verdicts."""

from absl.testing import absltest

from tokenlearner_jax.studies import stats


class VerdictTest(absltest.TestCase):

  def test_verdicts_pair_seeds(self):
    higher = stats.Claim('a', 'b', 'higher', 'x')
    similar = stats.Claim('a', 'b', 'similar', 'x')
    seeds = lambda *v: dict(enumerate(v))  # pylint: disable=unnecessary-lambda-assignment
    # Seeds move both alike (seed 2 is easy): paired, +5, +4, +4 is clear.
    self.assertEqual(
        stats.verdict(higher, seeds(0.40, 0.39, 0.45),
                      seeds(0.35, 0.35, 0.41)),
        'agrees (d = +4.3 points, 95% interval [+2.9, +5.8] over 3 seeds)')
    for claim, a, b, word in (
        (higher, (0.35, 0.35, 0.41), (0.40, 0.39, 0.45), 'disagrees'),
        (higher, (0.40, 0.30, 0.45), (0.35, 0.35, 0.41), 'cannot tell'),
        (similar, (0.400, 0.391, 0.452), (0.401, 0.390, 0.450), 'agrees'),
        (similar, (0.40, 0.39, 0.45), (0.35, 0.35, 0.41), 'disagrees'),
        (similar, (0.40, 0.30, 0.45), (0.40, 0.35, 0.41), 'cannot tell')):
      self.assertStartsWith(stats.verdict(claim, seeds(*a), seeds(*b)), word)
    # Only seeds both have count; one is not enough.
    self.assertEqual(stats.verdict(higher, {0: 0.6, 1: 0.6}, {1: 0.5}),
                     'not enough seeds')

  def test_a_relation_is_higher_or_similar(self):
    with self.assertRaisesRegex(ValueError, "'lower'"):
      stats.Claim('a', 'b', 'lower')


if __name__ == '__main__':
  absltest.main()
