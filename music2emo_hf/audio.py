"""Audio in, mono float32 at a target rate out: decoded once, resampled once, streamed in blocks.

Every caller (feature extractor, harmony, pipeline, data readers) goes through `open_audio`, so a file is decoded
the same way everywhere and a long file never has to sit in memory whole.
"""

from __future__ import annotations

import contextlib
import errno
import io
import itertools
import math
import numbers
import os
import queue
import re
import sys
import threading
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Union

import numpy as np
import soundfile as sf
import soxr

AudioInput = Union[str, os.PathLike, bytes, io.IOBase, np.ndarray, dict]
"""A path, a file's bytes or an open binary file, a waveform (numpy, torch, ...), `{"array" | "raw": waveform,
"sampling_rate": int}`, or `datasets`' undecoded audio `{"bytes", "path"}`."""

# What a folder walk takes: every container libsndfile decodes (W64, RF64, CAF, AU among them, which were passed over).
AUDIO_EXTENSIONS = (".wav", ".wave", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aiff", ".aif", ".aifc", ".w64",
                    ".rf64", ".caf", ".au")
DECODED_FORMATS = "WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, W64, RF64, CAF, AU"  # AUDIO_EXTENSIONS' formats, in words


def passed_over(name: str) -> bool:
    """Whether a file or folder met while walking a folder is left out: hidden ones, as the `._song.mp3`
    AppleDouble companions macOS writes on drives of other formats, and zips' `__MACOSX` folders of them."""
    return name.startswith(".") or name == "__MACOSX"


# Audio no decoder of this package's reads (AAC, ALAC, WMA, Monkey's Audio, WavPack): named, so that a folder's
# files of these types are reported with the way around, not passed over. Not .mp4: in a music folder, mostly videos.
UNDECODED_EXTENSIONS = (".m4a", ".m4b", ".aac", ".wma", ".ape", ".wv")
_ASF_HEADER = bytes.fromhex("3026b2758e66cf11")  # the start of a WMA file's header object's GUID
RESAMPLERS = ("soxr", "sinc")  # see AudioStream.blocks
_READ_FRAMES = 1 << 16
_MIN_RATE, _MAX_RATE = 1_000, 768_000
_COUNTED = ("WAV", "WAVEX", "RF64", "W64", "AIFF", "AU")  # formats whose cut files libsndfile counts the frames held of
_AU_SAMPLE_BYTES = {1: 1, 2: 1, 3: 2, 4: 3, 5: 4, 6: 4, 7: 8, 27: 1}  # AU's encodings of fixed size: µ-law ... A-law
_UNSTATED = 2**63 - 1  # libsndfile's frame count (SF_COUNT_MAX) for a header that does not state the file's length


def convert_first(extension: str) -> str:
    """How to get a file of a type this package does not decode (`extension`: its own, ".m4a") into one it does."""
    return f"convert it to FLAC or WAV first (e.g. `ffmpeg -i IN{extension} OUT.flac`)"


class AudioDecodeError(ValueError):
    """The input could not be turned into audio; the message names the input and what to do."""


class AudioCutShortWarning(UserWarning):
    """A file holds less audio than its header announces (a copy or download that stopped), or its decoder gave up
    on damage part-way: what was decoded is analysed, and this says so, naming the file and both durations."""


def _as_float32(array: np.ndarray, name: str) -> np.ndarray:
    """Integer PCM is scaled to [-1, 1) by its full range; floats are taken as they are (one beyond float32's range
    becomes infinite, and is refused as such by `_check_finite`). 64-bit integers are no PCM format: they are what
    `np.array` makes of a list of samples, whose scale it lost, and dividing by 2**63 would analyse silence."""
    if array.dtype.kind == "f":
        with np.errstate(over="ignore"):
            return array.astype(np.float32, copy=False)
    if array.dtype.kind in "iu" and array.dtype.itemsize == 8:
        raise AudioDecodeError(
            f"{name}: samples of dtype {array.dtype} have no PCM scale (np.array of a list of samples makes "
            f"{array.dtype}); convert them to the dtype they were recorded in, e.g. .astype(np.int16), or to float "
            "in [-1, 1]."
        )
    if array.dtype.kind == "i":
        return (array / float(2 ** (8 * array.dtype.itemsize - 1))).astype(np.float32)
    if array.dtype.kind == "u":
        half = float(2 ** (8 * array.dtype.itemsize - 1))
        return ((array - half) / half).astype(np.float32)
    raise AudioDecodeError(f"{name}: samples of dtype {array.dtype} are not audio; pass float or integer PCM samples.")


def _channel_mean(array: np.ndarray, channel_axis: int) -> np.ndarray:
    """The float32 mean over the channels, added in order then divided: numpy's `mean(axis, dtype=float32)` bit for
    bit up to 7 channels (its pairwise sum starts at 8), and 4x faster, as numpy reduces a short axis slowly (2.1 of
    the 2.7 s that decoding a 30-minute stereo WAV took)."""
    channels = np.moveaxis(array, channel_axis, 0)
    total = channels[0].astype(np.float32)
    for channel in channels[1:]:
        total += channel
    total /= np.float32(len(channels))
    return total


def _to_mono(array: np.ndarray, name: str) -> np.ndarray:
    """Average the channel axis. A 2-D array may be (channels, samples) or (samples, channels): the shorter axis
    is taken as channels, as no real recording has more channels than samples."""
    if array.ndim == 1:
        return array
    if array.ndim != 2:
        raise AudioDecodeError(f"{name}: expected a 1-D or 2-D waveform, got shape {array.shape}.")
    return _channel_mean(array, 0 if array.shape[0] <= array.shape[1] else 1)


def _check_finite(block: np.ndarray, name: str) -> None:
    if not np.isfinite(block).all():
        raise AudioDecodeError(f"{name}: the audio contains NaN or infinite samples (or ones beyond float32's range); "
                               "clean or re-export it.")


def check_rate(rate: Any, name: str) -> int:
    """`rate` as an int, or an error naming `name` (an input, or an argument) with the usable range. A 0-d array or
    tensor (what `datasets` gives with_format("numpy") or ("torch")) is its number."""
    if getattr(rate, "ndim", None) == 0 and hasattr(rate, "item"):
        rate = rate.item()
    if (isinstance(rate, bool) or not isinstance(rate, numbers.Real) or not float(rate).is_integer()
            or not _MIN_RATE <= rate <= _MAX_RATE):
        raise AudioDecodeError(
            f"{name}: sampling rate {rate!r} is not usable; give an integer between {_MIN_RATE} and {_MAX_RATE} Hz."
        )
    return int(rate)


