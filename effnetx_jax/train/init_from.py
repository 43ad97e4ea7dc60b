"""Starting a run from pretrained weights (`config.init_from`), e.g. to fine-tune on another dataset.

Every model variable is loaded except those whose path (`params/classifier/kernel`,
`batch_stats/head_bn/mean`, ...) matches the regular expression `config.init_exclude`: those keep
their fresh initialisation (a new classifier for another number of classes). Parameters and their
EMA both start from the loaded values; the optimizer state starts fresh.
"""

from __future__ import annotations

import os
import re

import jax
import numpy as np

from effnetx_jax import config_files, weights
from effnetx_jax.train import sharding

# The train-state fields filled from the pretrained variables.
_TARGETS = {"params": ("params", "ema_params"), "batch_stats": ("batch_stats", "ema_batch_stats")}


def _key(path) -> str:
    return jax.tree_util.keystr(path, simple=True, separator="/")


def _flat(tree) -> dict[str, object]:
    return {_key(path): leaf for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _exclusion(config):
    pattern = config.get("init_exclude") or ""
    try:
        return re.compile(pattern) if pattern else None
    except re.error as error:
        raise config_files.config_error("init_exclude", f"{pattern!r} is not a regular expression: {error}") from None


def read_pretrained(config, abstract_state) -> dict[str, np.ndarray]:
    """The variables `config.init_from` provides for this model, as `{"params/...": value}`, checked
    against `abstract_state` (shapes only, nothing computed). Raises `UserError` naming the first
    variable that is missing or has another shape, and suggesting `config.init_exclude`."""
    directory = config.init_from
    if not os.path.isdir(directory):
        config_files.fail("init_from", f"{directory!r} is not a directory")
    exclude = _exclusion(config)
    try:
        source = _flat(weights.read_variables(directory))
    except FileNotFoundError as error:
        raise config_files.config_error("init_from", str(error)) from None
    expected = _flat({collection: getattr(abstract_state, collection) for collection in _TARGETS})
    loaded = {}
    for key, leaf in expected.items():
        if exclude and exclude.search(key):
            continue
        if key not in source:
            config_files.fail(
                "init_from",
                f"{directory} has no {key}; it was saved from another architecture "
                "(exclude such variables with config.init_exclude, a regular expression)",
            )
        if tuple(source[key].shape) != tuple(leaf.shape):
            config_files.fail(
                "init_from",
                f"{key} has shape {list(source[key].shape)} in {directory} but {list(leaf.shape)} "
                f"in this model; to keep it freshly initialised (e.g. a new classifier), set "
                f"config.init_exclude to a regular expression that matches it, such as {key.split('/')[1]!r}",
            )
        loaded[key] = source[key]
    return loaded


def initialize(state, pretrained: dict[str, np.ndarray]):
    """`state` with the pretrained values (from `read_pretrained`) in its params, batch_stats and their EMAs,
    each placed like the array it replaces (every process holds the whole value, as it read the files)."""

    def leaf_value(path, leaf):
        key = _key(path)
        return sharding.global_array(pretrained[key], leaf) if key in pretrained else leaf

    updates = {}
    for collection, fields in _TARGETS.items():
        for field in fields:
            # Under the collection's name, the paths are read_pretrained's keys.
            wrapped = {collection: getattr(state, field)}
            updates[field] = jax.tree_util.tree_map_with_path(leaf_value, wrapped)[collection]
    return state.replace(**updates)
