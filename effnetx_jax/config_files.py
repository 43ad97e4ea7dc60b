"""Loading ml-collections config files outside absl (`path.py` or `path.py:arg`), as config_flags does."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Runs `get_config()` (or `get_config(arg)` for `path.py:arg`) of a config file."""
    path, _, arg = spec.partition(":")
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


def model_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model config inside a full (trainer) config, or the config itself if it is one."""
    return config.model if "model" in config else config
