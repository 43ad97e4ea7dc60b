"""effnetx_jax.cpu_codegen: the vector width and the convolutions the steps are compiled with on the CPU."""

import jax
import numpy as np
import pytest

from effnetx_jax import cpu_codegen
from effnetx_jax.errors import UserError
from effnetx_jax.models import layers
from effnetx_jax.models.speed import CompiledStep

from command_line import error_line
from conftest import tiny_config


@pytest.fixture
def cpu_flags(monkeypatch):
    """Sets the CPU's instruction-set flags that cpu_codegen sees."""

    def set_flags(*names):
        monkeypatch.setattr(cpu_codegen, "_cpu_flags", lambda: frozenset(names))

    monkeypatch.delenv("EFFNETX_CPU_VECTOR_WIDTH", raising=False)
    monkeypatch.delenv("EFFNETX_CPU_CONVOLUTIONS", raising=False)
    return set_flags


_XLA_CONVOLUTIONS = {
    "xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_INDIVIDUAL_DOT,LIBRARY_FUSION_TYPE_REDUCE"
}


def test_512_bits_only_where_the_cpu_has_avx512(cpu_flags):
    cpu_flags("sse4_2", "avx2", "fma")
    assert cpu_codegen.vector_width() is None and cpu_codegen.compiler_options() == _XLA_CONVOLUTIONS
    cpu_flags("avx2", "avx512f", "avx512bw")
    assert cpu_codegen.compiler_options() == {"xla_cpu_prefer_vector_width": "512", **_XLA_CONVOLUTIONS}


def test_the_environment_sets_the_width_and_a_bad_value_is_refused(cpu_flags, monkeypatch):
    cpu_flags("avx512f")
    monkeypatch.setenv("EFFNETX_CPU_VECTOR_WIDTH", "256")
    assert cpu_codegen.compiler_options()["xla_cpu_prefer_vector_width"] == "256"
    monkeypatch.setenv("EFFNETX_CPU_VECTOR_WIDTH", "300")
    with pytest.raises(UserError, match=r"EFFNETX_CPU_VECTOR_WIDTH='300'.*128, 256, 512"):
        cpu_codegen.vector_width()


def test_the_environment_gives_convolutions_back_to_ynnpack(cpu_flags, monkeypatch):
    cpu_flags("avx2")
    monkeypatch.setenv("EFFNETX_CPU_CONVOLUTIONS", "ynnpack")
    assert cpu_codegen.compiler_options() == {}
    monkeypatch.setenv("EFFNETX_CPU_CONVOLUTIONS", "eigen")
    with pytest.raises(UserError, match=r"EFFNETX_CPU_CONVOLUTIONS='eigen'.*xla, ynnpack"):
        cpu_codegen.check_settings()


def test_an_xla_without_the_ynnpack_option_keeps_its_defaults(cpu_flags, monkeypatch):
    """The probe compiles with the option: one XLA does not know is left out, not an error at every step."""
    cpu_flags("avx2")
    unknown = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_NO_SUCH_FUSION"}
    monkeypatch.setattr(cpu_codegen, "_YNN_FUSIONS_WITHOUT_CONVOLUTIONS", unknown)
    assert cpu_codegen.compiler_options() == {} and cpu_codegen.convolution_library() == "ynnpack"


def test_the_conv_kernel_gradient_follows_who_runs_the_convolutions(cpu_flags, monkeypatch):
    """The shifted windows' kernel gradient only where YNNPACK runs the convolutions: XLA's own is faster."""
    assert layers.resolve_conv_kernel_grad() == "xla"
    monkeypatch.setenv("EFFNETX_CPU_CONVOLUTIONS", "ynnpack")
    assert layers.resolve_conv_kernel_grad() == "windows"
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert layers.resolve_conv_kernel_grad() == "xla"


def test_no_cpu_option_for_an_accelerator(cpu_flags, monkeypatch):
    cpu_flags("avx512f")
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert cpu_codegen.compiler_options() == {}


def test_a_command_line_tool_refuses_a_bad_width_before_it_starts(monkeypatch):
    monkeypatch.setenv("EFFNETX_CPU_VECTOR_WIDTH", "wide")
    message = error_line("bench", "--model=efficientnet-b0")
    assert message == "error: EFFNETX_CPU_VECTOR_WIDTH='wide': expected one of 128, 256, 512"
    monkeypatch.delenv("EFFNETX_CPU_VECTOR_WIDTH")
    monkeypatch.setenv("EFFNETX_CPU_CONVOLUTIONS", "yes")
    assert error_line("bench", "--model=efficientnet-b0") == (
        "error: EFFNETX_CPU_CONVOLUTIONS='yes': expected one of xla, ynnpack"
    )


_TWO_BLOCKS = ("r1_k3_s11_e1_i32_o16_se0.25", "r1_k3_s22_e6_i16_o24_se0.25")


@pytest.mark.parametrize("mode", ["train", "infer"])
def test_the_steps_are_compiled_with_the_options(monkeypatch, mode):
    """The options reach XLA: one it cannot parse stops the compile."""
    monkeypatch.setattr(cpu_codegen, "compiler_options", lambda: {"xla_cpu_prefer_vector_width": "wide"})
    with pytest.raises(Exception, match="xla_cpu_prefer_vector_width"):
        CompiledStep(tiny_config(_TWO_BLOCKS), batch=2, mode=mode)


def test_the_options_compute_the_same_train_step(cpu_flags, monkeypatch):
    """512-bit vectors and XLA's own convolutions are another compilation of the same arithmetic: the
    train step's loss and updated weights agree with XLA's defaults (256 bits, YNNPACK convolutions) to
    float32 rounding."""
    outputs = {}
    for width, convolutions in (("256", "ynnpack"), ("512", "xla")):
        monkeypatch.setenv("EFFNETX_CPU_VECTOR_WIDTH", width)
        monkeypatch.setenv("EFFNETX_CPU_CONVOLUTIONS", convolutions)
        step = CompiledStep(tiny_config(_TWO_BLOCKS, activation="swish"), batch=2, mode="train")
        state, metrics = step.compiled(*step.args)
        outputs[width] = (float(metrics.compute()["loss"]), jax.tree.leaves(state.params))
    (loss_default, params_default), (loss_ours, params_ours) = outputs["256"], outputs["512"]
    np.testing.assert_allclose(loss_ours, loss_default, rtol=1e-5)
    for new, old in zip(params_ours, params_default, strict=True):
        np.testing.assert_allclose(new, old, rtol=1e-4, atol=1e-6)
