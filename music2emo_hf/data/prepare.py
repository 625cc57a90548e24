"""`music2emo prepare-data`: one corpus download -> Parquet shards, the label alignment, a report and a dataset card,
in the folder layout of `layout.py`, loadable with `datasets.load_dataset(OUT, "<corpus>")` or `(OUT, "aligned")`.

Idempotent and resumable: probing the audio files is the slow part (one header read per file), so each result is
appended to a cache as it is known and reused on the next run while the file's size and mtime are unchanged. The
Parquet shards of a corpus are written to a staging folder and swapped in whole, so an interrupted run never leaves
a half-written corpus behind, and a rerun writes byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from ..atomic import file_sha256, write_atomic
from ..audio import AUDIO_EXTENSIONS, header_facts, passed_over, why_unreadable
from ..hub import push_folder
from ..label_alignment import DEFAULT_QUANTILE, TAG_VOCABULARIES, LabelClusters, align_labels
from . import READERS
from .layout import CLUSTERS_FILE, DATA_DIR, LOCAL_ONLY, REPORTS_DIR, SOURCES_FILE, SPLITS, read_sources, split_rows
from .schema import Track
from .splits import DEFAULT_FRACTIONS, assign_splits, split_off

# Corpora whose download carries its own split; the others get seeded stratified splits (or Music2Emo's id lists).
OFFICIAL_SPLITS = {"mtg_jamendo": "split-0..4 of the download", "emomusic": "MediaEval 2013 development/evaluation"}
ID_LIST_CORPORA = ("deam", "pmemo", "emomusic")
LABEL_RULES = {"cal500": ("rule", "threshold"), "emotify": ("rule", "min_share")}
SHARD_ROWS = 5000
CACHE_DIR = ".cache"
# Corpora holding the same recordings under the same track ids: DEAM's songs 1-1000 are EmoMusic's (docs/datasets.md,
# "Known problems of the corpora"). Trained on both, a model has seen some of the other's test songs.
SHARED_SONGS = (("deam", "emomusic"),)

ROW_SCHEMA = pa.schema(
    [
        ("track_id", pa.string()),
        ("corpus", pa.string()),
        ("split", pa.string()),
        ("audio", pa.string()),
        ("duration", pa.float64()),
        ("moods", pa.list_(pa.string())),
        ("mood_targets", pa.list_(pa.float64())),
        ("label_clusters", pa.list_(pa.int32())),
        ("valence", pa.float64()),
        ("arousal", pa.float64()),
        ("valence_normalized", pa.float64()),
        ("arousal_normalized", pa.float64()),
        ("valence_series", pa.list_(pa.float64())),
        ("arousal_series", pa.list_(pa.float64())),
        ("series_start", pa.float64()),
        ("series_hop", pa.float64()),
        ("extra", pa.string()),
    ]
)


@dataclass
class PrepareOptions:
    """How one corpus is turned into rows. `splits_dir`: Music2Emo's id lists (DEAM/PMEmo/EmoMusic); `mtg_split`:
    which official MTG split; `rule`, `threshold`: CAL500/Emotify label rules; `fractions`, `seed`: seeded splits and
    the validation part carved out of EmoMusic's official development set; `quantile`: label alignment."""

    splits_dir: str | None = None
    mtg_split: int = 0
    rule: str | None = None
    threshold: float | None = None
    fractions: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_FRACTIONS))
    seed: int = 0
    quantile: float = DEFAULT_QUANTILE


