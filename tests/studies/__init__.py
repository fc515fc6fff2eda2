"""Tests of `tokenlearner_jax.studies`."""
