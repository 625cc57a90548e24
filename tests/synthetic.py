"""Synthetic corpora whose labels are functions of the audio, written in the official download layouts of
MTG-Jamendo (tags) and DEAM (valence/arousal), so a test runs the whole chain: prepare-data, the feature cache,
training, evaluation.

Each clip is a I-IV-V-I progression of triads in a random key, re-struck on every beat with a decaying envelope, at
a gain over a constant noise floor:
- mode (major/minor) -> valence: 7 or 3 on DEAM's 1-9 scale (± a little jitter); the harmony branch sees the mode;
- tempo and loudness -> arousal: 1 + 8 * (half the tempo's place in 60-180 BPM + half the gain's in -30..0 dB).
  Loudness is heard against the noise floor: the backbone's group norm removes a global gain;
- timbre (the oscillator's waveform, equal RMS) -> one MTG-Jamendo tag.

For zero-shot labels the semantics are planted in the words instead (`SEMANTIC_LABELS`): major clips are "happy" and
minor ones "sad", fast ones "energetic" and slow ones "calm", in each tag corpus's own vocabulary (MTG-Jamendo,
CAL500's UCSD layout, Emotify's data.csv), so held-out synonyms ("jubilant", "sleepy") have a right answer.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

RATE = 24000
SECONDS = 5.0
TIMBRE_TAGS = {"sine": "soft", "square": "retro", "sawtooth": "heavy", "pulse": "space"}
NOISE_FLOOR_DB = -45.0


@dataclass(frozen=True)
class Traits:
    key: int
    minor: bool
    bpm: float
    gain_db: float
    timbre: str

    @classmethod
    def draw(cls, rng: np.random.Generator) -> Traits:
        return cls(
            key=int(rng.integers(12)),
            minor=bool(rng.integers(2)),
            bpm=float(rng.uniform(60, 180)),
            gain_db=float(rng.uniform(-30, 0)),
            timbre=str(rng.choice(list(TIMBRE_TAGS))),
        )

    @property
    def valence(self) -> float:
        return 3.0 if self.minor else 7.0

    @property
    def arousal(self) -> float:
        return 1 + 8 * (0.5 * (self.bpm - 60) / 120 + 0.5 * (self.gain_db + 30) / 30)

    @property
    def tag(self) -> str:
        return TIMBRE_TAGS[self.timbre]


def _oscillator(timbre: str, phase: np.ndarray) -> np.ndarray:
    """One period-1 waveform, scaled to the sine's RMS so timbre does not change loudness."""
    p = phase % 1.0
    if timbre == "sine":
        return np.sin(2 * np.pi * p)
    if timbre == "square":
        return np.sign(np.sin(2 * np.pi * p)) * np.sqrt(0.5)
    if timbre == "sawtooth":
        return (2 * p - 1) * np.sqrt(1.5)
    pulse = np.where(p < 0.1, 1.0, -1 / 9)  # 10 % duty, zero mean
    return pulse / np.sqrt(0.1 + 0.9 / 81) * np.sqrt(0.5)


def synthesize(traits: Traits, rng: np.random.Generator, seconds: float = SECONDS) -> np.ndarray:
    n = int(seconds * RATE)
    t = np.arange(n) / RATE
    third = 3 if traits.minor else 4
    beat = 60.0 / traits.bpm
    audio = np.zeros(n)
    bar = n // 4
    for index, degree in enumerate((0, 5, 7, 0)):
        root = 48 + traits.key + degree
        part = slice(index * bar, (index + 1) * bar)
        envelope = np.exp(-6.0 * ((t[part] - t[part][0]) % beat))
        tone = sum(_oscillator(traits.timbre, 440 * 2 ** ((m - 69) / 12) * t[part]) for m in (root, root + third, root + 7))
        audio[part] = tone / 3 * envelope
    audio *= 10 ** (traits.gain_db / 20)
    audio += 10 ** (NOISE_FLOOR_DB / 20) * rng.standard_normal(n)
    return (0.5 * audio).astype(np.float32)


