"""Music2EmoModel: shapes, the faithful head, group-norm-safe batching, duration-weighted pooling, losses,
save/load, and loading a MERT-style backbone checkpoint without remote code."""

from __future__ import annotations

import copy
import json
import math
import os
import re
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from transformers import HubertModel
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder

from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel, UntrainedModelWarning
from music2emo_hf.harmony import ChordSegment, Harmony, Key
from music2emo_hf.labels import ORIGINAL_CHORD_QUALITIES
from music2emo_hf.modeling_music2emo import SEGMENT_FRAMES, Float32PositionalConvEmbedding

from .conftest import TINY_CONFIG, tone


@pytest.fixture(scope="module")
def tiny_config() -> Music2EmoConfig:
    return Music2EmoConfig.from_pretrained(TINY_CONFIG)


@pytest.fixture(scope="module")
def model(tiny_config) -> Music2EmoModel:
    torch.manual_seed(0)
    return Music2EmoModel(tiny_config).eval()


def _inputs(audios, chunk_seconds=1.0):
    return Music2EmoFeatureExtractor(chunk_seconds=chunk_seconds)(audios, return_tensors="pt")


def test_forward_returns_typed_outputs_per_task(model):
    with torch.no_grad():
        out = model(**_inputs([tone(2.5), tone(1.2, freq=330)]))
    assert out.logits["moods"].shape == (2, 56)
    assert out.regression["valence_arousal"].shape == (2, 2)
    assert out.pooled_embedding.shape == (2, 64) and out.chunk_embeddings.shape == (2, 3, 64)
    assert out.chunk_logits["moods"].shape == (2, 3, 56) and out.chunk_regression["valence_arousal"].shape == (2, 3, 2)
    assert out.loss is None
    assert not out.chunk_embeddings[1, 2].any()  # padding chunk


def test_untrained_regression_head_starts_at_the_neutral_middle_of_its_scale(model):
    assert model.heads["valence_arousal"][-1].bias.tolist() == [5.0, 5.0]


def test_faithful_configuration_reproduces_the_original_head_network_exactly():
    config = Music2EmoConfig.from_pretrained(TINY_CONFIG.parent / "music2emo-mert95m")
    assert config.chord_qualities == list(ORIGINAL_CHORD_QUALITIES) and config.chord_cls == "zero"
    assert not config.chord_padding_mask
    with torch.device("meta"):
        model = Music2EmoModel(config)
    head = {k: tuple(p.shape) for k, p in model.named_parameters() if not k.startswith("backbone.")}
    assert sum(int(np.prod(s)) for s in head.values()) == 1_072_058  # ORIGINALS §1.4
    assert head["chord_encoder.root_embedding.weight"] == (14, 4)
    assert head["chord_encoder.quality_embedding.weight"] == (14, 4)
    assert head["input_proj.0.weight"] == (512, 1545)
    assert head["heads.moods.3.weight"] == (56, 256) and head["heads.valence_arousal.3.weight"] == (2, 256)
    assert sum(p.numel() for p in model.backbone.parameters()) == 94_371_712  # MERT-v1-95M


def test_a_batch_gives_the_same_answers_as_single_runs(model):
    """Tails run at their real length: padding them would change MERT's group norm (and the answers)."""
    audios = [tone(2.5, seed=1), tone(1.3, freq=330, seed=2)]
    with torch.no_grad():
        batch = model(**_inputs(audios))
        singles = [model(**_inputs(a)) for a in audios]
        tail = _inputs(audios[1])["input_values"][0, 1, :7200]
        zero_padded_tail = torch.nn.functional.pad(tail, (0, 24000 - 7200))[None]
        padded = model.embed_chunks(zero_padded_tail, torch.tensor([24000]))
    for i, single in enumerate(singles):
        torch.testing.assert_close(batch.regression["valence_arousal"][i], single.regression["valence_arousal"][0])
        torch.testing.assert_close(batch.logits["moods"][i], single.logits["moods"][0])
    assert not torch.allclose(padded[0], singles[1].chunk_embeddings[0, 1], atol=1e-4)


