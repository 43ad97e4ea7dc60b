import pytest

from effnetx_jax.models import BlockStringError, decode, encode
from effnetx_jax.models.registry import EFFICIENTNET_BLOCKS, EFFICIENTNET_X_BLOCKS

# Strings from the official TF code: EfficientNet, EfficientNet-X (v1) and -H (v2), EdgeTPU, Lite.
OFFICIAL = [
    *EFFICIENTNET_BLOCKS,
    *EFFICIENTNET_X_BLOCKS,
    "r2_k3_s22_e4_i16_o24_se0.25_f1_d2_a1",
    "r2_k5_s22_e4_i24_o40_se0.25_f1_a1",
    "r3_k3_s22_e4_i40_o80_se0.25_a0",
    "r1_k3_s11_e4_i24_o24_c1_noskip",
    "r2_k3_s22_e8_i24_o32_c1",
    "r4_k3_s22_e8_i32_o48_c1",
    "r1_k3_s11_e1_i32_o16_noskip",
    "r1_k7_s11_e6_i80_o320_noskip",
    "r5_k5_s22_e6_i144_o160",
]


@pytest.mark.parametrize("string", OFFICIAL)
def test_official_strings_round_trip(string):
    assert encode(decode(string)) == string


def test_decode_x_stage_one():
    args = decode("r1_k3_s11_e1_i32_o16_se0.25_d1_a0")
    assert (args.num_repeat, args.kernel_size, args.strides, args.expand_ratio) == (1, 3, (1, 1), 1)
    assert (args.input_filters, args.output_filters, args.se_ratio) == (32, 16, 0.25)
    assert (args.space_to_depth, args.activation, args.fused, args.id_skip) == (1, "relu", False, True)
    assert decode("r2_k3_s22_e6_i16_o24_se0.25_f1_d2_a1").activation == "swish"
    assert decode("r2_k3_s22_e6_i16_o24").activation is None


def test_space_to_batch_extension_round_trips():
    args = decode("r2_k3_s11_e6_i24_o24_se0.25_b2_a1")
    assert args.space_to_batch == 2
    assert encode(args) == "r2_k3_s11_e6_i24_o24_se0.25_b2_a1"


@pytest.mark.parametrize(
    ("string", "token", "reason"),
    [
        ("r1_k3_s11_e1_i32_o16_x5", "x5", "unknown token"),
        ("r1_k3_s2_e1_i32_o16", "s2", "two digits"),
        ("r1_k3_s_e1_i32_o16", "s", "needs a value"),
        ("r1_k0_s11_e1_i32_o16", "k0", ">= 1"),
        ("r0_k3_s11_e1_i32_o16", "r0", ">= 1"),
        ("r1_k3_s11_e1_i32", "o", "missing"),
        ("r1_k3_s11_e1_i32_o16_se1.5", "se1.5", "[0, 1]"),
        ("r1_k3_s11_e1_i32_o16_sex", "sex", "unknown token"),
        ("r1_k3_s11_e1_i32_o16_a2", "a2", "one of"),
        ("r1_k3_s11_e1_i32_o16_d3", "d3", "one of"),
        ("r1_k3_s12_e1_i32_o16_d1", "d1", "stride s11 or s22"),
        ("r1_k3_s11_e4_i32_o16_c1_d1", "d1", "conv type c1"),
        ("r1_k5_s11_e4_i32_o16_c1", "k5", "conv type c1"),
        ("r1_k3_s22_e1_i32_o16_c1", "e1", "no conv to apply the stride"),
        ("r1_k3_s11_e1_i32_o16_b1", "b1", "space-to-batch"),
        ("r1_k3_s11_e1_i32_o16_cc", "cc", "CondConv"),
        ("r1_k3_s11_e1_i32_o16_k5", "k5", "repeated"),
        ("r1_k3_s11_e1.5_i32_o16", "e1.5", "integer"),
    ],
)
def test_bad_strings_name_the_string_and_token(string, token, reason):
    with pytest.raises(ValueError) as error:
        decode(string)
    assert isinstance(error.value, BlockStringError)
    message = str(error.value)
    assert repr(string) in message
    assert repr(token) in message
    assert reason in message


@pytest.mark.parametrize(
    ("string", "token", "limit"),
    [
        # Refused from the token alone: nothing is unrolled, so this returns at once instead of hanging.
        ("r999999999_k3_s11_e1_i32_o16", "r999999999", "<= 256 (effnetx_jax.models.limits.MAX_REPEATS)"),
        ("r1_k999_s11_e1_i32_o16", "k999", "<= 31 (effnetx_jax.models.limits.MAX_KERNEL)"),
        ("r1_k3_s11_e33_i32_o16", "e33", "<= 32 (effnetx_jax.models.limits.MAX_EXPAND_RATIO)"),
        ("r1_k3_s11_e1_i16385_o16", "i16385", "<= 16384 (effnetx_jax.models.limits.MAX_FILTERS)"),
        ("r1_k3_s11_e1_i32_o16_b4097", "b4097", "<= 4096 (effnetx_jax.models.limits.MAX_RESOLUTION)"),
        # Past the 4300 digits Python's int() refuses: compared by length, never converted.
        ("r1_k3_s11_e1_i32_o" + "9" * 5000, "o" + "9" * 5000, "<= 16384"),
        ("r1_k3_s11_e1_i32_o16_d" + "1" * 5000, "d" + "1" * 5000, "one of [0, 1, 2]"),
    ],
)
def test_values_above_the_bounds_name_the_token_and_the_limit(string, token, limit):
    with pytest.raises(BlockStringError) as error:
        decode(string)
    assert repr(token) in str(error.value)
    assert limit in str(error.value)


def test_values_at_the_bounds_are_accepted():
    args = decode("r256_k31_s11_e32_i16384_o16384_b4096")
    assert (args.num_repeat, args.kernel_size, args.expand_ratio, args.output_filters) == (256, 31, 32, 16384)
    assert decode("r007_k3_s11_e1_i32_o16").num_repeat == 7  # leading zeros are not extra digits


@pytest.mark.parametrize(
    ("string", "token"),
    [
        ("r\u0661_k3_s11_e1_i32_o16", "r\u0661"),  # Arabic-Indic one: str.isdigit and int() accept it
        ("r1_k\uff13_s11_e1_i32_o16", "k\uff13"),  # full-width three
        ("r1_k3_s11_e1_i32_o\u00b2", "o\u00b2"),  # superscript two: isdigit() but not int()
        ("r1_k3_s11_e1_i32_o16_se\u0660.25", "se\u0660.25"),  # float() accepts it too
    ],
)
def test_non_ascii_digits_are_refused_with_the_token(string, token):
    with pytest.raises(BlockStringError, match="non-ASCII character") as error:
        decode(string)
    assert repr(token) in str(error.value)
