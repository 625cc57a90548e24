"""Shared test fixtures: the real-data fixtures folder, a tiny random model written by `music2emo init`, and
synthesized audio."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT.parent / "shared" / "fixtures"
EMOMUSIC_AUDIO = FIXTURES / "emomusic" / "audio"
TINY_CONFIG = ROOT / "hub_configs" / "tiny-random"


def pytest_configure(config):
    """Run by pytest-xdist's workers (`-n 2`, as the README runs the suite), each gets its share of the cores, and so
    do the processes its tests start (torch would give each worker every core). The backbones exported for the
    inference runtimes go to a cache of this run (made by the first process to start, shared by the workers and
    every process the tests start), not to the user's. librosa, which tests also call directly, is loaded as the
    package loads it (under its lock: in a fresh environment, workers compiling it at once can break its cache), by
    the processes that run tests: not by xdist's controller, whose seconds of imports would delay the workers' start."""
    if not (config.getoption("numprocesses", None) and "PYTEST_XDIST_WORKER" not in os.environ):
        from music2emo_hf.harmony import load_librosa

        load_librosa()
    if "MUSIC2EMO_COMPILED_CACHE" not in os.environ:
        import shutil
        import tempfile

        os.environ["MUSIC2EMO_COMPILED_CACHE"] = cache = tempfile.mkdtemp(prefix="music2emo-test-compiled-")
        config.add_cleanup(lambda: shutil.rmtree(cache, ignore_errors=True))
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1:
        import torch

        threads = max(1, (os.cpu_count() or 1) // workers)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        torch.set_num_threads(threads)


# Session fixtures of the training tests that take a minute or more to build (tests/training/conftest.py).
HEAVY_FIXTURES = ("synthetic", "semantic")


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """Under pytest-xdist (`--dist loadgroup`) the tests that use one of the HEAVY_FIXTURES go to one worker, which
    builds it once: the group mark is set before xdist's own hook reads it (`tryfirst`; xdist registers its hook
    before this conftest loads, so it ran first and found no mark, and each worker built the fixtures itself).
    Tests that need real Hub weights run only where the Hub answers; elsewhere they are skipped, never faked."""
    from music2emo_hf.hub import hub_reachable

    for item in items:
        heavy = [name for name in HEAVY_FIXTURES if name in getattr(item, "fixturenames", ())]
        if heavy:
            item.add_marker(pytest.mark.xdist_group(heavy[0]))
    hub_tests = [item for item in items if "hub" in item.keywords]
    if hub_tests and not hub_reachable():
        skip = pytest.mark.skip(reason="needs real weights from the Hugging Face Hub, which cannot be reached here")
        for item in hub_tests:
            item.add_marker(skip)


def require_fixtures(*parts: str) -> Path:
    """A path under ../shared/fixtures, or a skip saying what is missing."""
    path = FIXTURES.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real-data fixture {path} is absent (expected ../shared/fixtures beside the checkout)")
    return path


def tone(seconds: float, rate: int = 24000, freq: float = 220.0, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A harmonic tone with a little noise: deterministic, not silent, cheap."""
    t = np.arange(int(round(seconds * rate))) / rate
    rng = np.random.default_rng(seed)
    wave = sum(0.3 / k * np.sin(2 * np.pi * freq * k * t) for k in (1, 2, 3)) + 0.01 * rng.standard_normal(len(t))
    wave = wave.astype(np.float32)
    return np.stack([wave] * channels, axis=1) if channels > 1 else wave


def without_root_reading_rights() -> list[str]:
    """The command prefix under which a process cannot read what its permissions forbid: none for a user, setpriv
    dropping root's right to read anything for root; skips the test where root cannot drop it."""
    if os.geteuid() != 0:
        return []
    prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search"]
    if not shutil.which("setpriv") or subprocess.run([*prefix, "true"], capture_output=True).returncode:
        pytest.skip("running as root without a setpriv (util-linux) allowed to drop root's right to read any folder")
    return prefix


def mood_scores(answer: dict) -> dict[str, float]:
    """An answer's (or a record's) moods as label -> score."""
    return {mood["label"]: mood["score"] for mood in answer["moods"]}


