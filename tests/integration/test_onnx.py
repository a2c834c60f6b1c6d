"""ONNX export and the ONNX Runtime engine against float32 torch.

Parity: log-probabilities within 1e-4 (absolute) of torch for a tiny WavLM EEND and a pruned
one (per-layer head lists, an FFN removed, narrower conv layers), at two lengths and two batch
sizes from a single export (the axes are really dynamic); ResNet embeddings within 1e-4;
``slimdiar diarize --engine onnx`` writes the RTTM torch writes. Exporting takes tens of
seconds per model on two shared cores, so each model is exported once per module.
"""

import json
import sys

import numpy as np
import pytest
import soundfile
import torch

from slimdiar.cli import main
from slimdiar.errors import CheckpointError, ConfigError
from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.embeddings.fbank import FbankConfig, wespeaker_fbank
from slimdiar.models.embeddings.registry import SpeakerEmbedding
from slimdiar.models.embeddings.resnet import ResNetConfig, ResNetEmbedding
from slimdiar.models.wavlm.config import wavlm_tiny
from slimdiar.pipeline.engines import (
    OnnxResNetEmbedding,
    OnnxSegmentation,
    SegmentationModel,
    TorchSegmentation,
    read_sidecar,
    require_onnxruntime,
)
from slimdiar.testing import pruned_tiny_wavlm_config

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

TINY_HEAD = dict(d_model=32, num_heads=2, ffn_dim=64, num_blocks=2, conv_kernel=7)
MAX_ABS_DIFF = 1e-4
SHAPES = [(2, 16000), (3, 24000 + 123)]  # (batch, num_samples): not the export's example


def speech_like(batch, num_samples, seed=0):
    generator = torch.Generator().manual_seed(seed)
    t = torch.arange(num_samples) / 16000
    tone = torch.sin(2 * torch.pi * 180 * t) * (torch.sin(2 * torch.pi * 3 * t) > 0)
    return 0.3 * tone + 0.05 * torch.randn(batch, num_samples, generator=generator)


def random_model(seed=0) -> ResNetEmbedding:
    """A tiny ResNet with non-trivial batch-norm statistics."""
    torch.manual_seed(seed)
    fbank = FbankConfig(**{**wespeaker_fbank().__dict__, "num_mel_bins": 16})
    model = ResNetEmbedding(
        ResNetConfig(num_blocks=[1, 2, 1, 1], base_channels=4, embedding_dim=8, fbank=fbank)
    )
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.endswith("running_var"):
                tensor.uniform_(0.5, 2.0)
            elif name.endswith("running_mean") or name.endswith("bn1.bias"):
                tensor.normal_(0.0, 0.1)
    return model.eval()


