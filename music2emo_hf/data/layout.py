"""The on-disk layout of a prepared dataset folder, shared by `music2emo prepare-data` and the feature cache.

    OUT/README.md                               dataset card; its YAML `configs:` name one config per corpus + `aligned`
    OUT/data/<corpus>/<split>-00000-of-0000N.parquet
    OUT/label_clusters.json                     the label alignment (cluster table, parameters, centres)
    OUT/reports/<corpus>.json                   what prepare-data found: rows per split, missing/unreadable audio...
    OUT/sources.json                            local only: corpus -> absolute folder of its download (not published)
    OUT/features/<name>/                        the feature cache of one model (training/extract_features.py)

The `audio` column holds the file's path relative to its corpus's download folder (POSIX), so a published dataset
names files without leaking local paths and without redistributing the audio; `AudioSources` joins it back.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

DATA_DIR = "data"
SOURCES_FILE = "sources.json"
CLUSTERS_FILE = "label_clusters.json"
REPORTS_DIR = "reports"
FEATURES_DIR = "features"
SPLITS = ("train", "validation", "test")
# Never published: local paths and caches.
LOCAL_ONLY = (SOURCES_FILE, ".cache/*", f"{FEATURES_DIR}/*")


def read_sources(dataset_dir: str | os.PathLike) -> dict[str, str]:
    path = Path(dataset_dir) / SOURCES_FILE
    if not path.is_file():
        return {}
    return json.loads(path.read_text(encoding="utf-8"))


def split_rows(dataset_dir: str | os.PathLike, corpus: str, split: str,
               columns: list[str] | None = None) -> list[dict]:
    """The rows of `split` of `corpus` in a prepared folder (only `columns`, where given), in shard order; none where
    the folder does not hold that split."""
    import pyarrow.parquet as pq

    shards = sorted((Path(dataset_dir) / DATA_DIR / corpus).glob(f"{split}-*.parquet"))
    return [row for shard in shards for row in pq.read_table(shard, columns=columns).to_pylist()]


class AudioSources:
    """A prepared folder's record of where each corpus's download lies (sources.json), read once: its rows name their
    `audio` relative to it."""

    def __init__(self, dataset_dir: str | os.PathLike):
        self.dataset_dir = dataset_dir
        self.folders = read_sources(dataset_dir)

    def __contains__(self, corpus: str) -> bool:
        return corpus in self.folders

    def resolve(self, corpus: str, audio: str | None) -> str | None:
        """Absolute path of a row's `audio` (None stays None)."""
        if audio is None:
            return None
        if corpus not in self.folders:
            raise FileNotFoundError(
                f"{self.dataset_dir}: no download folder recorded for corpus {corpus!r} in {SOURCES_FILE}; run "
                f"`music2emo prepare-data --corpus {corpus} --source DIR --out {self.dataset_dir}` on this machine."
            )
        return str(Path(self.folders[corpus]) / audio)


__all__ = [
    "AudioSources",
    "CLUSTERS_FILE",
    "DATA_DIR",
    "FEATURES_DIR",
    "LOCAL_ONLY",
    "REPORTS_DIR",
    "SOURCES_FILE",
    "SPLITS",
    "read_sources",
    "split_rows",
]
