"""Music2EmoFeatureExtractor: any audio in -> mono 24 kHz chunks of equal length, a chunk mask, chunk durations.

MERT's first convolution uses group norm over the whole time axis, so a zero-padded chunk gives different features
from the same audio unpadded. Chunks are therefore never padded into real audio: the last chunk of a track keeps its
real length, and `chunk_durations` tells the model how much of each row of `input_values` is audio.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
from transformers import BatchFeature, FeatureExtractionMixin

from .audio import RESAMPLERS, AudioDecodeError, AudioInput, AudioStream, check_rate, open_audio

# The receptive field of MERT's convolutional front end (kernel 10 stride 5, then 3/2 x4, 2/2 x2): fewer samples give
# zero frames. A last piece shorter than this (under 17 ms) is dropped; a whole input shorter than this is an error.
MIN_CHUNK_SAMPLES = 400


class Music2EmoFeatureExtractor(FeatureExtractionMixin):
    r"""Decodes (once), mixes to mono, resamples (once) to `sampling_rate` and cuts into `chunk_seconds` chunks.

    Returns `input_values` (batch, chunks, samples) float32, `chunk_mask` (batch, chunks) int64 with 1 for real chunks,
    and `chunk_durations` (batch, chunks) float32 in seconds; the real samples of chunk c of item b are
    `input_values[b, c, : round(chunk_durations[b, c] * sampling_rate)]`.
    """

    model_input_names = ["input_values", "chunk_mask", "chunk_durations"]

    def __init__(self, sampling_rate: int = 24000, chunk_seconds: float = 30.0, resampler: str = "soxr", **kwargs):
        """`resampler`: "soxr" (streamed, memory bounded by a chunk) or "sinc" (torchaudio's, as Music2Emo's
        inference resampled MERT's input; the whole track is held in memory)."""
        super().__init__(**kwargs)
        self.sampling_rate = check_rate(sampling_rate, "sampling_rate")
        try:  # a number, or its text, as a saved config may hold it
            self.chunk_seconds = float(chunk_seconds)
        except (TypeError, ValueError):
            raise ValueError(f"chunk_seconds must be a number of seconds, got {chunk_seconds!r}.") from None
        if not math.isfinite(self.chunk_seconds) or self.chunk_samples < MIN_CHUNK_SAMPLES:
            raise ValueError(f"chunk_seconds must be at least {MIN_CHUNK_SAMPLES / self.sampling_rate:.3f} s (MERT's "
                             f"{MIN_CHUNK_SAMPLES}-sample receptive field), got {chunk_seconds!r}.")
        if resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}.")
        self.resampler = resampler

    @property
    def chunk_samples(self) -> int:
        return round(self.chunk_seconds * self.sampling_rate)

    def open_audio(self, audio: AudioInput, sampling_rate: int | None = None) -> AudioStream:
        """`audio` opened to be read once (a bare waveform is at `sampling_rate`, else at the model's): a stream to
        give `iter_chunks`, and to ask afterwards whether the file was whole (`AudioStream.warning`). The pipeline
        opens its inputs here: a model's remote code holds its own copy of the audio module, and of its stream."""
        return open_audio(audio, sampling_rate=sampling_rate, default_rate=self.sampling_rate)

    def iter_chunks(self, audio: AudioInput, sampling_rate: int | None = None,
                    heard_rate: int | None = None) -> Iterator:
        """Stream the chunks of one input; only one chunk's worth of audio is held at a time. With `heard_rate` (the
        harmony's), each chunk comes as a pair with its span of the input resampled to that rate from the native
        one (`AudioStream.blocks`). `audio` may be a stream `self.open_audio` gave."""
        stream = self.open_audio(audio, sampling_rate)
        emitted = 0
        for item in stream.blocks(self.sampling_rate, self.chunk_samples, self.resampler, heard_rate):
            chunk = item if heard_rate is None else item[0]
            if len(chunk) < MIN_CHUNK_SAMPLES:
                if emitted:
                    return
                raise AudioDecodeError(
                    f"{stream.name}: the audio is {1000 * len(chunk) / self.sampling_rate:.2f} ms long; at least "
                    f"{1000 * MIN_CHUNK_SAMPLES / self.sampling_rate:.1f} ms is needed."
                )
            emitted += 1
            yield item

    def __call__(
        self,
        audio: AudioInput | Sequence[AudioInput],
        sampling_rate: int | None = None,
        return_tensors: str | None = None,
    ) -> BatchFeature:
        """Chunk one input or a list of inputs (a list is a batch; a bare 2-D array is one multichannel waveform)."""
        items = list(audio) if isinstance(audio, (list, tuple)) else [audio]
        if not items:
            raise ValueError("no audio: pass an input or a non-empty list of inputs.")
        chunked = [list(self.iter_chunks(item, sampling_rate)) for item in items]
        n_chunks = max(len(chunks) for chunks in chunked)
        width = max(len(chunk) for chunks in chunked for chunk in chunks)
        input_values = np.zeros((len(items), n_chunks, width), dtype=np.float32)
        chunk_mask = np.zeros((len(items), n_chunks), dtype=np.int64)
        chunk_durations = np.zeros((len(items), n_chunks), dtype=np.float32)
        for b, chunks in enumerate(chunked):
            for c, chunk in enumerate(chunks):
                input_values[b, c, : len(chunk)] = chunk
                chunk_mask[b, c] = 1
                chunk_durations[b, c] = len(chunk) / self.sampling_rate
        return BatchFeature(
            {"input_values": input_values, "chunk_mask": chunk_mask, "chunk_durations": chunk_durations},
            tensor_type=return_tensors,
        )


__all__ = ["MIN_CHUNK_SAMPLES", "Music2EmoFeatureExtractor"]
