"""Convert the authors' released Music2Emo checkpoints (Lightning `.ckpt`: the students `J_all.ckpt`, `D_all.ckpt`,
`E_all.ckpt`, `P_all.ckpt` and the single-corpus teachers `*_best.ckpt`) into a Music2EmoModel folder.

The file is read with `torch.load(weights_only=True)`: only tensors and plain data are rebuilt. Lightning also
pickles the training configuration (OmegaConf objects and the like); those classes are never imported or run, they
become inert stand-ins, and only `state_dict` is used. Keys map one to one onto the faithful configuration
(ORIGINALS §1.4); the MERT-v1-95M backbone, which the checkpoints do not hold, is loaded from the Hub or a folder.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from .configuration_music2emo import Music2EmoConfig, corpus_task
from .hub import first_line
from .labels import ORIGINAL_CHORD_QUALITIES
from .released import BACKBONE_REPO, CHECKPOINT_CORPORA

PREFIX = "model."
# Original module -> ours. The heads' second Linear is index 2 there (Linear, ReLU, Linear) and 3 here (a Dropout
# sits between ReLU and Linear).
RENAMES = (
    ("chord_root_embedding.", "chord_encoder.root_embedding."),
    ("chord_attr_embedding.", "chord_encoder.quality_embedding."),
    ("chord_transformer.", "chord_encoder.transformer."),
    ("input_proj.0.", "input_proj.0."),
)
HEAD_MODULES = {"classification_branch": "moods", "regression_branch": "valence_arousal", "output_proj": None}
TRAINING_ONLY = ("loss_fn",)  # a bare state dict (no `model.` prefix) may still hold the losses' buffers
# How the converted model's answers are made, and what differs from the authors' inference code, for the card.
DIFFERENCES = (
    "Chords come from BTC with the authors' weights (shipped in the model folder as btc.safetensors), on the same "
    "features (the track resampled once from its own rate to 22,050 Hz with soxr and padded to the length "
    "librosa.load gave them; CQT in 10 s blocks) and merged into segments as their inference merged them; the key is "
    "music21's analysis of those chords' tones, as they got it (music21's reading of the chords' MIDI done in "
    "memory, with music21's own arithmetic; music21 itself where two keys tie).",
    "Where the chord network runs on a GPU, the CQT is computed there, in float32 (music2emo_hf/cqt.py): within 1e-5 "
    "of librosa's largest magnitude, but bins near silence differ after the log, which can move a chord frame now "
    "and then. On a CPU it is librosa's, as theirs, and harmony_cqt=\"librosa\" (CLI --cqt librosa) keeps it so on "
    "a GPU.",
    "The key's real mode is fed to the network (the authors' inference always fed 'major'; their training used the "
    "real mode).",
    "A `minmaj7` chord, which the authors' token table lacks (their inference stopped with an error), becomes `min7`.",
    "A last 30 s chunk under 30 ms, on which their inference stopped with an error, is analysed from 400 samples "
    "(MERT's first frame) and left out below; a mood passes a threshold at `>=` (theirs: `>`).",
    "Audio is decoded once with soundfile, and MERT's input resampled to 24 kHz with soxr (the authors: torchaudio); "
    "`resampler=\"sinc\"` (CLI `--resampler sinc`) resamples it with torchaudio's resampler instead.",
    "On an x86-64 CPU MERT runs in OpenVINO, in float32, accepted only where its pooled embeddings match PyTorch's "
    "to a cosine of 0.99999 (mood probabilities within 1e-4 in the tests); `runtime=\"torch\"` (CLI `--runtime "
    "torch`) runs it in PyTorch, as the authors did.",
)


class ConversionError(ValueError):
    """The file is not a usable Music2Emo checkpoint; the message says why and what to do."""


class _Inert:
    """Stands in for a class pickled in a checkpoint (Lightning's hyper-parameters): holds what it was given, runs
    nothing."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs

    def __setstate__(self, state):
        self.state = state


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint's contents with tensors and plain data only (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"{path}: no such checkpoint file.")
    try:
        foreign = torch.serialization.get_unsafe_globals_in_checkpoint(path)
        stand_ins = [(type(name.rsplit(".", 1)[-1], (_Inert,), {}), name) for name in foreign]
        with torch.serialization.safe_globals(stand_ins):
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated zip, not a torch file, a pickle it refuses: one sentence for the user
        blocked = re.search(r"GLOBAL (\S+) whose module \S+ is blocked", str(error))
        if blocked:
            raise ConversionError(
                f"{path}: refused: loading it would call {blocked.group(1)}, which no checkpoint needs; it was not "
                "converted. Get the file again from its source."
            ) from None
        raise ConversionError(
            f"{path}: not a readable PyTorch checkpoint ({first_line(error)}). It may be truncated; download it again."
        ) from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("state_dict"), dict):
        keys = sorted(checkpoint) if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ConversionError(f"{path}: expected a Lightning checkpoint with a 'state_dict'; it holds {keys}.")
    return checkpoint


