"""Music2EmoConfig: MERT mapping, tasks as data, validation, save/load."""

from __future__ import annotations


import pytest
from transformers import HubertConfig

from music2emo_hf.configuration_music2emo import MERT_V1_95M, MERT_V1_330M, Music2EmoConfig, hubert_config_from_mert
from music2emo_hf.labels import MTG_JAMENDO_MOODS, VA_SCALE

from .conftest import ROOT, require_fixtures


def test_default_tasks_are_mtg_moods_in_official_order_and_valence_arousal_on_1_to_9():
    tags_file = require_fixtures("mtg_jamendo", "data", "tags", "moodtheme_split.txt")
    official = [line.strip().split("---")[1] for line in tags_file.read_text().splitlines() if line.strip()]
    config = Music2EmoConfig()
    assert config.task("moods")["labels"] == official == list(MTG_JAMENDO_MOODS)
    va = config.task("valence_arousal")
    assert va["type"] == "regression" and va["labels"] == ["valence", "arousal"] and va["scale"] == [1.0, 9.0]
    assert (VA_SCALE.to_unit(1.0), VA_SCALE.to_unit(5.0), VA_SCALE.to_unit(9.0)) == (-1.0, 0.0, 1.0)


def test_default_backbone_is_mert_v1_95m_with_music2emo_layers():
    config = Music2EmoConfig()
    assert config.backbone_config.hidden_size == 768 and config.backbone_config.num_hidden_layers == 12
    assert config.pooled_layers == [6, 7] and config.embedding_dim == 1536
    assert config.chunk_seconds == 30.0 and config.sampling_rate == 24000


def test_a_mert_config_json_maps_onto_hubert():
    mert = {
        **MERT_V1_330M,
        "model_type": "mert_model",
        "architectures": ["MERTModel"],
        "auto_map": {"AutoModel": "modeling_MERT.MERTModel"},
        "deepnorm": False,
        "attention_relax": 32.0,
        "feature_extractor_cqt": False,
        "feature_extractor_cqt_bins": 336,
        "sample_rate": 24000,
    }
    mapped = hubert_config_from_mert(mert)
    assert isinstance(mapped, HubertConfig) and mapped.model_type == "hubert"
    assert mapped.do_stable_layer_norm and mapped.hidden_size == 1024 and not mapped.conv_pos_batch_norm
    assert not hasattr(mapped, "attention_relax")
    with pytest.raises(ValueError, match="deepnorm"):
        hubert_config_from_mert({**mert, "deepnorm": True})


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"pooled_layers": [13]}, "pooled_layers"),
        ({"tasks": []}, "at least one task"),
        ({"tasks": [{"name": "a", "type": "ordinal", "labels": ["x"]}]}, "'type'"),
        ({"tasks": [{"name": "a", "type": "multilabel", "labels": ["x", "x"]}]}, "distinct"),
        ({"tasks": [{"name": "a", "type": "regression", "labels": ["v"]}]}, "scale"),
        ({"tasks": [{"name": "a", "type": "multilabel", "labels": ["x"]}] * 2}, "unique"),
        ({"chord_cls": "mean"}, "chord_cls"),
        ({"chord_heads": 3}, "chord_heads"),
        ({"chord_roots": ["C", "D"]}, "start with 'N'"),
    ],
)
def test_invalid_settings_are_refused_with_a_reason(kwargs, message):
    with pytest.raises(ValueError, match=message):
        Music2EmoConfig(**kwargs)


def test_save_and_load_round_trip(tmp_path):
    tasks = [{"name": "cal500", "type": "multilabel", "labels": ["happy", "sad"]},
             {"name": "va", "type": "regression", "labels": ["valence", "arousal"], "scale": [0.0, 1.0]}]
    config = Music2EmoConfig(backbone_config=MERT_V1_330M, pooled_layers=[3, 24], tasks=tasks, untrained=True)
    config.save_pretrained(tmp_path)
    loaded = Music2EmoConfig.from_pretrained(tmp_path)
    assert loaded.tasks == tasks and loaded.pooled_layers == [3, 24] and loaded.untrained
    assert loaded.backbone_config.do_stable_layer_norm and loaded.embedding_dim == 2048


def test_faithful_hub_config_matches_mert_v1_95m():
    config = Music2EmoConfig.from_pretrained(ROOT / "hub_configs" / "music2emo-mert95m")
    for key, value in MERT_V1_95M.items():
        actual = getattr(config.backbone_config, key)
        assert (list(actual) if isinstance(actual, (list, tuple)) else actual) == value, key