def test_pooling_weights_chunks_by_their_real_duration(model):
    with torch.no_grad():
        out = model(**_inputs(tone(2.25)))
    expected = (out.chunk_embeddings[0, 0] + out.chunk_embeddings[0, 1] + 0.25 * out.chunk_embeddings[0, 2]) / 2.25
    torch.testing.assert_close(out.pooled_embedding[0], expected)


def test_standardized_embeddings_answer_as_the_embeddings_standardized_beforehand(model, tiny_config, tmp_path):
    """`standardize_embeddings`: the chunks are centred and scaled per dimension by the statistics the model saved
    (set once from the training tracks) before they are pooled and reach the heads."""
    standardized = Music2EmoModel(Music2EmoConfig(**{**tiny_config.to_dict(), "standardize_embeddings": True})).eval()
    standardized.load_state_dict(model.state_dict(), strict=False)
    generator = torch.Generator().manual_seed(3)
    standardized.embedding_mean.copy_(torch.randn(tiny_config.embedding_dim, generator=generator))
    standardized.embedding_scale.copy_(torch.rand(tiny_config.embedding_dim, generator=generator) + 0.5)
    standardized.save_pretrained(tmp_path)
    reloaded = Music2EmoModel.from_pretrained(tmp_path).eval()  # the statistics travel with the weights
    embeddings = torch.randn(1, 3, tiny_config.embedding_dim, generator=generator)
    durations = torch.tensor([[1.0, 1.0, 0.25]])
    with torch.no_grad():
        ours = reloaded(chunk_embeddings=embeddings, chunk_durations=durations)
        by_hand = model(chunk_embeddings=(embeddings - standardized.embedding_mean) / standardized.embedding_scale,
                        chunk_durations=durations)
    torch.testing.assert_close(ours.logits["moods"], by_hand.logits["moods"])
    torch.testing.assert_close(ours.pooled_embedding, by_hand.pooled_embedding)


def test_plain_mean_pooling_weighs_a_short_tail_like_a_full_chunk(tiny_config):
    """`pooling="mean"`: how Music2Emo's released heads were trained (converted checkpoints use it)."""
    config = Music2EmoConfig.from_dict({**tiny_config.to_dict(), "pooling": "mean"})
    torch.manual_seed(0)
    model = Music2EmoModel(config).eval()
    with torch.no_grad():
        out = model(**_inputs(tone(2.25)))
    torch.testing.assert_close(out.pooled_embedding[0], out.chunk_embeddings[0].mean(dim=0))
    assert not torch.allclose(out.pooled_embedding[0], (out.chunk_embeddings[0] * torch.tensor(
        [[1.0], [1.0], [0.25]])).sum(0) / 2.25)
    with pytest.raises(ValueError, match="pooling must be 'duration' or 'mean'"):
        Music2EmoConfig(pooling="max")


def test_precomputed_chunk_embeddings_give_the_same_answers(model):
    inputs = _inputs([tone(2.5), tone(1.2, freq=330)])
    with torch.no_grad():
        from_audio = model(**inputs)
        from_cache = model(chunk_embeddings=from_audio.chunk_embeddings, chunk_mask=inputs["chunk_mask"],
                           chunk_durations=inputs["chunk_durations"])
    torch.testing.assert_close(from_cache.logits["moods"], from_audio.logits["moods"])
    with pytest.raises(ValueError, match="exactly one"):
        model(input_values=inputs["input_values"], chunk_embeddings=from_audio.chunk_embeddings)
    with pytest.raises(ValueError, match="chunk_durations are needed"):
        model(input_values=inputs["input_values"], chunk_mask=inputs["chunk_mask"])


