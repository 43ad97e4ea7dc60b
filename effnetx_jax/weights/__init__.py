"""Model weights on disk, for inference, fine-tuning and export: `load(DIR)` and what it is built on.

The package: this module (weights folders), `convert` (TF checkpoints and timm weights to a folder),
`predict` (classes of image files) and `export` (StableHLO, SavedModel and ONNX artifacts to serve).

Two kinds of directory hold weights:
- a converted checkpoint (`effnetx-convert`): `DIR/config.json` (a trainer config with the
  variant's preprocessing), `DIR/variables/` (an orbax checkpoint of `{"params", "batch_stats"}`) and
  `DIR/conversion.json` (where the weights came from);
- a train.py workdir: `DIR/config.json` and `DIR/checkpoints/<step>/state`, of which only the EMA (or the
  raw) parameters and BatchNorm statistics are read, never the optimizer state.

Loading weights executes nothing: both are read as data (JSON and orbax arrays), so a weights folder
from elsewhere cannot run code, whatever files it holds. Folders converted before config.json existed
carry a Python `config.py` instead; they are refused with the command that re-converts them.
"""

from __future__ import annotations

import contextlib
import json
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp

from effnetx_jax import config_files, recipe
from effnetx_jax.errors import UserError
from effnetx_jax.models import EfficientNet, create_model

CONFIG_FILE = config_files.CONFIG_JSON
# What converted folders held before config.json: Python, which loading never runs.
LEGACY_CONFIG_FILE = "config.py"
VARIABLES_DIR = "variables"
REPORT_FILE = "conversion.json"
# Which train-state fields hold the weights a user asks for: the moving average (what the reference
# evaluates) or the trained weights themselves.
STATE_FIELDS = {"ema": ("ema_params", "ema_batch_stats"), "raw": ("params", "batch_stats")}


def is_converted(directory: str) -> bool:
    """Whether `directory` is a converted checkpoint (rather than a train.py workdir): it has `variables/`,
    or the `conversion.json` that only a conversion writes (whose `variables/` is then missing)."""
    return any(os.path.exists(os.path.join(directory, name)) for name in (VARIABLES_DIR, REPORT_FILE))


def read_config(directory: str) -> ml_collections.ConfigDict:
    """The trainer config stored with the weights, `config.json` of a converted checkpoint or of a train.py
    workdir, read as data; keys added since it was written get the values that keep its model as it was."""
    path = os.path.join(directory, CONFIG_FILE)
    if os.path.isfile(path):
        return recipe.with_added_keys(config_files.read_json(path))
    if is_converted(directory) and os.path.isfile(os.path.join(directory, LEGACY_CONFIG_FILE)):
        raise UserError(
            f"{directory} was converted by an earlier effnetx_jax: it describes its model in "
            f"{LEGACY_CONFIG_FILE}, Python that loading weights never runs. Convert the weights again "
            f"into a new folder ({_reconvert_command(directory)}); it will hold {CONFIG_FILE} instead"
        )
    raise FileNotFoundError(
        f"{directory} holds no weights: expected a converted checkpoint ({CONFIG_FILE} and {VARIABLES_DIR}/, "
        f"written by effnetx-convert) or a train.py workdir ({CONFIG_FILE} and checkpoints/)"
    )


def _reconvert_command(directory: str) -> str:
    """`effnetx-convert ...` for the source that `conversion.json` names, read as data."""
    try:
        with open(os.path.join(directory, REPORT_FILE)) as file:
            report = json.load(file)
        source, kind = report["source"], report["format"]
    except (OSError, ValueError, KeyError, TypeError):
        return "effnetx-convert tf|timm SOURCE --model=NAME --out=NEW_DIR"
    return f"effnetx-convert {kind} {source} --model=NAME --out=NEW_DIR"


