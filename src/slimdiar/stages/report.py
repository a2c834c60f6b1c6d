"""The report of a pruning run: JSON, Markdown and plots, generated from what was measured.

``report.json`` holds the numbers (target and reached sparsity, parameters and MACs of teacher and
student, kept units per layer); ``report.md`` and the PNG plots are generated from it and from
``metrics.jsonl``, never typed by hand.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from slimdiar.fileio import write_json_atomic, write_text_atomic
from slimdiar.train.metrics import read_metrics

logger = logging.getLogger(__name__)


def pruning_report(
    teacher,
    student,
    target_sparsity: float,
    objective: str = "params",
    final_model: dict | None = None,
) -> dict:
    """The numbers of a pruned model against its teacher.

    Parameters
    ----------
    teacher, student
        Plain :class:`~slimdiar.models.wavlm.WavLM` models (the student already pruned).
    target_sparsity
        What was asked for.
    objective
        ``"params"`` or ``"macs"``: what the target measures.
    final_model
        How the pruned checkpoint was chosen: ``{"rule": "average" | "on-target",
        "epochs": [...]}`` (recorded as given).
    """
    t_cfg, s_cfg = teacher.config, student.config
    t_params, s_params = teacher.num_params(), student.num_params()
    t_macs, s_macs = teacher.macs(1.0), student.macs(1.0)
    return {
        "objective": objective,
        "final_model": final_model,
        "target_sparsity": target_sparsity,
        "reached_sparsity": 1.0 - s_params / t_params,
        "reached_mac_sparsity": 1.0 - s_macs / t_macs,
        "teacher": {"params": t_params, "macs_per_second": t_macs, "name": t_cfg.name},
        "student": {"params": s_params, "macs_per_second": s_macs, "name": s_cfg.name},
        "conv_channels": {
            "teacher": [c for c, _, _ in t_cfg.conv_layers],
            "student": [c for c, _, _ in s_cfg.conv_layers],
        },
        "heads": {
            "teacher": [len(h) for h in t_cfg.remaining_heads],
            "student": [len(h) for h in s_cfg.remaining_heads],
            "student_indices": s_cfg.remaining_heads,
        },
        "ffn_units": {"teacher": t_cfg.ffn_dim, "student": s_cfg.ffn_dim},
        "student_config": s_cfg.to_dict(),
    }


def _plot_training(records: list[dict], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("type") == "step" and "expected_sparsity" in r]
    if not steps:
        return []
    x = [r["step"] for r in steps]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    axes[0].plot(x, [r["expected_sparsity"] for r in steps], label="expected")
    axes[0].plot(x, [r["target_sparsity"] for r in steps], "--", label="target")
    axes[0].set(title="sparsity", xlabel="step")
    axes[0].legend()
    axes[1].plot(x, [r["lambda1"] for r in steps], label="λ1")
    axes[1].plot(x, [r["lambda2"] for r in steps], label="λ2")
    axes[1].set(title="Lagrange multipliers", xlabel="step")
    axes[1].legend()
    axes[2].plot(x, [r["distill"] for r in steps])
    axes[2].set(title="distillation loss (L1 − cos)", xlabel="step")
    fig.tight_layout()
    name = "training.png"
    _save_figure(fig, out / name)
    plt.close(fig)
    return [name]


def _plot_kept_units(report: dict, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    panels = [
        ("conv_channels", "conv channels per conv layer", "conv layer"),
        ("heads", "attention heads per layer", "transformer layer"),
        ("ffn_units", "FFN units per layer", "transformer layer"),
    ]
    for ax, (key, title, xlabel) in zip(axes, panels):
        teacher, student = report[key]["teacher"], report[key]["student"]
        index = list(range(len(teacher)))
        ax.bar(index, teacher, color="#dddddd", label="teacher")
        ax.bar(index, student, color="#1f77b4", label="kept")
        ax.set(title=title, xlabel=xlabel)
        ax.legend()
    fig.suptitle(
        f"{report['student']['params'] / 1e6:.2f}M of {report['teacher']['params'] / 1e6:.2f}M "
        f"parameters kept (sparsity {report['reached_sparsity']:.3f}, target "
        f"{report['target_sparsity']:.3f})"
    )
    fig.tight_layout()
    name = "kept_units.png"
    _save_figure(fig, out / name)
    plt.close(fig)
    return [name]


def _save_figure(fig, path: Path) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".png", dir=path.parent)
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def render_markdown(report: dict, plots: list[str]) -> str:
    """``report.md`` from a report dict."""
    t, s = report["teacher"], report["student"]
    lines = [
        "# Pruning report",
        "",
        f"Target sparsity {report['target_sparsity']:.3f} ({report['objective']}); reached "
        f"{report['reached_sparsity']:.4f} in parameters and "
        f"{report['reached_mac_sparsity']:.4f} in MACs.",
        "",
        "| model | params | MACs per second of audio |",
        "|---|---|---|",
        f"| teacher | {t['params'] / 1e6:.2f}M | {t['macs_per_second'] / 1e9:.3f}G |",
        f"| pruned | {s['params'] / 1e6:.2f}M | {s['macs_per_second'] / 1e9:.3f}G |",
        "",
        "| layer | heads kept (indices) | FFN units kept |",
        "|---|---|---|",
    ]
    ffn_teacher = report["ffn_units"]["teacher"]
    for i, (heads, ffn) in enumerate(
        zip(report["heads"]["student_indices"], report["ffn_units"]["student"])
    ):
        lines.append(f"| {i} | {len(heads)} {heads} | {ffn} of {ffn_teacher[i]} |")
    final = report.get("final_model")
    if final:
        how = "average of epochs" if final["rule"] == "average" else "checkpoint of epoch"
        lines[4:4] = [
            f"Final model (`{final['rule']}` rule): {how} "
            f"{', '.join(str(e) for e in final['epochs'])}, then pruned.",
            "",
        ]
    lines += [
        "",
        "Conv channels kept per layer: "
        + ", ".join(
            f"{s_}/{t_}"
            for s_, t_ in zip(
                report["conv_channels"]["student"], report["conv_channels"]["teacher"]
            )
        ),
        "",
    ]
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def write_report(
    exp_dir: str | Path,
    teacher,
    student,
    target_sparsity: float,
    objective: str = "params",
    final_model: dict | None = None,
) -> dict:
    """Write ``report.json``, the plots and ``report.md`` into ``exp_dir``; return the report."""
    exp_dir = Path(exp_dir)
    report = pruning_report(teacher, student, target_sparsity, objective, final_model)
    plots = _plot_training(read_metrics(exp_dir / "metrics.jsonl"), exp_dir)
    plots += _plot_kept_units(report, exp_dir)
    report["plots"] = plots
    write_json_atomic(exp_dir / "report.json", report)
    write_text_atomic(exp_dir / "report.md", render_markdown(report, plots))
    return report