def test_wrong_inputs_are_named_before_the_backbone_runs(model):
    inputs = _inputs([tone(2.5), tone(1.2, freq=330)])
    single = {name: value[:1] for name, value in inputs.items()}
    harmony = {"chord_root_ids": torch.zeros(1, 4, dtype=torch.long), "mode_ids": torch.zeros(1, dtype=torch.long)}
    for wrong, error, message in [
        ({**inputs, "chunk_mask": inputs["chunk_mask"].numpy()}, TypeError, "chunk_mask must be a torch tensor"),
        ({**single, "input_values": single["input_values"][0]}, ValueError, r"\(batch, chunks, samples\), got shape "
                                                                            r"\(3, 24000\); one track is a batch of 1"),
        ({**inputs, "chunk_durations": single["chunk_durations"]}, ValueError, r"chunk_durations must be .* = \(2, 3\)"),
        ({**inputs, **harmony}, ValueError, "chord_root_ids is for 1 track.s., input_values for 2"),
        ({**inputs, "mode_id": harmony["mode_ids"]}, TypeError, "mode_id"),  # misspelt: refused, not ignored
    ]:
        with pytest.raises(error, match=message):
            model(**wrong)
    with torch.no_grad():  # numpy's float64, as torch.from_numpy gives it, is taken as float32
        wide = model(**{**single, "input_values": single["input_values"].double()})
        torch.testing.assert_close(wide.logits["moods"], model(**single).logits["moods"])
        minor = model(**single, mode_ids=torch.tensor(1))  # one track's mode as a 0-d tensor (load_track_features)
        torch.testing.assert_close(minor.logits["moods"], model(**single, mode_ids=torch.tensor([1])).logits["moods"])


def test_chords_and_mode_change_the_answer(model):
    inputs = _inputs(tone(1.0))
    roots = torch.tensor([[1, 6, 8, 1] + [0] * 96])
    qualities = torch.tensor([[1, 1, 11, 1] + [0] * 96])
    mask = (roots > 0).long()
    with torch.no_grad():
        major = model(**inputs, chord_root_ids=roots, chord_quality_ids=qualities, chord_mask=mask,
                      mode_ids=torch.tensor([0]))
        minor = model(**inputs, chord_root_ids=roots, chord_quality_ids=qualities, chord_mask=mask,
                      mode_ids=torch.tensor([1]))
        none = model(**inputs)
    assert not torch.allclose(major.logits["moods"], minor.logits["moods"])
    assert not torch.allclose(major.logits["moods"], none.logits["moods"])


def test_a_tracks_harmony_enters_the_model_as_its_chord_tokens(model):
    """`harmony_inputs` (the pipeline's door) gives the model each chord's root as a root and its quality as a
    quality, and the key's mode, as `Harmony.tokens` (the authors' chordnorm) counts them."""
    harmony = Harmony(Key(7, "minor"), [ChordSegment(0.0, 1.0, "G:min"), ChordSegment(1.0, 2.0, "D:7"),
                                          ChordSegment(2.0, 3.0, "C:min")])
    config = model.config
    tokens = harmony.tokens(config.chord_roots, config.chord_qualities, config.max_chords)
    given = model.harmony_inputs([harmony])
    for name, key in [("chord_root_ids", "chord_root_ids"), ("chord_quality_ids", "chord_quality_ids"),
                      ("chord_mask", "chord_mask"), ("mode_ids", "mode_id")]:
        assert given[name].tolist() == [tokens[key].tolist()], name
    assert given["mode_ids"].tolist() == [1] and given["chord_mask"].sum() == 3  # a minor key, three chords
    with torch.no_grad():
        through_the_door = model(**_inputs(tone(1.0)), **given)
        spelled_out = model(**_inputs(tone(1.0)), chord_root_ids=torch.tensor([tokens["chord_root_ids"]]),
                            chord_quality_ids=torch.tensor([tokens["chord_quality_ids"]]),
                            chord_mask=torch.tensor([tokens["chord_mask"]]), mode_ids=torch.tensor([1]))
    torch.testing.assert_close(through_the_door.logits["moods"], spelled_out.logits["moods"], rtol=0, atol=0)


def test_chord_padding_is_masked(model):
    """With the padding mask, what sits in padded positions cannot change the answer, nor how far it is padded: in
    a batch, a short track's padding up to the longest track's length is masked too."""
    inputs = _inputs([tone(1.0), tone(1.0, freq=330)])
    roots = torch.tensor([[1, 6] + [0] * 98, [2, 3, 4, 5] + [0] * 96])
    mask = (roots > 0).long()
    junk = roots.clone()
    junk[0, 2:] = 5
    with torch.no_grad():
        clean = model(**inputs, chord_root_ids=roots, chord_quality_ids=roots, chord_mask=mask)
        noisy = model(**inputs, chord_root_ids=junk, chord_quality_ids=junk, chord_mask=mask)
        alone = model(**_inputs(tone(1.0)), chord_root_ids=roots[:1, :2], chord_quality_ids=roots[:1, :2],
                      chord_mask=mask[:1, :2])
    torch.testing.assert_close(clean.logits["moods"], noisy.logits["moods"])
    torch.testing.assert_close(clean.logits["moods"][:1], alone.logits["moods"], atol=1e-5, rtol=1e-5)


