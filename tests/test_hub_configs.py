"""hub_configs/: every published variant loads with its feature extractor, runs a forward pass with random weights
(at a tiny width where the real size is too big for CI), and its card template renders a card with valid metadata."""

from __future__ import annotations

import json
import shutil
import warnings

import pytest
import torch
from huggingface_hub import ModelCard

from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.model_card import build_card

from .conftest import ROOT, TINY_CONFIG, tone

HUB_CONFIGS = ROOT / "hub_configs"
VARIANTS = sorted(folder.name for folder in HUB_CONFIGS.iterdir() if folder.is_dir())
TOO_BIG_FOR_CI = {"music2emo-mert330m"}


def test_the_published_variants_are_all_here():
    assert VARIANTS == ["music2emo-mert330m", "music2emo-mert95m", "music2emo-mert95m-improved", "tiny-random"]


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variant_loads_and_runs(name):
    folder = HUB_CONFIGS / name
    config = Music2EmoConfig.from_pretrained(folder)
    extractor = Music2EmoFeatureExtractor.from_pretrained(folder)
    assert (extractor.sampling_rate, extractor.chunk_seconds) == (config.sampling_rate, config.chunk_seconds)
    if name in TOO_BIG_FOR_CI:  # the same depth, layer norm placement and pooled layers, narrower
        backbone = config.backbone_config
        backbone.hidden_size, backbone.intermediate_size, backbone.num_attention_heads = 32, 64, 2
        backbone.conv_dim, backbone.num_conv_pos_embedding_groups = [16] * 7, 2
        config.projector_dim, config.trunk_dim, config.head_hidden_dim = 32, 32, 16
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel(config).eval()
    with torch.no_grad():
        out = model(**extractor(tone(1.5), return_tensors="pt"))
    assert out.logits["moods"].shape == (1, 56) and out.regression["valence_arousal"].shape == (1, 2)
    assert out.pooled_embedding.shape == (1, config.embedding_dim)
    if config.label_embedding_dim:
        assert out.label_embedding.shape == (1, 384)


@pytest.mark.parametrize("name", VARIANTS)
def test_a_variants_card_template_renders(name, tiny_model_dir):
    template = HUB_CONFIGS / name / "README.md"
    card = build_card(tiny_model_dir, f"music2emo-hf/{name}", template=template)
    parsed = ModelCard(str(card))
    assert parsed.data.library_name == "transformers" and "music2emo-hf" in parsed.data.tags
    first_line = template.read_text().split("# {{ model_id }}\n\n")[1].splitlines()[0]
    assert f"# music2emo-hf/{name}" in str(card) and first_line in str(card)
    assert "{{" not in str(card)  # every placeholder filled


