"""Fixtures of the training tests: the training scripts importable, and one synthetic benchmark (two corpora in
their official layouts -> `music2emo prepare-data` -> `music2emo init` -> the feature cache) built once per session."""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import ROOT, TINY_CONFIG
from tests.synthetic import (
    LEARNING_BACKBONE,
    semantic_labels,
    semantic_traits,
    write_deam,
    write_mtg_jamendo,
    write_semantic_cal500,
    write_semantic_emotify,
)

TRAINING = ROOT / "training"
if str(TRAINING) not in sys.path:
    sys.path.insert(0, str(TRAINING))  # as `accelerate launch training/x.py` puts it first

# Settings every training test shares: tiny data needs a larger step than the recipes' 1e-4 (8 steps an epoch).
FAST = ["lr=0.003", "warmup_steps=10", "max_epochs=60", "patience=15"]


def load_script(name: str):
    """A script of training/ as a module named `training_NAME`, as no package is named."""
    spec = importlib.util.spec_from_file_location(f"training_{name}", TRAINING / f"{name}.py")
    module = sys.modules[spec.name] = importlib.util.module_from_spec(spec)  # dataclasses look it up
    spec.loader.exec_module(module)
    return module


def cpu_env(**extra: str) -> dict[str, str]:
    """The environment of a training subprocess: this interpreter's, CPU only, quiet."""
    return {**os.environ, "ACCELERATE_USE_CPU": "1", "TRANSFORMERS_VERBOSITY": "error", "PYTHONWARNINGS": "ignore",
            **extra}


def run_quietly(main, argv: list[str]) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return main(argv)


def extract(data: Path, init: Path) -> None:
    """The feature cache of `init` for every corpus in `data`, in this process (the worker has imported everything a
    launched process would import again; two ranks are tested in test_extract_features.py), in one thread (the same
    features however many cores the tests have) and with one chord network (synthesized triads need no ensemble, and
    it is a third of the time)."""
    import torch

    extract_features = load_script("extract_features")
    argv = ["--dataset", str(data), "--model", str(init), "--name", "features", "--harmony-ensemble", "1"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        assert run_quietly(extract_features.main, argv) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def learning_init(tmp_path_factory) -> Path:
    """An untrained model (music2emo init) with a small random backbone whose features carry timbre, tempo and
    loudness (tests/synthetic.py), trunk 128, standardised embeddings."""
    from music2emo_hf.cli import main

    root = tmp_path_factory.mktemp("learning-init")
    config = json.loads((TINY_CONFIG / "config.json").read_text())
    # No attention dropout in the chord encoder: on a CPU it costs most of a training step.
    config.update(backbone_config=LEARNING_BACKBONE, chunk_seconds=2.5, trunk_dim=128, head_hidden_dim=64,
                  standardize_embeddings=True, chord_dropout=0.0)
    hub_config = root / "hub-config"
    hub_config.mkdir()
    (hub_config / "config.json").write_text(json.dumps(config))
    (hub_config / "preprocessor_config.json").write_text(
        json.dumps({"feature_extractor_type": "Music2EmoFeatureExtractor", "sampling_rate": 24000, "chunk_seconds": 2.5})
    )
    assert run_quietly(main, ["init", "--config", str(hub_config), str(root / "init")]) == 0
    return root / "init"


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory, learning_init) -> SimpleNamespace:
    """MTG-Jamendo (timbre -> tag; 96/32/32 tracks of 2.5 s) and DEAM (mode -> valence, tempo and loudness ->
    arousal; 160 tracks of 5 s, split 60/20/20) prepared into one folder, with the learning model's feature cache."""
    from music2emo_hf.cli import main

    root = tmp_path_factory.mktemp("synthetic")
    write_mtg_jamendo(root / "downloads" / "mtg", {"train": 96, "validation": 32, "test": 32}, seconds=2.5)
    write_deam(root / "downloads" / "deam", 160)
    data = root / "data"
    assert run_quietly(main, ["prepare-data", "--corpus", "mtg_jamendo", "--source", str(root / "downloads" / "mtg"),
                              "--out", str(data)]) == 0
    assert run_quietly(main, ["prepare-data", "--corpus", "deam", "--source", str(root / "downloads" / "deam"),
                              "--out", str(data), "--fractions", "train=0.6,validation=0.2,test=0.2"]) == 0
    extract(data, learning_init)
    return SimpleNamespace(root=root, data=data, init=learning_init, features="features")


@pytest.fixture(scope="session")
def semantic(tmp_path_factory, learning_init) -> SimpleNamespace:
    """The three tag corpora with planted label semantics (mode -> happy/sad, tempo -> energetic/calm, each in its
    own vocabulary): MTG-Jamendo 40/12/12 tracks of 5 s, CAL500 (UCSD layout) and Emotify (data.csv) 48 of 2.5 s
    each, split 60/20/20, prepared into one folder with the learning model's feature cache."""
    from music2emo_hf.cli import main

    root = tmp_path_factory.mktemp("semantic")
    downloads = root / "downloads"
    write_mtg_jamendo(downloads / "mtg", {"train": 40, "validation": 12, "test": 12}, seed=4,
                      draw=semantic_traits, tags=semantic_labels("mtg_jamendo"))
    write_semantic_cal500(downloads / "cal500", 48, seconds=2.5)
    write_semantic_emotify(downloads / "emotify", 48, seconds=2.5)
    data = root / "data"
    fractions = ["--fractions", "train=0.6,validation=0.2,test=0.2"]
    for corpus, source, extra in (
        ("mtg_jamendo", "mtg", []),
        ("cal500", "cal500", [*fractions, "--label-rule", "threshold", "--threshold", "4"]),
        ("emotify", "emotify", [*fractions, "--label-rule", "vote_share", "--threshold", "0.5"]),
    ):
        argv = ["prepare-data", "--corpus", corpus, "--source", str(downloads / source), "--out", str(data), *extra]
        assert run_quietly(main, argv) == 0
    extract(data, learning_init)
    return SimpleNamespace(root=root, data=data, init=learning_init, features="features")
