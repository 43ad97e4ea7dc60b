"""Config files: loading a user's Python config (`path.py` or `path.py:arg`) outside absl, as config_flags
does, and the JSON copy of a config that workdirs and weights folders carry (data, never executed)."""

from __future__ import annotations

import importlib.util
import json
import pathlib
from typing import NoReturn

import ml_collections

from effnetx_jax.errors import UserError


def load_config(spec: str) -> ml_collections.ConfigDict:
    """Runs `get_config()` (or `get_config(arg)` for `path.py:arg`) of a config file."""
    path, _, arg = spec.partition(":")
    if not pathlib.Path(path).is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist")
    module_spec = importlib.util.spec_from_file_location(pathlib.Path(path).stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise UserError(f"config file {path!r} defines no get_config()")
    return module.get_config(arg) if arg else module.get_config()


# The JSON copy's name in a train.py workdir and in a converted weights folder.
CONFIG_JSON = "config.json"


def to_json(config: ml_collections.ConfigDict) -> str:
    """`config` as the JSON text of `CONFIG_JSON`: how a train.py workdir and a converted weights folder
    describe their model and its preprocessing."""
    return config.to_json_best_effort(indent=2) + "\n"


def read_json(path: str) -> ml_collections.ConfigDict:
    """The config `to_json` wrote, read as data (nothing in it is executed); JSON arrays become the
    tuples the configs hold (block strings, mean and std)."""
    with open(path) as file:
        return ml_collections.ConfigDict(_tuples(json.load(file)))


def _tuples(value):
    if isinstance(value, dict):
        return {key: _tuples(item) for key, item in value.items()}
    if isinstance(value, list):
        return tuple(_tuples(item) for item in value)
    return value


def config_error(key: str, reason: str) -> UserError:
    """The error for a bad experiment or trainer config key: `config.<key>: <reason>`."""
    return UserError(f"config.{key}: {reason}")


def fail(key: str, reason: str) -> NoReturn:
    """Raises `config_error(key, reason)`: config checks stop at the first bad key."""
    raise config_error(key, reason)


def require_keys(config: ml_collections.ConfigDict, keys, example: str) -> None:
    """Raises `config_error` for the first dotted key missing from `config`, pointing at a complete `example`."""
    for key in keys:
        section = config
        for part in key.split("."):
            if not isinstance(section, ml_collections.ConfigDict) or part not in section:
                raise config_error(key, f"missing; see {example} for every key")
            section = section[part]


def model_section(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The model config inside a full (trainer) config, or the config itself if it is one."""
    return config.model if "model" in config else config


def render_config(config: ml_collections.ConfigDict, docstring: str) -> str:
    """Python source of a config file whose `get_config()` returns `config` as literal values.

    Unset fields keep their type (`placeholder(int)`), so `--config.total_steps=...` still works on
    the command line. Tools that write configs (LACS, search) use this: the file needs nothing but
    ml_collections to load, and a later edit of the repository's configs does not change it.
    """
    body = _render_section(config, indent=1)
    return (
        f'"""{docstring.strip()}\n"""\n\n'
        "import ml_collections\n"
        "from ml_collections.config_dict import placeholder\n\n\n"
        f"def get_config():\n    return {body}\n"
    )


def _render_section(config: ml_collections.ConfigDict, indent: int) -> str:
    pad = "    " * (indent + 1)
    lines = []
    for key in config:
        value = config[key]
        if isinstance(value, ml_collections.ConfigDict):
            text = _render_section(value, indent + 1)
        elif value is None:
            text = f"placeholder({config.get_ref(key).get_type().__name__})"
        else:
            text = repr(value)
        lines.append(f"{pad}{key!r}: {text},")
    return "ml_collections.ConfigDict({\n" + "\n".join(lines) + "\n" + pad[:-4] + "})"