@contextlib.contextmanager
def _mp3_writer() -> Iterator[Callable[[Path, np.ndarray], None]]:
    """Writes MP3 files on all cores (LAME releases the GIL; encoding is most of the time of building a corpus) and
    waits for them all at the end of the block."""
    with ThreadPoolExecutor(os.cpu_count() or 1) as pool:
        futures = []
        yield lambda path, audio: futures.append(pool.submit(sf.write, path, audio, RATE, format="MP3"))
        for future in futures:
            future.result()


def _tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = ["TRACK_ID", "ARTIST_ID", "ALBUM_ID", "PATH", "DURATION", "TAGS"]
    path.write_text("\n".join("\t".join(row) for row in [header, *rows]) + "\n", encoding="utf-8")


def write_mtg_jamendo(
    root: Path,
    counts: dict[str, int],
    seed: int = 0,
    seconds: float = SECONDS,
    draw: Callable[[np.random.Generator], Traits] = Traits.draw,
    tags: Callable[[Traits], list[str]] = lambda traits: [traits.tag],
) -> dict[str, Traits]:
    """An MTG-Jamendo moodtheme download (data/autotagging_moodtheme.tsv, data/splits/split-0, audio/NN/ID.mp3)
    whose tags are `tags(traits)` (default: the clip's timbre's); `counts` tracks per split. Returns track id ->
    traits."""
    rng = np.random.default_rng(seed)
    rows: dict[str, list[list[str]]] = {split: [] for split in counts}
    traits_by_id = {}
    number = 0
    with _mp3_writer() as write_mp3:
        for split, count in counts.items():
            for _ in range(count):
                number += 1
                traits = draw(rng)
                relative = f"{number % 100:02d}/{number}.mp3"
                (root / "audio" / relative).parent.mkdir(parents=True, exist_ok=True)
                write_mp3(root / "audio" / relative, synthesize(traits, rng, seconds))
                rows[split].append([f"track_{number:07d}", "artist_0000001", "album_0000001", relative, f"{seconds}",
                                    *(f"mood/theme---{tag}" for tag in tags(traits))])
                traits_by_id[str(number)] = traits
    _tsv(root / "data" / "autotagging_moodtheme.tsv", [row for split_rows in rows.values() for row in split_rows])
    for split, split_rows in rows.items():
        _tsv(root / "data" / "splits" / "split-0" / f"autotagging_moodtheme-{split}.tsv", split_rows)
    return traits_by_id


def write_deam(root: Path, count: int, seed: int = 1) -> dict[str, Traits]:
    """A DEAM download (the two static annotation files, MEMD_audio/ID.mp3) whose valence is the clip's mode and
    whose arousal is its tempo and loudness. Returns track id -> traits."""
    rng = np.random.default_rng(seed)
    (root / "MEMD_audio").mkdir(parents=True)
    header = "song_id, valence_mean, valence_std, arousal_mean, arousal_std"
    lines, traits_by_id = [header], {}
    with _mp3_writer() as write_mp3:
        for song in range(2, 2 + count):
            traits = Traits.draw(rng)
            write_mp3(root / "MEMD_audio" / f"{song}.mp3", synthesize(traits, rng))
            valence = traits.valence + rng.normal(0, 0.2)
            lines.append(f"{song},{valence:.4f},1.0,{traits.arousal:.4f},1.0")
            traits_by_id[str(song)] = traits
    (root / "static_annotations_averaged_songs_1_2000.csv").write_bytes(("\r\n".join(lines) + "\r\n").encode())
    (root / "static_annotations_averaged_songs_2000_2058.csv").write_bytes((header + "\r\n").encode())
    return traits_by_id


# A backbone small enough for CI yet wide enough in its convolutions for random features to carry timbre, tempo and
# loudness (hub_configs/tiny-random's 16 channels carry too little).
LEARNING_BACKBONE = {
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "intermediate_size": 64,
    "conv_dim": [64] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "num_conv_pos_embeddings": 16,
    "num_conv_pos_embedding_groups": 2,
    "do_stable_layer_norm": False,
}


