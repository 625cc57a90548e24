"""Chunking: equal-length chunks, real-length tails, masks and durations, batches of different lengths."""

from __future__ import annotations

import numpy as np
import pytest

from music2emo_hf.audio import AudioDecodeError
from music2emo_hf.feature_extraction_music2emo import MIN_CHUNK_SAMPLES, Music2EmoFeatureExtractor

from .conftest import tone


def test_chunks_keep_the_tail_at_its_real_length():
    extractor = Music2EmoFeatureExtractor(chunk_seconds=2.0)
    audio = tone(5.5)
    out = extractor(audio)
    assert out["input_values"].shape == (1, 3, 48000)
    np.testing.assert_array_equal(out["chunk_mask"], [[1, 1, 1]])
    np.testing.assert_allclose(out["chunk_durations"], [[2.0, 2.0, 1.5]])
    np.testing.assert_array_equal(out["input_values"][0].reshape(-1)[: len(audio)], audio)
    assert not out["input_values"][0, 2, 36000:].any()  # the padding after the tail is not audio


def test_a_batch_pads_with_masked_chunks():
    extractor = Music2EmoFeatureExtractor(chunk_seconds=2.0)
    out = extractor([tone(5.0), tone(1.0)], return_tensors="pt")
    assert tuple(out["input_values"].shape) == (2, 3, 48000)
    assert out["chunk_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert out["chunk_durations"].tolist() == [[2.0, 2.0, 1.0], [1.0, 0.0, 0.0]]


def test_short_inputs_are_one_chunk_of_their_own_length():
    out = Music2EmoFeatureExtractor()(tone(0.05))
    assert out["input_values"].shape == (1, 1, 1200)
    assert out["chunk_durations"][0, 0] == pytest.approx(0.05)


def test_a_tail_too_short_for_the_backbone_is_dropped_but_a_too_short_input_is_an_error():
    extractor = Music2EmoFeatureExtractor(chunk_seconds=1.0)
    out = extractor(tone(1.0 + (MIN_CHUNK_SAMPLES - 1) / 24000))
    assert out["chunk_mask"].tolist() == [[1]]
    kept = extractor(tone(1.0 + MIN_CHUNK_SAMPLES / 24000))  # a tail of exactly the backbone's minimum is a chunk
    assert kept["chunk_mask"].tolist() == [[1, 1]]
    with pytest.raises(AudioDecodeError, match=r"the audio is 16.62 ms long; at least 16.7 ms is needed"):
        extractor(np.zeros(MIN_CHUNK_SAMPLES - 1, dtype=np.float32))
    assert extractor(np.zeros(MIN_CHUNK_SAMPLES, dtype=np.float32))["chunk_mask"].tolist() == [[1]]


def test_waveforms_at_other_rates_are_resampled_once():
    out = Music2EmoFeatureExtractor()(tone(2.0, rate=44100), sampling_rate=44100)
    assert out["input_values"].shape == (1, 1, 48000)


def test_settings_survive_save_and_load(tmp_path):
    Music2EmoFeatureExtractor(chunk_seconds=12.5).save_pretrained(tmp_path)
    loaded = Music2EmoFeatureExtractor.from_pretrained(tmp_path)
    assert (loaded.sampling_rate, loaded.chunk_seconds, loaded.chunk_samples) == (24000, 12.5, 300000)


def test_settings_and_calls_that_cannot_chunk_are_refused_when_made():
    for settings, message in [({"chunk_seconds": 0}, "chunk_seconds must be at least 0.017 s"),
                              ({"chunk_seconds": -1}, "chunk_seconds"), ({"chunk_seconds": float("nan")}, "chunk_seconds"),
                              ({"chunk_seconds": float("inf")}, "chunk_seconds"),
                              ({"chunk_seconds": "x"}, "chunk_seconds must be a number of seconds, got 'x'"),
                              ({"sampling_rate": 0}, "sampling_rate: sampling rate 0 is not usable")]:
        with pytest.raises(ValueError, match=message):
            Music2EmoFeatureExtractor(**settings)
    with pytest.raises(ValueError, match="no audio: pass an input or a non-empty list"):
        Music2EmoFeatureExtractor()([])
    assert Music2EmoFeatureExtractor(chunk_seconds="12.5").chunk_samples == 300000  # as a saved config may hold it
