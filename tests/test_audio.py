"""Decoding and resampling: every input form, every awkward input, streamed or whole."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from music2emo_hf.audio import (
    AudioCutShortWarning,
    AudioDecodeError,
    header_facts,
    load_audio,
    open_audio,
    resample,
)

from .conftest import ROOT, require_fixtures, through_a_pipe, tone, without_root_reading_rights


@pytest.mark.parametrize("dtype,scale", [(np.int16, 32767), (np.int32, 2**31 - 1), (np.float64, 1.0), (np.uint8, None)])
def test_integer_and_float_arrays_are_scaled_to_unit_range(dtype, scale):
    reference = tone(0.5)
    if dtype is np.uint8:
        array = np.round(reference * 127 + 128).astype(np.uint8)
    else:
        array = (reference * scale).astype(dtype)
    audio = load_audio(array, 24000)
    assert audio.dtype == np.float32
    np.testing.assert_allclose(audio, reference, atol=1e-2)


def test_64_bit_integer_samples_are_refused_not_scaled_to_silence():
    samples = np.array([int(v) for v in (tone(0.5) * 32767).astype(np.int16)])  # a list of samples made an array
    with pytest.raises(AudioDecodeError, match=r"samples of dtype int64 have no PCM scale .* e\.g\. "
                       r"\.astype\(np\.int16\)"):
        load_audio(samples, 24000)
    with pytest.raises(AudioDecodeError, match="samples of dtype uint64 have no PCM scale"):
        load_audio(samples.astype(np.uint64) + 32768, 24000)


@pytest.mark.parametrize("channels", [2, 6])
@pytest.mark.parametrize("channels_first", [True, False])
def test_multichannel_arrays_are_mixed_to_mono_in_either_layout(channels, channels_first):
    mono = tone(0.5)
    multi = np.stack([mono * (1 + 0.1 * c) for c in range(channels)], axis=0).astype(np.float32)
    audio = load_audio(multi if channels_first else multi.T, 24000)
    np.testing.assert_array_equal(audio, multi.mean(axis=0, dtype=np.float32))  # numpy's float32 mean, bit for bit


@pytest.mark.parametrize("channels", [2, 6])
def test_multichannel_files_are_mixed_to_mono_as_numpy_averages_them(write_wav, channels):
    rng = np.random.default_rng(channels)
    frames = (rng.uniform(-0.5, 0.5, (24000, channels)) * rng.uniform(0.01, 1, channels)).astype(np.float32)
    path = write_wav("multi.wav", frames, 24000)
    written = sf.read(path, dtype="float32")[0]
    np.testing.assert_array_equal(load_audio(str(path), 24000), written.mean(axis=1, dtype=np.float32))


@pytest.mark.parametrize("rate", [8000, 16000, 22050, 44100, 48000, 96000, 192000])
def test_any_rate_is_resampled_to_the_target_keeping_duration_and_pitch(rate):
    t = np.arange(rate) / rate
    audio = load_audio({"array": np.sin(2 * np.pi * 440 * t), "sampling_rate": rate}, 24000)
    assert len(audio) == 24000
    spectrum = np.abs(np.fft.rfft(audio))
    assert abs(np.argmax(spectrum) - 440) <= 1  # 1 Hz bins over one second


def test_streamed_blocks_equal_a_single_resample():
    x = np.random.default_rng(1).standard_normal(44100 * 7).astype(np.float32)
    streamed = np.concatenate(list(open_audio(x, 44100).blocks(24000, 24000 * 2)))
    np.testing.assert_array_equal(streamed, resample(x, 44100, 24000))


@pytest.mark.parametrize("resampler, rate, last", [("soxr", 44100, 110254), ("sinc", 44100, 110254),
                                                   ("soxr", 48000, 110251), ("soxr", 16000, 110255)])
def test_each_chunk_comes_with_its_span_of_the_input_resampled_once_to_the_harmonys_rate(write_wav, resampler, rate,
                                                                                        last):
    """The chord path's audio is the whole input resampled from its native rate in one stream, whatever the
    backbone's resampler, cut where the chunks end: joined, it is what the authors' `librosa.load(path, sr=22050)`
    gave their chord model, bit for bit (at 48 and 16 kHz one sample longer than soxr gives: librosa pads it)."""
    import librosa

    from music2emo_hf.feature_extraction_music2emo import Music2EmoFeatureExtractor

    extra = {44100: 7, 48000: 1, 16000: 3}[rate]
    stereo = np.random.default_rng(2).standard_normal((rate * 25 + extra, 2)).astype(np.float32)
    path = write_wav("noise.wav", stereo, rate)
    extractor = Music2EmoFeatureExtractor(chunk_seconds=10.0, resampler=resampler)
    pairs = list(extractor.iter_chunks(str(path), heard_rate=22050))
    for (chunk, _), alone in zip(pairs, extractor.iter_chunks(str(path)), strict=True):
        np.testing.assert_array_equal(chunk, alone)  # the backbone's chunks are unchanged
    assert [len(heard) for _, heard in pairs] == [220500, 220500, last]  # 10 s, 10 s, what is left
    authors, _ = librosa.load(str(path), sr=22050)
    np.testing.assert_array_equal(np.concatenate([heard for _, heard in pairs]), authors)


def test_path_bytes_and_dict_inputs_decode_identically(write_wav):
    wave = tone(1.0, rate=44100, channels=2)
    path = write_wav("clip.wav", wave, 44100)
    from_path = load_audio(str(path), 24000)
    np.testing.assert_array_equal(from_path, load_audio(path.read_bytes(), 24000))
    np.testing.assert_allclose(from_path, load_audio({"raw": wave, "sampling_rate": 44100}, 24000), atol=1e-4)


def test_open_files_datasets_undecoded_audio_and_torch_tensors_are_inputs_too(write_wav):
    import torch

    wave = tone(1.0, rate=24000)
    path = write_wav("clip.wav", wave, 24000)
    from_path = load_audio(str(path), 24000)
    with open(path, "rb") as handle:
        np.testing.assert_array_equal(load_audio(handle, 24000), from_path)
    for form in (io.BytesIO(path.read_bytes()), memoryview(path.read_bytes()), {"bytes": path.read_bytes(), "path": None},
                 {"bytes": None, "path": str(path)}):  # the last two: datasets' Audio(decode=False)
        np.testing.assert_array_equal(load_audio(form, 24000), from_path)
    tensor = torch.from_numpy(wave.copy())
    for form in (tensor.requires_grad_(), tensor.detach().bfloat16()):  # off the graph; a dtype numpy lacks
        np.testing.assert_allclose(load_audio(form, 24000), wave, atol=4e-3)
    with open(path) as text, pytest.raises(AudioDecodeError, match="clip.wav: is opened as text; open it in binary"):
        load_audio(text, 24000)
    with open(path, "rb") as handle:  # read again where it was: a failed batch decodes its inputs a second time
        np.testing.assert_array_equal(load_audio(handle, 24000), load_audio(handle, 24000))
    with sf.SoundFile(path) as samples, pytest.raises(AudioDecodeError, match="cannot read audio from a SoundFile"):
        load_audio(samples, 24000)  # its read() gives samples, at a rate it does not say
    written = io.BytesIO()
    sf.write(written, wave, 24000, format="WAV")  # and handed over as it is, at its end
    with pytest.raises(AudioDecodeError, match=r"<BytesIO>: nothing left to read: it is at its end \(position "
                                               r"48044\), as after writing into it; call .seek\(0\) first"):
        load_audio(written, 24000)


def test_an_mp3_without_an_id3_tag_decodes_from_memory_as_from_its_file(tmp_path):
    """Such an MP3 (LAME's own output, or a tag stripped) given as bytes, from a `datasets` row or an upload."""
    tagged = require_fixtures("emomusic", "audio", "3.mp3").read_bytes()
    tag_size = 10 + sum(byte << 7 * (3 - i) for i, byte in enumerate(tagged[6:10]))  # ID3v2's "syncsafe" size
    bare = tagged[tag_size:]
    assert bare[:2] == b"\xff\xfb"  # an MPEG-1 layer III frame first
    path = tmp_path / "bare.mp3"
    path.write_bytes(bare)
    from_file = load_audio(str(path), 24000)
    assert abs(len(from_file) / 24000 - 45.0) < 0.1
    for form in (bare, io.BytesIO(bare), {"bytes": bare, "path": "bare.mp3"}):
        np.testing.assert_array_equal(load_audio(form, 24000), from_file)


def test_real_mp3_decodes_to_its_duration():
    path = require_fixtures("emomusic", "audio", "3.mp3")
    audio = load_audio(str(path), 24000)
    assert abs(len(audio) / 24000 - 45.0) < 0.1
    assert 0.05 < np.abs(audio).max() <= 1.0


@pytest.mark.parametrize(
    "bad,message",
    [
        (np.array([0.0, np.nan, 0.1], dtype=np.float32), "NaN or infinite"),
        (np.array([0.0, np.inf, 0.1], dtype=np.float32), "NaN or infinite"),
        (np.zeros(0, dtype=np.float32), "no samples"),
        (np.zeros((0, 2), dtype=np.float32), r"<array \(0, 2\)>: the waveform has no samples"),
        (np.zeros((2, 0), dtype=np.float32), "no samples"),
        (np.full(100, 1e300), "beyond float32's range"),
        (np.zeros((2, 3, 4), dtype=np.float32), "1-D or 2-D"),
        (np.array(["a", "b"]), "not audio"),
        ({"array": np.zeros(10)}, "sampling_rate"),
        (b"", "empty"),
        (b"not audio at all", "not audio: it could not be decoded"),
        (3.5, "cannot read audio from a float .a list of numbers is many inputs"),
        ("", "an empty path"),
    ],
)
def test_bad_inputs_raise_a_clear_error(bad, message):
    with pytest.raises(AudioDecodeError, match=message):
        load_audio(bad, 24000)


def test_bad_sampling_rate_is_refused():
    with pytest.raises(AudioDecodeError, match="sampling rate"):
        load_audio({"array": np.zeros(100), "sampling_rate": 0}, 24000)
    for given in (None, 44100):  # from a review: read as the model's 24 kHz, whatever the call said
        with pytest.raises(AudioDecodeError, match=re.escape("<audio dict>: its 'sampling_rate' is None; give the "
                                                             "waveform's rate in Hz.")):
            load_audio({"array": np.zeros(1000), "sampling_rate": None}, 24000, given)


def test_file_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.mp3"):
        load_audio(str(tmp_path / "missing.mp3"), 24000)
    (tmp_path / "dangling.mp3").symlink_to(tmp_path / "moved.mp3")
    with pytest.raises(FileNotFoundError, match=f"dangling.mp3: a link to {tmp_path / 'moved.mp3'}, which does not"):
        load_audio(str(tmp_path / "dangling.mp3"), 24000)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    with pytest.raises(AudioDecodeError, match="empty.mp3.*0 bytes"):
        load_audio(str(empty), 24000)
    text = tmp_path / "notes.mp3"
    text.write_text("these are my notes, not a song\n" * 20)
    with pytest.raises(AudioDecodeError, match="notes.mp3: not audio: it could not be decoded"):
        load_audio(str(text), 24000)
    with pytest.raises(AudioDecodeError, match="is a folder"):
        load_audio(str(tmp_path), 24000)
    os.mkfifo(tmp_path / "fifo.wav")  # as `<(cat song.wav)` gives: readable once, so not probed and then analysed
    with pytest.raises(AudioDecodeError, match="fifo.wav: is not a regular file .a pipe or a device.; save it"):
        load_audio(str(tmp_path / "fifo.wav"), 24000)
    sf.write(tmp_path / "slow.wav", np.zeros(100, dtype=np.float32), 1)
    with pytest.raises(AudioDecodeError, match="slow.wav: the file's sampling rate, 1 Hz, is not usable; resample it"):
        load_audio(str(tmp_path / "slow.wav"), 24000)


def test_truncated_mp3_decodes_what_is_there(tmp_path):
    source = require_fixtures("emomusic", "audio", "3.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(source[: len(source) // 3])
    with pytest.warns(AudioCutShortWarning, match="its header announces 45.0 s of audio"):  # its LAME header's count
        audio = load_audio(str(cut), 24000)
    assert 2.0 < len(audio) / 24000 < 30.0  # what the first third holds (after its ID3 tag): not all 45 s, not nothing


def _written_and_cut(cut: Path, audio: np.ndarray, rate: int, **format) -> bytes:
    """`audio` as libsndfile writes a file in `format` (returned whole), and its first 60 % at `cut`: a copy or
    download that stopped."""
    whole = io.BytesIO()
    sf.write(whole, audio, rate, **format)
    cut.write_bytes(whole.getvalue()[: len(whole.getvalue()) * 6 // 10])
    return whole.getvalue()


@pytest.mark.parametrize("kind", ["WAV", "MP3", "AIFF", "W64", "RF64", "AU"])
def test_a_file_cut_short_is_analysed_with_a_warning_naming_what_its_header_announced(tmp_path, kind):
    """libsndfile reads a WAV, AIFF, W64, RF64, AU or an MP3 (LAME's, with its Xing header, as libsndfile writes it) cut
    short up to where it ends without a word: 60 % of a track would pass for the track."""
    cut = tmp_path / f"cut.{kind.lower()}"
    whole = _written_and_cut(cut, tone(4.0), 24000, format=kind, subtype=None if kind == "MP3" else "PCM_16")
    held = "what it holds" if kind == "MP3" else "the 2.4 s it holds"
    message = f"{cut}: cut short: its header announces 4.0 s of audio and the file ends before that (not downloaded " \
              f"or copied whole); {held} is analysed."
    with pytest.warns(AudioCutShortWarning, match=re.escape(message)):
        audio = load_audio(str(cut), 24000)
    assert 2.0 < len(audio) / 24000 < 2.6
    with pytest.warns(AudioCutShortWarning, match="cut short"):  # the same bytes given as bytes
        load_audio(cut.read_bytes(), 24000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(whole, 24000)) == 4 * 24000  # whole: no warning


@pytest.mark.parametrize("kind", ["WAV", "AIFF"])
def test_a_file_missing_more_than_a_tenth_of_a_second_is_cut_short_and_one_missing_less_is_not(tmp_path, kind):
    """The tolerance is 0.1 s: a few trailing bytes lost (a tag's padding, a block rounded) say nothing, 0.2 s of
    audio missing is a copy that stopped."""
    whole = io.BytesIO()
    sf.write(whole, tone(3.0), 24000, format=kind, subtype="PCM_16")
    data, byte_rate = whole.getvalue(), 24000 * 2  # the audio data is last in both (libsndfile writes no trailer)
    with pytest.warns(AudioCutShortWarning, match="the 2.8 s it holds is analysed"):
        load_audio(data[: -byte_rate // 5], 24000)  # 0.2 s missing
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(data[: -byte_rate // 20], 24000)) == round(2.95 * 24000)  # 0.05 s missing


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0x7FFFEFFC])
def test_a_wav_whose_sizes_were_left_unset_is_read_whole_without_a_warning(size):
    """A writer streaming to a pipe cannot go back to fill in the sizes: ffmpeg leaves 0xFFFFFFFF, SoX 0x7FFFF000
    rounded down to whole blocks (0x7FFFEFFC for 24-bit stereo)."""
    whole = io.BytesIO()
    sf.write(whole, tone(2.0), 24000, format="WAV", subtype="PCM_16")
    data = bytearray(whole.getvalue())
    at = data.index(b"data")
    data[4:8], data[at + 4 : at + 8] = b"\xff\xff\xff\xff", size.to_bytes(4, "little")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(bytes(data), 24000)) == 2 * 24000


def test_a_file_without_any_audio_says_so_with_what_to_do(tmp_path):
    """A copy that stopped after the header was first warned of as analysed ("the 0.0 s it holds is analysed"),
    then failed as "the audio contains no samples"; so did a file written empty."""
    whole = io.BytesIO()
    sf.write(whole, tone(2.0), 24000, format="WAV", subtype="PCM_16")
    (tmp_path / "header.wav").write_bytes(whole.getvalue()[:44])
    sf.write(tmp_path / "empty.wav", np.zeros(0, np.float32), 24000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(AudioDecodeError, match=re.escape(
                f"{tmp_path / 'header.wav'}: cut short: its header announces 2.0 s of audio and the file ends before "
                "that (not downloaded or copied whole), and it holds no audio past its header; download or copy it "
                "again.")):
            load_audio(str(tmp_path / "header.wav"), 24000)
        with pytest.raises(AudioDecodeError, match=re.escape(
                f"{tmp_path / 'empty.wav'}: it holds no audio (no samples); export or download it again.")):
            load_audio(str(tmp_path / "empty.wav"), 24000)


def test_a_wav_whose_data_size_was_left_0_is_refused_saying_how_to_repair_it(tmp_path):
    """A recorder stopped before it closed the file leaves its sizes 0; libsndfile reads no audio from it, which was
    said as "the audio contains no samples"."""
    whole = io.BytesIO()
    sf.write(whole, tone(2.0), 24000, format="WAV", subtype="PCM_16")
    data = bytearray(whole.getvalue())
    at = data.index(b"data")
    data[4:8] = data[at + 4 : at + 8] = bytes(4)
    (tmp_path / "unfinished.wav").write_bytes(data)
    with pytest.raises(AudioDecodeError, match=re.escape(
            f"{tmp_path / 'unfinished.wav'}: its header was never finished (its data size is 0, as a recorder stopped "
            "before closing the file leaves it), so its 96,000 bytes of audio cannot be read; repair the header first "
            "(e.g. `sox --ignore-length IN.wav OUT.wav`).")):
        load_audio(str(tmp_path / "unfinished.wav"), 24000)


def test_a_flac_streamed_without_its_length_is_read_whole_and_one_cut_or_damaged_says_so(tmp_path):
    """Whole files like these failed as "damaged" at their last block: soundfile seeks after each read, and
    libsndfile's FLAC decoder cannot seek at the end of a file of unstated length. Its decoder ends such a file at
    any lost sync, so one cut short or damaged was analysed in part without a word (half of it, for one flipped
    byte in the middle): its last frame's header tells how far its frames reach."""
    signal = tone(20.0, rate=22050)
    streamed = tmp_path / "streamed.flac"
    streamed.write_bytes(through_a_pipe(signal, 22050))
    assert int.from_bytes(streamed.read_bytes()[18:26], "big") & (1 << 36) - 1 == 0  # STREAMINFO: no sample count
    stated = tmp_path / "stated.flac"
    sf.write(stated, signal, 22050, subtype="PCM_16")
    assert header_facts(streamed) == header_facts(stated) == (20.0, None)  # its length, decoded
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        np.testing.assert_array_equal(load_audio(str(streamed), 24000), load_audio(str(stated), 24000))
    cut = tmp_path / "cut.flac"
    cut.write_bytes(streamed.read_bytes()[: streamed.stat().st_size // 2])
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            f"{cut}: cut short: the file ends inside its frame at 9.8 s (not downloaded or copied whole, or damaged "
            "at its end); what precedes is analysed.")):
        part = load_audio(str(cut), 24000)
    assert len(part) == pytest.approx(9.8 * 24000, abs=0.05 * 24000)
    np.testing.assert_allclose(part[: 4 * 24000], load_audio(str(stated), 24000)[: 4 * 24000], atol=1e-6)
    damaged = tmp_path / "damaged.flac"
    data = bytearray(streamed.read_bytes())
    data[len(data) // 2] ^= 0xFF
    damaged.write_bytes(bytes(data))
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            f"{damaged}: decoding stopped at 9.8 s of the 20.0 s its frames reach (the file is damaged there); what "
            "precedes is analysed. Download or export it again.")):
        assert len(load_audio(str(damaged), 24000)) == len(part)
    assert header_facts(cut) == (pytest.approx(9.8, abs=0.05), "cut short: the file ends inside its frame at 9.8 s "
                                 "(not downloaded or copied whole, or damaged at its end); what precedes is analysed.")
    assert header_facts(damaged)[1].startswith("decoding stopped at 9.8 s of the 20.0 s its frames reach")


def test_a_variable_bitrate_mp3_without_a_xing_header_is_refused_not_analysed_in_part(tmp_path):
    """libsndfile's decoder takes such a file's length from its first frame and decodes no further: 2.3 s of this
    12.3 s one were analysed as the whole (the length is walked from the frame headers)."""
    t = np.arange(int(12.3 * 44100)) / 44100
    streamed = tmp_path / "streamed.mp3"
    streamed.write_bytes(through_a_pipe((0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32), 44100, "MP3",
                                        "MPEG_LAYER_III"))
    with pytest.raises(AudioDecodeError, match=re.escape(
            f"{streamed}: only its first 1.8 s of 12.3 s can be decoded: a variable-bitrate MP3 without a Xing "
            "header, whose length the decoder estimates from its first frame. Convert it first (e.g. `ffmpeg -i "
            "IN.mp3 OUT.flac`).")):
        load_audio(str(streamed), 24000)
    with pytest.raises(AudioDecodeError, match="only its first 1.8 s of 12.3 s"):  # prepare-data's probe, the Space
        header_facts(streamed)
    from music2emo_hf.data.prepare import probe_audio

    assert probe_audio(str(streamed))["error"].startswith("only its first 1.8 s of 12.3 s can be decoded")
    lame = io.BytesIO()  # LAME's own stream with its first frame, the Xing frame, left out, as `lame -t` writes it
    sf.write(lame, tone(10.0), 24000, format="MP3")
    assert lame.getvalue()[:2] == b"\xff\xf3" and lame.getvalue()[13:17] == b"Xing"  # MPEG-2 layer III: 192 bytes
    (tmp_path / "no-xing.mp3").write_bytes(lame.getvalue()[72_000 * 64 // 24_000 :])
    with pytest.raises(AudioDecodeError, match=r"no-xing.mp3: only its first 4.2 s of 10.1 s can be decoded"):
        load_audio(str(tmp_path / "no-xing.mp3"), 24000)


def test_whole_files_with_a_tag_after_the_audio_or_a_codec_that_cannot_seek_are_read_whole(tmp_path):
    """Both failed as "damaged" while files were read without soundfile's bounds: a FLAC decoder asked past its last
    frame read the ID3v1 tag a tagger appends (128 bytes from "TAG") as a lost sync, and a GSM 6.10 WAV refused the
    position query."""
    signal = tone(6.0, rate=16000)
    tagged = tmp_path / "tagged.flac"
    sf.write(tagged, signal, 16000, subtype="PCM_16")
    id3v1 = b"TAG" + b"Title".ljust(30, b"\0") + b"Artist".ljust(30, b"\0") + b"Album".ljust(30, b"\0") + b"2026" \
        + b"".ljust(30, b"\0") + bytes([255])
    untagged = load_audio(str(tagged), 16000)
    with open(tagged, "ab") as handle:
        handle.write(id3v1)
    np.testing.assert_array_equal(load_audio(str(tagged), 16000), untagged)
    gsm = tmp_path / "gsm.wav"
    sf.write(gsm, signal, 8000, subtype="GSM610")
    assert len(load_audio(str(gsm), 8000)) == sf.info(gsm).frames == 12 * 8000
    assert header_facts(gsm) == (12.0, None)


def test_a_wav_whose_byte_rate_field_is_wrong_is_read_whole_without_a_warning(tmp_path):
    """libsndfile reads a WAV by its data size, not its bytes-per-second field (halved here, as a bad writer might;
    IMA ADPCM's is rounded down, which over 20 minutes came to 0.13 s): the file is not called cut short. (An MP3's
    length is exact only from a Xing or Info header; without one, see the variable-bitrate test above.)"""
    wav = io.BytesIO()
    sf.write(wav, tone(10.0), 24000, format="WAV", subtype="PCM_16")
    halved = bytearray(wav.getvalue())
    halved[28:32] = (int.from_bytes(halved[28:32], "little") // 2).to_bytes(4, "little")
    (tmp_path / "halved.wav").write_bytes(halved)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(str(tmp_path / "halved.wav"), 24000)) == 10 * 24000
    assert header_facts(tmp_path / "halved.wav") == (10.0, None)


def test_an_mp3_cut_short_inside_its_id3_tag_is_called_incomplete_not_other_than_audio(tmp_path):
    """This clip's ID3 tag (licence text and cover art) fills its first 110 KB: cut at 100 KB it holds no audio."""
    source = require_fixtures("emomusic", "audio", "3.mp3").read_bytes()
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(source[:100_000])
    message = "cut short: the file ends inside its ID3 tag (100,000 of the tag's 109,910 bytes), before any audio"
    for audio, name in ((str(cut), str(cut)), (source[:100_000], "<100000 bytes>")):
        with pytest.raises(AudioDecodeError, match=re.escape(f"{name}: {message}")):
            load_audio(audio, 24000)
    for size, where in ((109_910, "right after its 109,910-byte ID3 tag"),
                        (110_000, "90 bytes after its 109,910-byte ID3 tag")):  # less than one whole audio frame
        with pytest.raises(AudioDecodeError, match=re.escape(f"cut short: the file ends {where}, before any audio")):
            load_audio(source[:size], 24000)
    with pytest.warns(AudioCutShortWarning, match="<112000 bytes>: cut short"):
        assert len(load_audio(source[:112_000], 24000)) > 0  # a few frames: what is there is decoded
    (tmp_path / "notes.mp3").write_bytes(b"ID3 tags to add: artist, title\n" * 10)  # text, however it starts
    with pytest.raises(AudioDecodeError, match="notes.mp3: not audio"):
        load_audio(str(tmp_path / "notes.mp3"), 24000)


def test_a_wav_cut_short_in_its_header_is_called_incomplete_not_other_than_audio(tmp_path):
    """libsndfile's float WAV has 72 bytes of chunks (fmt, fact, PEAK) before its data chunk: cut there, it holds no
    audio."""
    whole = io.BytesIO()
    sf.write(whole, tone(1.0), 24000, format="WAV", subtype="FLOAT")
    assert whole.getvalue().index(b"data") == 72
    for size in (20, 44, 72):
        (tmp_path / "cut.wav").write_bytes(whole.getvalue()[:size])
        with pytest.raises(AudioDecodeError, match=re.escape(
                f"cut.wav: cut short: the WAV file ends in its header ({size} bytes), before its audio data")):
            load_audio(str(tmp_path / "cut.wav"), 24000)
    (tmp_path / "other.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt \x10\x00\x00\x00" + bytes(16) + b"data" + bytes(4))
    with pytest.raises(AudioDecodeError, match="other.wav: not audio"):  # whole, in an encoding no decoder knows
        load_audio(str(tmp_path / "other.wav"), 24000)


def test_an_mp3_damaged_in_its_body_is_read_past_small_damage_and_up_to_large_damage(tmp_path):
    """Zeros over part of a real MP3's frames (past its 109,900-byte ID3 tag), as a download piece never written
    leaves them: over 512 bytes the decoder resyncs and the track keeps its length; over 16 KB it gives up, and what
    precedes is analysed with a warning that says so. (From a review: the second was refused whole as "decoding
    failed part-way", after a false "cut short" warning: the seek near its end failed on the damage.)"""
    source = require_fixtures("emomusic", "audio", "4.mp3")
    intact = load_audio(str(source), 24000)
    for start, length in ((200_000, 512), (400_000, 16_384)):
        data = bytearray(source.read_bytes())
        data[start : start + length] = bytes(length)
        bad = tmp_path / f"hole-{length}.mp3"
        bad.write_bytes(bytes(data))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            audio = load_audio(str(bad), 24000)
        said = [str(warning.message) for warning in caught]
        np.testing.assert_array_equal(audio[: 10 * 24000], intact[: 10 * 24000])
        if length == 512:
            assert abs(len(audio) - len(intact)) < 24000 // 10 and not said, said
        else:
            assert 30 * 24000 < len(audio) < 40 * 24000
            assert said == [f"{bad}: decoding stopped at {len(audio) / 24000:.1f} s of the 45.0 s its header announces "
                            "(the file is damaged or cut short there); what precedes is analysed. Download or export "
                            "it again."]


def test_an_mp3_whose_xing_header_counts_no_bytes_is_told_cut_short_from_damaged_by_its_frames(tmp_path):
    """A real LAME MP3 whose Xing header holds its frame count but no byte count (left 0, as by a writer that never
    filled it in): cut at 60 %, its frame headers run into the file's end short of the count, and opening it or
    prepare-data's probe says it was cut short; with a 16 KB hole in it (a download piece never written) they do not
    (the probe said "the file ends before that" of a whole file), and decoding says how far it reads."""
    source = require_fixtures("emomusic", "audio", "4.mp3")
    data = bytearray(source.read_bytes())
    xing = data.index(b"Info", 109_900)
    assert int.from_bytes(data[xing + 4 : xing + 8], "big") == 0x0F  # frames, bytes, table of contents, quality
    data[xing + 12 : xing + 16] = bytes(4)
    uncounted, cut, holed = tmp_path / "uncounted.mp3", tmp_path / "cut.mp3", tmp_path / "holed.mp3"
    uncounted.write_bytes(bytes(data))
    cut.write_bytes(bytes(data[: len(data) * 6 // 10]))
    data[400_000 : 400_000 + 16_384] = bytes(16_384)
    holed.write_bytes(bytes(data))

    assert header_facts(uncounted) == (pytest.approx(45.02, abs=0.01), None)
    assert header_facts(holed) == (pytest.approx(45.02, abs=0.01), None)
    assert header_facts(cut) == (pytest.approx(45.02, abs=0.01),
                                 "its header announces 45.0 s of audio and the file ends before that")
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            f"{cut}: cut short: its header announces 45.0 s of audio and the file ends before that (not downloaded "
            "or copied whole); what it holds is analysed.")):
        assert 20 < len(load_audio(str(cut), 24000)) / 24000 < 23
    with pytest.warns(AudioCutShortWarning, match=re.escape(f"{holed}: decoding stopped at 35.7 s of the 45.0 s")):
        load_audio(str(holed), 24000)


@pytest.mark.parametrize("kind", ["WAV", "AIFF"])
def test_a_file_cut_short_while_it_is_read_says_so(tmp_path, kind):
    """From a review: a WAV or AIFF a sync client rewrote while it was analysed gave half a track without a word (a
    FLAC said so); its header's length, whole when opened, now measures how far decoding went."""
    path = tmp_path / f"long.{kind.lower()}"
    sf.write(path, tone(60.0), 24000, format=kind, subtype="PCM_16")
    blocks = open_audio(str(path)).blocks(24000, 24000)
    next(blocks)
    os.truncate(path, path.stat().st_size // 2)
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            f"{path}: decoding stopped at 30.0 s of the 60.0 s its header announces (the file is damaged or cut short "
            "there)")):
        assert 29 < 1 + len(list(blocks)) < 31
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sf.write(path, tone(60.0), 24000, format=kind, subtype="PCM_16")
        assert len(load_audio(str(path), 24000)) == 60 * 24000  # whole: no warning


def test_a_file_behind_a_folder_that_cannot_be_entered_is_not_called_missing(tmp_path):
    """From a review: a service account without access to a folder was told its files do not exist. Root reads any
    folder, so as root the check runs without the capabilities that allow it."""
    locked = tmp_path / "locked"
    locked.mkdir()
    sf.write(locked / "song.wav", tone(1.0), 24000)
    prefix = without_root_reading_rights()
    locked.chmod(0)
    try:
        done = subprocess.run([*prefix, sys.executable, "-c", "import sys; from music2emo_hf.audio import load_audio; "
                               "load_audio(sys.argv[1], 24000)", str(locked / "song.wav")],
                              capture_output=True, text=True, cwd=ROOT)
    finally:
        locked.chmod(0o755)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1] == (
        f"FileNotFoundError: {locked / 'song.wav'}: cannot be reached: a folder on its path cannot be entered "
        "(permission denied); check its permissions.")


def test_an_mp3_with_zeros_or_a_second_tag_after_its_id3_tag_decodes_from_its_bytes_as_from_its_path(tmp_path):
    """From a review: a real MP3 with padding left after its ID3v2 tag (outside the tag's size), or a second tag
    stacked on the first, decoded from a .mp3 path (libsndfile scans past them, by the name) and was "not audio" as
    bytes, an open file, a `datasets` dict or a file of another name: an upload or a Hub dataset's row."""
    source = require_fixtures("emomusic", "audio", "3.mp3")
    data = source.read_bytes()
    tag_end = 10 + sum(byte << 7 * (3 - index) for index, byte in enumerate(data[6:10]))
    padded = data[:tag_end] + bytes(4096) + data[tag_end:]
    stacked = b"ID3\x03\x00\x00\x00\x00\x10\x00" + bytes(2048) + data  # an empty 2 KB tag before the real one
    whole = load_audio(str(source), 24000)
    renamed = tmp_path / "upload.bin"
    renamed.write_bytes(padded)
    for form in (padded, stacked, io.BytesIO(padded), {"bytes": padded, "path": None}, str(renamed)):
        np.testing.assert_array_equal(load_audio(form, 24000), whole)


def test_a_process_that_imports_the_package_keeps_its_stderr_while_files_open(tmp_path):
    """From a review: a service's log lines and its child processes' stderr, written while the package opened a file,
    were lost (descriptor 2 pointed at /dev/null for those ms, the decoders' notes with them). Only the command, whose
    own lines go out by a descriptor of their own, hides the notes."""
    sf.write(tmp_path / "song.wav", tone(1.0), 24000)
    script = ("import os, sys\nfrom music2emo_hf import audio\nmoved = []\nredirect = os.dup2\n"
              "os.dup2 = lambda a, b, *rest: moved.append(b) or redirect(a, b, *rest)\n"
              "audio.load_audio(sys.argv[1], 16000); audio.header_facts(sys.argv[1])\nprint(moved)\n")
    done = subprocess.run([sys.executable, "-c", script, str(tmp_path / "song.wav")], capture_output=True, text=True,
                          cwd=ROOT, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "[]", done.stderr


def test_long_files_stream_in_bounded_memory(write_wav):
    """60 minutes of audio pass through the chunk stream while only about one chunk is held."""
    import tracemalloc

    from music2emo_hf.feature_extraction_music2emo import Music2EmoFeatureExtractor

    rate = 16000
    minute = (0.1 * np.sin(2 * np.pi * 220 * np.arange(60 * rate) / rate)).astype(np.float32)
    path = write_wav("hour.wav", np.tile(minute, 60), rate, subtype="PCM_16")
    extractor = Music2EmoFeatureExtractor()
    tracemalloc.start()
    total = 0
    for chunk in extractor.iter_chunks(str(path)):
        total += len(chunk)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert total == 60 * 60 * 24000
    assert peak < 40 * 2**20, f"peak {peak / 2**20:.1f} MiB while streaming a 60-min file"


def test_the_sinc_resampler_is_torchaudios():
    """Against outputs of torchaudio 2.11.1's `transforms.Resample` (tests/torchaudio_resample_reference.json; it says
    how they were made): the resampler of the authors' inference, offered as `resampler="sinc"`."""
    import json

    from music2emo_hf.audio import sinc_resample

    reference = json.loads((ROOT / "tests" / "torchaudio_resample_reference.json").read_text())
    for pair, expected in reference["outputs"].items():
        orig, new = map(int, pair.split("->"))
        n = orig // 10
        t = np.arange(n) / orig
        wave = (0.5 * np.sin(2 * np.pi * 440 * t) + 0.1 * np.random.default_rng(orig).standard_normal(n)).astype(
            np.float32)
        ours = sinc_resample(wave, orig, new)
        # Equal to the last bits on the CPU that made the reference (AVX2); float32 sums in other orders (AVX-512)
        # move them by a few units in the last place, as they move torchaudio's own: far below 16-bit audio's step.
        np.testing.assert_allclose(ours, np.array(expected, dtype=np.float32), rtol=0, atol=1e-6, err_msg=pair)


def test_the_sinc_resampler_is_as_long_as_torchaudios():
    """torchaudio rounds new * length / orig to float32 before its ceiling: 3 min 0.0000454 s at 44.1 kHz gives
    4,320,001 samples at 24 kHz there, where the exact ceiling is 4,320,002."""
    from music2emo_hf.audio import sinc_resample

    assert len(sinc_resample(np.zeros(7_938_002, np.float32), 44100, 24000)) == 4_320_001
    assert len(sinc_resample(np.zeros(44_101, np.float32), 44100, 24000)) == 24_001  # an exact ceiling stays one


def test_the_sinc_resampler_feeds_the_chunks_of_a_file(write_wav):
    from music2emo_hf.audio import sinc_resample
    from music2emo_hf.feature_extraction_music2emo import Music2EmoFeatureExtractor

    audio = tone(2.5, rate=44100)
    path = write_wav("x.wav", audio, rate=44100, subtype="FLOAT")
    chunks = list(Music2EmoFeatureExtractor(chunk_seconds=1.0, resampler="sinc").iter_chunks(str(path)))
    np.testing.assert_array_equal(np.concatenate(chunks), sinc_resample(audio, 44100, 24000))
    assert [len(c) for c in chunks] == [24000, 24000, 12000]
    with pytest.raises(ValueError, match="resampler must be one of"):
        Music2EmoFeatureExtractor(resampler="linear")


def test_a_file_left_part_read_is_closed_with_its_reader_thread(write_wav):
    import threading

    path = write_wav("long.wav", tone(20.0, rate=44100, channels=2), 44100)
    stream = open_audio(str(path))
    blocks = stream.blocks(24000, 24000)
    assert len(next(blocks)) == 24000  # read in a thread ahead of the resampler
    blocks.close()
    assert stream._file.closed
    assert not [thread for thread in threading.enumerate() if thread.name == "music2emo-read"]


def test_a_flac_damaged_part_way_is_analysed_up_to_the_damage_and_one_damaged_from_its_start_is_refused(tmp_path):
    """From a review: one flipped byte in the middle of a FLAC refused all of it ("flac decoder lost sync"). Either
    way the reader thread ends with the file."""
    import threading

    path = tmp_path / "damaged.flac"
    sf.write(path, (np.random.default_rng(0).standard_normal((44100 * 20, 2)) * 0.1).astype(np.float32), 44100)
    whole = path.read_bytes()
    intact = load_audio(str(path), 24000)
    middle = bytearray(whole)
    middle[len(whole) // 2] ^= 0xFF
    path.write_bytes(bytes(middle))
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            "damaged.flac: decoding stopped at 9.9 s of the 20.0 s its header announces (the file is damaged or cut "
            "short there); what precedes is analysed. Download or export it again.")):
        audio = load_audio(str(path), 24000)
    np.testing.assert_array_equal(audio[:-2400], intact[: len(audio) - 2400])  # (the resampler's last 0.1 s: its end)
    assert not [thread for thread in threading.enumerate() if thread.name == "music2emo-read"]
    first_frame = whole.index(b"\xff\xf8")  # FLAC's frame sync code (fixed block size), after the metadata blocks
    start = bytearray(whole)
    start[first_frame : first_frame + 20000] = bytes(20000)
    path.write_bytes(bytes(start))
    with pytest.raises(AudioDecodeError, match=re.escape(
            "damaged.flac: decoding failed at its start (Error : flac decoder lost sync.); the file is damaged: "
            "download or export it again.")):
        load_audio(str(path), 24000)
    assert not [thread for thread in threading.enumerate() if thread.name == "music2emo-read"]


def test_a_wav_holding_more_than_its_header_announces_says_so(tmp_path):
    """A recorder that rewrites its header as it goes, stopped before the last rewrite, leaves a data size of 10 s
    before 20 s of audio: libsndfile reads the 10 s, and the other half passed unsaid (from a review). A chunk after
    the data (LIST, as taggers write it; cut short; after an odd data size whose pad byte was left out) or zeros are
    no such audio."""
    whole = io.BytesIO()
    sf.write(whole, tone(20.0), 24000, format="WAV", subtype="PCM_16")
    data = bytearray(whole.getvalue())
    at = data.index(b"data")
    data[at + 4 : at + 8] = (10 * 24000 * 2).to_bytes(4, "little")
    data[4:8] = (at + 8 + 10 * 24000 * 2 - 8).to_bytes(4, "little")
    stale = tmp_path / "stale.wav"
    stale.write_bytes(bytes(data))
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            "stale.wav: its header announces 10.0 s of audio, and about 10.0 s more follow it in the file (a header "
            "last written before the recording ended); the 10.0 s announced is analysed. Repair the header to "
            "analyse it all (e.g. `sox --ignore-length IN.wav OUT.wav`).")):
        assert len(load_audio(str(stale), 24000)) == 10 * 24000
    info = b"INFOINAM" + (24_000).to_bytes(4, "little") + bytes(24_000)  # a title chunk longer than 0.1 s of audio
    odd = io.BytesIO()
    sf.write(odd, tone(2.0)[:-1], 24000, format="WAV", subtype="PCM_U8")  # an odd data size: a pad byte due
    after = {"tagged": whole.getvalue() + b"LIST" + len(info).to_bytes(4, "little") + info,
             "tag-cut": whole.getvalue() + (b"LIST" + len(info).to_bytes(4, "little") + info)[:10_000],
             "zeros": whole.getvalue() + bytes(24_000),  # a writer's padding
             "no-pad": odd.getvalue() + b"id3 " + (10_000).to_bytes(4, "little") + bytes(10_000)}  # pad left out
    for name, data in after.items():
        (tmp_path / f"{name}.wav").write_bytes(data)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert len(load_audio(str(tmp_path / f"{name}.wav"), 24000)) in (20 * 24000, 2 * 24000 - 1), name


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_file_cut_short_is_named_as_such(tmp_path, subtype):
    """An Ogg header states no length, so a download that stopped was analysed in part without a word (from a
    review): a whole stream ends with a page marked end-of-stream, a cut one does not. A chained file (two streams
    one after the other, as `cat` makes it) is whole."""
    cut = tmp_path / "cut.ogg"
    whole = _written_and_cut(cut, tone(6.0, rate=48000), 48000, format="OGG", subtype=subtype)
    with pytest.warns(AudioCutShortWarning, match=re.escape(
            f"{cut}: cut short: the Ogg stream ends before its last page (not downloaded or copied whole); what it "
            "holds is analysed.")):
        assert 0 < len(load_audio(str(cut), 24000)) < 6 * 24000
    assert header_facts(cut)[1] == "the Ogg stream ends before its last page"
    chained = tmp_path / "chained.ogg"
    chained.write_bytes(whole * 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_audio(whole, 24000)) == 6 * 24000
        load_audio(str(chained), 24000)
    assert header_facts(chained)[1] is None


def test_a_wav_whose_chunk_lacks_its_pad_byte_is_not_called_cut_short(tmp_path):
    """A whole WAV with an odd-sized chunk before its data and no pad byte after it (a writer's fault; bytes laid out
    here as such a writer leaves them) is refused by libsndfile: it was called "cut short ... download it again"
    (from a review), which would not help."""
    whole = io.BytesIO()
    sf.write(whole, tone(2.0), 24000, format="WAV", subtype="PCM_16")
    data = whole.getvalue()
    at = data.index(b"data")
    faulty = data[:at] + b"LIST" + (9).to_bytes(4, "little") + b"INFOabcde" + data[at:]
    (tmp_path / "faulty.wav").write_bytes(faulty[:4] + (len(faulty) - 8).to_bytes(4, "little") + faulty[8:])
    with pytest.raises(AudioDecodeError, match=re.escape(
            "faulty.wav: its audio data is there, but an odd-sized chunk before it lacks the pad byte WAV requires")):
        load_audio(str(tmp_path / "faulty.wav"), 24000)


@pytest.mark.parametrize("subtype", ["PCM_16", "ALAC_16"])
def test_a_caf_cut_short_is_called_incomplete_not_other_than_audio(tmp_path, subtype):
    """libsndfile refuses to open a CAF whose audio data ends before its header says: it was called "not audio"
    (from a review)."""
    cut = tmp_path / "cut.caf"
    whole = _written_and_cut(cut, tone(4.0, rate=48000), 48000, format="CAF", subtype=subtype)
    with pytest.raises(AudioDecodeError, match=re.escape(
            f"cut.caf: cut short: the CAF file ends before the audio data its header announces ({cut.stat().st_size:,} "
            "of ") + r"[\d,]+ bytes\); it was not downloaded or copied whole\."):
        load_audio(str(cut), 24000)
    assert len(load_audio(whole, 24000)) == 4 * 24000
