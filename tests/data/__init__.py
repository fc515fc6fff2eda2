"""Tests of `tokenlearner_jax.data`: input pipelines and demo datasets."""
