"""Test-wide settings: compile fast (the tests compile many tiny models), and
let absltest helpers (`create_tempdir`) run under pytest."""

from absl import flags
import jax

jax.config.update('jax_disable_most_optimizations', True)
flags.FLAGS.mark_as_parsed()