def original_state(checkpoint: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The network's weights without Lightning's `model.` prefix. The authors' LightningModule (`MusicClassifier`)
    also saves the buffers of everything else it registers (its loss functions' class weights,
    `loss_fn_classification[_eval].{weight,pos_weight}`): when the network sits under `model.`, every other key is
    such training state and is left out."""
    items = checkpoint["state_dict"].items()
    if any(key.startswith(PREFIX) for key in checkpoint["state_dict"]):
        items = [(key, value) for key, value in items if key.startswith(PREFIX)]
    state = {}
    for key, value in items:
        name = key[len(PREFIX):] if key.startswith(PREFIX) else key
        if name.startswith(TRAINING_ONLY):
            continue
        if not isinstance(value, torch.Tensor):
            raise ConversionError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor.")
        state[name] = value
    return state


def checkpoint_tasks(state: dict[str, torch.Tensor]) -> list[dict[str, Any]]:
    """The heads a checkpoint holds: a student's mood and valence/arousal branches, or a teacher's one output
    (56 outputs: MTG-Jamendo's moods; 2: valence/arousal)."""
    names = []
    for module, task in HEAD_MODULES.items():
        weight = state.get(f"{module}.2.weight")
        if weight is None:
            continue
        if task is None:
            task = {56: "moods", 2: "valence_arousal"}.get(weight.shape[0])
            if task is None:
                raise ConversionError(f"output_proj has {weight.shape[0]} outputs; a Music2Emo teacher has 56 or 2.")
        names.append(task)
    if not names:
        raise ConversionError(
            "no head in this checkpoint (expected classification_branch/regression_branch or output_proj): "
            "is it a Music2Emo checkpoint?"
        )
    corpora = {"moods": "mtg_jamendo", "valence_arousal": "deam"}
    return [corpus_task(corpora[name]) for name in names]


def faithful_config(tasks: list[dict[str, Any]]) -> Music2EmoConfig:
    """The configuration the released checkpoints fit (hub_configs/music2emo-mert95m; the backbone is MERT-v1-95M,
    the configuration's default)."""
    return Music2EmoConfig(
        backbone_name_or_path=BACKBONE_REPO,
        pooled_layers=[6, 7],
        chunk_seconds=30.0,
        pooling="mean",
        harmony="btc",
        chord_qualities=list(ORIGINAL_CHORD_QUALITIES),
        chord_cls="zero",
        chord_padding_mask=False,
        trunk_dim=512,
        head_hidden_dim=256,
        dropout=0.0,
        tasks=tasks,
    )


def renamed_state(state: dict[str, torch.Tensor], tasks: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
    """The original keys under our names; every key must find a place."""
    head = {module: task or tasks[0]["name"] for module, task in HEAD_MODULES.items()}
    out, unknown = {}, []
    for key, value in state.items():
        module, _, rest = key.partition(".")
        if module in head:
            index, _, parameter = rest.partition(".")
            if index not in ("0", "2"):
                unknown.append(key)
                continue
            out[f"heads.{head[module]}.{'0' if index == '0' else '3'}.{parameter}"] = value
            continue
        for old, new in RENAMES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            unknown.append(key)
    if unknown:
        raise ConversionError(f"keys this converter does not know (not Music2Emo's head network?): {sorted(unknown)}")
    return out


def load_converted(model, state: dict[str, torch.Tensor]) -> None:
    """Load the renamed weights into every non-backbone parameter of `model`, checking names and shapes."""
    expected = {k: v for k, v in model.state_dict().items() if not k.startswith("backbone.")}
    missing = sorted(set(expected) - set(state))
    wrong = [f"{k}: checkpoint {tuple(state[k].shape)}, model {tuple(expected[k].shape)}"
             for k in sorted(set(expected) & set(state)) if state[k].shape != expected[k].shape]
    if missing or wrong:
        raise ConversionError(
            "the checkpoint does not fit the faithful configuration"
            + (f"; missing {missing}" if missing else "") + (f"; shapes differ: {wrong}" if wrong else "")
        )
    model.load_state_dict(state, strict=False)


def check_backbone_rate(backbone: str, rate: int) -> None:
    """Refuses a backbone folder whose feature extractor takes another sampling rate than MERT-v1's (a 16 kHz HuBERT
    or MERT-v0 is as wide, so its weights load, and every answer would be wrong)."""
    import json

    preprocessor = Path(backbone) / "preprocessor_config.json"
    if not preprocessor.is_file():
        return
    found = json.loads(preprocessor.read_text(encoding="utf-8")).get("sampling_rate")
    if found is not None and found != rate:
        raise ConversionError(
            f"--backbone {backbone}: its feature extractor takes {found} Hz audio, and the checkpoint's heads were "
            f"trained on MERT-v1-95M's features of {rate} Hz audio; give MERT-v1-95M's folder."
        )


def convert_original(checkpoint_path: str | os.PathLike, backbone: str = BACKBONE_REPO,
                     btc_weights: str | os.PathLike | None = None):
    """(model, feature extractor, details) for a released checkpoint, its backbone from `backbone` (a Hub id, or a
    folder with MERT-v1's config.json and weights). `btc_weights`, the authors' `btc_model_large_voca.pt`, is
    checked here and stored by `write_converted`: the heads were trained on BTC's chords."""
    import warnings

    from .btc import BTCChordRecognizer, BTCWeightsError, read_btc_weights
    from .feature_extraction_music2emo import Music2EmoFeatureExtractor
    from .modeling_music2emo import Music2EmoModel, UntrainedModelWarning

    if btc_weights is None:
        raise ConversionError("BTC's chord weights are needed: the checkpoint's heads were trained on BTC's chords.")
    try:
        BTCChordRecognizer.check(read_btc_weights(btc_weights)[0], btc_weights)
    except BTCWeightsError as error:
        raise ConversionError(str(error)) from None
    checkpoint = read_checkpoint(checkpoint_path)
    state = original_state(checkpoint)
    tasks = checkpoint_tasks(state)
    renamed = renamed_state(state, tasks)
    check_backbone_rate(backbone, faithful_config(tasks).sampling_rate)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)  # random heads, about to be replaced
        model = Music2EmoModel.from_backbone(backbone, faithful_config(tasks))
    load_converted(model, renamed)
    model.config.untrained = False
    details = {
        "checkpoint": Path(checkpoint_path).name,
        "tasks": [task["name"] for task in tasks],
        "corpora": CHECKPOINT_CORPORA.get(Path(checkpoint_path).stem),  # None: a file of another name
        "epoch": checkpoint.get("epoch"),
        "global_step": checkpoint.get("global_step"),
        "lightning_version": checkpoint.get("pytorch-lightning_version"),
        "btc_weights": Path(btc_weights).name,
    }
    extractor = Music2EmoFeatureExtractor(model.config.sampling_rate, model.config.chunk_seconds)
    return model.eval(), extractor, details


def write_converted(model, extractor, details: dict[str, Any], out: str | os.PathLike, model_id: str,
                    btc_weights: str | os.PathLike, template: str | os.PathLike | None = None) -> None:
    """Save a converted model to `out` with BTC's weights (`btc.safetensors`), its conversion record
    (`conversion.json`) and its model card."""
    import json

    from .btc import save_btc_weights
    from .model_card import CONVERSION_INFO, build_card
    from .pipeline_music2emo import save_model

    save_model(model, extractor, out)
    save_btc_weights(btc_weights, out)
    conversion = {**details, "differences": list(DIFFERENCES)}
    (Path(out) / CONVERSION_INFO).write_text(json.dumps(conversion, indent=1) + "\n", encoding="utf-8")
    build_card(out, model_id, template=template).save(Path(out) / "README.md")


__all__ = [
    "ConversionError",
    "DIFFERENCES",
    "check_backbone_rate",
    "checkpoint_tasks",
    "convert_original",
    "faithful_config",
    "original_state",
    "read_checkpoint",
    "renamed_state",
    "write_converted",
]