def jsonl(path: Path) -> list[dict]:
    """The records of a JSON-lines file, read independently of the package's reader."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def through_a_pipe(audio: np.ndarray, rate: int, format: str = "FLAC", subtype: str = "PCM_16") -> bytes:
    """A file as a streaming encoder writes it: libsndfile writing into a pipe cannot go back to fill in a FLAC's
    length (nor its checksum) or an MP3's Xing header."""
    read_end, write_end = os.pipe()
    written = []
    reader = threading.Thread(target=lambda: written.append(os.fdopen(read_end, "rb").read()))
    reader.start()
    with sf.SoundFile(write_end, "w", rate, 1, format=format, subtype=subtype, closefd=True) as encoder:
        encoder.write(audio)
    reader.join()
    return written[0]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A randomly initialised tiny model, written the way users make one: `music2emo init`."""
    from music2emo_hf.cli import main

    out = tmp_path_factory.mktemp("tiny-model")
    assert main(["init", "--config", str(TINY_CONFIG), str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_pipeline(tiny_model_dir):
    import transformers

    import music2emo_hf  # noqa: F401  (registers the task)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return transformers.pipeline("music-emotion", model=str(tiny_model_dir), device="cpu")


@pytest.fixture(scope="module")
def btc_file(tmp_path_factory):
    """BTC's weights saved as the authors' `btc_model_large_voca.pt` is: a dict with `model`, `mean` and `std`."""
    from .originals import btc_weights_file

    return btc_weights_file(tmp_path_factory.mktemp("btc") / "btc_model_large_voca.pt")


@pytest.fixture
def fake_hub(tmp_path, monkeypatch):
    """`huggingface_hub.HfApi` replaced by a stand-in that keeps one repo's files in `.remote` (a new repo's
    `.gitattributes` first, as the Hub commits it), records the calls, removes from `.remote` what an upload would
    delete (after the delete patterns, never `.gitattributes`), copies there what it would upload (after the ignore
    patterns), and keeps each repo's visibility (`.private`): nothing reaches the network."""
    import shutil
    from types import SimpleNamespace

    import huggingface_hub
    from huggingface_hub.utils import filter_repo_objects

    from music2emo_hf import hub as hub_module

    hub = SimpleNamespace(remote=tmp_path / "remote", calls=[], private={})  # repo id -> private, once created

    class FakeHfApi:
        def __init__(self, token=None):
            self.token = token

        def create_repo(self, repo_id, repo_type=None, private=False, exist_ok=False):
            hub.calls.append(("create_repo", repo_id, repo_type, private, exist_ok))
            if repo_id not in hub.private:  # the Hub's first commit of a repo holds its .gitattributes
                hub.remote.mkdir(parents=True, exist_ok=True)
                (hub.remote / ".gitattributes").write_text("*.safetensors filter=lfs diff=lfs merge=lfs -text\n")
            hub.private.setdefault(repo_id, private)  # as the Hub: an existing repo keeps its visibility

        def repo_info(self, repo_id, repo_type=None):
            return SimpleNamespace(private=hub.private[repo_id])

        def upload_folder(self, repo_id, repo_type, folder_path, ignore_patterns, commit_message, delete_patterns=None):
            hub.calls.append(("upload_folder", repo_id, repo_type))
            remote = [p.relative_to(hub.remote).as_posix() for p in hub.remote.rglob("*") if p.is_file()]
            for name in filter_repo_objects(remote, allow_patterns=delete_patterns) if delete_patterns else ():
                if name != ".gitattributes":  # as upload_folder: kept whatever the patterns
                    (hub.remote / name).unlink()
            files = [p.relative_to(folder_path).as_posix() for p in Path(folder_path).rglob("*") if p.is_file()]
            for name in filter_repo_objects(files, ignore_patterns=ignore_patterns):
                (hub.remote / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(Path(folder_path) / name, hub.remote / name)
            kind = "datasets/" if repo_type == "dataset" else ""
            return huggingface_hub.CommitInfo(
                commit_url=f"https://huggingface.co/{kind}{repo_id}/commit/0", commit_message=commit_message,
                commit_description="", oid="0" * 40,
            )

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeHfApi)
    monkeypatch.setattr(hub_module, "hub_reachable", lambda: True)  # it answers, as the Hub it stands for
    return hub


@pytest.fixture
def write_wav(tmp_path):
    def write(name: str, audio: np.ndarray, rate: int = 24000, subtype: str | None = None) -> Path:
        path = tmp_path / name
        os.makedirs(path.parent, exist_ok=True)
        sf.write(path, audio, rate, subtype=subtype)
        return path

    return write
