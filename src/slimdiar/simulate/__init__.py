"""Simulated conversations as diarization training data.

Conversations are built from single-speaker utterances in the manner of Landini et al. (2022),
"From simulated mixtures to simulated conversations as training data for end-to-end neural
diarization": turns follow each other with pauses and overlaps drawn from distributions (set by
hand or estimated from a real RTTM), optionally with noise and reverberation, and are written
as data directories with disjoint speakers per split.
"""

from slimdiar.simulate.config import GapDistribution, SimulationConfig, TurnTakingConfig
from slimdiar.simulate.simulator import (
    ConversationPlan,
    ConversationSimulator,
    SimulatedRecording,
    SimulationReport,
    SplitResult,
    assign_speakers,
    parse_splits,
    simulate_data_dirs,
    turn_taking_from_rttm,
)
from slimdiar.simulate.sources import CorpusSource, SpeakerSource, ToneSource, Utterance
from slimdiar.simulate.turns import (
    Placement,
    TurnTakingStats,
    calibrate_overlap_probability,
    layout_conversation,
    measure_turn_taking,
    speech_and_overlap_s,
)

__all__ = [
    "ConversationPlan",
    "ConversationSimulator",
    "CorpusSource",
    "GapDistribution",
    "Placement",
    "SimulatedRecording",
    "SimulationConfig",
    "SimulationReport",
    "SpeakerSource",
    "SplitResult",
    "ToneSource",
    "TurnTakingConfig",
    "TurnTakingStats",
    "Utterance",
    "assign_speakers",
    "calibrate_overlap_probability",
    "layout_conversation",
    "measure_turn_taking",
    "parse_splits",
    "simulate_data_dirs",
    "speech_and_overlap_s",
    "turn_taking_from_rttm",
]