@dataclass
class AudioStream:
    """A decodable input: its display name, native rate, and a way to read mono float32 frames in order.
    `warning`: how the file holds less than its whole audio (cut short, or damaged where decoding stopped), once
    known (at opening, or once the last block is read), or None: what a batch's record of the input says."""

    name: str
    native_rate: int
    _file: _ReadForward | None = None
    _array: np.ndarray | None = None
    warning: str | None = None

    def _warn(self, message: str) -> None:
        self.warning = message
        warnings.warn(AudioCutShortWarning(f"{self.name}: {message}"), stacklevel=3)

    def _native_blocks(self) -> Iterator[np.ndarray]:
        if self._array is not None:
            for start in range(0, len(self._array), _READ_FRAMES):
                yield self._array[start : start + _READ_FRAMES]
            return
        with self._file:
            while True:
                with _notes_hidden_while_decoding():
                    block = self._file.read_block(_READ_FRAMES)
                if not len(block):
                    failure = self._file.failure
                    if failure is not None and not self._file.read_frames:
                        raise AudioDecodeError(f"{self.name}: decoding failed at its start ({failure}); the file is "
                                               "damaged: download or export it again.") from failure
                    if stopped := _stopped_early(self._file):
                        self._warn(stopped)
                    return
                block = _channel_mean(block, 1) if block.shape[1] > 1 else block[:, 0]
                _check_finite(block, self.name)
                yield block

    def blocks(self, sampling_rate: int, block_samples: int, resampler: str = "soxr",
               heard_rate: int | None = None) -> Iterator:
        """Mono float32 at `sampling_rate`, in blocks of exactly `block_samples` (the last one may be shorter).

        `resampler` "soxr" (high quality) runs as one stream over the whole input, so the result equals a
        single-shot resample whatever the block size. "sinc" is torchaudio's default resampler (`sinc_resample`),
        which needs the whole input at once: the track is held in memory, as the authors' inference held it.

        With `heard_rate` (the chord path's), each block comes as a pair with the same span of the input at that
        rate, resampled from the native rate by soxr in a second stream: the whole track resampled once, as the
        authors' `librosa.load(path, sr=22050)` gave BTC its audio (each block resampled again on its own clicked at
        its edges, up to 0.2 off). A pair comes out once the next block is read."""
        if resampler not in RESAMPLERS:
            raise ValueError(f"resampler must be one of {RESAMPLERS}, got {resampler!r}.")
        native = self._native_blocks()
        if self._file is not None and (self.native_rate != sampling_rate or heard_rate not in (None, sampling_rate)):
            # read and mixed down in a thread while the resampler works: together they took 1.6 s of a 30-minute
            # WAV's 1.9, one after the other
            native = ahead(native, 8, "music2emo-read")
        with contextlib.closing(native):
            source, heard = native, None
            if heard_rate is not None:
                source, for_heard = itertools.tee(native)
                heard = _soxr_stream(for_heard, self.native_rate, heard_rate, as_librosa=True)
            if resampler == "sinc" and self.native_rate != sampling_rate:
                whole = list(source)
                source = [sinc_resample(np.concatenate(whole) if whole else np.zeros(0, np.float32), self.native_rate,
                                        sampling_rate)]
            else:
                source = _soxr_stream(source, self.native_rate, sampling_rate)
            out = _rechunked(source, block_samples)
            if heard is not None:
                out = _paired(out, sampling_rate, heard, heard_rate)
            emitted = 0
            for item in out:
                emitted += 1
                yield item
        if emitted == 0:
            raise AudioDecodeError(f"{self.name}: it holds no audio (no samples); export or download it again.")


def _soxr_stream(blocks: Iterable[np.ndarray], from_rate: int, to_rate: int,
                 as_librosa: bool = False) -> Iterator[np.ndarray]:
    """`blocks` of one signal resampled as one soxr (high quality) stream: what one resample of the whole gives.
    `as_librosa`: with zeros after it up to the length `librosa.resample` gives (it pads soxr's rounded length to
    the ceiling of the samples times the ratio, computed in floating point), as the authors' `librosa.load` did."""
    if from_rate == to_rate:
        yield from blocks
        return
    stream = soxr.ResampleStream(from_rate, to_rate, 1, dtype="float32", quality="HQ")
    taken = given = 0
    for block in blocks:
        taken += len(block)
        out = stream.resample_chunk(block)
        given += len(out)
        yield out
    out = stream.resample_chunk(np.zeros(0, np.float32), last=True)
    given += len(out)
    yield out
    if as_librosa:
        yield np.zeros(max(0, int(np.ceil(taken * (float(to_rate) / from_rate))) - given), np.float32)


def _rechunked(pieces: Iterable[np.ndarray], size: int) -> Iterator[np.ndarray]:
    """The samples of `pieces` again, in blocks of exactly `size` (the last one as long as what is left)."""
    pending, pending_len = [], 0
    for piece in pieces:
        if not len(piece):
            continue
        pending.append(piece)
        pending_len += len(piece)
        if pending_len >= size:
            buffer = np.concatenate(pending) if len(pending) > 1 else pending[0]
            usable = len(buffer) - len(buffer) % size
            for start in range(0, usable, size):
                yield buffer[start : start + size]
            pending, pending_len = ([buffer[usable:]] if usable < len(buffer) else []), len(buffer) - usable
    if pending:
        yield np.concatenate(pending) if len(pending) > 1 else pending[0]


