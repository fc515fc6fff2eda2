"""Tests of `scripts/` (loaded with `tests.testing.load_script`)."""
