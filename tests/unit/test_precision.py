"""bfloat16 inference against float32 torch: bounded log-probabilities, the same decisions.

Measured on the tiny random models below (4 x 4 s of a modulated tone in noise, three seeds):
bfloat16 log-probabilities differ from float32 by at most 0.025 (mean 0.004) with autocast or
cast weights, and the hard powerset decisions (argmax) agree on 99.0-99.5 % of the frames. The
tests assert 0.1 and 97 %. The ResNet embedding with a bfloat16 trunk keeps a cosine similarity
above 0.9999 to float32, GE2E with a bfloat16 LSTM as well; the tests assert 0.99.
"""

import logging

import numpy as np
import pytest
import torch

import slimdiar.models.precision as precision
from slimdiar.cli import main
from slimdiar.errors import ConfigError
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.embeddings.registry import SpeakerEmbedding
from slimdiar.models.precision import (
    Autocast,
    cpu_bf16_support,
    cpu_facts,
    resolve_dtype,
    with_precision,
)
from slimdiar.models.wavlm.config import wavlm_tiny
from slimdiar.pipeline import DiarizationPipeline
from slimdiar.pipeline.precision import set_pipeline_precision
from slimdiar.testing import tiny_ge2e, tiny_resnet

pytestmark = pytest.mark.usefixtures("one_thread")

MAX_ABS_LOG_PROB_DIFF = 0.1
MIN_DECISION_AGREEMENT = 0.97
HEAD = dict(d_model=32, num_heads=2, ffn_dim=64, num_blocks=2, conv_kernel=7)


def tiny_eend(frontend="wavlm") -> EEND:
    torch.manual_seed(0)
    wavlm = wavlm_tiny() if frontend == "wavlm" else None
    return EEND(EENDConfig(frontend=frontend, wavlm=wavlm, **HEAD)).eval()


def speech_like(batch=4, seconds=4.0, seed=0):
    """A vibrato tone switched on and off at a syllable rate, in noise: (batch, samples)."""
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(int(16000 * seconds)) / 16000
    tone = torch.sin(2 * torch.pi * 180 * t * (1 + 0.1 * torch.sin(t)))
    syllables = (torch.sin(2 * torch.pi * 3 * t) > 0).float()
    return 0.3 * tone * syllables + 0.05 * torch.randn(batch, len(t), generator=generator)


@pytest.mark.parametrize(
    "frontend, mode", [("wavlm", "autocast"), ("wavlm", "weights"), ("fbank", "autocast")]
)
def test_bfloat16_log_probs_are_bounded_and_decisions_agree(frontend, mode):
    waveforms = speech_like()
    with torch.inference_mode():
        reference = tiny_eend(frontend)(waveforms)
        low = with_precision(tiny_eend(frontend), torch.bfloat16, mode)(waveforms)
    assert low.dtype == torch.float32
    torch.testing.assert_close(low.logsumexp(-1), torch.zeros(low.shape[:2]), atol=1e-5, rtol=0)
    difference = (low - reference).abs()
    assert 0 < difference.max() <= MAX_ABS_LOG_PROB_DIFF  # really computed in bfloat16
    agreement = (low.argmax(-1) == reference.argmax(-1)).float().mean()
    assert agreement >= MIN_DECISION_AGREEMENT


def test_autocast_wrapper_stands_in_for_the_model():
    model = tiny_eend()
    wrapped = with_precision(model, torch.bfloat16)
    assert isinstance(wrapped, Autocast)
    assert wrapped.frame_step_samples == model.frame_step_samples == 320
    assert wrapped.powerset is model.powerset and wrapped.num_frames(16000) == 49
    assert with_precision(model, torch.float32) is model
    with pytest.raises(ConfigError, match="precision mode"):
        with_precision(model, torch.bfloat16, "int8")