def test_push_publishes_a_whole_model_and_nothing_else(tiny_model_dir, tmp_path, fake_hub, capsys):
    """From a review: a folder holding config.json alone was published (exit 0), hidden files (`.env`, a notebook's
    checkpoints) went with it, a card written by hand was replaced, --private onto an existing public repo
    published anyway (the Hub keeps an existing repo's visibility), and a file removed from the folder stayed on the
    Hub beside the new ones."""
    from music2emo_hf.cli import main

    def published() -> set[str]:
        return {path.relative_to(fake_hub.remote).as_posix() for path in fake_hub.remote.rglob("*") if path.is_file()}

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    (folder / ".env").write_text("HF_TOKEN=hf_secret\n")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "notes.ipynb").write_text("{}")
    (folder / "README.md").write_text("my own card\n")
    (folder / "results.json").write_text("{}")
    assert main(["push", str(folder), "someone/mine"]) == 0
    assert {"config.json", "model.safetensors", "README.md", "results.json"} <= published()
    assert not any(name.startswith(".") or "/." in name for name in published() - {".gitattributes"}), published()
    assert (fake_hub.remote / "README.md").read_text() == "my own card\n"
    (folder / "results.json").unlink()  # the scores of an earlier training: no longer this model's
    assert main(["push", str(folder), "someone/mine", "--template", str(TINY_CONFIG / "README.md")]) == 0
    assert (fake_hub.remote / "README.md").read_text().startswith("---\n")  # a card asked for: written, then sent
    assert "results.json" not in published() and {".gitattributes", "model.safetensors"} <= published()
    scores = tmp_path / "scores.json"  # evaluate_models.py's, for this model: the card is written again with them
    scores.write_text(json.dumps({"split": "test", "rows": [{"label": "mine", "models": [str(folder)],
                                                              "metrics": {"deam": {"r2_valence": 0.5125}}}]}))
    assert main(["push", str(folder), "someone/mine", "--results", str(scores)]) == 0
    assert "0.5125" in (fake_hub.remote / "README.md").read_text()

    calls = len(fake_hub.calls)
    capsys.readouterr()
    assert main(["push", str(folder), "someone/mine", "--private"]) == 2
    assert "someone/mine exists and is public, so --private cannot keep this upload private" in capsys.readouterr().err
    assert [call[0] for call in fake_hub.calls[calls:]] == ["create_repo"]  # nothing uploaded

    half = tmp_path / "half"
    half.mkdir()
    shutil.copy(folder / "config.json", half)
    weights = (folder / "model.safetensors").read_bytes()
    for kept in (None, weights[: len(weights) // 2]):  # no weights yet; weights cut short
        if kept is not None:
            (half / "model.safetensors").write_bytes(kept)
        assert main(["push", str(half), "someone/half"]) == 2
        said = capsys.readouterr().err
        assert ("no weights" if kept is None else "it is damaged or cut short") in said
        assert ". Nothing was published." in said and "again Nothing" not in said
    assert "someone/half" not in fake_hub.private


def test_card_and_push_refuse_what_they_cannot_use_in_one_line(tiny_model_dir, tmp_path, monkeypatch, capsys):
    """Each was a Python error's own words (HFValidationError, AttributeError, FileNotFoundError, httpx's
    ConnectError, UnicodeDecodeError), or not refused at all: an id the Hub refuses was written into the card."""
    from huggingface_hub import constants

    from music2emo_hf.cli import main

    folder = shutil.copytree(tiny_model_dir, tmp_path / "model")
    listed = tmp_path / "list.json"
    listed.write_text("[1]")
    unscored = tmp_path / "unscored.json"
    unscored.write_text('{"best": {"test": {}}, "epochs": 3}')
    binary = tmp_path / "binary.md"
    binary.write_bytes(bytes(range(128, 256)))
    broken = shutil.copytree(tiny_model_dir, tmp_path / "broken")
    (broken / "config.json").write_text("[]")
    for argv, said in (
        (["card", str(folder), "not a repo id!!"], "argument repo_id: 'not a repo id!!' is not a Hub repo id: give "
                                                   "OWNER/NAME (letters, digits, '-', '_' and '.'), e.g. you/music2emo-mine"),
        (["card", str(folder), "you/mine", "--results", str(listed)],
         f"--results {listed}: holds a JSON list; expected the object of training's results.json"),
        (["card", str(folder), "you/mine", "--template", str(tmp_path / "none.md")],
         f"--template {tmp_path / 'none.md'}: no such file; name a model card template"),
        (["card", str(folder), "you/mine", "--results", str(unscored)],  # the card was written without scores
         f"--results {unscored}: holds no scores the card can list; expected training's results.json"),
        (["card", str(folder), "you/mine", "--results", str(binary)],
         f"--results {binary}: cannot read it as JSON ('utf-8' codec can't decode byte 0x80"),
        (["card", str(folder), "you/mine", "--template", str(binary)],
         f"--template {binary}: cannot read it as text ('utf-8' codec can't decode byte 0x80"),
        (["card", str(broken), "you/mine"],
         f"{broken}: its config.json holds a JSON list, not a model's settings (an object): restore it, or save the "
         "model there again."),
    ):
        try:
            status = main(argv)
        except SystemExit as stop:  # argparse's own exit
            status = stop.code
        assert status == 2 and said in capsys.readouterr().err, argv
    assert not (folder / "README.md").exists()
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    assert main(["push", str(folder), "you/mine"]) == 2
    assert ("music2emo: error: the Hugging Face Hub cannot be reached (HF_HUB_OFFLINE is set); "
            "publish where it can be, by running the command again. Nothing was published.") in capsys.readouterr().err
    assert not (folder / "README.md").exists()  # the card was written, and then nothing published


def test_a_random_model_made_from_a_variant_names_no_backbone_weights(tmp_path):
    """`init` without --backbone: random weights throughout, so its card must not claim MERT's weights (and their
    terms), as the variant's config names them for `--backbone`."""
    from music2emo_hf.cli import main

    variant = shutil.copytree(TINY_CONFIG, tmp_path / "variant")
    config = json.loads((variant / "config.json").read_text())
    (variant / "config.json").write_text(json.dumps({**config, "backbone_name_or_path": "m-a-p/MERT-v1-95M"}))
    assert main(["init", "--config", str(variant), str(tmp_path / "model")]) == 0
    assert Music2EmoConfig.from_pretrained(tmp_path / "model").backbone_name_or_path is None
    card = build_card(tmp_path / "model", "someone/random").text
    assert "MERT-v1-95M" not in card and "random" in card


def test_a_cards_metadata_names_the_licence_and_the_base_model_its_parts_bring(tiny_model_dir, tmp_path):
    """From a review: every card but an all-ours one said `license: other` with nothing to follow, and none named the
    backbone it builds on. Ours alone: Apache-2.0; MERT's weights: MERT's licence and MERT as base model; heads
    learnt from the corpora too: `other`, linked to the card's Licences section."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "best")

    def metadata() -> tuple:
        data = ModelCard(str(build_card(folder, "someone/model"))).data
        return data.license, data.license_name, data.license_link, data.base_model, data.pipeline_tag

    assert metadata() == ("apache-2.0", None, None, None, "audio-classification")
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "backbone_name_or_path": "m-a-p/MERT-v1-330M"}))
    assert metadata() == ("cc-by-nc-4.0", None, None, "m-a-p/MERT-v1-330M", "audio-classification")
    (folder / "training.json").write_text(json.dumps({"script": "train", "corpora": ["deam", "pmemo"]}))
    assert metadata() == ("other", "backbone-and-data-terms", "README.md", "m-a-p/MERT-v1-330M",
                          "audio-classification")
    (folder / "config.json").write_text(json.dumps({**config, "backbone_name_or_path": str(tmp_path)}))
    assert metadata()[3] is None  # weights from a folder of unknown origin: no base model claimed
    (folder / "config.json").write_text(json.dumps({**config, "backbone_name_or_path": "someone/mert-finetuned"}))
    assert metadata()[3] == "someone/mert-finetuned"  # a Hub model of any name is the base model


def test_a_card_claims_each_score_for_the_split_and_the_model_it_belongs_to(tiny_model_dir, tmp_path):
    """From a review: corpora a zero-shot model was trained on were called "zero-shot", a validation split was
    published as the test split, a table row of two models as this one's figures, and a per-corpus export
    (`best-deam/`) got best/'s figures."""
    folder = shutil.copytree(tiny_model_dir, tmp_path / "best-deam")

    def entries(results) -> set[tuple]:
        card = build_card(folder, "someone/model", results=results)
        return {(r.task_name, r.dataset_type, r.dataset_split, r.metric_name, r.metric_value)
                for r in card.data.eval_results}

    trained = {"best": {"test": {"mtg_jamendo": {"f1_macro_segment": 0.3}},
                        "zero_shot": {"cal500": {"f1_macro_song": 0.2}}},
               "best-deam": {"test": {"deam": {"r2_valence": 0.5}}}}
    assert entries(trained) == {("Valence/arousal regression", "deam", "test", "R² valence", 0.5)}
    folder = shutil.copytree(tiny_model_dir, tmp_path / "best", dirs_exist_ok=True)
    assert entries(trained) == {
        ("Mood tagging", "mtg_jamendo", "test", "macro-F1 in the label space (segments)", 0.3),
        ("Zero-shot mood tagging", "cal500", "test", "macro-F1 in the label space (songs)", 0.2)}
    table = {"split": "validation",
             "rows": [{"label": "mine", "models": ["/x/best"], "metrics": {"pmemo": {"r2_arousal": 0.6}}}]}
    assert entries(table) == {("Valence/arousal regression", "pmemo", "validation", "R² arousal", 0.6)}
    with pytest.raises(ValueError, match="must hold one row of one model, it holds a row of 2 models"):
        build_card(folder, "someone/model", results={**table, "rows": [{**table["rows"][0], "models": ["/a", "/b"]}]})
