"""The block-string grammar of the official TF EfficientNet code, decoded into `BlockArgs`.

A block string describes one stage: `r1_k3_s11_e1_i32_o16_se0.25_d1_a0` is 1 repeat of a 3x3 block,
stride 1x1, expand ratio 1, 32 -> 16 filters (before width scaling), squeeze-excitation ratio 0.25,
space-to-depth 1 and ReLU. Tokens are a key followed by its value, joined by `_`:

  r repeats   k kernel   s stride digits (h, w)   e expand ratio   i/o input/output filters
  se SE ratio (0 < se <= 1 enables SE)   c conv type (0 MBConv, 1 MBConv without depthwise)
  f fused (1: one kxk conv replaces expand + depthwise)   d space-to-depth (0 off, 1 starts a
  region with a learned 2x2/s2 conv, 2 continues one)   a activation (0 ReLU, 1 swish; absent: the
  model's global activation)   noskip (no residual)
  b space-to-batch block size (0 off): an effnetx_jax extension, absent from the TF grammar.

Integer values are bounded (`effnetx_jax.models.limits`: repeats, kernel, expand ratio, filters) and
every character is ASCII. Strings are encoded back in the order the official strings use, so every official string
round-trips. CondConv (`cc`) is part of the TF grammar but not of this library and is rejected.
"""

from __future__ import annotations

import dataclasses
import re

from effnetx_jax.errors import UserError
from effnetx_jax.models import limits

# ASCII only: `\d`, `str.isdigit` and `int`/`float` would otherwise accept other scripts' digits.
_TOKEN = re.compile(r"^([a-z]+)(\d.*)?$", re.ASCII)
_VALUED_KEYS = ("r", "k", "s", "e", "i", "o", "se", "c", "f", "d", "a", "b")
_REQUIRED_KEYS = ("r", "k", "s", "e", "i", "o")
ACTIVATIONS = ("relu", "swish")
# The bound of each integer token without a fixed set of values; a space-to-batch block larger than
# the image cannot divide any of its feature maps.
_LIMITS = {
    "r": "MAX_REPEATS",
    "k": "MAX_KERNEL",
    "e": "MAX_EXPAND_RATIO",
    "i": "MAX_FILTERS",
    "o": "MAX_FILTERS",
    "b": "MAX_RESOLUTION",
}


class BlockStringError(UserError):
    """A block string that cannot describe a block; the message names the string and the token."""

    def __init__(self, block_string: str, token: str, reason: str):
        super().__init__(f"block string {block_string!r}, token {token!r}: {reason}")


@dataclasses.dataclass(frozen=True)
class BlockArgs:
    """One stage as written in a block string (filters before width scaling)."""

    num_repeat: int
    kernel_size: int
    strides: tuple[int, int]
    expand_ratio: int
    input_filters: int
    output_filters: int
    se_ratio: float | None = None
    conv_type: int = 0
    fused: bool = False
    space_to_depth: int = 0
    activation: str | None = None
    id_skip: bool = True
    space_to_batch: int = 0

    @property
    def has_se(self) -> bool:
        return self.se_ratio is not None and 0 < self.se_ratio <= 1


def _split_tokens(block_string: str) -> tuple[dict[str, str], bool]:
    if not isinstance(block_string, str) or not block_string:
        raise BlockStringError(str(block_string), "", "a block string must be a non-empty str")
    values: dict[str, str] = {}
    noskip = False
    for token in block_string.split("_"):
        if not token.isascii():
            raise BlockStringError(
                block_string, token, "non-ASCII character; block strings use ASCII letters and digits 0-9 only"
            )
        match = _TOKEN.match(token)
        if token == "noskip":
            if noskip:
                raise BlockStringError(block_string, token, "repeated token")
            noskip = True
            continue
        if token == "cc":
            raise BlockStringError(block_string, token, "CondConv blocks are not supported")
        if not match or match.group(1) not in _VALUED_KEYS:
            raise BlockStringError(
                block_string, token, f"unknown token; known keys are {', '.join(_VALUED_KEYS)}, noskip"
            )
        key, value = match.group(1), match.group(2)
        if value is None:
            raise BlockStringError(block_string, token, f"{key!r} needs a value")
        if key in values:
            raise BlockStringError(block_string, token, "repeated key")
        values[key] = value
    for key in _REQUIRED_KEYS:
        if key not in values:
            raise BlockStringError(block_string, key, "required token is missing")
    return values, noskip