def test_loss_uses_only_rows_labelled_for_each_task(model):
    inputs = _inputs([tone(1.0), tone(1.0, freq=330)])
    moods = torch.tensor([[1.0] + [0.0] * 55, [float("nan")] * 56])
    va = torch.tensor([[float("nan")] * 2, [7.0, float("nan")]])  # track 2 has a valence rating only
    out = model(**inputs, labels={"moods": moods, "valence_arousal": va})
    expected_moods = torch.nn.functional.binary_cross_entropy_with_logits(out.logits["moods"][0], moods[0])
    expected_va = torch.nn.functional.mse_loss(out.regression["valence_arousal"][1, :1], va[1, :1])
    torch.testing.assert_close(out.task_losses["moods"], expected_moods)
    torch.testing.assert_close(out.task_losses["valence_arousal"], expected_va)
    torch.testing.assert_close(out.loss, expected_moods + expected_va)
    moods_head = model.heads["moods"][0].weight
    expected_grad, = torch.autograd.grad(expected_moods, moods_head, retain_graph=True)
    out.loss.backward()  # track 1's tags alone reach the tag head
    torch.testing.assert_close(moods_head.grad, expected_grad)
    assert expected_grad.abs().sum() > 0
    model.zero_grad()
    with pytest.raises(KeyError, match="unknown task"):
        model(**inputs, labels={"cal500": moods})


def test_save_and_load_give_identical_outputs(model, tmp_path):
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").exists()
    reloaded = Music2EmoModel.from_pretrained(tmp_path).eval()
    roots = torch.tensor([[1, 6, 8, 1] + [0] * 96])
    inputs = {**_inputs(tone(2.5)), "chord_root_ids": roots, "chord_quality_ids": roots, "chord_mask": (roots > 0).long(),
              "mode_ids": torch.tensor([1])}
    saved, loaded = model.state_dict(), reloaded.state_dict()
    assert saved.keys() == loaded.keys() and all(torch.equal(saved[k], loaded[k]) for k in saved)
    with torch.no_grad():
        a, b = model(**inputs), reloaded(**inputs)
    # Same weights, but safetensors maps them at another memory alignment, so the CPU's BLAS may take another SIMD
    # path: outputs agree to float rounding, not bit for bit.
    torch.testing.assert_close(a.logits["moods"], b.logits["moods"], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a.regression["valence_arousal"], b.regression["valence_arousal"], rtol=1e-6, atol=1e-6)


def test_a_model_saved_alone_is_a_folder_the_pipeline_loads(model, tmp_path):
    """From a review: `model.save_pretrained` (what `Trainer` writes) left no preprocessor_config.json, and
    `pipeline("music-emotion", model=folder)` could not load it. A feature extractor already there is kept."""
    import transformers

    model.save_pretrained(tmp_path / "alone")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        pipe = transformers.pipeline("music-emotion", model=str(tmp_path / "alone"), runtime="torch")
    assert pipe.feature_extractor.chunk_seconds == model.config.chunk_seconds and "valence" in pipe(tone(1.5))
    Music2EmoFeatureExtractor(chunk_seconds=model.config.chunk_seconds, resampler="sinc").save_pretrained(
        tmp_path / "kept")
    model.save_pretrained(tmp_path / "kept")
    assert Music2EmoFeatureExtractor.from_pretrained(tmp_path / "kept").resampler == "sinc"
    model.save_pretrained(tmp_path / "other-rank", False)  # is_main_process, as transformers' second argument
    assert not (tmp_path / "other-rank" / "preprocessor_config.json").exists()


