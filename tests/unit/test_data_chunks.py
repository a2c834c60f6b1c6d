import numpy as np
import pytest
import soundfile
import torch

from slimdiar.data import (
    ChunkDataset,
    DataDir,
    Turn,
    UEMRegion,
    chunk_regions,
    frame_labels,
    read_audio,
)
from slimdiar.errors import ConfigError
from slimdiar.frames import SAMPLE_RATE, FrameGrid
from slimdiar.models.wavlm.config import preset, wavlm_base_plus
from slimdiar.testing import tiny_eend


def starts(chunks):
    return [(c.start_s, round(c.valid_duration_s, 6)) for c in chunks]


def test_chunk_regions_train_and_validation_layouts():
    assert starts(chunk_regions([UEMRegion("r", 0, 20)], 8, 6)) == [(0, 8), (6, 8), (12, 8)]
    assert starts(chunk_regions([UEMRegion("r", 0, 21)], 8, 6)) == [
        (0, 8),
        (6, 8),
        (12, 8),
        (18, 3),
    ]
    assert starts(chunk_regions([UEMRegion("r", 0, 20)], 8, 8)) == [(0, 8), (8, 8), (16, 4)]
    assert starts(chunk_regions([UEMRegion("r", 0, 16)], 8, 8)) == [(0, 8), (8, 8)]
    # regions are cut independently, each starting at its own start
    chunks = chunk_regions([UEMRegion("a", 2.5, 12.5), UEMRegion("b", 1, 4)], 8, 6)
    assert [(c.uri, c.start_s, c.valid_duration_s) for c in chunks] == [
        ("a", 2.5, 8),
        ("a", 8.5, 4),
        ("b", 1, 3),
    ]
    assert all(c.duration_s == 8 for c in chunks)


def test_short_region_gives_one_padded_chunk_and_tiny_ones_are_skipped():
    assert starts(chunk_regions([UEMRegion("r", 3, 5.5)])) == [(3, 2.5)]
    assert chunk_regions([UEMRegion("r", 3, 3.05)]) == []
    with pytest.raises(ConfigError, match="would skip audio"):
        chunk_regions([UEMRegion("r", 0, 10)], 4, 5)
    with pytest.raises(ConfigError, match="must be positive"):
        chunk_regions([UEMRegion("r", 0, 10)], 0, 5)


@pytest.mark.parametrize(
    "name", ["wavlm-base-plus", "wavlm-large", "wavlm-base-plus-s80", "wavlm-large-s80"]
)
def test_8_s_chunks_have_399_frames_on_the_wavlm_grid(tmp_path, name):
    grid = preset(name)
    root = tmp_path / "d"
    root.mkdir()
    soundfile.write(root / "r.wav", np.zeros(16000 * 9, dtype=np.float32), 16000)
    (root / "wav.scp").write_text("r r.wav\n")
    (root / "rttm").write_text("SPEAKER r 1 0 1 <NA> <NA> A <NA> <NA>\n")
    dataset = ChunkDataset(DataDir.load(root), grid)
    assert dataset.num_samples == 128000
    assert dataset.num_frames == 399 == grid.num_frames(128000)
    item = dataset[0]
    assert item["waveform"].shape == (128000,)
    assert item["labels"].shape == (399, 4)
    assert item["mask"].shape == (399,)


def test_frame_labels_use_the_frame_centre():
    grid = wavlm_base_plus()
    centers = FrameGrid.from_config(grid).frame_centers_s(399)
    assert centers[0] == pytest.approx(200 / SAMPLE_RATE)
    assert centers[1] - centers[0] == pytest.approx(0.02)
    labels, mask, speakers = frame_labels([Turn("r", 11.0, 1.0, "A")], 10.0, 8.0, centers)
    # centre (320 i + 200) / 16000 nearest to 1 s: i = 49 (0.9925 s), to 2 s: i = 99 (1.9925 s);
    # both ends included
    assert speakers == ["A"]
    assert np.flatnonzero(labels[:, 0]).tolist() == list(range(49, 100))
    assert labels[:, 1:].sum() == 0
    assert mask.all()


