"""The search space: per-stage choices on a skeleton model, and candidates as model configs.

A candidate is a dict of decisions, named `stage{i}_{choice}` for every stage of the skeleton plus
the global `space_to_depth`, `space_to_batch` and `se_coefficient`. `to_model` writes it as a model
config in the block-string grammar (every stage gets explicit `f`/`d`/`b`/`a` tokens), so the search
builds, measures and trains candidates with the library's own code. The skeleton (`config.model`)
gives each stage its stride, repeats and filters, and the global width, depth and resolution.

Conventions that make EfficientNet-B0 and EfficientNet-X-B0 points of the default space:
- `space_to_depth` on: stage 1 starts a space-to-depth region (`d1`) and stage 2 continues it (`d2`),
  as in EfficientNet-X-B0; `space_to_batch` is the block size (`b`) of stage 1.
- The stem and head use stage 1's activation (both reference models do).
- `se_coefficient` is the SE width multiplier of the whole model (X-B0: 4, B0: 1).
"""

from __future__ import annotations

import dataclasses
import hashlib

import ml_collections
import numpy as np

from effnetx_jax.errors import UserError
from effnetx_jax.models import architecture, block_string
from effnetx_jax.models.block_string import BlockArgs
from effnetx_jax.models.config import decode_stages

STAGE_CHOICES = ("conv", "kernel", "expand", "activation", "se", "repeats", "width")
GLOBAL_CHOICES = ("space_to_depth", "space_to_batch", "se_coefficient")
CONV_TYPES = ("depthwise", "fused")
MAX_DRAWS = 200


class InvalidCandidate(UserError):
    """A combination of choices that describes no model; the message says which and why."""


def default_choices() -> ml_collections.ConfigDict:
    """The default choice lists (the paper's space on EfficientNet-B0's skeleton); edit any in a config."""
    return ml_collections.ConfigDict(
        {
            "conv": CONV_TYPES,
            "kernel": (3, 5),
            "expand": (1, 4, 6),
            "activation": block_string.ACTIVATIONS,
            "se": (0.0, 0.25),
            "repeats": (-1, 0, 1),  # added to the skeleton's repeats
            "width": (0.75, 1.0, 1.25),  # multiplies the skeleton's output filters
            "space_to_depth": (False, True),
            "space_to_batch": (0, 2),
            "se_coefficient": (1.0, 4.0),
        }
    )