def test_a_model_pushed_by_transformers_publishes_its_feature_extractor(model, tmp_path, monkeypatch):
    """From a review: with `save_pretrained(push_to_hub=True)` transformers uploads before the save returns, so the
    feature extractor written after it stayed here. The Hub's side is stood in for: the repo, and what the upload
    finds in the folder."""
    from types import SimpleNamespace

    from transformers import modeling_utils
    from transformers.utils.hub import PushToHubMixin

    uploaded = []
    monkeypatch.setattr(modeling_utils, "hf_api", lambda: SimpleNamespace(
        create_repo=lambda repo_id, **_: SimpleNamespace(repo_id=repo_id)))
    monkeypatch.setattr(modeling_utils, "create_and_tag_model_card",
                        lambda *_, **__: SimpleNamespace(save=lambda path: Path(path).write_text("card")))
    monkeypatch.setattr(PushToHubMixin, "_upload_modified_files",
                        lambda self, folder, *_, **__: uploaded.extend(sorted(os.listdir(folder))))
    model.save_pretrained(tmp_path / "pushed", push_to_hub=True, repo_id="someone/model")
    assert {"config.json", "model.safetensors", "preprocessor_config.json"} <= set(uploaded)


def test_untrained_models_warn():
    config = Music2EmoConfig.from_pretrained(TINY_CONFIG)
    config.untrained = True
    with pytest.warns(UntrainedModelWarning, match="random"):
        Music2EmoModel(config)


def test_from_backbone_loads_a_mert_checkpoint_natively(tmp_path, tiny_config):
    """A MERT-v1-style folder (model_type mert_model, legacy weight-norm names) loads into HubertModel, exactly."""
    backbone_config = tiny_config.backbone_config
    torch.manual_seed(3)
    reference = HubertModel(backbone_config).eval()
    state = reference.state_dict()
    g = state.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original0")
    v = state.pop("encoder.pos_conv_embed.conv.parametrizations.weight.original1")
    state["encoder.pos_conv_embed.conv.weight_g"], state["encoder.pos_conv_embed.conv.weight_v"] = g, v
    save_file({k: t.contiguous() for k, t in state.items()}, tmp_path / "model.safetensors", metadata={"format": "pt"})
    mert_json = {k: v for k, v in backbone_config.to_dict().items() if k not in ("model_type", "architectures")}
    mert_json.update(model_type="mert_model", architectures=["MERTModel"], deepnorm=False, attention_relax=-1.0,
                     feature_extractor_cqt=False, feature_extractor_cqt_bins=336, sample_rate=24000)
    (tmp_path / "config.json").write_text(json.dumps(mert_json))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = Music2EmoModel.from_backbone(str(tmp_path), tiny_config).eval()
    assert model.config.untrained and model.config.backbone_name_or_path == str(tmp_path)
    for name, tensor in reference.state_dict().items():
        torch.testing.assert_close(model.backbone.state_dict()[name], tensor, rtol=0, atol=0)
    audio = torch.from_numpy(tone(1.0))[None]
    with torch.no_grad():
        expected = reference(audio, output_hidden_states=True).hidden_states
        got = model.backbone(audio, output_hidden_states=True).hidden_states  # its front end in segments
    for e, g_ in zip(expected, got):
        torch.testing.assert_close(g_, e, rtol=1e-4, atol=1e-5)
    assert type(model.backbone.encoder.pos_conv_embed) is Float32PositionalConvEmbedding  # kept for the new backbone


def test_from_pretrained_names_a_path_that_is_no_model_folder(tmp_path):
    """transformers' own words were the Hub's rules for a repo id ("Repo id must be in the form ...")."""
    (tmp_path / "song.wav").write_bytes(b"RIFF")
    for path, said in ((tmp_path / "missing", "there is no such folder"), (tmp_path / "song.wav", "it is a file, not a "
                                                                                                   "model folder")):
        with pytest.raises(OSError, match=re.escape(f"{path}: {said}.")):
            Music2EmoModel.from_pretrained(str(path))