def test_five_speakers_keep_the_four_who_talk_most():
    centers = FrameGrid.from_config(wavlm_base_plus()).frame_centers_s(399)
    turns = [
        Turn("r", 0.0, 1.0, "E"),  # E: 1.0 + 0.5 = 1.5 s in the chunk
        Turn("r", 7.5, 0.5, "E"),
        Turn("r", 0.0, 3.0, "C"),  # C: 3.0 s
        Turn("r", 1.0, 1.4, "D"),  # D: 1.4 s in the chunk, 4.4 s in all
        Turn("r", 8.5, 3.0, "D"),
        Turn("r", 2.0, 5.0, "A"),  # A: 5.0 s
        Turn("r", 3.0, 2.0, "B"),  # B: 2 x 2.0 s = 4.0 s
        Turn("r", 5.0, 2.0, "B"),
    ]
    labels, mask, speakers = frame_labels(turns, 0.0, 8.0, centers, max_speakers=4)
    assert speakers == ["A", "B", "C", "E"]
    assert labels.shape == (399, 4)
    # B is active on [3, 7) through two turns: frames 149 (2.9925 s) .. 349 (6.9925 s)
    b = labels[:, 1].astype(bool)
    assert np.flatnonzero(b).tolist() == list(range(149, 350))


def test_fewer_speakers_are_zero_padded_and_padding_is_masked():
    centers = FrameGrid.from_config(wavlm_base_plus()).frame_centers_s(399)
    labels, mask, speakers = frame_labels(
        [Turn("r", 0.0, 10.0, "A")], 0.0, 4.0, centers, max_speakers=4
    )
    assert speakers == ["A"]
    # centre < 4 s for frames 0 .. 199
    assert mask.sum() == 200 and mask[:200].all()
    assert labels[:200, 0].all() and labels[200:].sum() == 0 and labels[:, 1:].sum() == 0


def make_dir(tmp_path, duration_s=10.0, rate=8000, uem=None, channels=1):
    root = tmp_path / "d"
    root.mkdir()
    rng = np.random.default_rng(1)
    data = (0.1 * rng.standard_normal((int(duration_s * rate), channels))).astype(np.float32)
    soundfile.write(root / "r.wav", data, rate, subtype="FLOAT")
    (root / "wav.scp").write_text("r r.wav\n")
    (root / "rttm").write_text(
        "SPEAKER r 1 1 1 <NA> <NA> A <NA> <NA>\nSPEAKER r 1 7 2 <NA> <NA> B <NA> <NA>\n"
    )
    if uem:
        (root / "uem").write_text(uem)
    return root, data


def test_dataset_reads_chunks_lazily_and_pads_the_last(tmp_path):
    root, _ = make_dir(tmp_path)
    dataset = ChunkDataset(DataDir.load(root), wavlm_base_plus(), 8.0, 6.0)
    assert [(c.start_s, c.valid_duration_s) for c in dataset.chunks] == [(0.0, 8.0), (6.0, 4.0)]
    first, second = dataset[0], dataset[1]
    assert first["waveform"].dtype == torch.float32 and first["labels"].dtype == torch.float32
    assert first["mask"].dtype == torch.bool and first["mask"].all()
    assert (first["uri"], first["start_s"], second["start_s"]) == ("r", 0.0, 6.0)
    whole = read_audio(root / "r.wav")
    np.testing.assert_allclose(first["waveform"].numpy(), whole[:128000], atol=1e-4)
    np.testing.assert_allclose(second["waveform"][:64000].numpy(), whole[96000:], atol=1e-4)
    assert second["waveform"][64000:].abs().sum() == 0
    assert second["mask"].sum() == 200
    # second chunk [6, 10): B [7, 9) only (frames 49..149, ends included); A [1, 2) belongs to
    # the first chunk (frames 49..99), with B's start (349..398, cut at the chunk's end)
    assert second["labels"][:, 0].sum() == 101 and second["labels"][:, 1:].sum() == 0
    assert first["labels"][:, 0].sum() == 51 and first["labels"][:, 1].sum() == 50
    batch = torch.utils.data.default_collate([first, second])
    assert batch["waveform"].shape == (2, 128000) and batch["labels"].shape == (2, 399, 4)


def test_dataset_short_recording_gives_one_padded_masked_chunk(tmp_path):
    root, _ = make_dir(tmp_path, duration_s=3.0, rate=16000, channels=2)
    (root / "rttm").write_text("SPEAKER r 1 1 1 <NA> <NA> A <NA> <NA>\n")
    dataset = ChunkDataset(DataDir.load(root), wavlm_base_plus(), 8.0, 8.0, channel=1)
    assert len(dataset) == 1
    item = dataset[0]
    assert item["mask"].sum() == 150  # centres (320 i + 200) / 16000 < 3 s
    assert item["waveform"][48000:].abs().sum() == 0
    assert item["waveform"][:48000].abs().sum() > 0


