"""What the training commands share: running one stage on one process or under torchrun."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Callable

from slimdiar.cli._args import output_dir
from slimdiar.config import bundled_configs
from slimdiar.train.distributed import DistContext, init_distributed, shutdown_distributed


def add_data_arguments(parser: argparse.ArgumentParser) -> None:
    """``--train``, ``--dev`` and ``--out``, as every training command takes them."""
    parser.add_argument("--train", required=True, metavar="DIR", help="training data directory")
    parser.add_argument("--dev", required=True, metavar="DIR", help="validation data directory")
    parser.add_argument(
        "--out", type=output_dir, required=True, metavar="EXP_DIR", help="experiment directory"
    )


def add_run_arguments(parser: argparse.ArgumentParser, config_required: bool) -> None:
    """``--config``, ``--set`` and ``--resume``, as every training command takes them."""
    parser.add_argument(
        "--config",
        required=config_required,
        metavar="TOML",
        help="run configuration"
        + ("" if config_required else " (optional)")
        + ": a TOML file or the name of a bundled one ("
        + ", ".join(bundled_configs())
        + ")",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="SECTION.KEY=VALUE",
        help="override one configuration value (repeatable)",
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in EXP_DIR from its last complete checkpoint",
    )


def run_stage(device: str, stage: Callable[[DistContext], object]) -> tuple[DistContext, object]:
    """Run ``stage(ctx)`` on this process's share of the job; only rank 0 keeps logging info."""
    ctx = init_distributed(device)
    if not ctx.is_main:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        return ctx, stage(ctx)
    finally:
        shutdown_distributed()