def test_from_backbone_errors_say_what_to_do(tmp_path, tiny_model_dir):
    with pytest.raises(OSError, match="no such folder"):
        Music2EmoModel.from_backbone(str(tmp_path / "missing"))
    with pytest.raises(OSError, match=re.escape(  # it was taken, and the backbone's weights were all made up
            f"{tiny_model_dir}: holds a 'music2emo' model (config.json's model_type), not a MERT-v1 or Hubert "
            "backbone ('mert_model' or 'hubert'); name the backbone's own folder or Hub id, e.g. m-a-p/MERT-v1-95M.")):
        Music2EmoModel.from_backbone(str(tiny_model_dir))
    from music2emo_hf.hub import hub_reachable

    if hub_reachable():
        pytest.skip("the Hub answers here, so a Hub id does not fail for want of a network")
    with pytest.raises(OSError, match="local folder"):
        Music2EmoModel.from_backbone("no-such-org/no-such-mert-model-xyz")


@pytest.mark.parametrize("projector", ["mlp", "attention"])
def test_the_zero_shot_projector_maps_tracks_and_chunks_into_the_label_space(projector, tmp_path):
    config = Music2EmoConfig.from_pretrained(TINY_CONFIG, label_embedding_dim=384, projector=projector, projector_dim=32,
                                             projector_heads=4)
    torch.manual_seed(0)
    model = Music2EmoModel(config).eval()
    embeddings, durations = torch.randn(2, 3, 64), torch.tensor([[10.0, 10.0, 2.0], [10.0, 0.0, 0.0]])
    with torch.no_grad():
        out = model(chunk_embeddings=embeddings, chunk_durations=durations, chunk_mask=(durations > 0).long())
        padded = embeddings.clone()
        padded[1, 1:] = 99.0  # what padding chunks hold must not matter
        again = model(chunk_embeddings=padded, chunk_durations=durations, chunk_mask=(durations > 0).long())
    assert out.label_embedding.shape == (2, 384) and torch.allclose(out.label_embedding.norm(dim=-1), torch.ones(2))
    assert out.chunk_label_embeddings.shape == (2, 3, 384)
    torch.testing.assert_close(out.chunk_label_embeddings.norm(dim=-1), torch.tensor([[1.0, 1, 1], [1, 0, 0]]))
    torch.testing.assert_close(again.label_embedding, out.label_embedding)
    model.save_pretrained(tmp_path)
    reloaded = Music2EmoModel.from_pretrained(tmp_path).eval()
    assert reloaded.config.projector == projector and reloaded.config.hypothesis_template == "music that feels {}"
    with torch.no_grad():
        torch.testing.assert_close(reloaded(chunk_embeddings=embeddings, chunk_durations=durations).label_embedding[0],
                                   out.label_embedding[0], atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="projector must be 'mlp' or 'attention'"):
        Music2EmoConfig(projector="transformer")


def test_the_backbone_stops_at_the_deepest_pooled_layer_with_identical_features(model):
    audio = torch.from_numpy(tone(1.0))[None]
    last_layer_runs = []
    hook = model.backbone.encoder.layers[-1].register_forward_hook(lambda *_: last_layer_runs.append(1))
    try:
        with torch.no_grad():
            early = model.embed_chunks(audio, torch.tensor([24000]), layers=[1])
            assert last_layer_runs == []  # layer 2 of 2 cannot change hidden_states[1]: it is not run
            full = model.backbone(audio, output_hidden_states=True).hidden_states
    finally:
        hook.remove()
    assert last_layer_runs == [1] and len(model.backbone.encoder.layers) == 2
    assert torch.equal(early, full[1].mean(dim=1))


def _four_layer_model(**backbone) -> Music2EmoModel:
    config = Music2EmoConfig.from_pretrained(TINY_CONFIG)
    config.backbone_config.num_hidden_layers = 4
    for name, value in backbone.items():
        setattr(config.backbone_config, name, value)
    config.pooled_layers = [1, 2]
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        return Music2EmoModel(config).eval()


