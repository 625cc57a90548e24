"""Real weights from the Hugging Face Hub: run where the Hub answers, skipped (with the reason) where it does not."""

from __future__ import annotations

import warnings

import pytest
import torch

from music2emo_hf import DEFAULT_MODEL_ID, PUBLISHED_MODEL_ID, Music2EmoModel

from .conftest import require_fixtures, tone

pytestmark = pytest.mark.hub


def test_mert_v1_95m_loads_natively_and_gives_the_13_hidden_states_music2emo_pools():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = Music2EmoModel.from_backbone("m-a-p/MERT-v1-95M").eval()
    assert model.config.backbone_config.hidden_size == 768 and not model.config.backbone_config.do_stable_layer_norm
    with torch.no_grad():
        states = model.backbone(torch.from_numpy(tone(1.0))[None], output_hidden_states=True).hidden_states
    assert len(states) == 13 and states[7].shape == (1, 74, 768) and torch.isfinite(states[7]).all()


def test_the_default_model_is_the_authors_j_all_and_answers_on_a_real_clip(tmp_path, monkeypatch):
    """Downloads amaai-lab/music2emo's J_all.ckpt and MERT-v1-95M (about 390 MB) and converts them."""
    import transformers

    import music2emo_hf  # noqa: F401

    monkeypatch.setenv("MUSIC2EMO_CACHE", str(tmp_path / "converted"))
    pipe = transformers.pipeline("music-emotion", device="cpu")
    result = pipe(str(require_fixtures("emomusic", "audio", "3.mp3")))
    assert result["model"]["repo"] == DEFAULT_MODEL_ID and result["model"]["checkpoint"] == "J_all"
    assert 1.0 <= result["valence"] <= 9.0 and 1.0 <= result["arousal"] <= 9.0
    assert "warning" not in result


def test_the_published_model_answers_on_a_real_clip():
    import transformers
    from huggingface_hub import repo_exists

    import music2emo_hf  # noqa: F401

    if not repo_exists(PUBLISHED_MODEL_ID):
        pytest.skip(f"{PUBLISHED_MODEL_ID} is not published yet")

    pipe = transformers.pipeline("music-emotion", model=PUBLISHED_MODEL_ID, device="cpu")
    result = pipe(str(require_fixtures("emomusic", "audio", "3.mp3")))
    assert 1.0 <= result["valence"] <= 9.0 and 1.0 <= result["arousal"] <= 9.0
    assert "warning" not in result
