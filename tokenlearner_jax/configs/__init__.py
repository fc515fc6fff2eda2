"""Helpers for the config files in `configs/` (big_vision's configs/common).

`common` holds the ViT sizes, `model_config`, `parse_arg`, `trainer_defaults`
and `load_config`, the one loader of config files; `kinetics` the Kinetics
ViViT + TokenLearner config that `configs/vivit_k400.py` and
`configs/vivit_k600.py` call.
"""