def read_variables(directory: str, *, weights: str = "ema", step: int | None = None) -> dict:
    """`{"params", "batch_stats"}` as numpy arrays on the host.

    A converted checkpoint holds one set of weights (the source's EMA when it had one). In a train.py
    workdir `weights` picks the EMA ("ema") or the trained weights ("raw") of checkpoint `step`
    (default: the newest readable one; a damaged `step` is refused).
    """
    if weights not in STATE_FIELDS:
        raise UserError(f"weights must be one of {', '.join(STATE_FIELDS)}, got {weights!r}")
    if is_converted(directory):
        if step is not None or weights != "ema":
            raise UserError(
                f"{directory} is a converted checkpoint: it holds one set of weights, with no steps and no raw/EMA "
                "choice; leave step and weights at their defaults"
            )
        return _restore_numpy(_variables_dir(directory), {"params": "params", "batch_stats": "batch_stats"})
    from effnetx_jax.train.checkpoints import Checkpoints

    params_field, stats_field = STATE_FIELDS[weights]

    def read(step: int) -> dict:
        state = os.path.join(checkpoints.directory, str(step), "state")
        return _restore_numpy(state, {"params": params_field, "batch_stats": stats_field})

    with contextlib.closing(Checkpoints(directory, read_only=True)) as checkpoints:
        checkpoints.resolve_step(step)  # no checkpoint at all, or no such step
        return checkpoints.newest(read).value if step is None else checkpoints.read(step, read)


def _variables_dir(directory: str) -> str:
    """`directory/variables`, refused naming the folder when it is missing or empty (an interrupted
    conversion, a partial copy), with the command that converts the weights again."""
    path = os.path.join(directory, VARIABLES_DIR)
    if not os.path.isdir(path):
        problem = f"has no {VARIABLES_DIR}/"
    elif not os.listdir(path):
        problem = f"has an empty {VARIABLES_DIR}/"
    else:
        return path
    raise UserError(
        f"{directory} is an incomplete converted checkpoint: it {problem} (the weights; an interrupted conversion "
        f"or a partial copy?). Convert the weights again into a new folder ({_reconvert_command(directory)})"
    )


def load(
    directory: str, *, weights: str = "ema", step: int | None = None, dtype: str = "float32"
) -> tuple[EfficientNet, dict]:
    """`model, variables = load(DIR)`; then `model.apply(variables, images, train=False)` gives logits.

    `images`: NHWC float32 at the model's resolution, normalised as the variant expects
    (`(x - config.data.mean) / config.data.std`, see `read_config(DIR)`). `dtype` is the compute dtype
    ("float32" by default, whatever the run trained with); parameters stay float32.
    """
    config = read_config(directory)
    model_cfg = config.model.copy_and_resolve_references()
    model_cfg.dtype = dtype
    variables = read_variables(directory, weights=weights, step=step)
    return create_model(model_cfg), jax.tree.map(jax.numpy.asarray, variables)


def save_converted(directory: str, config: ml_collections.ConfigDict, variables: dict, report: dict) -> None:
    """Writes a converted checkpoint: `config.json`, `variables/` and `conversion.json` (see the module doc)."""
    directory = os.path.abspath(directory)
    if os.path.exists(os.path.join(directory, VARIABLES_DIR)):
        raise FileExistsError(f"{directory} already holds a converted checkpoint; choose another --out or remove it")
    # Serialised before anything is written: a config that cannot be written leaves no half checkpoint.
    config_json = config_files.to_json(config)
    os.makedirs(directory, exist_ok=True)
    checkpointer = ocp.PyTreeCheckpointer()
    checkpointer.save(
        os.path.join(directory, VARIABLES_DIR), {key: variables[key] for key in ("params", "batch_stats")}
    )
    with open(os.path.join(directory, CONFIG_FILE), "w") as file:
        file.write(config_json)
    with open(os.path.join(directory, REPORT_FILE), "w") as file:
        json.dump(report, file, indent=2)
        file.write("\n")


def _restore_numpy(path: str, fields: dict[str, str]) -> dict:
    """The top-level entries `fields.values()` of the orbax tree at `path`, renamed to `fields.keys()`,
    as numpy arrays; the other entries (an optimizer state) are not read."""
    path = os.path.abspath(path)  # orbax reads relative paths as no checkpoint at all
    checkpointer = ocp.PyTreeCheckpointer()
    metadata = checkpointer.metadata(path).item_metadata
    if metadata is None:  # orbax finds no checkpoint there (it only logs a warning)
        raise UserError(f"{path} holds no readable orbax checkpoint: its files are missing or incomplete")
    saved = metadata.tree
    item = {field: saved[field] for field in fields.values()}
    restore_args = jax.tree.map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), item)
    restored = checkpointer.restore(
        path, args=ocp.args.PyTreeRestore(item=item, restore_args=restore_args, partial_restore=True)
    )
    return {name: restored[field] for name, field in fields.items()}
