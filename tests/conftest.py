"""Test-wide JAX settings: compile fast (the tests compile many tiny models)."""

import jax

jax.config.update('jax_disable_most_optimizations', True)
