"""``slimdiar export``: the pipeline's models as ONNX files for ONNX Runtime.

Usage::

    slimdiar export --model exp/ft80/best --out exp/ft80/onnx
    slimdiar export --model exp/ft80/best --embedding avg_model.pt --out exp/ft80/onnx
    slimdiar diarize --model exp/ft80/best --engine onnx --onnx exp/ft80/onnx a.wav --out o/
"""

from __future__ import annotations

import argparse
from pathlib import Path

from slimdiar.cli._args import output_dir
from slimdiar.errors import ConfigError

DESCRIPTION = """\
Export the segmentation model (WavLM + Conformer, powerset log-probabilities) and, with
--embedding, a WeSpeaker-style ResNet speaker embedding model (trunk and masked statistics
pooling) to ONNX, opset {opset}, with dynamic batch and length axes:

  OUT_DIR/segmentation.onnx  waveforms (batch, num_samples) -> log_probs (batch, frames, classes)
  OUT_DIR/embedding.onnx     fbank (batch, fbank_frames, mel_bins), weights (batch, speakers,
                             frames) -> embeddings (batch, speakers, dimension), not normalised

Each file has a JSON sidecar (model config, frame grid, powerset mapping, opset, exporter, a
SHA-256 of the weights it came from); 'slimdiar diarize --engine onnx --onnx OUT_DIR' checks it
against the checkpoint it is given. GE2E (the default embedding) is not exported: its masks
select samples before its network runs, and it runs on torch with either engine. Needs
pip install 'slimdiar[onnx]' (onnx, onnxscript, onnxruntime).
"""


def add_parser(subparsers) -> None:
    """Register ``slimdiar export``."""
    from slimdiar.pipeline.export import OPSET

    parser = subparsers.add_parser(
        "export",
        help="export the segmentation and embedding models to ONNX",
        description=DESCRIPTION.format(opset=OPSET),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--model",
        required=True,
        metavar="CKPT",
        help="EEND checkpoint directory or DiariZen model directory",
    )
    parser.add_argument(
        "--embedding",
        metavar="PATH",
        help="a ResNet embedding checkpoint to export as well (WeSpeaker "
        "avg_model.pt, pyannote pytorch_model.bin, safetensors)",
    )
    parser.add_argument(
        "--out", type=output_dir, required=True, metavar="OUT_DIR", help="output directory"
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Export the models; 0 on success."""
    from slimdiar.pipeline.export import export_pipeline_models, require_exporter

    require_exporter()
    embedding = None
    if args.embedding is not None:
        from slimdiar.models.embeddings import load_embedding_model

        if args.embedding == "ge2e":
            raise ConfigError(
                "--embedding ge2e: GE2E is not exported (it runs on torch with "
                "either engine); give a ResNet checkpoint or leave it out"
            )
        embedding = load_embedding_model(args.embedding)
        if embedding.architecture != "resnet":
            raise ConfigError(
                f"--embedding {args.embedding}: only a ResNet embedding exports to ONNX"
            )
    model = load_segmentation_model(args.model)
    written = export_pipeline_models(
        model, Path(args.out), embedding, str(args.model), args.embedding
    )
    for path in written:
        print(f"wrote {path} and {path.with_suffix('.json').name}")
    return 0


def load_segmentation_model(path: str):
    """The EEND of a checkpoint directory or DiariZen model directory."""
    from slimdiar.models.diarizen import is_diarizen_dir, load_diarizen_dir
    from slimdiar.models.eend import EEND

    if is_diarizen_dir(path):
        return load_diarizen_dir(path)[0]
    return EEND.from_pretrained(path)