def _int(block_string: str, key: str, value: str, *, allowed=None, minimum: int = 1) -> int:
    """The value of token `key`: one of `allowed`, or in [minimum, the key's bound in `limits`]."""
    token = key + value
    if not value.isdigit():
        raise BlockStringError(block_string, token, "value must be a non-negative integer")
    highest = max(allowed) if allowed is not None else getattr(limits, _LIMITS[key])
    significant = value.lstrip("0") or "0"
    # More digits than the highest value is out of range: no `int` of a long digit string (slow, and
    # refused by Python past 4300 digits).
    number = int(significant) if len(significant) <= len(str(highest)) else highest + 1
    if allowed is not None:
        if number not in allowed:
            raise BlockStringError(block_string, token, f"value must be one of {sorted(allowed)}")
    elif not minimum <= number <= highest:
        raise BlockStringError(
            block_string,
            token,
            f"value must be >= {minimum} and <= {highest} (effnetx_jax.models.limits.{_LIMITS[key]})",
        )
    return number


def decode(block_string: str) -> BlockArgs:
    """Parses one block string; raises `BlockStringError` (a `UserError`) naming the bad token."""
    values, noskip = _split_tokens(block_string)
    strides_token = "s" + values["s"]
    if len(values["s"]) != 2 or not values["s"].isdigit():
        raise BlockStringError(block_string, strides_token, "stride needs exactly two digits, e.g. s11 or s22")
    strides = (int(values["s"][0]), int(values["s"][1]))
    if min(strides) < 1:
        raise BlockStringError(block_string, strides_token, "strides must be >= 1")
    se_ratio = None
    if "se" in values:
        try:
            se_ratio = float(values["se"])
        except ValueError:
            raise BlockStringError(block_string, "se" + values["se"], "value must be a number") from None
        if not 0 <= se_ratio <= 1:
            raise BlockStringError(block_string, "se" + values["se"], "SE ratio must be in [0, 1]")
    args = BlockArgs(
        num_repeat=_int(block_string, "r", values["r"]),
        kernel_size=_int(block_string, "k", values["k"]),
        strides=strides,
        expand_ratio=_int(block_string, "e", values["e"]),
        input_filters=_int(block_string, "i", values["i"]),
        output_filters=_int(block_string, "o", values["o"]),
        se_ratio=se_ratio,
        conv_type=_int(block_string, "c", values.get("c", "0"), allowed={0, 1}),
        fused=bool(_int(block_string, "f", values.get("f", "0"), allowed={0, 1})),
        space_to_depth=_int(block_string, "d", values.get("d", "0"), allowed={0, 1, 2}),
        activation=None if "a" not in values else ACTIVATIONS[_int(block_string, "a", values["a"], allowed={0, 1})],
        id_skip=not noskip,
        space_to_batch=_int(block_string, "b", values.get("b", "0"), minimum=0),
    )
    check(args, block_string)
    return args


def check(args: BlockArgs, block_string: str | None = None) -> None:
    """Rejects combinations the builder cannot turn into a block."""
    text = block_string if block_string is not None else encode(args)
    if args.space_to_depth and args.strides not in ((1, 1), (2, 2)):
        raise BlockStringError(text, f"d{args.space_to_depth}", "space-to-depth needs stride s11 or s22")
    if args.space_to_batch == 1:
        raise BlockStringError(text, "b1", "space-to-batch block size must be 0 (off) or >= 2")
    if args.conv_type == 1:
        # TF's MBConvBlockWithoutDepthwise: a fixed 3x3 expansion conv, no SE, no s2d, no fusion.
        for present, token in (
            (args.fused, "f1"),
            (args.space_to_depth, f"d{args.space_to_depth}"),
            (args.has_se, f"se{args.se_ratio}"),
            (args.kernel_size != 3, f"k{args.kernel_size}"),
        ):
            if present:
                raise BlockStringError(
                    text, token, "conv type c1 has a fixed 3x3 expansion conv and no fused, s2d or SE option"
                )
        if args.expand_ratio == 1 and args.strides != (1, 1):
            raise BlockStringError(text, "e1", "a c1 block without expansion has no conv to apply the stride")


def _format_ratio(value: float) -> str:
    return repr(float(value)) if value != int(value) else str(int(value))


def encode(args: BlockArgs) -> str:
    """The canonical string for `args`: official token order, default-valued optional tokens left out."""
    tokens = [
        f"r{args.num_repeat}",
        f"k{args.kernel_size}",
        f"s{args.strides[0]}{args.strides[1]}",
        f"e{args.expand_ratio}",
        f"i{args.input_filters}",
        f"o{args.output_filters}",
    ]
    if args.se_ratio is not None:
        tokens.append(f"se{_format_ratio(args.se_ratio)}")
    if args.conv_type:
        tokens.append(f"c{args.conv_type}")
    if args.fused:
        tokens.append("f1")
    if args.space_to_depth:
        tokens.append(f"d{args.space_to_depth}")
    if args.space_to_batch:
        tokens.append(f"b{args.space_to_batch}")
    if args.activation is not None:
        tokens.append(f"a{ACTIVATIONS.index(args.activation)}")
    if not args.id_skip:
        tokens.append("noskip")
    return "_".join(tokens)


def decode_all(block_strings) -> list[BlockArgs]:
    return [decode(s) for s in block_strings]


def encode_all(blocks_args) -> list[str]:
    return [encode(a) for a in blocks_args]