def test_resnet_with_a_bfloat16_trunk_keeps_float32_features_and_pooling():
    waveforms = np.asarray(speech_like(batch=3, seconds=1.0), dtype=np.float32)
    masks = np.ones((3, 2, 50), dtype=np.float32)
    masks[:, 1, 30:] = 0
    reference = SpeakerEmbedding(tiny_resnet(seed=3), "fp32").embed_windows(waveforms, masks)
    low = SpeakerEmbedding(tiny_resnet(seed=3), "bf16").set_compute_dtype(torch.bfloat16)
    assert low.compute_dtype == torch.bfloat16
    assert low.model.resnet.seg_1.weight.dtype == torch.float32
    out = low.embed_windows(waveforms, masks)
    assert out.dtype == np.float32
    cosine = (out * reference).sum(-1)
    assert not np.array_equal(out, reference) and cosine.min() >= 0.99


def test_ge2e_with_a_bfloat16_lstm_stays_close_to_float32():
    waveforms = np.asarray(speech_like(batch=2, seconds=2.0), dtype=np.float32)
    reference = SpeakerEmbedding(tiny_ge2e(), "fp32")(waveforms)
    low = SpeakerEmbedding(tiny_ge2e(), "bf16").set_compute_dtype(torch.bfloat16)
    assert low.compute_dtype == torch.bfloat16
    out = low(waveforms)
    assert out.dtype == np.float32 and not np.array_equal(out, reference)
    assert (out * reference).sum(-1).min() >= 0.99


def test_float16_on_a_cpu_and_unknown_names_are_refused():
    with pytest.raises(ConfigError, match="float16 runs on a GPU only"):
        resolve_dtype("float16", "cpu")
    with pytest.raises(ConfigError, match="unknown dtype"):
        resolve_dtype("int8", "cpu")
    assert resolve_dtype("float32") == torch.float32
    assert resolve_dtype(torch.bfloat16, "cuda") == torch.bfloat16