def test_dataset_uses_uem_regions(tmp_path):
    root, _ = make_dir(tmp_path, uem="r 1 0.5 3\nr 1 6.5 10\n")
    dataset = ChunkDataset(DataDir.load(root), wavlm_base_plus())
    assert [(c.start_s, c.valid_duration_s) for c in dataset.chunks] == [(0.5, 2.5), (6.5, 3.5)]
    assert len(DataDir.load(root).all_regions()) == 2
    assert [t.speaker for t in DataDir.load(root).all_turns()] == ["A", "B"]
    with pytest.raises(ConfigError, match="channel 1 requested but 1 recording"):
        ChunkDataset(DataDir.load(root), wavlm_base_plus(), channel=1)
    with pytest.raises(ConfigError, match="max_speakers"):
        ChunkDataset(DataDir.load(root), wavlm_base_plus(), max_speakers=0)


def test_data_layer_does_not_import_later_stages():
    import subprocess
    import sys

    code = (
        "import sys, slimdiar.data\n"
        "bad = sorted(m for m in sys.modules if m.startswith(('slimdiar.models', "
        "'slimdiar.train', 'slimdiar.pipeline', 'slimdiar.cli', 'slimdiar.scoring', "
        "'pyannote')))\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == ""


# (first, last) global frames of a turn, both included, and the chunk that holds it: chunks of
# 8 s every 6 s, so chunk 1 starts at 6 s = global frame 300.
FRAME_TURNS = [(0, 49, 0), (1, 2, 0), (120, 290, 0), (320, 420, 1), (300, 301, 1), (351, 498, 1)]


def test_training_labels_and_output_turns_put_frame_i_at_the_same_second(tmp_path):
    """A turn from the middle of frame a to the middle of frame b labels frames a .. b of the
    training chunk, and the pipeline turns those frames back into a turn that starts at the
    same second, on the one frame grid both take from the model."""
    from slimdiar.pipeline import DiarizationPipeline, PipelineConfig, activity_to_segments

    model = tiny_eend()
    pipeline = DiarizationPipeline(
        model, None, PipelineConfig.from_dict({"clustering": {"method": "oracle"}})
    )
    root, _ = make_dir(tmp_path)
    dataset = ChunkDataset(DataDir.load(root), model, 8.0, 6.0)
    assert dataset.grid == pipeline.grid == FrameGrid(320, 400, SAMPLE_RATE)
    grid = pipeline.grid
    assert float(grid.frame_center_s(320)) == pytest.approx(6.4125)  # 0.02 i + 0.0125 s
    for first, last, index in FRAME_TURNS:
        onset_s, offset_s = float(grid.frame_center_s(first)), float(grid.frame_center_s(last))
        (root / "rttm").write_text(
            f"SPEAKER r 1 {onset_s:.4f} {offset_s - onset_s:.4f} <NA> <NA> A <NA> <NA>\n"
        )
        item = ChunkDataset(DataDir.load(root), model, 8.0, 6.0)[index]
        start_frame = int(round(item["start_s"] / grid.frame_step_s))
        local = np.flatnonzero(item["labels"][:, 0].numpy())
        # both ends included, as the reference labels them
        assert (local[0], local[-1]) == (first - start_frame, last - start_frame)
        np.testing.assert_allclose(
            item["start_s"] + dataset.centers_s[local[[0, -1]]], [onset_s, offset_s], atol=1e-9
        )
        # the same frames on the pipeline's global grid become a turn at the same seconds
        binary = np.zeros((500, 1), dtype=np.uint8)
        binary[start_frame + local, 0] = 1
        [(start_s, end_s, _)] = activity_to_segments(binary, grid, duration_s=10.0)
        assert start_s == pytest.approx(onset_s, abs=1e-9)
        assert end_s == pytest.approx(offset_s + grid.frame_step_s, abs=1e-9)  # last included


def test_a_chunk_dataset_takes_any_frame_grid_description(tmp_path):
    root, _ = make_dir(tmp_path)
    grid = FrameGrid(320, 400)
    for description in (grid, wavlm_base_plus()):
        dataset = ChunkDataset(DataDir.load(root), description)
        assert dataset.grid == grid and dataset.num_frames == 399
    with pytest.raises(ConfigError, match="describes no frame grid"):
        ChunkDataset(DataDir.load(root), object())
    with pytest.raises(ConfigError, match="at 8000 Hz"):
        ChunkDataset(DataDir.load(root), FrameGrid(320, 400, 8000))


def test_the_frame_grid_counts_the_frames_of_every_preset_and_the_filterbank():
    """The grid's count of frames is the one the conv stack (or filterbank) really emits."""
    from slimdiar.models.frontend import FbankConfig
    from slimdiar.models.wavlm.config import PRESETS

    lengths = [0, 1, 399, 400, 401, 719, 720, 721, 16000, 127999, 128000, 128001, 160123]
    for config in [preset(name) for name in PRESETS] + [FbankConfig()]:
        grid = FrameGrid.from_config(config)
        assert [grid.num_frames(n) for n in lengths] == [config.num_frames(n) for n in lengths]
