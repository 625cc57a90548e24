"""Music2EmoModel: MERT backbone -> per-chunk layer means -> pooling over chunks -> fused with a chord encoder
and the key's mode -> shared trunk -> one head per task."""

from __future__ import annotations

import json
import math
import os
import warnings
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial

import numpy as np
import torch
from torch import nn
from transformers import HubertConfig, HubertModel, PreTrainedModel
from transformers import initialization as init
from transformers.models.hubert.modeling_hubert import (
    HubertFeatureEncoder,
    HubertGroupNormConvLayer,
    HubertPositionalConvEmbedding,
)
from transformers.utils import ModelOutput, cached_file
from transformers.utils import logging as hf_logging

from .configuration_music2emo import Music2EmoConfig, hubert_config_from_mert
from .hub import hub_reachable, loaded_commit, not_a_model_folder, unreadable_weights
from .losses import regression_loss, tag_loss


class UntrainedModelWarning(UserWarning):
    """The model's weights are random (written by `music2emo init`): its outputs are not predictions."""


@dataclass
class Music2EmoOutput(ModelOutput):
    """Outputs of [`Music2EmoModel`].

    Args:
        loss: sum of the task losses present in the batch (when `labels` are given).
        task_losses: each task's loss over the rows labelled for it.
        logits: per multilabel task, (batch, labels) logits; `sigmoid` gives per-label probabilities.
        regression: per regression task, (batch, outputs) on the task's native scale (e.g. valence/arousal on 1-9).
        pooled_embedding: (batch, embedding_dim) mean of the chunk embeddings, weighted by duration or plain as
            `config.pooling` says, as the trunk sees it (standardized when `config.standardize_embeddings`).
        chunk_embeddings: (batch, chunks, embedding_dim); rows of padding chunks are zero.
        chunk_logits, chunk_regression: the heads applied to each chunk's embedding (with the track's harmony), for
            per-segment curves.
        label_embedding: (batch, label_embedding_dim) the track projected into the label encoder's space, unit length
            (models with a zero-shot projector); its cosine with a label's embedding scores that label.
        chunk_label_embeddings: (batch, chunks, label_embedding_dim) each chunk projected alone (zero for padding).
    """

    loss: torch.FloatTensor | None = None
    task_losses: dict[str, torch.FloatTensor] | None = None
    logits: dict[str, torch.FloatTensor] | None = None
    regression: dict[str, torch.FloatTensor] | None = None
    pooled_embedding: torch.FloatTensor | None = None
    chunk_embeddings: torch.FloatTensor | None = None
    chunk_logits: dict[str, torch.FloatTensor] | None = None
    chunk_regression: dict[str, torch.FloatTensor] | None = None
    label_embedding: torch.FloatTensor | None = None
    chunk_label_embeddings: torch.FloatTensor | None = None


class Float32PositionalConvEmbedding(HubertPositionalConvEmbedding):
    """MERT's positional convolution (kernel 128, 16 groups), run in float32 (TF32) under CUDA autocast, where
    cuDNN's bfloat16 kernels for it are slow: for eight 30 s chunks on an H100 they took 21.2 ms of a 48.0 ms
    backbone call, the float32 ones 2.8 ms of 29.5 (`python benchmarks/backbone_modules.py --device cuda --batches 8
    --compare-positional`). Same weights and state dict; CPUs keep autocast as it is, and so do weights already
    loaded in half precision (they cannot take float32 inputs)."""

    def forward(self, hidden_states):
        float32_weights = next(self.parameters()).dtype == torch.float32
        if hidden_states.is_cuda and torch.is_autocast_enabled("cuda") and float32_weights:
            with torch.autocast("cuda", enabled=False):
                return super().forward(hidden_states.float())
        return super().forward(hidden_states)


# Output frames the front end computes at a time at inference: 1.7 s of MERT's 24 kHz audio. On a 30 s chunk the
# front end's activations, held whole, were most of the 766 MiB an OpenVINO call kept (its first layer's output alone
# is 281 MiB in float32); in segments of 128 frames the call keeps 317 MiB, in the same time or less
# (docs/speed-and-memory.md).
SEGMENT_FRAMES = 128