def test_cpu_bf16_detection_reads_the_flags(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    without = tmp_path / "cpuinfo"
    without.write_text("processor\t: 0\nflags\t\t: fpu sse avx avx2 avx512f\n")
    native, description = cpu_bf16_support(without)
    assert not native and "AVX2" in description and "none" in description
    with_bf16 = tmp_path / "cpuinfo-amx"
    with_bf16.write_text("flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n")
    assert cpu_bf16_support(with_bf16) == (
        True,
        "torch CPU capability AVX2, bfloat16 flags: amx_bf16, avx512_bf16",
    )


def test_cpu_facts_name_the_bfloat16_hardware(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    amx = tmp_path / "cpuinfo"
    amx.write_text("flags\t\t: avx512f amx_tile amx_bf16 avx512_bf16 amx_int8\n")
    assert cpu_facts(amx) == {
        "cpu_capability": "AVX512",
        "cpu_native_bf16": True,
        "cpu_bf16_flags": ["amx_bf16", "avx512_bf16"],
    }
    plain = tmp_path / "cpuinfo-plain"
    plain.write_text("flags\t\t: avx2 avx512f\n")
    assert cpu_facts(plain)["cpu_bf16_flags"] == []
    assert cpu_facts(plain)["cpu_native_bf16"] is False


def test_bfloat16_on_a_cpu_without_it_warns_once(monkeypatch, caplog):
    monkeypatch.setattr(precision, "cpu_bf16_support", lambda: (False, "capability AVX2"))
    monkeypatch.setattr(precision, "_WARNED", set())
    with caplog.at_level(logging.WARNING, logger="slimdiar.models.precision"):
        assert resolve_dtype("bfloat16", "cpu") == torch.bfloat16
        resolve_dtype("bfloat16", "cpu")
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "no native bfloat16" in warnings[0]


def test_pipeline_in_bfloat16_finds_the_same_local_speakers(tmp_path):
    checkpoint = tiny_eend().save_pretrained(tmp_path / "eend")
    pipeline = DiarizationPipeline.from_pretrained(
        checkpoint,
        embedding=None,
        settings={
            "windows": {"step_s": 1.0, "batch_size": 4, "duration_s": 2.0},
            "clustering": {"method": "oracle"},
        },
    )
    embedding = SpeakerEmbedding(tiny_resnet(seed=3), "tiny-resnet")
    pipeline.embedding_model = embedding
    audio = (speech_like(batch=1, seconds=5.0)[0].numpy(), 16000)
    reference_turns = [(0.0, 2.5, "A"), (2.0, 5.0, "B")]

    def segmentation(pipeline):
        found = {}

        def hook(stage, payload, completed=None, total=None):
            if stage == "segmentation" and payload is not None:
                found["activities"] = payload

        pipeline(audio, hook=hook, reference=reference_turns)
        return found["activities"]

    reference = segmentation(pipeline)
    assert set_pipeline_precision(pipeline, "bfloat16") is pipeline
    assert isinstance(pipeline.segmentation_model, Autocast)
    assert embedding.compute_dtype == torch.bfloat16
    low = segmentation(pipeline)
    assert low.shape == reference.shape and (low == reference).mean() >= MIN_DECISION_AGREEMENT


def test_diarize_refuses_float16_on_a_cpu_before_any_work(tmp_path, capsys):
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            str(tmp_path),
            "--out",
            str(out),
            "--oracle-segmentation",
            str(tmp_path / "ref.rttm"),
            "--dtype",
            "float16",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert status == 2 and "Traceback" not in err
    assert "float16 runs on a GPU only" in err and not out.exists()


def test_bench_refuses_float16_on_a_cpu(capsys):
    status = main(["bench", "wavlm-tiny", "--dtype", "float16"])
    err = capsys.readouterr().err
    assert status == 2 and "float16 runs on a GPU only" in err


def test_diarize_in_bfloat16_writes_its_outputs(tmp_path, capsys):
    import soundfile

    checkpoint = tiny_eend().save_pretrained(tmp_path / "eend")
    soundfile.write(tmp_path / "talk.wav", speech_like(batch=1, seconds=3.0)[0].numpy(), 16000)
    (tmp_path / "ref.rttm").write_text("SPEAKER talk 1 0.00 3.00 <NA> <NA> A <NA> <NA>\n")
    out = tmp_path / "out"
    status = main(
        [
            "diarize",
            str(tmp_path / "talk.wav"),
            "--model",
            str(checkpoint),
            "--out",
            str(out),
            "--oracle-clustering",
            str(tmp_path / "ref.rttm"),
            "--dtype",
            "bfloat16",
            "--step",
            "8.0",
            "--batch-size",
            "2",
            "--quiet",
        ]
    )
    err = capsys.readouterr().err
    assert status == 0, err
    assert sorted(p.name for p in out.iterdir()) == ["talk.json", "talk.rttm"]


@pytest.mark.parametrize("mode", ["autocast", "input"])
def test_small_positional_conv_in_bfloat16_is_computed_in_float32(mode):
    # oneDNN's AMX bfloat16 grouped convolution with 4 channels per group and an even kernel
    # returns values ~100 % off; such a model takes float32 for this term on a CPU
    from slimdiar.models.wavlm.components import PositionalConv

    torch.manual_seed(0)
    conv = PositionalConv(64, 16, 16).eval()
    x = torch.randn(2, 49, 64)
    with torch.no_grad():
        exact = conv(x)
        if mode == "autocast":
            with torch.autocast("cpu", dtype=torch.bfloat16):
                low = conv(x)
            assert low.dtype == torch.float32
        else:
            low = conv(x.bfloat16())
            assert low.dtype == torch.bfloat16
            exact = conv(x.bfloat16().float()).bfloat16()
    torch.testing.assert_close(low, exact, rtol=0, atol=0)
    # a published width (48 channels per group) keeps the bfloat16 convolution
    wide = PositionalConv(768, 16, 16).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert wide(torch.randn(1, 20, 768).bfloat16()).dtype == torch.bfloat16