@dataclass
class Report:
    corpus: str
    rows_per_split: dict[str, int]
    not_in_any_split: list[str]
    missing_audio: list[str]
    unreadable_audio: list[dict[str, str]]
    cut_short_audio: list[dict[str, str]]  # read as far as they go
    audio_without_labels: list[str]
    duplicate_ids: list[str]
    missing_values: dict[str, list[str]]
    splits: str
    options: dict[str, Any]
    alignment: str | None = None  # what merged, when this run made the folder's label alignment
    shared_songs: list[str] = field(default_factory=list)  # `shared_test_songs` of the folder, as this run left it

    def lines(self) -> list[str]:
        total = sum(self.rows_per_split.values())
        out = [f"{self.corpus}: {total} rows written ({', '.join(f'{k} {v}' for k, v in self.rows_per_split.items())})"]
        out.append(f"  splits: {self.splits}")

        def listing(title: str, items: Sequence[str]) -> None:
            if items:
                shown = ", ".join(items[:20]) + (f", ... ({len(items) - 20} more)" if len(items) > 20 else "")
                out.append(f"  {title}: {len(items)}: {shown}")

        listing("tracks in no split (not written)", self.not_in_any_split)
        listing("labelled tracks without their audio file (rows kept, audio null)", self.missing_audio)
        listing(
            "unreadable audio files (rows kept, audio null)",
            [f"{u['path']} ({u['error']})" for u in self.unreadable_audio],
        )
        listing(
            "audio files cut short (rows kept; the audio is read as far as it goes)",
            [f"{u['path']} ({u['error']})" for u in self.cut_short_audio],
        )
        listing("audio files without labels (not written; not an error)", self.audio_without_labels)
        named = {Path(path).name.split(".")[0]: path for path in self.audio_without_labels}
        if elsewhere := [(track, named[track]) for track in self.missing_audio if track in named]:
            out.append(f"  hint: {len(elsewhere)} of the tracks without their audio file have a file of their name "
                       f"elsewhere in the download (track {elsewhere[0][0]}: {elsewhere[0][1]}): not where the "
                       "download's own layout puts it (docs/datasets.md); move the audio back there, or pass the "
                       "unpacked download itself as --source")
        listing("duplicate track ids", self.duplicate_ids)
        for name, ids in self.missing_values.items():
            listing(f"rows without {name}", ids)
        if self.alignment:
            out.append(f"label alignment (new, saved in {CLUSTERS_FILE}): {self.alignment}")
        out += [f"warning: {line}" for line in self.shared_songs]
        return out


def _reader_options(corpus: str, options: PrepareOptions) -> dict[str, Any]:
    kwargs: dict[str, Any] = {}
    if options.splits_dir is not None:
        if corpus not in ID_LIST_CORPORA:
            raise ValueError(f"--splits-dir (Music2Emo's id lists) exists for {', '.join(ID_LIST_CORPORA)}, not {corpus}")
        kwargs["splits_dir"] = options.splits_dir
    if corpus == "mtg_jamendo":
        kwargs["split"] = options.mtg_split
    elif options.mtg_split != 0:
        raise ValueError(f"--mtg-split applies to mtg_jamendo only, not {corpus}")
    if options.rule is not None or options.threshold is not None:
        if corpus not in LABEL_RULES:
            raise ValueError(f"--label-rule/--threshold apply to {' and '.join(LABEL_RULES)} only, not {corpus}")
        rule_arg, threshold_arg = LABEL_RULES[corpus]
        if options.rule is not None:
            kwargs[rule_arg] = options.rule
        kwargs[threshold_arg] = options.threshold
    return kwargs


def _split(corpus: str, tracks: list[Track], options: PrepareOptions) -> str:
    """Assign splits in place; returns how, for the report and the card."""
    if unknown := sorted(set(options.fractions) - set(SPLITS)):  # EmoMusic's reading took a misspelt one for none
        raise ValueError(f"--fractions: split names must be {', '.join(SPLITS)}; got {', '.join(unknown)}")
    chosen = dict(options.fractions) != dict(DEFAULT_FRACTIONS)  # refused below wherever it would be ignored
    if options.splits_dir is not None:
        if chosen:
            raise ValueError("--fractions does not apply with --splits-dir: the id lists decide every split")
        return f"Music2Emo's published id lists ({Path(options.splits_dir).name}/)"  # no local path in a card
    if corpus == "emomusic":
        validation = options.fractions.get("validation", 0.0)
        train = options.fractions.get("train", 1 - validation)
        if chosen and ("test" in options.fractions or abs(train + validation - 1) > 1e-6) or not 0 <= validation < 1:
            raise ValueError(
                "--fractions: emomusic keeps its official MediaEval 2013 test split; give only the share of its "
                f"development set held out for validation, below 1 (e.g. --fractions validation=0.2; train, if given, "
                f"is the rest), not "
                f"{','.join(f'{k}={v:g}' for k, v in options.fractions.items())}"
            )
        if validation:
            split_off(tracks, "train", {"train": 1 - validation, "validation": validation}, options.seed)
        return f"official MediaEval 2013 split; validation = {validation:.0%} of development (seed {options.seed})"
    if corpus == "mtg_jamendo":
        if chosen:
            raise ValueError("--fractions does not apply to mtg_jamendo: its official splits decide (--mtg-split 0-4)")
        return f"official split-{options.mtg_split}"
    assign_splits(tracks, options.fractions, options.seed)
    shares = ", ".join(f"{k} {v:.0%}" for k, v in options.fractions.items())
    return f"seeded track-level label-stratified ({shares}, seed {options.seed})"