def tiny_eend(wavlm, seed=0) -> EEND:
    torch.manual_seed(seed)
    return EEND(EENDConfig(wavlm=wavlm, **TINY_HEAD)).eval()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny EEND checkpoint and a tiny ResNet, exported with ``slimdiar export``."""
    root = tmp_path_factory.mktemp("onnx")
    model = tiny_eend(wavlm_tiny())
    with torch.no_grad():
        model.classifier.bias[0] -= 3.0  # less silence: the RTTM test has turns to compare
    checkpoint = model.save_pretrained(root / "eend")
    from safetensors.torch import save_file

    resnet = random_model()
    save_file(resnet.resnet.state_dict(), str(root / "resnet.safetensors"))
    torch.set_num_threads(1)
    status = main(
        [
            "export",
            "--model",
            str(checkpoint),
            "--embedding",
            str(root / "resnet.safetensors"),
            "--out",
            str(root / "export"),
        ]
    )
    assert status == 0
    return root


@pytest.fixture(scope="module")
def pruned_export(tmp_path_factory):
    from slimdiar.pipeline.export import export_segmentation

    model = tiny_eend(pruned_tiny_wavlm_config())
    path = tmp_path_factory.mktemp("pruned") / "segmentation.onnx"
    torch.set_num_threads(1)
    export_segmentation(model, path)
    return model, path


def assert_log_prob_parity(model, session):
    for batch, num_samples in SHAPES:
        waveforms = speech_like(batch, num_samples)
        with torch.inference_mode():
            reference = model(waveforms).numpy()
        got = session(waveforms.numpy())
        assert got.shape == reference.shape == (batch, model.num_frames(num_samples), 11)
        assert np.abs(got - reference).max() <= MAX_ABS_DIFF


@pytest.mark.slow
def test_export_writes_models_with_sidecars_and_opset(exported):
    files = sorted(p.name for p in (exported / "export").iterdir())
    assert files == ["embedding.json", "embedding.onnx", "segmentation.json", "segmentation.onnx"]
    proto = onnx.load(str(exported / "export" / "segmentation.onnx"))
    onnx.checker.check_model(proto)
    assert [o.version for o in proto.opset_import if o.domain == ""] == [18]
    metadata = {p.key: p.value for p in proto.metadata_props}
    assert metadata["kind"] == "segmentation" and metadata["opset"] == "18"
    info = read_sidecar(exported / "export" / "segmentation.onnx", "segmentation")
    assert info["frame_step_samples"] == 320 and info["receptive_field_samples"] == 400
    assert np.asarray(info["mapping"]).shape == (11, 4)
    assert info["config"] == json.loads(
        json.dumps(EEND.from_pretrained(exported / "eend").config.to_dict())
    )


@pytest.mark.slow
def test_onnx_log_probs_match_torch_at_two_lengths_and_batch_sizes(exported):
    model = EEND.from_pretrained(exported / "eend").eval()
    session = OnnxSegmentation(exported / "export" / "segmentation.onnx", threads=1)
    assert isinstance(session, SegmentationModel)
    assert isinstance(TorchSegmentation(model), SegmentationModel)
    assert session.num_frames(128000) == model.num_frames(128000) == 399
    assert_log_prob_parity(model, session)


@pytest.mark.slow
def test_pruned_wavlm_exports_with_its_pruned_widths(pruned_export):
    model, path = pruned_export
    session = OnnxSegmentation(path, threads=1)
    assert_log_prob_parity(model, session)


@pytest.mark.slow
def test_onnx_resnet_embeddings_match_torch(exported):
    torch_model = SpeakerEmbedding(random_model(), "tiny")
    session = OnnxResNetEmbedding(exported / "export" / "embedding.onnx", threads=1)
    generator = torch.Generator().manual_seed(1)
    for batch, num_samples, num_frames in [(2, 16000, 49), (3, 32000, 99)]:
        waveforms = speech_like(batch, num_samples, seed=batch)
        weights = (torch.rand(batch, 4, num_frames, generator=generator) > 0.4).float()
        weights[0, 2] = 0  # a silent speaker
        reference = torch_model.embed_windows(waveforms, weights)
        got = session.embed_windows(waveforms.numpy(), weights.numpy())
        assert got.shape == reference.shape == (batch, 4, 8)
        assert np.array_equal(np.isnan(got), np.isnan(reference))
        assert np.isnan(got[0, 2]).all()
        assert np.nanmax(np.abs(got - reference)) <= MAX_ABS_DIFF
    pair = session(waveforms.numpy()[:1], weights.numpy()[:1, 0])
    assert np.abs(pair - torch_model(waveforms[:1], weights[:1, 0])).max() <= MAX_ABS_DIFF


def write_recording(path, seconds=12.0):
    waveform = speech_like(1, int(16000 * seconds), seed=3)[0].numpy()
    waveform[int(16000 * 4) : int(16000 * 7)] *= 0.2  # a quieter stretch
    soundfile.write(path, waveform, 16000)
    return path


@pytest.mark.slow
def test_diarize_with_onnx_engine_writes_the_torch_rttm(exported, tmp_path):
    audio = write_recording(tmp_path / "talk.wav")
    common = [
        "diarize",
        "--model",
        str(exported / "eend"),
        str(audio),
        "--quiet",
        "--embedding",
        str(exported / "resnet.safetensors"),
        "--threads",
        "1",
    ]
    assert main([*common, "--out", str(tmp_path / "torch")]) == 0
    assert (
        main(
            [
                *common,
                "--out",
                str(tmp_path / "onnx"),
                "--engine",
                "onnx",
                "--onnx",
                str(exported / "export"),
            ]
        )
        == 0
    )
    torch_rttm = (tmp_path / "torch" / "talk.rttm").read_text()
    assert torch_rttm.strip()  # some speech was found, so the comparison says something
    assert (tmp_path / "onnx" / "talk.rttm").read_text() == torch_rttm


@pytest.mark.slow
def test_diarize_refuses_an_export_of_another_model(exported, tmp_path, capsys):
    other = tiny_eend(wavlm_tiny(), seed=1).save_pretrained(tmp_path / "other")
    status = main(
        [
            "diarize",
            "--model",
            str(other),
            str(write_recording(tmp_path / "a.wav")),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "onnx",
            "--onnx",
            str(exported / "export"),
            "--quiet",
        ]
    )
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "exported from another model" in err


def test_onnx_engine_without_onnxruntime_is_one_line_exit_2(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    with pytest.raises(ConfigError, match="slimdiar\\[onnx\\]"):
        require_onnxruntime()
    status = main(
        [
            "diarize",
            "--model",
            str(tmp_path),
            str(tmp_path / "a.wav"),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "onnx",
            "--onnx",
            str(tmp_path),
        ]
    )
    assert status == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs onnxruntime" in err


@pytest.mark.parametrize(
    "extra, message",
    [
        ([], "needs --onnx"),
        (["--onnx", "x", "--dtype", "bfloat16"], "float32 only"),
    ],
)
def test_onnx_engine_option_errors(tmp_path, capsys, extra, message):
    status = main(
        [
            "diarize",
            "--model",
            str(tmp_path),
            str(tmp_path / "a.wav"),
            "--out",
            str(tmp_path / "out"),
            "--engine",
            "onnx",
            *extra,
        ]
    )
    assert status == 2
    assert message in capsys.readouterr().err


def test_onnx_option_needs_the_onnx_engine(tmp_path, capsys):
    status = main(
        [
            "diarize",
            "--model",
            str(tmp_path),
            str(tmp_path / "a.wav"),
            "--out",
            str(tmp_path / "out"),
            "--onnx",
            str(tmp_path),
        ]
    )
    assert status == 2 and "--onnx is an option of --engine onnx" in capsys.readouterr().err


def test_missing_or_foreign_export_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError, match="no such ONNX model"):
        OnnxSegmentation(tmp_path / "segmentation.onnx")
    (tmp_path / "segmentation.onnx").write_bytes(b"not onnx")
    with pytest.raises(CheckpointError, match="sidecar"):
        OnnxSegmentation(tmp_path / "segmentation.onnx")
    (tmp_path / "segmentation.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(CheckpointError, match="not the sidecar"):
        OnnxSegmentation(tmp_path / "segmentation.onnx")


def identity_model():
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "g", [x], [y])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_write_model_is_atomic(tmp_path, monkeypatch):
    from slimdiar.pipeline import export

    path = tmp_path / "segmentation.onnx"
    export.write_model(identity_model(), path, {"format": "slimdiar-onnx", "kind": "x"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmentation.json", "segmentation.onnx"]
    assert {p.key: p.value for p in onnx.load(str(path)).metadata_props}["kind"] == "x"

    def fail(*args, **kwargs):
        raise OSError(28, "No space left on device")

    target = tmp_path / "other.onnx"
    monkeypatch.setattr(export, "write_json_atomic", fail)
    with pytest.raises(OSError):
        export.write_model(identity_model(), target, {"format": "slimdiar-onnx"})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["segmentation.json", "segmentation.onnx"]


def test_export_help_states_the_opset(capsys):
    assert main(["export", "--help"]) == 0
    assert "opset 18" in capsys.readouterr().out


@pytest.mark.slow
def test_bench_times_torch_and_onnx_side_by_side():
    from slimdiar.bench.backbone import benchmark_backbones

    torch.set_num_threads(1)
    results = benchmark_backbones(
        ["wavlm-tiny"], seconds=0.5, batch_size=2, warmup=0, repeats=1, engines=["torch", "onnx"]
    )
    assert [r.engine for r in results] == ["torch", "onnx"]
    assert results[0].params == results[1].params
    assert results[1].speedup_vs_torch == pytest.approx(results[0].latency_s / results[1].latency_s)
    assert results[0].speedup_vs_torch is None


def test_bench_engine_errors(capsys):
    from slimdiar.bench.backbone import benchmark_backbones

    with pytest.raises(ConfigError, match="float32 only"):
        benchmark_backbones(["wavlm-tiny"], engines=["onnx"], dtype=[torch.bfloat16])
    assert main(["bench", "--pipeline", "x", "--engine", "onnx"]) == 2
    assert "--engine onnx needs --onnx EXPORT_DIR" in capsys.readouterr().err
    assert main(["bench", "--pipeline", "x", "--engine", "torch", "onnx"]) == 2
    assert "a single --engine" in capsys.readouterr().err
    assert main(["bench", "--pipeline", "x", "--onnx", "y"]) == 2
    assert "--onnx is an option of --engine onnx" in capsys.readouterr().err


@pytest.mark.slow
def test_pipeline_bench_runs_the_exported_models(exported, tmp_path):
    from slimdiar.bench.pipeline import benchmark_pipeline

    common = dict(
        seconds=9.0, embedding=str(exported / "resnet.safetensors"), threads=1, batch_size=2
    )
    torch_run = benchmark_pipeline(exported / "eend", **common)
    onnx_run = benchmark_pipeline(exported / "eend", onnx=exported / "export", **common)
    assert (torch_run.engine, onnx_run.engine) == ("torch", "onnx")
    assert onnx_run.to_dict()["engine"] == "onnx" and onnx_run.batch_size == 2
    assert onnx_run.num_chunks == torch_run.num_chunks
    assert onnx_run.model_params == torch_run.model_params  # the exported model's count
    assert onnx_run.stages["segmentation"]["seconds"] > 0
    with pytest.raises(ConfigError, match="float32 on the CPU only"):
        benchmark_pipeline(exported / "eend", onnx=exported / "export", dtype="bfloat16")
    with pytest.raises(CheckpointError, match="no such export directory"):
        benchmark_pipeline(exported / "eend", onnx=tmp_path / "missing", **common)