class SegmentedFeatureEncoder(HubertFeatureEncoder):
    """MERT's convolutional front end, run at inference over SEGMENT_FRAMES output frames of audio at a time, so that
    no activation of a whole chunk is held. The same features: the first layer's group norm takes its statistics
    over the whole chunk, and they are computed first (`first_norm`); every later layer sees only its receptive
    field. Training runs the whole chunk, as Hubert does. Same weights and state dict.

    Given front-end features, (chunks, channels, frames), instead of (chunks, samples) audio, it passes them through:
    how the rest of the backbone runs on features an exported front end computed (`runtimes.py`)."""

    def forward(self, input_values):
        if input_values.dim() == 3:
            return input_values
        return super().forward(input_values) if self.training else self.segmented(input_values)

    @property
    def frame_field(self) -> tuple[int, int]:
        """(receptive field, hop) of one output frame, in samples (400 and 320 for MERT)."""
        field, hop = 1, 1
        for layer in self.conv_layers:
            field += (layer.conv.kernel_size[0] - 1) * hop
            hop *= layer.conv.stride[0]
        return field, hop

    def first_norm(self, audio: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(chunks, samples) audio -> the first layer's norm over the whole of each chunk as a (chunks, channels, 1)
        scale and shift; for a front end normalised per frame (Hubert's "layer" norm), ones and zeros."""
        first = self.conv_layers[0]
        if not isinstance(first, HubertGroupNormConvLayer):
            ones = audio.new_ones(len(audio), first.conv.out_channels, 1, dtype=first.conv.weight.dtype)
            return ones, torch.zeros_like(ones)
        # The layer's convolution is linear in the audio's windows, so its output's mean and variance over the chunk
        # follow from the windows' mean and covariance (kernel-sized) without computing that output: 5 ms for a 30 s
        # chunk on a CPU, where computing it and its statistics took 0.3 s. In float64 (float32 on MPS, which has no
        # float64): neighbouring samples are close, so a filter's variance is a small difference of large terms.
        exact = torch.float32 if audio.device.type == "mps" else torch.float64
        with torch.autocast(audio.device.type, enabled=False):
            windows = audio.to(exact).unfold(-1, first.conv.kernel_size[0], first.conv.stride[0])
            mean_window = windows.mean(dim=1, keepdim=True)  # (chunks, 1, kernel)
            centred = windows - mean_window
            covariance = centred.transpose(1, 2) @ centred / windows.shape[1]  # (chunks, kernel, kernel)
            weight = first.conv.weight[:, 0].to(exact)  # (channels, kernel)
            mean = mean_window[:, 0] @ weight.T + (0 if first.conv.bias is None else first.conv.bias.to(exact))
            variance = ((weight @ covariance) * weight).sum(dim=-1)  # each channel's w' C w: (chunks, channels)
        norm = first.layer_norm
        scale = norm.weight.to(exact) * torch.rsqrt(variance + norm.eps)
        shift = norm.bias.to(exact) - mean * scale
        return scale[..., None].to(norm.weight.dtype), shift[..., None].to(norm.weight.dtype)

    def segment(self, audio: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        """(chunks, samples) audio spanning some frames' receptive fields -> those frames' (chunks, channels,
        frames) features, the first layer normalised by `first_norm`'s scale and shift (what exported runtimes run
        as their front end)."""
        first, hidden = self.conv_layers[0], audio[:, None]
        if isinstance(first, HubertGroupNormConvLayer):
            hidden = first.activation(first.conv(hidden) * scale + shift)
        else:
            hidden = first(hidden) * scale + shift
        for layer in self.conv_layers[1:]:
            hidden = layer(hidden)
        return hidden

    def segmented(self, audio: torch.Tensor, segment=None) -> torch.Tensor:
        """(chunks, samples) audio -> (chunks, channels, frames) features, SEGMENT_FRAMES frames at a time by
        `segment` (default `self.segment`; an exported runtime passes its own)."""
        segment = segment or self.segment
        field, hop = self.frame_field
        frames = (audio.shape[-1] - field) // hop + 1
        scale, shift = self.first_norm(audio)
        return torch.cat([segment(audio[:, start * hop:(min(start + SEGMENT_FRAMES, frames) - 1) * hop + field],
                                  scale, shift) for start in range(0, frames, SEGMENT_FRAMES)], dim=-1)


def adapted_backbone(backbone: HubertModel) -> HubertModel:
    """`backbone` with its positional convolution made a `Float32PositionalConvEmbedding` and its front end a
    `SegmentedFeatureEncoder`, in place."""
    backbone.encoder.pos_conv_embed.__class__ = Float32PositionalConvEmbedding
    backbone.feature_extractor.__class__ = SegmentedFeatureEncoder
    return backbone


@dataclass
class _LayerStates:
    """The hidden states of one call of the backbone's layers, up to `depth` of them: the layers' input, and each
    layer's output by its index (a layer LayerDrop skipped has none: it passed its input on)."""

    depth: int
    first_input: torch.Tensor | None = None
    outputs: dict[int, torch.Tensor] = field(default_factory=dict)

    def hidden_states(self) -> list[torch.Tensor]:
        """`hidden_states[: depth + 1]`, as the backbone's `output_hidden_states` indexes them."""
        states = [self.first_input]
        for index in range(self.depth):
            states.append(self.outputs.get(index, states[-1]))
        return states


class _PastDeepestLayer(Exception):
    """Raised before the first layer a call does not need, so that the backbone runs no further."""


_LAYER_STATES: ContextVar[_LayerStates | None] = ContextVar("music2emo_layer_states", default=None)  # per thread


def _before_layers(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
    states = _LAYER_STATES.get()  # None: another thread's call of the backbone, while this one's hooks are on it
    if states is not None:
        states.first_input = output  # the encoder's dropout, the last step before its layers (in both layouts)


def _before_layer(index: int, module: nn.Module, args: tuple) -> None:
    states = _LAYER_STATES.get()
    if states is not None and index >= states.depth:
        raise _PastDeepestLayer


def _after_layer(index: int, module: nn.Module, args: tuple, output) -> None:
    states = _LAYER_STATES.get()
    if states is not None:
        states.outputs[index] = output[0] if isinstance(output, tuple) else output


def run_layers(backbone: HubertModel, inputs: torch.Tensor, depth: int) -> list[torch.Tensor]:
    """`backbone(inputs, output_hidden_states=True).hidden_states[: depth + 1]`, running only its first `depth`
    layers: the ones after the deepest pooled layer cannot change the pooled features, and they are 5 of
    MERT-v1-95M's 12 for Music2Emo's layers 6-7. Hooks on its layers, for this call only, record the states and end
    the call past `depth`; the backbone itself is left whole (shortening its layer list for a call broke its own
    `output_hidden_states`, and a thread's call could leave another's short list in place, to be saved so). A layer
    LayerDrop skips in training passes its input on, as in the backbone."""
    encoder, states = backbone.encoder, _LayerStates(depth)
    hooks = [encoder.dropout.register_forward_hook(_before_layers)]
    for index, layer in enumerate(encoder.layers):
        hooks.append(layer.register_forward_pre_hook(partial(_before_layer, index)))
        hooks.append(layer.register_forward_hook(partial(_after_layer, index)))
    token = _LAYER_STATES.set(states)
    try:
        backbone(inputs)
    except _PastDeepestLayer:
        pass
    finally:
        _LAYER_STATES.reset(token)
        for hook in hooks:
            hook.remove()
    return states.hidden_states()


def sinusoidal_positions(length: int, dim: int) -> torch.Tensor:
    """The Transformer paper's fixed positional encoding (sin on even, cos on odd features), as Music2Emo used."""
    position = torch.arange(length, dtype=torch.float32)[:, None]
    frequency = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
    encoding = torch.zeros(length, dim)
    encoding[:, 0::2] = torch.sin(position * frequency)
    encoding[:, 1::2] = torch.cos(position * frequency)
    return encoding


class Music2EmoChordEncoder(nn.Module):
    """Chord segments (root and quality embeddings + fixed positions) through a small transformer; returns the CLS.

    The CLS token is prepended after the positional encoding (so it carries none), as in Music2Emo."""

    def __init__(self, config: Music2EmoConfig):
        super().__init__()
        dim = 2 * config.chord_embedding_dim
        self.root_embedding = nn.Embedding(len(config.chord_roots), config.chord_embedding_dim)
        self.quality_embedding = nn.Embedding(len(config.chord_qualities), config.chord_embedding_dim)
        self.register_buffer("positions", sinusoidal_positions(config.max_chords, dim), persistent=False)
        self.cls_token = nn.Parameter(torch.zeros(dim)) if config.chord_cls == "learned" else None
        layer = nn.TransformerEncoderLayer(
            d_model=dim,
            nhead=config.chord_heads,
            dim_feedforward=config.chord_ffn_dim,
            dropout=config.chord_dropout,
            activation="relu",
            batch_first=True,
        )
        self.transformer = nn.TransformerEncoder(layer, num_layers=config.chord_layers, enable_nested_tensor=False)
        self.use_padding_mask = config.chord_padding_mask

    def forward(self, root_ids: torch.LongTensor, quality_ids: torch.LongTensor, mask: torch.Tensor) -> torch.Tensor:
        if self.use_padding_mask:  # masked padding changes nothing, so the batch's longest sequence is enough: short
            longest = int(mask.sum(dim=1).max())  # clips have a few chords of max_chords (training ran 3x faster)
            root_ids, quality_ids, mask = root_ids[:, :longest], quality_ids[:, :longest], mask[:, :longest]
        tokens = torch.cat([self.root_embedding(root_ids), self.quality_embedding(quality_ids)], dim=-1)
        tokens = tokens + self.positions[: tokens.shape[1]]
        cls = self.cls_token if self.cls_token is not None else tokens.new_zeros(tokens.shape[-1])
        sequence = torch.cat([cls.expand(tokens.shape[0], 1, -1), tokens], dim=1)
        padding = None
        if self.use_padding_mask:
            padding = torch.cat([mask.new_ones(mask.shape[0], 1), mask], dim=1) == 0
        return self.transformer(sequence, src_key_padding_mask=padding)[:, 0]


class Music2EmoResidualFeedForward(nn.Module):
    """x + FFN(LayerNorm(x)): a pre-norm transformer block without attention."""

    def __init__(self, width: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.feed_forward = nn.Sequential(
            nn.Linear(width, 4 * width), nn.GELU(), nn.Dropout(dropout), nn.Linear(4 * width, width), nn.Dropout(dropout)
        )

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden + self.feed_forward(self.norm(hidden))


class Music2EmoProjector(nn.Module):
    """Audio into the label encoder's text space, for zero-shot labels (`Music2EmoConfig.projector`).

    `mlp`: the pooled embedding (`config.pooling`) and the harmony features through residual feed-forward blocks.
    `attention`: the chunk embeddings (with fixed positions), a harmony token and a CLS through a transformer, read at
    the CLS, so a track's parts weigh by what they hold rather than by their length."""

    def __init__(self, config: Music2EmoConfig, harmony_dim: int):
        super().__init__()
        width = config.projector_dim
        self.attention = config.projector == "attention"
        if self.attention:
            self.input = nn.Linear(config.embedding_dim, width)
            self.harmony = nn.Linear(harmony_dim, width)
            self.cls_token = nn.Parameter(torch.zeros(width))
            layer = nn.TransformerEncoderLayer(
                width, config.projector_heads, 4 * width, config.projector_dropout, activation="gelu",
                batch_first=True, norm_first=True,
            )
            self.encoder = nn.TransformerEncoder(layer, config.projector_layers, enable_nested_tensor=False)
        else:
            self.input = nn.Linear(config.embedding_dim + harmony_dim, width)
            self.blocks = nn.ModuleList(
                Music2EmoResidualFeedForward(width, config.projector_dropout) for _ in range(config.projector_layers)
            )
        self.norm = nn.LayerNorm(width)
        self.output = nn.Linear(width, config.label_embedding_dim)

    def forward(self, features: torch.Tensor, weights: torch.Tensor, harmony: torch.Tensor) -> torch.Tensor:
        """(batch, chunks, dim) chunk features, (batch, chunks) pooling weights (0 marks padding) and (batch,
        harmony_dim) harmony features -> (batch, label_embedding_dim), unit length."""
        if self.attention:
            tokens = self.input(features)
            tokens = tokens + sinusoidal_positions(tokens.shape[1], tokens.shape[2]).to(tokens)
            sequence = torch.cat([self.cls_token.expand(len(tokens), 1, -1), self.harmony(harmony)[:, None], tokens], 1)
            padding = torch.cat([weights.new_zeros(len(tokens), 2, dtype=torch.bool), weights == 0], dim=1)
            hidden = self.encoder(sequence, src_key_padding_mask=padding)[:, 0]
        else:
            pooled = (features * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(1e-8)
            hidden = self.input(torch.cat([pooled, harmony], dim=-1))
            for block in self.blocks:
                hidden = block(hidden)
        return nn.functional.normalize(self.output(self.norm(hidden)), dim=-1)

    def project_chunks(self, features: torch.Tensor, real: torch.Tensor, harmony: torch.Tensor) -> torch.Tensor:
        """Each chunk as a track of its own (with the track's harmony): (batch, chunks, label_embedding_dim)."""
        batch, chunks, dim = features.shape
        flat = self(
            features.reshape(batch * chunks, 1, dim),
            features.new_ones(batch * chunks, 1),
            harmony.repeat_interleave(chunks, dim=0),
        )
        return flat.reshape(batch, chunks, -1) * real[..., None]


def _without_load_report(record) -> bool:
    """A logging filter: transformers' report of a weights file's missing and unexpected tensors is left out."""
    return "LOAD REPORT" not in record.getMessage()


def _unfit_weights(info: dict) -> str | None:
    """Why the weights a model was loaded from do not make it whole (`from_pretrained`'s loading info), or None."""
    def named(keys) -> str:
        keys = sorted(keys)
        return ", ".join(keys[:3]) + (f" and {len(keys) - 3} more" if len(keys) > 3 else "")

    if missing := info["missing_keys"]:
        return (f"its weights file lacks tensors the model needs ({named(missing)}): it is damaged or was saved for "
                "another config.json; copy the folder whole, or save the model there again")
    if unexpected := info["unexpected_keys"]:
        return (f"its weights file holds tensors its config.json has no place for ({named(unexpected)}): config.json "
                "was edited (a task or head removed?) or belongs to another model; restore it")
    return None


class Music2EmoPreTrainedModel(PreTrainedModel):
    config: Music2EmoConfig
    config_class = Music2EmoConfig
    base_model_prefix = "music2emo"
    main_input_name = "input_values"
    input_modalities = "audio"
    supports_gradient_checkpointing = True
    _supports_sdpa = True

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """As transformers loads a model; one from the Hub also keeps the commit its files came from (`hub_commit`,
        None for a folder): answers name it, and the model's other files (BTC's weights) are read at it.
        A weights file that lacks a tensor the model needs, or holds one its config has no place for, is refused:
        transformers fills the first with random values and drops the second, and only logs it (its report, which
        advises training the new values, is not logged then). Asked for `output_loading_info`, it returns the model
        with that information instead, and the report is logged."""
        if isinstance(pretrained_model_name_or_path, str | os.PathLike) and (
                why := not_a_model_folder(os.fspath(pretrained_model_name_or_path))):
            raise OSError(f"{pretrained_model_name_or_path}: {why}.")  # not the Hub's rules for a repo id
        wanted = kwargs.pop("output_loading_info", False)
        logger = hf_logging.get_logger("transformers.modeling_utils")  # a filter: its level changes what it does
        if not wanted:
            logger.addFilter(_without_load_report)
        try:
            model, info = super().from_pretrained(pretrained_model_name_or_path, *args, output_loading_info=True,
                                                  **kwargs)
        finally:
            logger.removeFilter(_without_load_report)
        if not wanted and (unfit := _unfit_weights(info)):
            raise ValueError(unfit)
        model.hub_commit = None if pretrained_model_name_or_path is None else loaded_commit(
            pretrained_model_name_or_path, kwargs.get("revision"), kwargs.get("cache_dir"))
        return (model, info) if wanted else model

    def save_pretrained(self, save_directory, is_main_process: bool = True, *args, **kwargs):
        """As transformers saves a model, plus the feature extractor its config implies where the folder has none (as
        `Trainer` saves a model alone): without it, the pipeline could not load the folder."""
        saved = super().save_pretrained(save_directory, is_main_process, *args, **kwargs)
        if is_main_process:
            self._write_feature_extractor(save_directory)
        return saved

    def _upload_modified_files(self, working_dir, *args, **kwargs):
        """transformers' upload of a folder it saved (`push_to_hub`): its feature extractor is written first, so that
        it is published too (`save_pretrained` writes it only after transformers' own save, and upload, end)."""
        self._write_feature_extractor(working_dir)
        return super()._upload_modified_files(working_dir, *args, **kwargs)

    def _write_feature_extractor(self, folder) -> None:
        from transformers.utils import FEATURE_EXTRACTOR_NAME

        from .feature_extraction_music2emo import Music2EmoFeatureExtractor

        if not os.path.isfile(os.path.join(folder, FEATURE_EXTRACTOR_NAME)):
            Music2EmoFeatureExtractor(self.config.sampling_rate, self.config.chunk_seconds).save_pretrained(folder)

    @classmethod
    def is_custom_code(cls) -> bool:
        """transformers skips initialising parameter-less modules of custom code, in case their `_init_weights` writes
        tensors in place. Ours only uses the flag-aware `transformers.initialization` functions, so it opts out,
        which lets the model-level rule below (regression bias) run."""
        return False

    @torch.no_grad()
    def _init_weights(self, module):
        super()._init_weights(module)
        if isinstance(module, Music2EmoChordEncoder):
            # Non-persistent buffers are not in checkpoints; from_pretrained builds the model without data, so the
            # fixed positions must be (re)computed here.
            init.copy_(module.positions, sinusoidal_positions(*module.positions.shape))
            init.xavier_uniform_(module.root_embedding.weight)
            init.xavier_uniform_(module.quality_embedding.weight)
            if module.cls_token is not None:
                init.normal_(module.cls_token, std=self.config.backbone_config.initializer_range)
        if isinstance(module, Music2EmoProjector) and module.attention:
            init.normal_(module.cls_token, std=self.config.backbone_config.initializer_range)
        if isinstance(module, Music2EmoModel):
            # An untrained regression head starts at the neutral middle of its scale rather than at 0, which may lie
            # outside the scale (1-9 for valence/arousal).
            for task in self.config.tasks_of_type("regression"):
                init.constant_(module.heads[task["name"]][-1].bias, self.config.scale_of(task).midpoint)
            if self.config.standardize_embeddings:  # identity until training sets them
                init.zeros_(module.embedding_mean)
                init.ones_(module.embedding_scale)


class Music2EmoModel(Music2EmoPreTrainedModel):
    """Track-level emotion model. Feed either audio chunks (`input_values` from `Music2EmoFeatureExtractor`) or
    precomputed `chunk_embeddings` (a feature cache), plus chord tokens from `harmony_inputs`."""

    def __init__(self, config: Music2EmoConfig):
        super().__init__(config)
        self.backbone = adapted_backbone(HubertModel(config.backbone_config))
        self.chord_encoder = Music2EmoChordEncoder(config)
        if config.standardize_embeddings:
            self.register_buffer("embedding_mean", torch.zeros(config.embedding_dim))
            self.register_buffer("embedding_scale", torch.ones(config.embedding_dim))
        harmony_dim = 2 * config.chord_embedding_dim + int(config.use_mode)
        fused_dim = config.embedding_dim + harmony_dim
        self.input_proj = nn.Sequential(nn.Linear(fused_dim, config.trunk_dim), nn.ReLU(), nn.Dropout(config.dropout))
        self.heads = nn.ModuleDict(
            {
                task["name"]: nn.Sequential(
                    nn.Linear(config.trunk_dim, config.head_hidden_dim),
                    nn.ReLU(),
                    nn.Dropout(config.dropout),
                    nn.Linear(config.head_hidden_dim, len(task["labels"])),
                )
                for task in config.tasks
            }
        )
        self.projector = Music2EmoProjector(config, harmony_dim) if config.label_embedding_dim else None
        if config.untrained:
            warnings.warn(
                "This Music2Emo model is randomly initialised (config.untrained): its outputs are random numbers, "
                "not predictions. Train it, or load a trained checkpoint.",
                UntrainedModelWarning,
                stacklevel=2,
            )
        self.post_init()

    @classmethod
    def from_backbone(cls, backbone_name_or_path: str, config: Music2EmoConfig | None = None) -> Music2EmoModel:
        """A new model whose backbone holds pretrained MERT-v1 (or Hubert) weights and whose other parts are random.

        `config` gives everything but the backbone (default: `Music2EmoConfig()`); the backbone's architecture is
        read from its own `config.json`. MERT-v1's config (model_type "mert_model") is mapped onto `HubertConfig`, so
        no remote code runs. Works offline with a local folder holding `config.json` and the weights."""
        local = os.path.isdir(backbone_name_or_path)
        if not local and (os.path.isabs(backbone_name_or_path) or backbone_name_or_path.startswith(".")):
            raise OSError(f"{backbone_name_or_path}: no such folder (expected the backbone's config.json and weights).")
        offline = not local and not hub_reachable()
        try:
            config_file = cached_file(backbone_name_or_path, "config.json", local_files_only=offline)
        except OSError as error:
            raise OSError(
                f"{backbone_name_or_path}: could not get the backbone's config.json ({error}). Without access to the "
                "Hugging Face Hub, pass a local folder holding the backbone's config.json and weights."
            ) from error
        with open(config_file, encoding="utf-8") as handle:
            raw = json.load(handle)
        if raw.get("model_type") not in ("hubert", "mert_model"):  # else its weights would match nothing: all random
            raise OSError(f"{backbone_name_or_path}: holds a {raw.get('model_type')!r} model (config.json's "
                          "model_type), not a MERT-v1 or Hubert backbone ('mert_model' or 'hubert'); name the "
                          "backbone's own folder or Hub id, e.g. m-a-p/MERT-v1-95M.")
        if raw.get("model_type") == "hubert":
            backbone_config = HubertConfig(**{k: v for k, v in raw.items() if k != "model_type"})
        else:
            backbone_config = hubert_config_from_mert(raw)
        settings = (config or Music2EmoConfig()).to_dict()
        for key in ("backbone_config", "backbone_name_or_path", "untrained", "model_type", "transformers_version"):
            settings.pop(key, None)
        config = Music2EmoConfig(
            backbone_config=backbone_config, backbone_name_or_path=backbone_name_or_path, untrained=True, **settings
        )
        model = cls(config)
        # Legacy checkpoints store weight-norm as weight_g/weight_v; torch's compatibility hook converts them on load,
        # but transformers still reports them as unused/missing (transformers #26796). The hook's result is exact.
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()
        try:
            model.backbone = adapted_backbone(
                HubertModel.from_pretrained(backbone_name_or_path, config=backbone_config, local_files_only=offline)
            )
        except Exception as error:
            damaged = unreadable_weights(error)
            if damaged is None:
                raise
            raise OSError(f"{backbone_name_or_path} (the backbone): {damaged}.") from error
        finally:
            hf_logging.set_verbosity(verbosity)
        return model

    def embed_chunks(
        self, input_values: torch.Tensor, chunk_lengths: torch.Tensor, layers: Sequence[int] | None = None
    ) -> torch.Tensor:
        """(chunks, samples) audio with each chunk's real length -> (chunks, len(layers) * hidden_size): the time
        mean of each of `layers` (hidden_states indices; default `config.pooled_layers`, giving embedding_dim).

        Chunks of equal length run as one batch; each runs at its real length, never zero-padded (group norm). The
        backbone stops at the deepest layer asked for."""
        layers = self.config.pooled_layers if layers is None else list(layers)
        embeddings = input_values.new_zeros(len(input_values), len(layers) * self.config.backbone_config.hidden_size)
        for length in torch.unique(chunk_lengths).tolist():
            rows = (chunk_lengths == length).nonzero(as_tuple=True)[0]
            pooled = self.embed_equal_chunks(input_values[rows, :length], layers)
            embeddings[rows] = pooled.to(embeddings.dtype)  # bfloat16 under autocast
        return embeddings

    def embed_equal_chunks(self, input_values: torch.Tensor, layers: Sequence[int] | None = None) -> torch.Tensor:
        """`embed_chunks` for chunks that all run at their full length, with no data-dependent shapes. Takes
        (chunks, samples) audio, or the (chunks, channels, frames) features of the backbone's front end: from those,
        the graph that inference runtimes export (`runtimes.py`)."""
        layers = self.config.pooled_layers if layers is None else list(layers)
        hidden_states = run_layers(self.backbone, input_values, max(layers))
        return torch.cat([hidden_states[i].mean(dim=1) for i in layers], dim=-1)

    def harmony_inputs(self, harmonies: Sequence, device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
        """Chord tokens and mode for a batch of `harmony.Harmony` results, in this model's vocabulary."""
        tokens = [h.tokens(self.config.chord_roots, self.config.chord_qualities, self.config.max_chords) for h in harmonies]
        names = ("chord_root_ids", "chord_quality_ids", "chord_mask", "mode_ids")
        keys = ("chord_root_ids", "chord_quality_ids", "chord_mask", "mode_id")
        return {
            name: torch.as_tensor(np.stack([t[key] for t in tokens]), dtype=torch.long, device=device or self.device)
            for name, key in zip(names, keys)
        }

    def _harmony_features(self, batch: int, chord_root_ids, chord_quality_ids, chord_mask, mode_ids, device) -> torch.Tensor:
        """The chord encoder's CLS (and the mode): without chord inputs, a track is 'no chords, major'."""
        if chord_root_ids is None:
            chord_root_ids = torch.zeros(batch, 1, dtype=torch.long, device=device)
            chord_quality_ids = chord_root_ids
            chord_mask = chord_root_ids
        if chord_mask is None:
            chord_mask = torch.ones_like(chord_root_ids)
        features = [self.chord_encoder(chord_root_ids, chord_quality_ids, chord_mask)]
        if self.config.use_mode:
            modes = mode_ids if mode_ids is not None else torch.zeros(batch, dtype=torch.long, device=device)
            features.append(modes.reshape(batch, 1).to(features[0].dtype))
        return torch.cat(features, dim=-1)

    def _apply_heads(self, embeddings: torch.Tensor, harmony: torch.Tensor):
        trunk = self.input_proj(torch.cat([embeddings, harmony.to(embeddings.dtype)], dim=-1))
        logits, regression = {}, {}
        for task in self.config.tasks:
            out = self.heads[task["name"]](trunk)
            (logits if task["type"] == "multilabel" else regression)[task["name"]] = out
        return logits, regression

    def _loss(self, logits, regression, labels: dict[str, torch.Tensor]):
        """Per-task loss over the labelled values only (see `losses`): a batch may mix corpora with different label
        types. Plain BCE for tags and MSE for regression; training recipes weight them otherwise themselves."""
        task_losses = {}
        for name, target in labels.items():
            if name not in logits and name not in regression:
                raise KeyError(f"labels for unknown task {name!r}; tasks: {[t['name'] for t in self.config.tasks]}.")
            loss = tag_loss(logits[name], target) if name in logits else regression_loss(regression[name], target)
            if loss is not None:
                task_losses[name] = loss
        loss = torch.stack(list(task_losses.values())).sum() if task_losses else None
        return loss, task_losses

    def forward(
        self,
        input_values: torch.FloatTensor | None = None,
        chunk_mask: torch.Tensor | None = None,
        chunk_durations: torch.FloatTensor | None = None,
        chunk_embeddings: torch.FloatTensor | None = None,
        chord_root_ids: torch.LongTensor | None = None,
        chord_quality_ids: torch.LongTensor | None = None,
        chord_mask: torch.Tensor | None = None,
        mode_ids: torch.LongTensor | None = None,
        labels: dict[str, torch.Tensor] | None = None,
        return_dict: bool | None = None,
    ) -> Music2EmoOutput | tuple:
        r"""
        input_values (`(batch, chunks, samples)`): audio chunks at `config.sampling_rate` (from the feature extractor).
        chunk_mask (`(batch, chunks)`): 1 for real chunks, 0 for padding chunks.
        chunk_durations (`(batch, chunks)`, required): seconds of real audio in each chunk; weights of the pooling.
        chunk_embeddings (`(batch, chunks, embedding_dim)`): precomputed layer-pooled chunk features, instead of audio.
        chord_root_ids, chord_quality_ids, chord_mask (`(batch, max_chords)`), mode_ids (`(batch,)`): from
            `harmony_inputs`. Omitted, the track is treated as 'no chords, major'.
        labels (`dict[str, Tensor]`): per task name, (batch, labels) targets (multi-hot, or native-scale values);
            NaN marks a missing value (a row of NaN: not labelled for that task).
        return_dict (default `config.return_dict`): False gives the output's fields that are set, as a tuple.
        """
        if (input_values is None) == (chunk_embeddings is None):
            raise ValueError("Pass exactly one of input_values (audio chunks) or chunk_embeddings (precomputed).")
        if chunk_durations is None:
            raise ValueError(
                "chunk_durations are needed: they say how much of each chunk is audio and weight the pooling "
                "(Music2EmoFeatureExtractor returns them)."
            )
        _check_inputs(input_values=input_values, chunk_embeddings=chunk_embeddings, chunk_mask=chunk_mask,
                      chunk_durations=chunk_durations, chord_root_ids=chord_root_ids,
                      chord_quality_ids=chord_quality_ids, chord_mask=chord_mask, mode_ids=mode_ids)
        input_values, chunk_embeddings, chunk_durations = (  # float64, numpy's default, as the weights' float32
            None if value is None else value.float() if value.dtype == torch.float64 else value
            for value in (input_values, chunk_embeddings, chunk_durations))
        reference = input_values if input_values is not None else chunk_embeddings
        batch, n_chunks = reference.shape[:2]
        if chunk_mask is None:
            chunk_mask = torch.ones(batch, n_chunks, dtype=torch.long, device=reference.device)
        real = chunk_mask.bool()
        if input_values is not None:
            lengths = (chunk_durations[real] * self.config.sampling_rate).round().long()
            flat = self.embed_chunks(input_values[real], lengths)
            chunk_embeddings = flat.new_zeros(batch, n_chunks, flat.shape[-1])
            chunk_embeddings[real] = flat
        features = chunk_embeddings
        if self.config.standardize_embeddings:
            features = (chunk_embeddings - self.embedding_mean) / self.embedding_scale
        weights = (chunk_durations * real if self.config.pooling == "duration" else real).to(features.dtype)
        pooled = (features * weights[..., None]).sum(dim=1) / weights.sum(dim=1, keepdim=True).clamp_min(1e-8)

        harmony = self._harmony_features(batch, chord_root_ids, chord_quality_ids, chord_mask, mode_ids, reference.device)
        logits, regression = self._apply_heads(pooled, harmony)
        chunk_logits, chunk_regression = self._apply_heads(
            features, harmony[:, None, :].expand(-1, n_chunks, -1)
        )
        label_embedding = chunk_label_embeddings = None
        if self.projector is not None:
            label_embedding = self.projector(features, weights, harmony)
            chunk_label_embeddings = self.projector.project_chunks(features, real, harmony)
        loss, task_losses = self._loss(logits, regression, labels) if labels is not None else (None, None)
        output = Music2EmoOutput(
            loss=loss,
            task_losses=task_losses,
            logits=logits,
            regression=regression,
            pooled_embedding=pooled,
            chunk_embeddings=chunk_embeddings,
            chunk_logits=chunk_logits,
            chunk_regression=chunk_regression,
            label_embedding=label_embedding,
            chunk_label_embeddings=chunk_label_embeddings,
        )
        return output if (self.config.return_dict if return_dict is None else return_dict) else output.to_tuple()


def _check_inputs(**tensors: torch.Tensor | None) -> None:
    """Every tensor `forward` was given is a torch tensor of the batch's shape: a mistake is named here, not deep in
    the backbone."""
    for name, value in tensors.items():
        if value is not None and not isinstance(value, torch.Tensor):
            raise TypeError(f"{name} must be a torch tensor, got {type(value).__name__} (the feature extractor gives "
                            "them with return_tensors='pt').")
    name = "input_values" if tensors["input_values"] is not None else "chunk_embeddings"
    reference = tensors[name]
    if reference.dim() != 3:
        raise ValueError(f"{name} must be (batch, chunks, {'samples' if name == 'input_values' else 'features'}), got "
                         f"shape {tuple(reference.shape)}; one track is a batch of 1 (add [None]).")
    batch = tuple(reference.shape[:2])
    for other in ("chunk_mask", "chunk_durations"):
        if tensors[other] is not None and tuple(tensors[other].shape) != batch:
            raise ValueError(f"{other} must be (batch, chunks) = {batch}, as {name}; got {tuple(tensors[other].shape)}.")
    for other in ("chord_root_ids", "chord_quality_ids", "chord_mask", "mode_ids"):
        if tensors[other] is None:
            continue
        tracks = len(tensors[other]) if tensors[other].dim() else 1  # 0-d: one track's mode
        if tracks != batch[0]:
            raise ValueError(f"{other} is for {tracks} track(s), {name} for {batch[0]}: give one harmony per track "
                             "(harmony_inputs of a list as long as the batch).")


__all__ = [
    "Music2EmoChordEncoder",
    "Music2EmoModel",
    "Music2EmoOutput",
    "Music2EmoPreTrainedModel",
    "Music2EmoProjector",
    "Music2EmoResidualFeedForward",
    "UntrainedModelWarning",
]