class _ProbeCache:
    """Audio header probes, appended one JSON line per file as they are made, reused while size and mtime hold."""

    def __init__(self, path: Path):
        self.path = path
        self.known: dict[str, dict[str, Any]] = {}
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:  # the last line of a killed run
                    continue
                self.known[entry["path"]] = entry
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = open(path, "a", encoding="utf-8")

    def probe(self, audio: str) -> dict[str, Any]:
        stat = os.stat(audio)
        entry = self.known.get(audio)
        if entry and (entry["size"], entry["mtime_ns"], entry.get("probe")) == (stat.st_size, stat.st_mtime_ns, PROBE):
            return entry
        entry = {"path": audio, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "probe": PROBE, **probe_audio(audio)}
        self.handle.write(json.dumps(entry) + "\n")
        self.handle.flush()
        self.known[audio] = entry
        return entry

    def close(self) -> None:
        self.handle.close()


PROBE = 4  # what `probe_audio` finds; raised when it finds more (2: files cut short; 3: AU and Ogg files cut short;
# 4: an MP3 whose Xing header counts no bytes, damaged mid-file, is no longer called cut short; a FLAC streamed without
# its length, cut short or damaged, is), so earlier entries are redone


def probe_audio(path: str) -> dict[str, Any]:
    """{"duration": seconds} when the file's header decodes to some audio (with "cut_short": how, when the file ends
    before its header says), else {"error": why}."""
    try:
        duration, why = header_facts(path)
    except Exception as error:  # soundfile raises LibsndfileError/RuntimeError/TypeError by format
        detail = getattr(error, "error_string", None) or str(error) or type(error).__name__
        return {"error": why_unreadable(path) or f"not decodable audio: {detail}"}  # the package's words first
    if duration is None:  # an unfinished WAV header among them, which the package's words say
        return {"error": why_unreadable(path) or "no audio samples"}
    return {"duration": duration, **({"cut_short": why} if why else {})}


def _audio_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_EXTENSIONS and p.is_file()
                  and not any(passed_over(part) for part in p.relative_to(root).parts))


def _orphans(root: Path, used: set[str]) -> list[str]:
    """Audio files of the download that no labelled track uses (MTG's `.low.mp3` twin of a used file is not one)."""
    orphans = []
    for path in _audio_files(root):
        absolute = str(path.absolute())
        if absolute in used:
            continue
        full_twin = str(path.with_name(path.name.replace(".low.", ".")).absolute())
        if ".low." in path.name and full_twin in used:
            continue
        orphans.append(path.relative_to(root).as_posix())
    return orphans


def load_or_align(out: Path, quantile: float) -> tuple[LabelClusters, bool]:
    """The dataset folder's label alignment, and whether this call made it: made once, then reused so every corpus
    in the folder shares one table."""
    path = out / CLUSTERS_FILE
    if path.is_file():
        clusters = LabelClusters.from_dict(json.loads(path.read_text(encoding="utf-8")))
        if clusters.parameters.get("quantile") != quantile:
            raise ValueError(
                f"{out} holds a label alignment made with quantile {clusters.parameters.get('quantile')}; use that "
                f"quantile, or a new --out folder for quantile {quantile} (corpora in one folder share one alignment)"
            )
        return clusters, False
    clusters = align_labels(TAG_VOCABULARIES, quantile=quantile)
    write_atomic(path, json.dumps(clusters.to_dict(), indent=1) + "\n")
    return clusters, True


def _row(track: Track, root: Path, clusters: LabelClusters) -> dict[str, Any]:
    row = track.to_dict()
    row["audio"] = Path(track.audio).relative_to(root).as_posix() if track.audio else None
    row["label_clusters"] = (
        sorted({clusters.cluster_of(track.corpus, mood) for mood in track.moods})
        if track.corpus in TAG_VOCABULARIES
        else []
    )
    row["extra"] = json.dumps(track.extra, sort_keys=True)
    return row