def test_the_backbone_stays_whole_for_its_own_calls_and_for_threads_sharing_the_model():
    """From a review: the pooled stage shortened the backbone's layer list for each call, so transformers' hidden-state
    recorders, set up at the first call, missed the later layers for good (its own `output_hidden_states` gave 3 of
    5 states, and deeper `layers` were refused), and a thread could put back another's short list: the model was then
    saved without those layers."""
    from concurrent.futures import ThreadPoolExecutor

    model = _four_layer_model()
    audio = torch.from_numpy(tone(1.0))[None]
    lengths = torch.tensor([24000])
    with torch.no_grad():
        model.embed_chunks(audio, lengths)  # layers 1-2: two of four run
        full = model.backbone(audio, output_hidden_states=True).hidden_states
        assert len(full) == 5
        hooks = [len(m._forward_hooks) + len(m._forward_pre_hooks)  # transformers' own hidden-state recorders
                 for m in (model.backbone.encoder.dropout, *model.backbone.encoder.layers)]
        deep = model.embed_chunks(audio, lengths, layers=[3, 4])
        assert torch.equal(deep, torch.cat([full[3].mean(dim=1), full[4].mean(dim=1)], dim=-1))
        keys = set(model.state_dict())
        asks = [[1], [4], [2, 3], [0]] * 16
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda layers: model.embed_chunks(audio, lengths, layers=layers), asks))
    for layers, answer in zip(asks, answers):
        assert torch.equal(answer, torch.cat([full[i].mean(dim=1) for i in layers], dim=-1)), layers
    assert set(model.state_dict()) == keys and len(model.backbone.encoder.layers) == 4
    modules = [model.backbone.encoder.dropout, *model.backbone.encoder.layers]
    assert [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in modules] == hooks  # none of ours left on it
    encoder = model.backbone.encoder
    encoder.layers = torch.nn.ModuleList([encoder.layers[0], encoder.layers[2], encoder.layers[3]])  # one pruned
    with torch.no_grad():
        pruned = model.backbone(audio, output_hidden_states=True).hidden_states
        assert torch.equal(model.embed_chunks(audio, lengths, layers=[1, 2]),
                           torch.cat([pruned[1].mean(dim=1), pruned[2].mean(dim=1)], dim=-1))


def test_a_layer_layerdrop_skips_in_training_passes_its_input_on():
    """MERT-v1-95M's configuration has LayerDrop 0.05: training through the backbone outside the training scripts
    (which turn it off) failed on about a third of the steps ("the backbone skipped layers"). A skipped layer's hidden
    state is its input, as in the backbone: with every layer skipped, all pooled layers are the first's input."""
    model = _four_layer_model(layerdrop=1.0, hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                              feat_proj_dropout=0.0, apply_spec_augment=False).train()
    pooled = model.embed_chunks(torch.from_numpy(tone(1.0))[None], torch.tensor([24000]), layers=[0, 1, 2])
    width = model.config.backbone_config.hidden_size
    assert torch.equal(pooled[:, :width], pooled[:, width : 2 * width])
    assert torch.equal(pooled[:, :width], pooled[:, 2 * width :])
    pooled.sum().backward()  # and it trains
    assert model.backbone.feature_projection.projection.weight.grad is not None


