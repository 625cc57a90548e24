"""The atomic writers (atomic.py), which the data code, training and the shared model caches all use."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from music2emo_hf import atomic
from music2emo_hf.atomic import replace_folder, umask, write_atomic


def test_concurrent_writes_of_one_file_each_land_whole_and_leave_nothing_behind(tmp_path):
    """Processes sharing a cache write the same small files (a revision's ref, the runtimes' checks) at once: the
    file is always one writer's whole text, no temporary file stays, and it is as readable as a plain write makes it
    (mkstemp's files are private)."""
    target = tmp_path / "cache" / "checks.json"
    texts = [json.dumps({"writer": i, "padding": "x" * 200_000}) for i in range(8)]
    with ThreadPoolExecutor(8) as pool:
        list(pool.map(lambda text: write_atomic(target, text, concurrent=True), texts * 4))
    assert target.read_text(encoding="utf-8") in texts
    assert [path.name for path in target.parent.iterdir()] == ["checks.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask()
    write_atomic(target, b"\x00bytes", concurrent=True)
    assert target.read_bytes() == b"\x00bytes"


def test_a_rerun_overwrites_what_a_killed_write_left(tmp_path):
    """Resumable jobs (features, prepared data, training state) write one file at a time: a run killed mid-write
    leaves NAME.tmp, which the rerun's write of NAME replaces, so no debris stays."""
    target = tmp_path / "2.safetensors"
    target.with_name("2.safetensors.tmp").write_bytes(b"half a file")
    write_atomic(target, b"whole")
    assert [path.name for path in tmp_path.iterdir()] == ["2.safetensors"]
    assert target.read_bytes() == b"whole"


def test_a_model_saved_again_is_never_half_deleted_by_a_kill(tmp_path, monkeypatch):
    """Training saves `best/` again whenever validation improves. It removed the old folder, then renamed the new
    one in: a kill during the removal left `best/` without its weights. Here the removal is killed after one file."""
    def save(version: str):
        new = tmp_path / "best.tmp"
        new.mkdir()
        for name in ("config.json", "model.safetensors"):
            (new / name).write_text(version)
        return new

    replace_folder(save("first"), tmp_path / "best")
    removing = atomic.shutil.rmtree

    def killed_while_removing(path, *args, **kwargs):
        files = sorted(Path(path).glob("*")) if Path(path).is_dir() else []
        if files:
            files[0].unlink()
            raise KeyboardInterrupt
        removing(path, *args, **kwargs)

    monkeypatch.setattr(atomic.shutil, "rmtree", killed_while_removing)
    with pytest.raises(KeyboardInterrupt):
        replace_folder(save("second"), tmp_path / "best")
    monkeypatch.setattr(atomic.shutil, "rmtree", removing)
    best = tmp_path / "best"
    assert {path.name: path.read_text() for path in best.iterdir()} == {"config.json": "second",
                                                                       "model.safetensors": "second"}
    replace_folder(save("third"), best)  # the next save clears what the kill left
    assert sorted(path.name for path in tmp_path.iterdir()) == ["best"]
    assert (best / "model.safetensors").read_text() == "third"