def _write_shards(rows_by_split: Mapping[str, list[dict[str, Any]]], folder: Path) -> None:
    folder.mkdir(parents=True)
    for split, rows in rows_by_split.items():
        count = max(1, math.ceil(len(rows) / SHARD_ROWS))
        for index in range(count):
            table = pa.Table.from_pylist(rows[index * SHARD_ROWS : (index + 1) * SHARD_ROWS], schema=ROW_SCHEMA)
            pq.write_table(table, folder / f"{split}-{index:05d}-of-{count:05d}.parquet")


def _missing_values(corpus: str, tracks: Sequence[Track]) -> dict[str, list[str]]:
    """Rows lacking a label their corpus should have (a NaN can never reach a row: the readers refuse them)."""
    if corpus in TAG_VOCABULARIES:
        return {"mood labels": [t.track_id for t in tracks if not t.moods]}
    return {
        "static valence/arousal": [t.track_id for t in tracks if t.valence is None or t.arousal is None],
    }


def prepare_corpus(
    corpus: str,
    source: str | os.PathLike,
    out: str | os.PathLike,
    options: PrepareOptions | None = None,
    progress: Callable[[Sequence[Track]], Any] = lambda tracks: tracks,
) -> Report:
    """Read `corpus` from its download at `source` and write it into the dataset folder `out` (see module doc).
    `progress` wraps the per-track loop (the CLI passes a progress bar)."""
    if corpus not in READERS:
        raise ValueError(f"unknown corpus {corpus!r}; choose one of {', '.join(READERS)}")
    options = options or PrepareOptions()
    root = Path(source).absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"{source}: no such folder (expected the {corpus} download)")
    out = Path(out).absolute()
    _check_out(out)
    tracks = READERS[corpus](root, **_reader_options(corpus, options))
    how = _split(corpus, tracks, options)
    if not any(t.split is not None for t in tracks):  # an empty config would make load_dataset(out, corpus) answer
        raise ValueError(  # with the other corpora's rows
            f"{corpus}: none of its {len(tracks)} tracks is in a split ({how}), so nothing was written; "
            + ("check that --splits-dir holds this corpus's id lists." if options.splits_dir else
               "check the corpus's own split files."))
    if unknown := sorted({t.split for t in tracks if t.split is not None} - set(SPLITS)):  # before any audio is read
        raise ValueError(f"{corpus}: split names must be {', '.join(SPLITS)}; got {', '.join(unknown)}")
    clusters, new_alignment = load_or_align(out, options.quantile)

    cache = _ProbeCache(out / CACHE_DIR / corpus / "audio_probe.jsonl")
    missing, unreadable, cut = [], [], []
    used = {t.audio for t in tracks if t.audio}  # a track in no split has labels: its file is no orphan
    written = [t for t in tracks if t.split is not None]
    try:
        for track in progress(written):  # only rows that are written need their audio probed
            if track.audio is None:
                missing.append(track.track_id)
                continue
            probe = cache.probe(track.audio)
            if "error" in probe:
                unreadable.append({"track_id": track.track_id, "path": track.audio, "error": probe["error"]})
                track.audio = None
                continue
            if "cut_short" in probe:
                cut.append({"track_id": track.track_id, "path": track.audio, "error": probe["cut_short"]})
            if track.duration is None:
                track.duration = probe["duration"]
    finally:
        cache.close()

    rows_by_split = {
        split: [_row(t, root, clusters) for t in written if t.split == split]
        for split in SPLITS
        if any(t.split == split for t in written)
    }
    staging = out / CACHE_DIR / corpus / "staging"
    shutil.rmtree(staging, ignore_errors=True)
    _write_shards(rows_by_split, staging)
    target = out / DATA_DIR / corpus
    shutil.rmtree(target, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(staging, target)

    sources = read_sources(out)
    sources[corpus] = str(root)
    write_atomic(out / SOURCES_FILE, json.dumps(dict(sorted(sources.items())), indent=1) + "\n")

    counts = Counter(t.track_id for t in written)
    report = Report(
        corpus=corpus,
        rows_per_split={split: len(rows) for split, rows in rows_by_split.items()},
        not_in_any_split=[t.track_id for t in tracks if t.split is None],
        missing_audio=missing,
        unreadable_audio=[{**entry, "path": Path(entry["path"]).relative_to(root).as_posix()} for entry in unreadable],
        cut_short_audio=[{**entry, "path": Path(entry["path"]).relative_to(root).as_posix()} for entry in cut],
        audio_without_labels=_orphans(root, used),
        duplicate_ids=sorted(track_id for track_id, n in counts.items() if n > 1),
        missing_values=_missing_values(corpus, written),
        splits=how,
        options={k: v for k, v in vars(options).items() if k != "splits_dir"} | {"splits_dir": bool(options.splits_dir)},
    )
    kept = {k: v for k, v in vars(report).items() if k not in ("alignment", "shared_songs")}  # this run's screen only
    write_atomic(out / REPORTS_DIR / f"{corpus}.json", json.dumps(kept, indent=1, sort_keys=True) + "\n")
    write_card(out)
    # The report file stays the same on every rerun; a new alignment and the songs shared with another corpus (which
    # changes as others are prepared; the card has it) are for this run's screen.
    report.alignment = clusters.describe() if new_alignment else None
    report.shared_songs = shared_test_songs(out)
    return report


def shared_test_songs(out: Path) -> list[str]:
    """For each pair of prepared `SHARED_SONGS` corpora, one line per corpus whose test tracks are training tracks
    of the other: their test scores of a model trained on both are not fair."""
    ids: dict[str, dict[str, set[str]]] = {}
    for corpus in {corpus for pair in SHARED_SONGS for corpus in pair}:
        for split in SPLITS:
            if rows := split_rows(out, corpus, split, ["track_id"]):
                ids.setdefault(corpus, {})[split] = {row["track_id"] for row in rows}
    lines = []
    for pair in SHARED_SONGS:
        if not all(corpus in ids for corpus in pair):
            continue
        shared = set.union(*ids[pair[0]].values()) & set.union(*ids[pair[1]].values())
        for tested, trained in (pair, pair[::-1]):
            test = ids[tested].get("test", set())
            if seen := test & ids[trained].get("train", set()):
                lines.append(
                    f"{len(seen)} of {tested}'s {len(test)} test tracks are {trained} training tracks (the two share "
                    f"{len(shared)} songs under the same ids): a model trained on both has heard them. For a fair "
                    f"{tested} test score train without {trained}, or give {trained} id lists without them "
                    "(--splits-dir); see music2emo-hf's docs/datasets.md."
                )
    return lines


def _check_out(out: Path) -> None:
    """`out` is a new or empty folder, or one prepare-data wrote (another corpus is added to it): anything else is
    refused before it is touched, as its README.md would be replaced by the card and its data/CORPUS by the shards."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out}: is a file; --out names the dataset folder to write (a new or empty one).")
    if out.is_dir() and any(out.iterdir()) and not ((out / SOURCES_FILE).is_file() or (out / CLUSTERS_FILE).is_file()):
        raise FileExistsError(f"{out}: holds files that prepare-data did not write; name a new or empty folder (or "
                              "one prepare-data wrote, to add a corpus to it).")
    existing = next(folder for folder in (out, *out.parents) if folder.exists())
    if not os.access(existing, os.W_OK | os.X_OK):  # refused before the audio is read, not at the first write
        raise PermissionError(f"{out}: cannot write there ({existing} is not writable by this user); name a folder "
                              "you can write with --out.")


def write_card(out: Path) -> None:
    """The dataset card README.md: YAML `configs:` for every corpus present and the `aligned` union of them."""
    corpora = sorted(p.name for p in (out / DATA_DIR).iterdir() if p.is_dir() and p.name in READERS)
    reports = {c: json.loads((out / REPORTS_DIR / f"{c}.json").read_text(encoding="utf-8")) for c in corpora}
    yaml = ["---", "pretty_name: music2emo-hf label-aligned music emotion benchmark", "license: other"]
    yaml += ["task_categories:", "- audio-classification", "tags:", "- music", "- emotion", "- valence-arousal"]
    yaml += ["configs:"]

    def config(name: str, pattern: str, splits: Sequence[str], default: bool = False) -> None:
        yaml.append(f"- config_name: {name}")
        if default:
            yaml.append("  default: true")
        # `datasets` keys its cache of a local folder by the card's configs alone: without this, data written again
        # (another --seed, a corrected annotation) was served from the cache of the old
        shards = sorted(path for split in splits for path in out.glob(pattern.format(split=split)))
        fingerprint = hashlib.sha256("".join(f"{path.relative_to(out).as_posix()} {file_sha256(path)}\n"
                                             for path in shards).encode()).hexdigest()
        yaml.append(f"  description: 'music2emo-hf data {fingerprint[:16]}'")
        yaml.append("  data_files:")
        for split in splits:
            yaml.extend([f"  - split: {split}", f"    path: {pattern.format(split=split)}"])

    present = [s for s in SPLITS if any(s in r["rows_per_split"] for r in reports.values())]
    config("aligned", f"{DATA_DIR}/*/{{split}}-*.parquet", present, default=True)
    for corpus in corpora:
        config(corpus, f"{DATA_DIR}/{corpus}/{{split}}-*.parquet", [s for s in SPLITS if s in reports[corpus]["rows_per_split"]])
    yaml.append("---")

    table = ["| config | train | validation | test | splits |", "|---|---|---|---|---|"]
    for corpus in corpora:
        rows = reports[corpus]["rows_per_split"]
        table.append(f"| `{corpus}` | " + " | ".join(str(rows.get(s, 0)) for s in SPLITS) + f" | {reports[corpus]['splits']} |")
    clusters = LabelClusters.from_dict(json.loads((out / CLUSTERS_FILE).read_text(encoding="utf-8")))
    merged = "\n".join(f"- {', '.join(group)}" for group in clusters.merged())
    overlaps = shared_test_songs(out)
    shared = "\n## Songs shared between corpora\n\n" + "\n".join(f"- {line}" for line in overlaps) + "\n" if overlaps else ""
    body = f"""
# music2emo-hf label-aligned music emotion benchmark

Made by `music2emo prepare-data` (package `music2emo-hf`) from the official downloads of each corpus. One row per
track, the same columns for every corpus, so `load_dataset(REPO_OR_DIR, "aligned")` is their union and
`load_dataset(REPO_OR_DIR, "<corpus>")` one of them.

{chr(10).join(table)}

## Columns

- `track_id`, `corpus`, `split`; `duration` (seconds).
- `audio`: the file's path inside the corpus's own download (null when the download lacks it or it cannot be
  decoded). The audio itself is not included: fetch each corpus from its publisher under its licence.
- `moods`: labels in the corpus's own vocabulary, chosen by its label rule; `mood_targets`: one value per label of
  that vocabulary (multi-hot for MTG-Jamendo; the mean rating for CAL500; the share of listeners for Emotify).
- `label_clusters`: the cross-corpus clusters of the row's moods (see below); empty for valence/arousal corpora.
- `valence`, `arousal`: static means on the corpus's native scale (DEAM and EmoMusic 1-9, PMEmo 0-1, or 1-9 where
  Music2Emo's rescaled PMEmo file was read); `valence_normalized`, `arousal_normalized`: the same mapped to [-1, 1]
  (scale low end -> -1, midpoint -> 0), comparable across corpora.
- `valence_series`, `arousal_series`: dynamic annotations, one value every `series_hop` s from `series_start` s, on
  each corpus's own dynamic scale (DEAM and EmoMusic -1 to 1, PMEmo 0 to 1): not comparable across corpora as they
  are.
- `extra`: corpus-specific fields as a JSON string (artist, genre, annotator statistics...).

## Label alignment

Every label of MTG-Jamendo, CAL500 and Emotify was embedded with all-MiniLM-L6-v2 (template
`{clusters.parameters['template']}`, thesaurus expansions v{clusters.parameters['expansions_version']}) and
clustered with mean shift (quantile {clusters.parameters['quantile']}, bandwidth
{clusters.parameters['bandwidth']:.4f}): {len(clusters.centers)} clusters; `label_clusters.json` holds the table and
the centres. Labels that merged:

{merged}
{shared}
## Licences

The labels keep the licences of their corpora (MTG-Jamendo CC BY-NC-SA 4.0 metadata; DEAM, PMEmo, EmoMusic, CAL500
and Emotify under their publishers' research terms). Check each corpus's terms before use.
"""
    write_atomic(out / "README.md", "\n".join(yaml) + "\n" + body)


def push_dataset(out: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Publish the dataset folder (never its local-only files: `layout.LOCAL_ONLY`); returns the commit URL."""
    return push_folder(out, repo_id, "dataset", list(LOCAL_ONLY), "Upload with music2emo prepare-data", private)


__all__ = ["OFFICIAL_SPLITS", "PrepareOptions", "Report", "prepare_corpus", "probe_audio", "push_dataset", "write_card"]