@pytest.mark.parametrize("norm", ["group", "layer"])
def test_the_front_end_runs_in_segments_and_gives_the_whole_chunks_features(tiny_config, norm):
    """At inference no activation of a whole chunk is held (the memory a 30 s chunk took), and the features are
    those of the whole chunk: the group norm's statistics span it (audio with a DC offset, where they matter)."""
    config = copy.deepcopy(tiny_config)
    config.backbone_config.feat_extract_norm = norm
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        front_end = Music2EmoModel(config).eval().backbone.feature_extractor
    audio = torch.from_numpy(np.stack([tone(5.3) + 0.3, tone(5.3, freq=330.0, seed=1)]))
    lengths = []
    hook = front_end.conv_layers[0].conv.register_forward_hook(lambda *args: lengths.append(args[2].shape[-1]))
    try:
        with torch.no_grad():
            segmented = front_end(audio)
            whole = HubertFeatureEncoder.forward(front_end, audio)
    finally:
        hook.remove()
    frames = (audio.shape[-1] - 400) // 320 + 1
    assert segmented.shape == whole.shape == (2, 16, frames)
    torch.testing.assert_close(segmented, whole, rtol=1e-4, atol=1e-5)
    assert len(lengths) - 1 == math.ceil(frames / SEGMENT_FRAMES)  # the group norm's statistics need no pass of it
    assert max(lengths[:-1]) <= SEGMENT_FRAMES * 64 + 15 < lengths[-1]  # the last call: the whole chunk
    front_end.train()
    lengths.clear()
    front_end.conv_layers[0].conv.register_forward_hook(lambda *args: lengths.append(args[2].shape[-1]))
    front_end(audio)
    assert lengths == [(audio.shape[-1] - 10) // 5 + 1]  # training: the whole chunk, as Hubert runs it


def _positional_output_dtypes(model, device: str) -> list[torch.dtype]:
    """The dtypes the positional convolution puts out for one chunk under bfloat16 autocast on `device`."""
    dtypes = []
    hook = model.backbone.encoder.pos_conv_embed.conv.register_forward_hook(lambda *args: dtypes.append(args[2].dtype))
    try:
        with torch.inference_mode(), torch.autocast(device, dtype=torch.bfloat16):
            model.embed_chunks(torch.from_numpy(tone(1.0))[None].to(device), torch.tensor([24000], device=device))
    finally:
        hook.remove()
    return dtypes


def test_the_positional_convolution_keeps_cpu_autocast_as_it_is(model, tmp_path):
    """Its float32 rule is for cuDNN's slow bfloat16 kernels; on a CPU autocast applies as usual, after a reload too."""
    model.save_pretrained(tmp_path)
    reloaded = Music2EmoModel.from_pretrained(tmp_path).eval()
    assert type(reloaded.backbone.encoder.pos_conv_embed) is Float32PositionalConvEmbedding
    assert _positional_output_dtypes(reloaded, "cpu") == [torch.bfloat16]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_the_positional_convolution_runs_in_float32_under_cuda_autocast(model):
    on_gpu = copy.deepcopy(model).cuda()
    assert _positional_output_dtypes(on_gpu, "cuda") == [torch.float32]
    assert _positional_output_dtypes(on_gpu.to(torch.bfloat16), "cuda") == [torch.bfloat16]  # half weights: as it was


def test_from_pretrained_keeps_transformers_call_forms_and_a_folder_has_no_hub_commit(tiny_model_dir):
    """The override that remembers a Hub model's commit returns what transformers returns: (model, info) when asked,
    and a model made from a config and a state dict, with no name, loads too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model, info = Music2EmoModel.from_pretrained(tiny_model_dir, output_loading_info=True)
        assert model.hub_commit is None and not info["missing_keys"]
        again = Music2EmoModel.from_pretrained(None, config=model.config, state_dict=model.state_dict())
    assert again.hub_commit is None
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), model.state_dict().values()))


def test_the_auto_classes_and_return_dict_behave_as_in_transformers(tiny_model_dir, capfd):
    """From a review: `AutoProcessor` stopped at "Do you wish to run the custom code? [y/N]" (a notebook waits
    for ever), and `return_dict=False` was refused as an unknown argument."""
    import transformers
    from transformers import AutoConfig, AutoFeatureExtractor, AutoModel, AutoProcessor

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = AutoModel.from_pretrained(tiny_model_dir).eval()
    assert isinstance(AutoConfig.from_pretrained(tiny_model_dir), Music2EmoConfig) and isinstance(model, Music2EmoModel)
    for auto in (AutoFeatureExtractor, AutoProcessor):
        assert isinstance(auto.from_pretrained(tiny_model_dir), Music2EmoFeatureExtractor)
    assert "custom code" not in capfd.readouterr().out  # no question asked
    inputs = _inputs([tone(1.5)])
    with torch.no_grad():
        output, as_tuple = model(**inputs), model(**inputs, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == len(output.to_tuple())
    assert all(torch.equal(a, b) if isinstance(a, torch.Tensor) else a.keys() == b.keys()
               for a, b in zip(as_tuple, output.to_tuple()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        pipe = transformers.pipeline("music-emotion", model=str(tiny_model_dir), runtime="torch",
                                     model_kwargs={"return_dict": False})
    assert not pipe.model.config.return_dict and "valence" in pipe(tone(1.5))  # the pipeline reads fields by name