SEMANTIC_LABELS = {
    "mtg_jamendo": {"major": "happy", "minor": "sad", "fast": "energetic", "slow": "calm"},
    "cal500": {"major": "Happy", "minor": "Sad", "fast": "Exciting_/_Thrilling", "slow": "Calming_/_Soothing"},
    "emotify": {"major": "joyful_activation", "minor": "sadness", "fast": "power", "slow": "calmness"},
}
# Words with the planted meanings that no training text holds (no corpus's vocabulary, no label expansion; the
# zero-shot test checks), and words unrelated to how music feels.
SYNONYMS = {"major": "jubilant", "minor": "grieving", "fast": "frantic", "slow": "sleepy"}
UNRELATED = ("rectangular", "bureaucratic", "volcanic", "spreadsheet")


def semantic_traits(rng: np.random.Generator) -> Traits:
    """Clearly slow (60-85 BPM) or clearly fast (155-180 BPM), at a comfortable loudness, any key and timbre."""
    fast = bool(rng.integers(2))
    return Traits(key=int(rng.integers(12)), minor=bool(rng.integers(2)),
                  bpm=float(rng.uniform(155, 180) if fast else rng.uniform(60, 85)),
                  gain_db=float(rng.uniform(-12, 0)), timbre=str(rng.choice(list(TIMBRE_TAGS))))


def meanings(traits: Traits) -> tuple[str, str]:
    return ("minor" if traits.minor else "major", "fast" if traits.bpm > 120 else "slow")


def semantic_labels(corpus: str) -> Callable[[Traits], list[str]]:
    return lambda traits: [SEMANTIC_LABELS[corpus][meaning] for meaning in meanings(traits)]


def write_semantic_cal500(root: Path, count: int, seed: int = 2, seconds: float = SECONDS) -> dict[str, Traits]:
    """CAL500's UCSD layout (songNames.txt, vocab.txt, annotations/<song>_NN.txt, mp3/<song>.mp3): two annotators
    rate the planted emotions 5 and the others 1."""
    from music2emo_hf.labels import CAL500_EMOTIONS

    rng = np.random.default_rng(seed)
    (root / "annotations").mkdir(parents=True)
    (root / "mp3").mkdir()
    songs, traits_by_id = [], {}
    with _mp3_writer() as write_mp3:
        for number in range(count):
            song = f"artist_{number:03d}-song_{number:03d}"
            traits = semantic_traits(rng)
            write_mp3(root / "mp3" / f"{song}.mp3", synthesize(traits, rng, seconds))
            planted = set(semantic_labels("cal500")(traits))
            ratings = "".join(f'Emotion-{name}="{5 if name in planted else 1}"\n' for name in CAL500_EMOTIONS)
            for annotator in (1, 2):
                (root / "annotations" / f"{song}_{annotator:02d}.txt").write_text(ratings)
            songs.append(song)
            traits_by_id[song] = traits
    (root / "songNames.txt").write_text("\n".join(songs) + "\n")
    (root / "vocab.txt").write_text("\n".join(f"Emotion-{name}" for name in CAL500_EMOTIONS) + "\n")
    return traits_by_id


def write_semantic_emotify(root: Path, count: int, seed: int = 3, seconds: float = SECONDS) -> dict[str, Traits]:
    """Emotify's layout (data.csv, one row per listener vote; <genre>/<n>.mp3): three listeners tick the planted
    labels of each classical track."""
    from music2emo_hf.labels import EMOTIFY_GEMS

    rng = np.random.default_rng(seed)
    (root / "classical").mkdir(parents=True)
    header = ("track id, genre, " + ", ".join(EMOTIFY_GEMS)
              + ", mood, liked, disliked, age, gender, mother tongue")
    rows, traits_by_id = [header], {}
    with _mp3_writer() as write_mp3:
        for track in range(1, count + 1):
            traits = semantic_traits(rng)
            write_mp3(root / "classical" / f"{track}.mp3", synthesize(traits, rng, seconds))
            planted = set(semantic_labels("emotify")(traits))
            votes = ",".join("1" if name in planted else "0" for name in EMOTIFY_GEMS)
            rows += [f"{track},classical,{votes},3,1,0,30,1,English"] * 3
            traits_by_id[f"classical/{track}"] = traits
    (root / "data.csv").write_text("\n".join(rows) + "\n")
    return traits_by_id