def _paired(blocks: Iterator[np.ndarray], rate: int, heard: Iterator[np.ndarray], heard_rate: int) -> Iterator:
    """(block, the same span of `heard`) for consecutive `blocks` at `rate`, `heard` being the same signal at
    `heard_rate` in pieces of any size. A block's span ends where its last sample falls at `heard_rate`, rounded;
    the last block's takes what is left, so a block comes out once the next one is in."""
    pieces: list[np.ndarray] = []
    held = 0

    def take(count: int | None) -> np.ndarray:
        nonlocal pieces, held
        while count is None or held < count:
            piece = next(heard, None)
            if piece is None:
                break
            pieces.append(piece)
            held += len(piece)
        buffer = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
        span, rest = (buffer, buffer[:0]) if count is None else (buffer[:count], buffer[count:])
        pieces, held = ([rest] if len(rest) else []), len(rest)
        return span

    previous, stop_in, stop_heard = None, 0, 0
    for block in blocks:
        if previous is not None:
            start_heard, stop_in = stop_heard, stop_in + len(previous)
            stop_heard = (stop_in * heard_rate + rate // 2) // rate
            yield previous, take(stop_heard - start_heard)
        previous = block
    if previous is not None:
        yield previous, take(None)


def ahead(items: Iterator, depth: int = 2, name: str = "music2emo-ahead") -> Iterator:
    """`items`, produced by a thread (`name`) up to `depth` ahead of the consumer: a file is read while its last
    blocks are resampled, and decoding and the chord networks run while the backbone works on the previous chunk
    (each releases the GIL in its numeric code). An error in the thread is raised here; if the consumer stops early,
    the thread stops too."""
    slots: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()
    done = object()

    def put(entry) -> bool:
        while not stop.is_set():
            try:
                slots.put(entry, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in items:
                if not put((item, None)):
                    return
            put((done, None))
        except BaseException as error:  # handed to the consumer, which raises it
            put((done, error))
        finally:  # a generator stopped early runs its cleanup now, in the thread that ran it
            close = getattr(items, "close", None)
            if close is not None:
                close()

    thread = threading.Thread(target=produce, name=name, daemon=True)
    thread.start()
    try:
        while True:
            item, error = slots.get()
            if error is not None:
                raise error
            if item is done:
                return
            yield item
    finally:
        stop.set()
        thread.join()


def _waveform(value: dict) -> Any:
    """The waveform of an audio dict: its "array", else its "raw" (None when it has neither)."""
    return value.get("array") if value.get("array") is not None else value.get("raw")


def undecoded_audio(value: dict) -> bytes | str | None:
    """The file's bytes, else its path, in `datasets`' undecoded audio (`Audio(decode=False)`: {"bytes", "path"});
    None when it holds neither."""
    return value.get("bytes") or value.get("path") or None


def describe(audio: AudioInput) -> str:
    """A short name for an input, for messages and output records."""
    if isinstance(audio, AudioStream):
        return audio.name
    if isinstance(audio, (str, os.PathLike)):
        return os.fspath(audio)
    if isinstance(audio, bytes):
        return f"<{len(audio)} bytes>"
    if isinstance(audio, dict):
        return "<audio dict>"
    if isinstance(audio, np.ndarray):
        return f"<array {audio.shape}>"
    if isinstance(getattr(audio, "name", None), str) and hasattr(audio, "read"):  # an open file
        return audio.name
    return f"<{type(audio).__name__}>"


# The decoders (libsndfile's mpg123 among them) write notes such as "Note: Trying to resync..." straight to the
# process's stderr while they probe and decode a file; the command keeps them off the terminal unless this is set
# (`music2emo --verbose`; see `_notes_hidden_while_decoding` for a process that imports the package).
SHOW_DECODER_NOTES = False
_DECODER_NOTES_LOCK = threading.Lock()
_hiding = 0  # threads inside `_decoder_notes_hidden`
_shown_stderr = -1  # descriptor 2 as it was before the first of them pointed it at /dev/null


@contextlib.contextmanager
def _decoder_notes_hidden():
    """Point file descriptor 2 at /dev/null while any thread is in this block (the decoders write to it from C),
    unless SHOW_DECODER_NOTES. The threads are counted and the last one out restores it: two swapping the
    descriptor each on its own could leave it pointing at /dev/null for the rest of the run."""
    global _hiding, _shown_stderr
    if SHOW_DECODER_NOTES:
        yield
        return
    with _DECODER_NOTES_LOCK:
        if not _hiding:
            sys.stderr.flush()
            _shown_stderr = os.dup(2)
            with open(os.devnull, "w") as null:
                os.dup2(null.fileno(), 2)
        _hiding += 1
    try:
        yield
    finally:
        with _DECODER_NOTES_LOCK:
            _hiding -= 1
            if not _hiding:
                os.dup2(_shown_stderr, 2)
                os.close(_shown_stderr)


def _notes_hidden_while_decoding() -> contextlib.AbstractContextManager:
    """`_decoder_notes_hidden` for each file that opens and each block it decodes where Python's own stderr writes
    elsewhere than descriptor 2 (the `music2emo` command gives it a descriptor of its own; a notebook, a stream of its
    own), so no message of another thread is lost. Where it is descriptor 2, as in a service that imports the package,
    nothing is hidden: pointing it at /dev/null, even for the few ms a file takes to open, lost the host's log lines
    and its child processes' stderr written meanwhile; the decoders' notes show, as they do to soundfile's users."""
    try:
        apart = sys.stderr.fileno() != 2  # a copy of descriptor 2 (the command's) keeps writing where it did
    except (AttributeError, OSError, ValueError):  # io.UnsupportedOperation is both: a stream without a descriptor
        apart = True
    return _decoder_notes_hidden() if apart else contextlib.nullcontext()


class _ReadForward(sf.SoundFile):
    """A SoundFile read once, from start to end, as soundfile reads a pipe: block after block, with no seek. Read as a
    file, soundfile seeks to where each read ended (where libsndfile already is), and libsndfile's FLAC decoder
    cannot seek at the end of a file whose header does not state its length (as a streaming encoder writes it:
    libsndfile or ffmpeg to a pipe, a recorder): the whole file failed as damaged."""

    read_frames = 0
    stated_frames: int | None = None  # the length the header states exactly (not an MP3's estimate), once checked
    failure: RuntimeError | None = None  # the decoder's error that ended the reading before the stated length
    last_frame: tuple[int, int] | None = None  # a FLAC of unstated length: its last frame's first sample and size

    def seekable(self) -> bool:
        return False

    def read_block(self, frames: int) -> np.ndarray:
        """The next `frames` frames (fewer at the end) as float32 [frames, channels]. A stated length bounds the
        reads, as soundfile bounds a file's (a FLAC's decoder asked past its last frame reads a tag after it, ID3v1
        or APE, as a lost sync). Where the header does not state the length, libsndfile's FLAC decoder reports a
        lost sync once it has read the last frame: that ends the file, unless it comes before the end of the last
        frame the file holds (`last_frame`): damage, or a cut inside that frame. Where it does, a decoder's error is
        damage (a FLAC frame that lost its sync, an MP3's bytes that are no frame): the reading ends there, what was
        decoded before it kept (`failure`)."""
        stated = self.frames != _UNSTATED
        if stated:
            frames = max(0, min(frames, self.frames - self.read_frames))
        if self.failure is not None:
            frames = 0
        out = np.empty((frames, self.channels), np.float32)
        try:
            block = self.read(out=out)
        except RuntimeError as error:  # soundfile's LibsndfileError, or its own complaint
            try:
                block = out[: self.tell() - self.read_frames]  # what the failing read gave
            except RuntimeError:  # the codecs that cannot seek (GSM 6.10, G.721 WAVs) refuse `tell`
                block = out[:0]
            if stated or (self.last_frame is not None and self.read_frames + len(block) < sum(self.last_frame)):
                self.failure = error
        self.read_frames += len(block)
        return block


def _open_reader(source: Any) -> _ReadForward:
    """`source` (a path, or a BytesIO) opened for reading through, with where a FLAC's last frame is when its header
    states no length (see `_stopped_early`). Raises what soundfile raises for a file that is not audio."""
    with _notes_hidden_while_decoding():
        handle = _ReadForward(os.fsencode(source) if isinstance(source, str) else source)  # any name the OS has
    if handle.format == "FLAC" and handle.frames == _UNSTATED:
        with _bytes_of(source) as data:
            handle.last_frame = _flac_last_frame(data)
    return handle


def _opened_or_none(source: Any) -> _ReadForward | None:
    try:
        return _open_reader(source)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        return None


def _open_file(source: Any, name: str) -> AudioStream:
    handle = _opened_or_none(source)
    if handle is None and (frames_start := _mpeg_after_tags(source)) is not None:
        with _bytes_of(source) as data:  # its MPEG frames alone, which libsndfile finds without a .mp3 name to go by
            data.seek(frames_start)
            source = io.BytesIO(data.read())
        handle = _opened_or_none(source)
    if handle is None:
        raise AudioDecodeError(f"{name}: {_why_not_audio(source)}")
    try:
        if not _MIN_RATE <= handle.samplerate <= _MAX_RATE:
            raise AudioDecodeError(f"{name}: the file's sampling rate, {handle.samplerate} Hz, is not usable; "
                                   f"resample it to between {_MIN_RATE} and {_MAX_RATE} Hz.")
        _refuse_unfinished_wav(source, handle, name)
        _refuse_misread_mp3(source, handle, name)
    except AudioDecodeError:
        handle.close()
        raise
    stream = AudioStream(name, handle.samplerate, _file=handle)
    announced = _cut_short(source, handle)  # a cut file not told here is, once decoded
    if announced is not None and handle.format in _COUNTED and handle.frames == 0:
        handle.close()
        raise AudioDecodeError(f"{name}: cut short: {_announced(announced)} (not downloaded or copied whole), and it "
                               "holds no audio past its header; download or copy it again.")
    if announced is not None:
        held = f"the {handle.frames / handle.samplerate:.1f} s it holds" if handle.format in _COUNTED else \
            "what it holds"
        stream._warn(f"cut short: {_announced(announced)} (not downloaded or copied whole); {held} is analysed.")
    elif _ogg_unfinished(source, handle):
        stream._warn(f"cut short: {_OGG_CUT} (not downloaded or copied whole); what it holds is analysed.")
    elif (unannounced := _unannounced(source, handle)) is not None:
        stream._warn(f"its header announces {handle.frames / handle.samplerate:.1f} s of audio, and about "
                     f"{unannounced:.1f} s more follow it in the file (a header last written before the recording "
                     f"ended); the {handle.frames / handle.samplerate:.1f} s announced is analysed. Repair the header "
                     "to analyse it all (e.g. `sox --ignore-length IN.wav OUT.wav`).")
    elif handle.format in _COUNTED:  # whole now: a file cut short while it is read (a sync rewriting it) is told
        handle.stated_frames = handle.frames
    elif handle.frames not in (0, _UNSTATED):  # see `_stopped_early`
        with _bytes_of(source) as data:
            head = data.read(12)
            if handle.format != "MP3" or _xing_counts(data, _id3_end(head) or 0)[0] is not None:
                handle.stated_frames = handle.frames
    return stream


def _stopped_early(handle: _ReadForward) -> str | None:
    """What to say when a decoder ended more than 0.1 s before the length its header states: an MP3's decoder gives
    up on damage in the middle of a whole file (a resync that finds no frame) as if the file ended there, or fails
    there with an error, as a FLAC's does (`_ReadForward.failure`). A FLAC whose header states no length is
    measured against its last frame: decoding that stopped inside it met a file cut short (or damaged at its end),
    one that stopped before it, damage."""
    if handle.frames == _UNSTATED:
        if handle.failure is None or handle.last_frame is None:
            return None
        start, rate = handle.last_frame[0], handle.samplerate
        if handle.read_frames >= start - 0.1 * rate:
            return (f"cut short: the file ends inside its frame at {start / rate:.1f} s (not downloaded or copied "
                    "whole, or damaged at its end); what precedes is analysed.")
        return (f"decoding stopped at {handle.read_frames / rate:.1f} s of the {sum(handle.last_frame) / rate:.1f} s "
                "its frames reach (the file is damaged there); what precedes is analysed. Download or export it again.")
    total = handle.stated_frames
    if total is None and handle.failure is not None:
        total = handle.frames  # an MP3's length estimated from its first frame, or a format's counted frames
    if total is None or total - handle.read_frames <= 0.1 * handle.samplerate:
        return None
    announced = "its header announces" if handle.stated_frames is not None else "its header suggests"
    return (f"decoding stopped at {handle.read_frames / handle.samplerate:.1f} s of the "
            f"{total / handle.samplerate:.1f} s {announced} (the file is damaged or cut short there); what precedes "
            "is analysed. Download or export it again.")


_OGG_CUT = "the Ogg stream ends before its last page"


def _announced(seconds: float) -> str:
    return f"its header announces {seconds:.1f} s of audio and the file ends before that"


@contextlib.contextmanager
def _bytes_of(source: Any):
    """The file's bytes as a binary file, read without moving a file object's position (libsndfile reads through it)."""
    if isinstance(source, io.BytesIO):
        where = source.tell()
        try:
            source.seek(0)
            yield source
        finally:
            source.seek(where)
    else:
        with open(source, "rb") as data:
            yield data


def _cut_short(source: Any, handle: Any) -> float | None:
    """The duration the header announces, when the file holds less than that by more than 0.1 s (a copy or download
    that stopped); None when it does not, or cannot be told. `handle`: the open SoundFile, or `sf.info`'s answer.
    A WAV's (or WAVEX's) data size is compared in bytes with what the file holds (unless the size was left unset by
    a writer streaming to a pipe); the same byte count is made for RF64, W64, AIFF (AIFF-C) and AU, whose headers
    state their data's size too. An MP3 with a Xing or Info header holding its frame count (LAME writes one, and
    libsndfile's decoder takes its length from it; without it the length is an estimate from the file's size) is
    compared with the file's size where that header counts the stream's bytes too; where it does not, its frame
    headers are walked: a cut stream runs into the file's end short of its count, where damage in a whole file
    breaks the walk before the end (decoding tells how far it reads, see `_stopped_early`). Other formats are not
    checked: a cut FLAC fails to decode where it was cut (see `_ReadForward`)."""
    with _bytes_of(source) as data:
        head, size = data.read(12), data.seek(0, os.SEEK_END)
        layout = _pcm_layout(data, head, size, handle.samplerate)
        if layout is not None:
            start, declared, byte_rate, block = layout
            missing = declared - (size - start)
            if not byte_rate or missing <= max(block, 0.1 * byte_rate):
                return None
            return declared / byte_rate
        if handle.format != "MP3" or handle.frames <= 0:
            return None
        start = _id3_end(head) or 0
        frames, stream_bytes = _xing_counts(data, start)
        if frames is None:
            return None
        if stream_bytes is not None:  # fewer bytes in the whole file than in the stream: cut (damage keeps the size)
            short = size < stream_bytes * (1 - 0.1 * handle.samplerate / handle.frames)  # by more than 0.1 s
        else:
            walked, ran_out = _mpeg_walk(data, start)
            short = ran_out and walked < handle.frames / handle.samplerate - 0.1
    return handle.frames / handle.samplerate if short else None


def _unannounced(source: Any, handle: Any) -> float | None:
    """The seconds of audio a WAV holds after the data its header announces, where more than 0.1 s of bytes follow
    that are neither a chunk nor zeros (a recorder that rewrites its header as it goes, stopped before the last
    rewrite); None otherwise. libsndfile reads what the header announces."""
    with _bytes_of(source) as data:
        head, size = data.read(12), data.seek(0, os.SEEK_END)
        layout = _pcm_layout(data, head, size, handle.samplerate) if head[:4] == b"RIFF" else None
        if layout is None or not layout[2]:
            return None
        start, declared, byte_rate, _ = layout
        end = start + declared
        if size - end - declared % 2 <= 0.1 * byte_rate:
            return None
        data.seek(end)
        after = data.read(1 << 16)
    # A chunk's id after the data, where its pad byte is or where a writer left it out (the chunk may be cut short);
    # or zeros, a writer's padding: no audio.
    chunk = any(all(0x20 <= byte < 0x7F for byte in after[at : at + 4]) for at in {0, declared % 2})
    return None if chunk or not after.strip(b"\0") else (size - end) / byte_rate


def _ogg_unfinished(source: Any, handle: Any) -> bool:
    """Whether an Ogg file (Vorbis, Opus) ends before its last page: its header states no length, but its pages, walked
    by their headers from the start, end with one marked end-of-stream in a whole file (a chained file: its last
    stream's); a file that stops part-way ends in a page cut short or unmarked. False where the walk meets anything
    but a page (damage: not what this tells)."""
    if handle.format != "OGG":
        return False
    with _bytes_of(source) as data:
        size, at, flags = data.seek(0, os.SEEK_END), 0, 0
        while at < size:
            data.seek(at)
            header = data.read(27)
            if len(header) < 27:
                return True
            if header[:4] != b"OggS":
                return False
            segments = data.read(header[26])
            if len(segments) < header[26]:
                return True
            at, flags = at + 27 + header[26] + sum(segments), header[5]
        return at > size or not flags & 0x04


def _refuse_unfinished_wav(source: Any, handle: Any, name: str) -> None:
    """Raises AudioDecodeError for a WAV whose data size was left 0 with audio after it: libsndfile reads no frames
    from it."""
    if handle.frames or handle.format not in ("WAV", "WAVEX"):
        return
    with _bytes_of(source) as data:
        size = data.seek(0, os.SEEK_END)
        chunks = dict(_wav_chunks(data, size))
    if b"data" not in chunks or int.from_bytes(chunks[b"data"][1], "little"):
        return
    unfinished = size - chunks[b"data"][0] - 8
    if unfinished > 0:
        raise AudioDecodeError(
            f"{name}: its header was never finished (its data size is 0, as a recorder stopped before closing the "
            f"file leaves it), so its {unfinished:,} bytes of audio cannot be read; repair the header first (e.g. "
            "`sox --ignore-length IN.wav OUT.wav`).")


# MPEG audio frame headers: kbit/s by (MPEG-1, layer) and bitrate index 1-14, and sampling rates by version bits.
_MPEG_KBITS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MPEG_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def _mpeg_walk(data: io.IOBase, start: int) -> tuple[float, bool]:
    """The MPEG audio frames chained from `start` by their headers: their duration, and whether the walk
    ran into the file's end (a header or a frame cut short there). It stops at anything else, a trailing tag, damage,
    a free-format frame, so it never counts more than the stream holds."""
    at, seconds, end = start, 0.0, data.seek(0, os.SEEK_END)
    while True:
        data.seek(at)
        header = data.read(4)
        if len(header) < 4:
            return seconds, True
        if header[0] != 0xFF or header[1] & 0xE0 != 0xE0:
            return seconds, False
        version, layer, kbits, rate, padding = (header[1] >> 3) & 3, 4 - ((header[1] >> 1) & 3), \
            header[2] >> 4, (header[2] >> 2) & 3, (header[2] >> 1) & 1
        if version == 1 or layer == 4 or kbits in (0, 15) or rate == 3:
            return seconds, False
        mpeg1, rate = version == 3, _MPEG_RATES[version][rate]
        bits = _MPEG_KBITS[(mpeg1, layer)][kbits - 1] * 1000
        if layer == 1:
            size, samples = (12 * bits // rate + padding) * 4, 384
        else:
            size, samples = (144 if mpeg1 or layer == 2 else 72) * bits // rate + padding, \
                1152 if mpeg1 or layer == 2 else 576
        if at + size > end:
            return seconds, True
        seconds, at = seconds + samples / rate, at + size


_FLAC_BLOCK_SIZES = {1: 192, **{code: 576 << (code - 2) for code in range(2, 6)},
                     **{code: 256 << (code - 8) for code in range(8, 16)}}  # by the frame header's code; 6, 7: stated
_FLAC_TAIL = 1 << 20  # bytes of a FLAC's end searched for its last frames (4096 24-bit stereo samples: 24 KB)


def _crc8(data: bytes) -> int:
    """FLAC's CRC-8 of a frame header (polynomial x^8 + x^2 + x + 1)."""
    crc = 0
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc << 1 ^ 0x07 if crc & 0x80 else crc << 1) & 0xFF
    return crc


def _flac_frame_header(data: bytes, at: int) -> tuple[int, int] | None:
    """The header at `at` of a FLAC frame of fixed block size, where one is (its fields valid and its CRC-8 right):
    (its frame number, its block size)."""
    if len(data) < at + 6 or data[at] != 0xFF or data[at + 1] != 0xF8:
        return None
    size_code, rate_code, layout = data[at + 2] >> 4, data[at + 2] & 0x0F, data[at + 3]
    if not size_code or rate_code == 15 or layout >> 4 > 10 or layout >> 1 & 7 == 3 or layout & 1:
        return None
    first, end = data[at + 4], at + 5
    ones = 8 - (first ^ 0xFF).bit_length()  # a UTF-8-like code: the first byte's leading ones count its bytes
    if ones == 1 or ones == 8:
        return None
    number = first & (0x7F >> ones)
    for _ in range(max(ones - 1, 0)):
        if end >= len(data) or data[end] & 0xC0 != 0x80:
            return None
        number, end = number << 6 | data[end] & 0x3F, end + 1
    block = _FLAC_BLOCK_SIZES.get(size_code)
    if block is None:  # stated after the number, less one
        width = 1 if size_code == 6 else 2
        block, end = int.from_bytes(data[end : end + width], "big") + 1, end + width
    end += {12: 1, 13: 2, 14: 2}.get(rate_code, 0)
    if end >= len(data) or _crc8(data[at:end]) != data[end]:
        return None
    return number, block


def _flac_last_frame(data: io.IOBase) -> tuple[int, int] | None:
    """(first sample, block size) of the last frame a FLAC file of fixed block size holds (as libFLAC, libsndfile
    and ffmpeg write them), found by its header near the file's end and confirmed by the header of a frame shortly
    before it (the frame number before its own); None where the end holds no such pair. Each header's CRC-8 rules out
    most chance matches in the audio data; the pair, the rest."""
    size = data.seek(0, os.SEEK_END)
    data.seek(max(0, size - _FLAC_TAIL))
    tail = data.read()
    headers = [header for match in re.finditer(rb"\xff\xf8", tail)  # 0xF9: variable block sizes, not checked
               if (header := _flac_frame_header(tail, match.start())) is not None]
    for index in range(len(headers) - 1, 0, -1):
        number, block = headers[index]
        for earlier_number, earlier_block in headers[max(0, index - 3) : index]:
            if number == earlier_number + 1:
                return number * earlier_block, block
    return None


def _refuse_misread_mp3(source: Any, handle: Any, name: str) -> None:
    """Raises AudioDecodeError for an MP3 that libsndfile's decoder would stop short of, its length walked from its
    frame headers: without a Xing header the decoder takes the length from the first frame's bitrate and decodes no
    further, which in a variable-bitrate file (libsndfile's own, written into a pipe) can be a fifth of it.
    `handle`: the open SoundFile, or `sf.info`'s answer."""
    if handle.format != "MP3":
        return
    with _bytes_of(source) as data:
        start = _id3_end(data.read(10)) or 0
        if _xing_counts(data, start)[0] is not None:
            return
        walked = _mpeg_walk(data, start)[0]
    if walked > handle.frames / handle.samplerate + 1.0:
        raise AudioDecodeError(
            f"{name}: only its first {handle.frames / handle.samplerate:.1f} s of {walked:.1f} s can be decoded: a "
            "variable-bitrate MP3 without a Xing header, whose length the decoder estimates from its first frame. "
            f"Convert it first (e.g. `ffmpeg -i IN.mp3 OUT.flac`).")


def _xing_counts(data: io.IOBase, start: int) -> tuple[int | None, int | None]:
    """What the Xing or Info header of the first MPEG audio frame from `start` counts, where it does: the stream's
    frames (flag 1) and bytes (flag 2, from that frame on; LAME writes both; 0 is a count never filled in)."""
    data.seek(start)
    first = data.read(4096)
    sync = next((i for i in range(len(first) - 1) if first[i] == 0xFF and first[i + 1] & 0xE0 == 0xE0), None)
    at = -1 if sync is None else max(first.find(b"Xing", sync, sync + 64), first.find(b"Info", sync, sync + 64))
    if at < 0:
        return None, None
    flags, fields = int.from_bytes(first[at + 4 : at + 8], "big"), iter(range(at + 8, at + 16, 4))
    frames = int.from_bytes(first[(i := next(fields)) : i + 4], "big") if flags & 1 else None
    stream = int.from_bytes(first[(i := next(fields)) : i + 4], "big") if flags & 2 else None
    return frames, stream or None


def _why_not_audio(source: Any) -> str:
    """What to tell of a file no decoder opens. An MP3 cut short in or just after its ID3 tag (cover art can fill the
    first hundreds of KB) holds no whole audio frame, a WAV cut short in its header holds no audio data, and libsndfile
    refuses a CAF whose audio data ends early: an incomplete download or copy, not a file of another kind."""
    with _bytes_of(source) as data:
        head, size = data.read(12), data.seek(0, os.SEEK_END)
        if head[:4] == b"RIFF" and head[8:] == b"WAVE" and b"data" not in dict(_wav_chunks(data, size)):
            if b"data" in dict(_wav_chunks(data, size, padded=False)):
                return ("its audio data is there, but an odd-sized chunk before it lacks the pad byte WAV requires (a "
                        "writer's fault, not a cut), so the decoder cannot find it; export the file again.")
            return (f"cut short: the WAV file ends in its header ({size:,} bytes), before its audio data; it was not "
                    "downloaded or copied whole.")
        if head[:4] == b"caff" and (data_chunk := dict(_caf_chunks(data, size)).get(b"data")) is not None:
            if data_chunk[1] > size - data_chunk[0] - 12:
                return (f"cut short: the CAF file ends before the audio data its header announces ({size:,} of "
                        f"{data_chunk[0] + 12 + data_chunk[1]:,} bytes); it was not downloaded or copied whole.")
    tag_end = _id3_end(head)
    if tag_end is not None:
        after = size - tag_end
        if after < 0:
            where = f"inside its ID3 tag ({size:,} of the tag's {tag_end:,} bytes)"
        else:
            where = f"{f'{after:,} bytes' if after else 'right'} after its {tag_end:,}-byte ID3 tag"
        if after < _MP3_FRAME_BYTES:
            return f"cut short: the file ends {where}, before any audio; it was not downloaded or copied whole."
    if head[4:8] == b"ftyp":
        return f"an MP4/M4A file (AAC or ALAC audio), which this package does not decode: {convert_first('.m4a')}."
    if head[:1] == b"\xff" and len(head) > 1 and head[1] & 0xF6 == 0xF0:  # ADTS: MPEG's sync word, "layer" 0
        return f"an AAC file, which this package does not decode: {convert_first('.aac')}."
    if head[:8] == _ASF_HEADER:
        return f"a WMA file, which this package does not decode: {convert_first('.wma')}."
    if head[:4] == b"wvpk":  # a WavPack block header
        return f"a WavPack file, which this package does not decode: {convert_first('.wv')}."
    return f"not audio: it could not be decoded as any supported format ({DECODED_FORMATS})."


def _pcm_layout(data: io.IOBase, head: bytes, size: int, rate: int) -> tuple[int, int, float, float] | None:
    """Of a file whose header states the size of its sample data (WAV, RF64, W64, AIFF and AIFF-C, AU): where the data
    starts, its size as declared, bytes per second and per frame. None for other files, and for a size left unset
    by a writer streaming to a pipe."""
    def field(at: int, length: int, order: str = "little") -> int:
        data.seek(at)
        return int.from_bytes(data.read(length), order)

    if head[:4] in (b"RIFF", b"RF64") and head[8:] == b"WAVE":
        chunks = dict(_wav_chunks(data, size))
        if b"data" not in chunks or b"fmt " not in chunks:
            return None
        declared = int.from_bytes(chunks[b"data"][1], "little")
        if head[:4] == b"RF64":  # the data chunk's size field is 0xFFFFFFFF; the ds64 chunk holds the size
            declared = field(chunks[b"ds64"][0] + 16, 8) if b"ds64" in chunks else 0
            unset = declared == 0 or declared >= 1 << 62
        else:
            unset = declared == 0 or declared >= 0x7F000000  # SoX streams 0x7FFFF000 rounded down to whole blocks
        fmt = chunks[b"fmt "][0] + 8
        return None if unset else (chunks[b"data"][0] + 8, declared, field(fmt + 8, 4), field(fmt + 12, 2))
    if head[:4] == b"riff" and size >= 40:  # Sony Wave64: 16-byte GUID ids (the first 4 bytes name them), 8-byte
        at, found = 40, {}  # sizes counting the 24-byte header, bodies aligned to 8 bytes
        while at + 24 <= size and b"data" not in found:
            found[field(at, 4).to_bytes(4, "little")] = at
            at += (field(at + 16, 8) + 7) // 8 * 8 or size
        if b"data" not in found or b"fmt " not in found:
            return None
        fmt = found[b"fmt "] + 24
        return found[b"data"] + 24, field(found[b"data"] + 16, 8) - 24, field(fmt + 8, 4), field(fmt + 12, 2)
    if head[:4] == b".snd" and size >= 24:  # Sun AU: big-endian offset, data size (all ones: unstated), encoding
        offset, declared, encoding, _, channels = (field(at, 4, "big") for at in range(4, 24, 4))
        sample = _AU_SAMPLE_BYTES.get(encoding)
        if declared == 0xFFFFFFFF or sample is None:
            return None
        return offset, declared, sample * channels * rate, sample * channels
    if head[:4] == b"FORM" and head[8:] in (b"AIFF", b"AIFC"):  # big-endian chunks, bodies padded to even
        at, found = 12, {}
        while at + 8 <= size and b"SSND" not in found:
            data.seek(at)
            chunk = data.read(8)
            found[chunk[:4]] = at
            at += 8 + int.from_bytes(chunk[4:], "big") + (chunk[7] & 1)
        if b"SSND" not in found or b"COMM" not in found:
            return None
        frames, ssnd = field(found[b"COMM"] + 10, 4, "big"), found[b"SSND"]
        start = ssnd + 16 + field(ssnd + 8, 4, "big")  # after the SSND body's offset and block-size fields
        declared = field(ssnd + 4, 4, "big") - (start - ssnd - 8)
        block = declared / frames if frames else 0.0
        return start, declared, block * rate, block
    return None


def _wav_chunks(data: io.IOBase, size: int, padded: bool = True) -> Iterator[tuple[bytes, tuple[int, bytes]]]:
    """(id, (offset, size field)) of each chunk header of a RIFF/WAVE file (id, little-endian size, body padded to
    even, unless not `padded`: as a faulty writer leaves it) that the file holds, up to its `data` chunk."""
    at = 12
    while at + 8 <= size:
        data.seek(at)
        header = data.read(8)
        yield header[:4], (at, header[4:])
        if header[:4] == b"data":
            return
        at += 8 + int.from_bytes(header[4:], "little") + (header[4] & 1 if padded else 0)


def _caf_chunks(data: io.IOBase, size: int) -> Iterator[tuple[bytes, tuple[int, int]]]:
    """(type, (offset, size)) of each chunk header of a CAF file (big-endian 8-byte sizes; -1: the data's, unstated)
    that the file holds, up to its `data` chunk."""
    at = 8
    while at + 12 <= size:
        data.seek(at)
        header = data.read(12)
        chunk = int.from_bytes(header[4:], "big", signed=True)
        yield header[:4], (at, chunk)
        if header[:4] == b"data" or chunk < 0:
            return
        at += 12 + chunk


def _id3_end(head: bytes) -> int | None:
    """Where an ID3v2 tag at the start of a file ends (header, tag, and its footer when flagged), or None."""
    if len(head) >= 10 and head[:3] == b"ID3" and head[3] in (2, 3, 4) and all(byte < 0x80 for byte in head[6:10]):
        tag_size = sum(byte << 7 * (3 - index) for index, byte in enumerate(head[6:10]))  # 7 bits a byte ("syncsafe")
        return 10 + tag_size + (10 if head[5] & 0x10 else 0)
    return None


def _mpeg_after_tags(source: Any) -> int | None:
    """Where the MPEG audio frames of an MP3 start that libsndfile cannot tell from its bytes alone: after ID3v2 tags
    (one stacked on another, as two tagging tools leave them) or zeros after a tag (padding left outside it); with a
    .mp3 name it scans past them. None where no chain of frames starts there."""
    with _bytes_of(source) as data:
        at = 0
        while True:
            data.seek(at)
            end = _id3_end(data.read(10))
            if end is None:
                break
            at += end
        if not at:
            return None
        data.seek(at)
        ahead = data.read(1 << 16)
        at += len(ahead) - len(ahead.lstrip(b"\0"))
        frames = 2 * 1152 / 48000  # two frames at least, not a chance match in what follows
        return at if _mpeg_walk(data, at)[0] >= frames else None


_MP3_FRAME_BYTES = 1441  # the largest MPEG-1 layer III frame (320 kbit/s at 32 kHz, padded): less is no whole frame


def _info(path: str | os.PathLike):
    with _notes_hidden_while_decoding():
        return sf.info(os.fsencode(path))  # soundfile would encode a str as strict UTF-8: not every name is


def decoded_seconds(path: str | os.PathLike, stop_after: float = math.inf) -> float:
    """A file's duration by decoding it, stopping once past `stop_after` seconds: for a header that does not state
    it, or may misstate it (an MP3's without a Xing header is estimated from the file's size). Raises what soundfile
    raises for a file that is not audio or fails to decode."""
    reader = _read_through(path, stop_after)
    return reader.read_frames / reader.samplerate


def _read_through(path: str | os.PathLike, stop_after: float = math.inf) -> _ReadForward:
    """The file decoded as far as just past `stop_after` seconds, then closed: how far it read (`read_frames`), and
    where it stopped early, why (`_stopped_early`)."""
    with _open_reader(os.fspath(path)) as reader:
        while reader.read_frames <= stop_after * reader.samplerate:
            with _notes_hidden_while_decoding():
                if not len(reader.read_block(1 << 18)):
                    break
    return reader


def _duration(path: str | os.PathLike, info: Any) -> float | None:
    """The duration `info` (sf.info's answer) states, decoded where it states none; None when it holds no samples."""
    if info.samplerate <= 0:
        return None
    seconds = decoded_seconds(path) if info.frames == _UNSTATED else info.frames / info.samplerate
    return seconds if seconds > 0 else None


def header_duration(path: str | os.PathLike) -> float | None:
    """A file's duration as libsndfile reads it from the header, without decoding unless the header does not state
    it (None when it holds no samples); cheap, for weighing files. Raises what soundfile raises for a file that is
    not audio."""
    return _duration(path, _info(path))


def header_facts(path: str | os.PathLike, stop_after: float = math.inf) -> tuple[float | None, str | None]:
    """What a file's header says, without decoding: (its duration, None when it holds no samples; how it is cut short,
    "its header announces 45.0 s of audio and the file ends before that", None when whole or of a format whose
    header is not checked, see `_cut_short`). A cut file's duration is the one its header announces, not the part
    libsndfile counts from a WAV's size; one the header does not state is decoded, as far as just past `stop_after`
    seconds (a longer file is then only known to be longer), and a FLAC's decoding that stopped early says so as
    analysing it does (`_stopped_early`). Raises what soundfile raises for a file that is not audio, and
    AudioDecodeError for one `open_audio` refuses for its header (a variable-bitrate MP3 without a Xing header)."""
    info = _info(path)
    reader = _read_through(path, stop_after) if info.frames == _UNSTATED and info.samplerate > 0 else None
    duration = _duration(path, info) if reader is None else reader.read_frames / reader.samplerate or None
    if duration is None:
        return None, None
    _refuse_misread_mp3(os.fspath(path), info, os.fspath(path))
    announced = _cut_short(os.fspath(path), info)
    if announced is not None:
        return announced, _announced(announced)
    if reader is not None:
        return duration, _stopped_early(reader)
    return duration, _OGG_CUT if _ogg_unfinished(os.fspath(path), info) else None


def why_missing(path: str, what: str = "file") -> str:
    """What to say of a path where nothing is seen: a URL is not fetched (the user may expect it to be); a path
    through a folder this user cannot enter may hold a file all the same."""
    if re.match(r"[A-Za-z][A-Za-z0-9+.-]*://", path):
        return "a URL: only local files are read; download it first"
    if path == "-":
        return "audio is not read from the standard input; save it to a file and name that"
    try:
        os.stat(path)
    except PermissionError:
        return "cannot be reached: a folder on its path cannot be entered (permission denied); check its permissions"
    except OSError as error:
        if error.errno == errno.ELOOP:
            return "a symbolic link that leads back to itself (a loop of links); point it at a file"
    except ValueError:
        pass
    return f"no such {what}"


def open_audio(audio: AudioInput, sampling_rate: int | None = None, default_rate: int | None = None) -> AudioStream:
    """Validate an input and prepare it for streaming.

    `sampling_rate` is the rate of a bare waveform; without it a waveform is taken to be at `default_rate`
    (the model's rate), as transformers' audio pipelines do. A stream already open is itself (its reader can ask it
    afterwards whether the file was whole: `AudioStream.warning`)."""
    if isinstance(audio, AudioStream):
        return audio
    name = describe(audio)
    if isinstance(audio, dict) and _waveform(audio) is None and undecoded_audio(audio):
        name = audio.get("path") or describe(undecoded_audio(audio))
        audio = undecoded_audio(audio)
    if isinstance(audio, (str, os.PathLike)):
        path = os.fspath(audio)
        if not path:
            raise AudioDecodeError("an empty path: pass the path of an audio file.")
        if not os.path.exists(path):
            if os.path.islink(path):  # exists() follows links: a dangling one, or a loop of them
                raise FileNotFoundError(f"{path}: a link to {os.readlink(path)}, which does not exist (or a loop of "
                                        "links); point it at the file.")
            raise FileNotFoundError(f"{path}: {why_missing(path)}.")
        if os.path.isdir(path):
            raise AudioDecodeError(f"{path}: is a folder; pass an audio file (`music2emo predict FOLDER` analyses a "
                                  "folder's files).")
        if not os.path.isfile(path):  # read once, it could not also be probed for its length
            raise AudioDecodeError(f"{path}: is not a regular file (a pipe or a device); save it to a file first.")
        if os.path.getsize(path) == 0:
            raise AudioDecodeError(f"{path}: the file is empty (0 bytes).")
        try:
            open(path, "rb").close()  # else libsndfile's failure to open it reads as "not audio"
        except PermissionError:
            raise AudioDecodeError(f"{path}: cannot be read (permission denied); check its permissions.") from None
        return _open_file(path, name)
    if isinstance(audio, io.TextIOBase):
        raise AudioDecodeError(f"{name}: is opened as text; open it in binary mode (open(path, 'rb')).")
    if hasattr(audio, "read"):  # an open binary file (or BytesIO): read whole, as bytes are
        start = audio.tell() if getattr(audio, "seekable", lambda: False)() else None
        data = audio.read()
        if start is not None:
            audio.seek(start)  # where it was: a batch that fails decodes its inputs again
        if not isinstance(data, (bytes, bytearray, memoryview)):  # a SoundFile: its samples, not at a rate known here
            raise AudioDecodeError(f"{name}: cannot read audio from a {type(audio).__name__}; pass its path, or its "
                                   "samples with {'array': waveform, 'sampling_rate': int}.")
        if not data and start:  # written into, then handed over without a seek(0)
            raise AudioDecodeError(f"{name}: nothing left to read: it is at its end (position {start}), as after "
                                   "writing into it; call .seek(0) first.")
        audio = data
    if isinstance(audio, (bytes, bytearray, memoryview)):
        if not audio:
            raise AudioDecodeError(f"{name}: the audio bytes are empty.")
        return _open_file(io.BytesIO(audio), name)
    if isinstance(audio, dict):
        array = _waveform(audio)
        if array is None or "sampling_rate" not in audio:
            raise AudioDecodeError(
                f"audio dict with keys {sorted(audio)}: expected {{'array' or 'raw': waveform, 'sampling_rate': int}} "
                "or datasets' undecoded audio {'bytes' or 'path': ...}."
            )
        if audio["sampling_rate"] is None:  # else the model's rate would be taken: the waveform's own is unknown
            raise AudioDecodeError(f"{name}: its 'sampling_rate' is None; give the waveform's rate in Hz.")
        if sampling_rate is not None and check_rate(sampling_rate, "sampling_rate") != check_rate(
                audio["sampling_rate"], name):  # which one is the waveform's is not for this code to guess
            raise AudioDecodeError(f"{name}: its 'sampling_rate' ({audio['sampling_rate']}) differs from the "
                                   f"sampling_rate={sampling_rate} given with it; give the waveform's rate once.")
        sampling_rate = audio["sampling_rate"]
        audio = array if hasattr(array, "detach") else np.asarray(array)  # a tensor as below; a list (datasets')
    if hasattr(audio, "detach") and hasattr(audio, "cpu"):  # a torch tensor: off the graph and the GPU
        audio = audio.detach().cpu()
        if str(audio.dtype) == "torch.bfloat16":  # numpy has no bfloat16
            audio = audio.float()
    if isinstance(audio, np.ndarray) or hasattr(audio, "__array__"):
        array = np.asarray(audio)
        rate = check_rate(sampling_rate if sampling_rate is not None else default_rate, name)
        if array.size == 0:
            raise AudioDecodeError(f"{name}: the waveform has no samples.")
        mono = np.ascontiguousarray(_to_mono(_as_float32(array, name), name))
        _check_finite(mono, name)
        return AudioStream(name, rate, _array=mono)
    hint = " (a list of numbers is many inputs: pass one waveform as a numpy array)" if isinstance(
        audio, numbers.Number) else ""
    raise AudioDecodeError(
        f"{name}: cannot read audio from a {type(audio).__name__}{hint}; pass a path, bytes, a waveform, or "
        "{'array': waveform, 'sampling_rate': int}."
    )


def why_unreadable(path: str | os.PathLike) -> str | None:
    """Why the file at `path` cannot be opened as audio, in `open_audio`'s words without the path (empty, cut short,
    not audio, unreadable); None when it opens."""
    try:
        stream = open_audio(path)
    except (AudioDecodeError, FileNotFoundError) as error:
        return str(error).removeprefix(f"{os.fspath(path)}: ")
    stream._file.close()
    return None


def load_audio(audio: AudioInput, sampling_rate: int, input_rate: int | None = None) -> np.ndarray:
    """The whole input as one mono float32 array at `sampling_rate` (short inputs, tests, data preparation)."""
    stream = open_audio(audio, sampling_rate=input_rate, default_rate=sampling_rate)
    return np.concatenate(list(stream.blocks(sampling_rate, 1 << 20)))


def sinc_resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """torchaudio's default resampler, `transforms.Resample(from_rate, to_rate)`, which Music2Emo's inference used
    for MERT's input: a Hann-windowed sinc with 6 zero crossings and a 0.99 roll-off, its kernel computed as that
    transform computes it (mostly float64) and applied in float32 (tested equal to torchaudio's output)."""
    import torch

    divisor = math.gcd(from_rate, to_rate)
    orig, new = from_rate // divisor, to_rate // divisor
    zero_crossings, rolloff = 6, 0.99
    base = min(orig, new) * rolloff
    width = math.ceil(zero_crossings * orig / base)
    positions = torch.arange(-width, width + orig, dtype=torch.float64)[None, None] / orig
    # As torchaudio's transform builds it (dtype None): an integer ramp divided in float32, then added in float64.
    t = (torch.arange(0, -new, -1)[:, None, None] / new + positions) * base
    t = t.clamp(-zero_crossings, zero_crossings)
    window = torch.cos(t * math.pi / zero_crossings / 2) ** 2
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), torch.sin(t) / t) * window * (base / orig)
    padded = torch.nn.functional.pad(torch.as_tensor(audio, dtype=torch.float32)[None, None], (width, width + orig))
    out = torch.nn.functional.conv1d(padded, kernel.float(), stride=orig).transpose(1, 2).reshape(-1)
    # torchaudio's length: the quotient rounded to float32 before its ceiling (one sample fewer than the exact
    # ceiling for a third of 44.1 kHz tracks of minutes).
    return out[: int(torch.ceil(torch.tensor(new * len(audio) / orig, dtype=torch.float32)))].numpy()


def resample(audio: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """One-shot resample of an in-memory mono waveform (same soxr settings as the stream)."""
    if from_rate == to_rate:
        return audio.astype(np.float32, copy=False)
    return soxr.resample(audio, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)


__all__ = ["AUDIO_EXTENSIONS", "DECODED_FORMATS", "UNDECODED_EXTENSIONS", "AudioDecodeError", "AudioInput",
           "AudioStream", "ahead", "convert_first", "describe", "load_audio", "open_audio", "passed_over", "resample",
           "why_missing", "why_unreadable"]
