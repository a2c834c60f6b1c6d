"""Write the checkpoints of this folder with slimdiar 0.1.0 (run with PYTHONPATH=<0.1.0>/src).

The imports are those of 0.1.0 (``slimdiar.models.config``, ``slimdiar.prune``,
``slimdiar.train.prune``); today's code does not run this script.
"""

import copy
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file
from slimdiar.models.config import wavlm_tiny
from slimdiar.prune import SparsityController
from slimdiar.train.prune import DistillObjective, DistillOptimSection, PruneSection, enable_units

from slimdiar.models.eend import EEND, EENDConfig
from slimdiar.models.wavlm import WavLM

WRITTEN_BY = {"written_by": "slimdiar 0.1.0 (before the package split)"}


def randomise_gates(model: WavLM) -> None:
    with torch.no_grad():
        for gate in model.gates():
            gate.log_alpha.uniform_(-3, 3)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    wave = torch.randn(2, 8000)
    config = EENDConfig(wavlm=wavlm_tiny(), d_model=32, num_heads=2, ffn_dim=64, num_blocks=1)
    eend = EEND(config).eval()
    eend.save_pretrained(out / "eend-tiny", metadata=WRITTEN_BY)

    torch.manual_seed(1)
    gated = WavLM(wavlm_tiny())
    gated.enable_pruning(conv=True, heads=True, ffn=True)
    randomise_gates(gated)
    gated.eval()
    pruned = gated.prune().eval()
    pruned.save_pretrained(out / "wavlm-tiny-pruned", metadata=WRITTEN_BY)

    # A stage-1 checkpoint (gated student + multipliers), as the trainer writes best/.
    torch.manual_seed(2)
    teacher = WavLM(wavlm_tiny()).eval()
    student = enable_units(copy.deepcopy(teacher), PruneSection(sparsity=0.5))
    randomise_gates(student)
    controller = SparsityController(0.5, 2.0)
    with torch.no_grad():
        controller.lambda1.fill_(0.25)
        controller.lambda2.fill_(-0.5)
    objective = DistillObjective(student, teacher, [1, 2], DistillOptimSection(), controller)
    objective.save(out / "stage1-gated", WRITTEN_BY)
    student.eval()

    with torch.no_grad():
        expected = {
            "waveforms": wave,
            "eend_log_probs": eend(wave),
            "pruned_last_hidden": pruned(wave)[-1],
            "gated_last_hidden": gated(wave)[-1],
            "stage1_gated_last_hidden": student(wave)[-1],
            "stage1_pruned_last_hidden": student.prune().eval()(wave)[-1],
        }
    save_file({k: v.contiguous() for k, v in expected.items()}, str(out / "expected.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