@dataclasses.dataclass(frozen=True)
class SearchSpace:
    skeleton: ml_collections.ConfigDict  # a model config; its block strings give strides, repeats, filters
    choices: ml_collections.ConfigDict

    @property
    def stages(self) -> list[BlockArgs]:
        return block_string.decode_all(self.skeleton.blocks)

    def decisions(self) -> dict[str, tuple]:
        """Every decision's name and its choices, in a fixed order."""
        names = {
            f"stage{index}_{choice}": tuple(self.choices[choice])
            for index in range(1, len(self.skeleton.blocks) + 1)
            for choice in STAGE_CHOICES
        }
        return {**names, **{choice: tuple(self.choices[choice]) for choice in GLOBAL_CHOICES}}

    def to_model(self, candidate: dict) -> ml_collections.ConfigDict:
        """The candidate's model config; raises `InvalidCandidate` naming the decision or the model error."""
        missing = [name for name in self.decisions() if name not in candidate]
        if missing:
            raise InvalidCandidate(f"decision {missing[0]!r} is missing")
        stages = []
        input_filters = self.stages[0].input_filters
        for index, base in enumerate(self.stages, start=1):
            pick = {choice: candidate[f"stage{index}_{choice}"] for choice in STAGE_CHOICES}
            repeats = base.num_repeat + int(pick["repeats"])
            if repeats < 1:
                raise InvalidCandidate(
                    f"stage{index}_repeats={pick['repeats']:+d}: stage {index} has {base.num_repeat} repeat(s), "
                    "and a stage needs at least one"
                )
            args = dataclasses.replace(
                base,
                num_repeat=repeats,
                kernel_size=int(pick["kernel"]),
                expand_ratio=int(pick["expand"]),
                input_filters=input_filters,
                output_filters=max(1, round(base.output_filters * pick["width"])),
                se_ratio=float(pick["se"]) if pick["se"] else None,
                conv_type=0,
                fused=pick["conv"] == "fused",
                space_to_depth=_space_to_depth_token(index, candidate["space_to_depth"]),
                space_to_batch=int(candidate["space_to_batch"]) if index == 1 else 0,
                activation=pick["activation"],
            )
            stages.append(args)
            input_filters = args.output_filters
        model = ml_collections.ConfigDict(self.skeleton.to_dict())
        model.update(
            blocks=tuple(block_string.encode_all(stages)),
            stage_activations=(),
            stage_conv_types=(),
            activation=candidate["stage1_activation"],
            se_coefficient=float(candidate["se_coefficient"]),
            use_se=True,
        )
        try:
            architecture(model)
        except ValueError as error:
            raise InvalidCandidate(f"the candidate's model is invalid: {error}") from None
        return model

    def from_model(self, model: ml_collections.ConfigDict) -> dict:
        """The decisions that describe `model` (a model of this skeleton); `to_model` of them builds the
        same architecture. Raises `InvalidCandidate` if the model lies outside the space."""
        stages = decode_stages(model)
        if len(stages) != len(self.stages):
            raise InvalidCandidate(f"the model has {len(stages)} stages, the skeleton {len(self.stages)}")
        candidate = {
            "space_to_depth": stages[0].space_to_depth == 1,
            "space_to_batch": stages[0].space_to_batch,
            "se_coefficient": float(model.se_coefficient),
        }
        for index, (args, base) in enumerate(zip(stages, self.stages, strict=True), start=1):
            candidate.update(
                {
                    f"stage{index}_conv": "fused" if args.fused else "depthwise",
                    f"stage{index}_kernel": args.kernel_size,
                    f"stage{index}_expand": args.expand_ratio,
                    f"stage{index}_activation": args.activation or model.activation,
                    f"stage{index}_se": args.se_ratio if args.has_se else 0.0,
                    f"stage{index}_repeats": args.num_repeat - base.num_repeat,
                    f"stage{index}_width": args.output_filters / base.output_filters,
                }
            )
        for name, choices in self.decisions().items():
            value = candidate[name]
            match = [choice for choice in choices if choice == value]
            if not match:
                raise InvalidCandidate(f"{name}={value!r} is not among the choices {choices}")
            candidate[name] = match[0]  # the choice's own type (1.0 rather than 1, True rather than 1)
        return candidate

    def is_valid(self, candidate: dict) -> bool:
        try:
            self.to_model(candidate)
        except InvalidCandidate:
            return False
        return True

    def random(self, rng: np.random.Generator) -> dict:
        """A valid candidate with every decision drawn uniformly (invalid draws are drawn again)."""
        for _ in range(MAX_DRAWS):
            candidate = {name: _draw(choices, rng) for name, choices in self.decisions().items()}
            if self.is_valid(candidate):
                return candidate
        raise InvalidCandidate(f"no valid candidate in {MAX_DRAWS} random draws; are the choice lists consistent?")

    def mutate(self, parent: dict, rng: np.random.Generator) -> dict:
        """`parent` with one decision changed to another of its choices, drawn until the child is valid."""
        mutable = [name for name, choices in self.decisions().items() if len(choices) > 1]
        if not mutable:
            raise InvalidCandidate("every decision has a single choice: there is nothing to mutate")
        for _ in range(MAX_DRAWS):
            name = mutable[rng.integers(len(mutable))]
            child = dict(parent)
            child[name] = _draw([c for c in self.decisions()[name] if c != parent[name]], rng)
            if self.is_valid(child):
                return child
        raise InvalidCandidate(f"no valid mutation of the parent in {MAX_DRAWS} draws")


def _space_to_depth_token(stage: int, enabled: bool) -> int:
    if not enabled or stage > 2:
        return 0
    return 1 if stage == 1 else 2


def _draw(choices, rng: np.random.Generator):
    return choices[rng.integers(len(choices))]


def canonical_key(model: ml_collections.ConfigDict) -> str:
    """Equal for two model configs that build the same network (names and spellings aside): the cache key."""
    arch = dataclasses.replace(architecture(model), name="")
    return hashlib.sha256(repr(arch).encode()).hexdigest()[:16]
