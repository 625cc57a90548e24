"""hub_configs/: every published variant loads with its feature extractor, runs a forward pass with random weights
(at a tiny width where the real size is too big for CI), and its card template renders a card with valid metadata."""

from __future__ import annotations

import warnings

import pytest
import torch
from huggingface_hub import ModelCard

from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel
from music2emo_hf.model_card import build_card

from .conftest import ROOT, tone

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
