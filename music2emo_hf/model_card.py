"""Model cards that tell the truth, and publishing models with them.

A card is built from what the folder knows: the model's config (what it is, its outputs and scales), how it was made
(`training.json` from the training scripts, or the conversion of a released checkpoint) and how well it does (a
results JSON of the training scripts or of `training/evaluate_models.py`, as `model-index` entries per corpus and metric).
Nothing is claimed that those files do not say. A variant's template (`hub_configs/<variant>/README.md`) may add its
description; the default template lays out the same sections.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configuration_music2emo import Music2EmoConfig
from .hub import push_folder
from .released import BACKBONE_REPO

TRAINING_INFO = "training.json"
RESULTS = "results.json"
CONVERSION_INFO = "conversion.json"
# Corpus -> (name on the card, what its annotations allow).
CORPORA = {
    "mtg_jamendo": ("MTG-Jamendo mood/theme", "metadata CC BY-NC-SA 4.0"),
    "deam": ("DEAM", "annotations CC BY-NC"),
    "pmemo": ("PMEmo", "research use"),
    "emomusic": ("EmoMusic (1000 Songs)", "research use"),
    "cal500": ("CAL500", "research use"),
    "emotify": ("Emotify", "research use"),
}
# Backbones whose licence is known -> (its Hub licence id, what it allows).
BACKBONE_LICENCES = {
    BACKBONE_REPO: ("cc-by-nc-4.0", "CC-BY-NC-4.0 (non-commercial use only)"),
    "m-a-p/MERT-v1-330M": ("cc-by-nc-4.0", "CC-BY-NC-4.0 (non-commercial use only)"),
}
# Metric key of our results -> (model-index type, name shown).
METRICS = {
    "pr_auc_macro": ("pr_auc", "PR-AUC (macro)"),
    "roc_auc_macro": ("roc_auc", "ROC-AUC (macro)"),
    "r2_valence": ("r2", "R² valence"),
    "r2_arousal": ("r2", "R² arousal"),
    "rmse_valence": ("rmse", "RMSE valence (1-9)"),
    "rmse_arousal": ("rmse", "RMSE arousal (1-9)"),
    "f1_macro_segment": ("f1", "macro-F1 in the label space (segments)"),
    "f1_macro_song": ("f1", "macro-F1 in the label space (songs)"),
}

DEFAULT_TEMPLATE = """---
{{ card_data }}
---

# {{ model_id }}

{{ description }}

## Outputs

{{ outputs }}

## How it was made

{{ provenance }}

## Results

{{ results }}

## Intended use and limits

{{ limits }}

## Licences

{{ licences }}

## Use

```python
import transformers
import music2emo_hf  # registers the "music-emotion" task

pipe = transformers.pipeline("music-emotion", model="{{ model_id }}")
pipe("song.mp3", top_k=5, return_segments=True{{ zero_shot_example }})
```
"""


def _read_json(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: not valid JSON ({error}); write it again with the script that made it.") from None


@dataclass(frozen=True)
class Scored:
    """One corpus's metrics for the card: on which split, and whether zero-shot (a corpus the model never saw)."""

    corpus: str
    metrics: Mapping[str, float]
    split: str = "test"
    zero_shot: bool = False


def results_by_corpus(results: Mapping[str, Any], folder_name: str = "best") -> list[Scored]:
    """The scores of the model in a folder named `folder_name`, from a training script's results.json (its block of
    that name, `best-<corpus>` for a per-corpus export, else `best`: {"test": ..., "zero_shot": ...}) or an
    evaluate_models.py JSON of this one model (one row of one model, on its split)."""
    if "rows" not in results:
        block = results.get(folder_name, results.get("best", {}))
        return ([Scored(corpus, metrics) for corpus, metrics in block.get("test", {}).items()]
                + [Scored(corpus, metrics, zero_shot=True) for corpus, metrics in block.get("zero_shot", {}).items()])
    rows = results["rows"]
    if len(rows) != 1 or len(rows[0].get("models", [None])) != 1:
        count = f"{len(rows)} rows" if len(rows) != 1 else f"a row of {len(rows[0]['models'])} models"
        raise ValueError(f"an evaluation JSON for one model card must hold one row of one model, it holds {count}; "
                         "evaluate the model alone (training/evaluate_models.py --model LABEL=DIR).")
    return [Scored(corpus, metrics, results.get("split", "test")) for corpus, metrics in rows[0]["metrics"].items()]


def eval_results(scores: list[Scored]) -> list:
    """model-index entries: one per corpus and reported metric, on the split it was scored on."""
    from huggingface_hub import EvalResult

    entries = []
    for scored in scores:
        name = CORPORA.get(scored.corpus, (scored.corpus, ""))[0]
        for key, (metric_type, metric_name) in METRICS.items():
            if key not in scored.metrics:
                continue
            tags = key.startswith(("pr_auc", "roc_auc", "f1"))
            entries.append(EvalResult(
                task_type="audio-classification" if tags else "other",
                task_name=("Zero-shot mood tagging" if scored.zero_shot else "Mood tagging") if tags
                else "Valence/arousal regression",
                dataset_type=scored.corpus, dataset_name=f"{name} ({scored.split})", dataset_split=scored.split,
                metric_type=metric_type, metric_name=metric_name, metric_value=round(float(scored.metrics[key]), 6),
            ))
    return entries


def _results_table(scores: list[Scored]) -> str:
    if not scores:
        return "No evaluation results were supplied with this model, so none are claimed."
    lines = ["| Corpus | Split | Metric | Value |", "|---|---|---|---|"]
    for scored in scores:
        corpus = CORPORA.get(scored.corpus, (scored.corpus, ""))[0] + (" (zero-shot)" if scored.zero_shot else "")
        for key, (_, metric_name) in METRICS.items():
            if key in scored.metrics:
                lines.append(f"| {corpus} | {scored.split} | {metric_name} | {scored.metrics[key]:.4f} |")
    return "\n".join(lines)


def _description(config: Music2EmoConfig) -> str:
    backbone = config.backbone_config
    heads = ", ".join(f"`{t['name']}` ({len(t['labels'])} {'tags' if t['type'] == 'multilabel' else 'values'})"
                      for t in config.tasks)
    projector = (f" A zero-shot projector (`{config.projector}`) maps tracks into the space of `{config.label_encoder}` "
                 f"({config.label_embedding_dim}-d), so any words can be scored." if config.label_embedding_dim else "")
    return (
        f"Music emotion recognition with **music2emo-hf**: a {backbone.num_hidden_layers}-layer, "
        f"{backbone.hidden_size}-wide MERT-style backbone (`{config.backbone_name_or_path or 'random'}`), "
        f"`hidden_states` {config.pooled_layers} averaged over time in {config.chunk_seconds:g} s chunks, fused with "
        f"chord and key features, and heads: {heads}.{projector}"
    )


def _outputs(config: Music2EmoConfig) -> str:
    lines = []
    for task in config.tasks:
        if task["type"] == "multilabel":
            lines.append(f"- `{task['name']}`: a probability per label (sigmoid). Under the class-balanced BCE both "
                         "training recipes use, 0.5 means \"above the label's base rate\", not \"likely\".")
        else:
            low, high = task["scale"]
            lines.append(f"- {' and '.join(task['labels'])} on the {low:g}-{high:g} scale of DEAM and EmoMusic "
                         f"({(low + high) / 2:g} neutral; PMEmo's 0-1 means are rescaled as 1 + 8x), and in [-1, 1].")
    if config.label_embedding_dim:
        lines.append(f"- `zero_shot` for `candidate_labels`: cosine similarities, labels worded as "
                     f"\"{config.hypothesis_template}\".")
    return "\n".join(lines)


def _provenance(training: Mapping[str, Any] | None, conversion: Mapping[str, Any] | None, config) -> str:
    if conversion is not None:
        differences = "\n".join(f"- {item}" for item in conversion["differences"])
        return (
            f"Converted with `music2emo convert-original` from the authors' released checkpoint "
            f"`{conversion['checkpoint']}` (AMAAI-Lab/Music2Emotion; heads {conversion['tasks']}, epoch "
            f"{conversion.get('epoch')}), read as tensors only (`torch.load(weights_only=True)`), keys renamed onto "
            f"the faithful configuration; backbone weights from `{config.backbone_name_or_path}`. What differs from "
            f"the authors' pipeline:\n\n{differences}"
        )
    if training is not None:
        recipe = training.get("recipe", {})
        teachers = training.get("teachers") or {}
        return (
            f"Trained with `training/{training.get('script', 'train')}.py`, recipe `{recipe.get('name')}` "
            f"({recipe.get('description', '').split('.')[0]}), on {', '.join(training.get('corpora', []))}"
            + (f", distilled from teachers for {', '.join(teachers)}" if teachers else "")
            + (f"; selected at epoch {training.get('selected_epoch')} by {training.get('selection')}"
               if "selected_epoch" in training else "")
            + f". Seed {recipe.get('seed')}."
        )
    if config.untrained:
        return "Not trained: random weights written by `music2emo init`. Its outputs are random numbers."
    return "This folder records no training or conversion details."


def _base_model(config: Music2EmoConfig) -> str | None:
    """The Hub model whose weights the backbone holds, where known: the one named, or MERT-v1-95M for the authors'
    heads (trained on it) whatever copy of it the folder names; None for random or unknown local weights."""
    name = config.backbone_name_or_path
    if not name:
        return None
    if name in BACKBONE_LICENCES:
        return name
    if config.harmony == "btc":
        return BACKBONE_REPO
    return None if os.path.exists(name) or name.count("/") != 1 else name


def _licence_metadata(config: Music2EmoConfig, learnt: bool) -> dict[str, str]:
    """The card's `license` fields: Apache-2.0 where every part is ours, the backbone's licence where it is the only
    other part and a Hub licence id, else (heads `learnt` from corpora) `other`, linked to the card's Licences
    section (README.md)."""
    base = _base_model(config)
    if not config.backbone_name_or_path and not learnt:
        return {"license": "apache-2.0"}
    if base in BACKBONE_LICENCES and not learnt:
        return {"license": BACKBONE_LICENCES[base][0]}
    return {"license": "other", "license_name": "backbone-and-data-terms", "license_link": "README.md"}


def _licences(config: Music2EmoConfig, corpora: Sequence[str], learnt: bool) -> str:
    data = "; ".join(f"{CORPORA[c][0]}: {CORPORA[c][1]}" for c in corpora if c in CORPORA)
    lines = ["- Code: Apache-2.0 (music2emo-hf)."]
    base = _base_model(config)
    if base in BACKBONE_LICENCES and base == config.backbone_name_or_path:
        lines.append(f"- Backbone weights: `{base}`, {BACKBONE_LICENCES[base][1]}, which applies to this model too.")
    elif base in BACKBONE_LICENCES:  # the authors' heads, trained on MERT-v1-95M
        lines.append(f"- Backbone weights: from `{config.backbone_name_or_path}`, which for these heads are "
                     f"MERT-v1-95M's: {BACKBONE_LICENCES[base][1]}, which applies to this model too.")
    elif config.backbone_name_or_path:
        lines.append(f"- Backbone weights: those of `{config.backbone_name_or_path}`, under the licence on its model "
                     "card, which applies to this model too.")
    if config.source:
        lines.append(f"- Head weights: converted from `{config.source['repo']}` (`{config.source['file']}`, revision "
                     f"`{config.source['revision']}`), Apache-2.0.")
    if learnt and not data:
        lines.append("- Training data terms: the head weights are learnt from corpora this model's files do not name; "
                     "the authors' (MTG-Jamendo, DEAM, EmoMusic, PMEmo) are for research, mostly non-commercial, use.")
    if data:
        lines.append(f"- Training data terms ({data}): the head weights are learnt from corpora whose annotations are "
                     "for research, mostly non-commercial, use.")
    return "\n".join(lines)


def build_card(model_dir: str | os.PathLike, repo_id: str, results: Mapping[str, Any] | None = None,
               template: str | os.PathLike | None = None):
    """The `huggingface_hub.ModelCard` of the model in `model_dir` (see the module docstring). `results` default to
    the folder's results.json; `template` is a card template file (Jinja, with `{{ card_data }}` front matter)."""
    from huggingface_hub import ModelCard, ModelCardData

    folder = Path(model_dir)
    config = Music2EmoConfig.from_pretrained(folder)
    training = _read_json(folder / TRAINING_INFO)
    conversion = _read_json(folder / CONVERSION_INFO)
    results = results if results is not None else _read_json(folder / RESULTS)
    scores = results_by_corpus(results, folder.resolve().name) if results else []
    corpora = (list((training or conversion or {}).get("corpora") or [])
               or [scored.corpus for scored in scores if not scored.zero_shot])
    learnt = bool(corpora) or conversion is not None  # a converted checkpoint's heads learnt from some corpus
    card_data = ModelCardData(
        library_name="transformers",
        pipeline_tag="audio-classification",
        base_model=_base_model(config),
        **_licence_metadata(config, learnt),
        tags=["music", "emotion", "mood", "valence-arousal", "music2emo-hf"]
        + (["zero-shot"] if config.label_embedding_dim else []) + (["untrained"] if config.untrained else []),
        model_name=repo_id,
        eval_results=eval_results(scores) or None,
    )
    limits = (
        "For research on music emotion and for tagging music libraries. Emotion labels are subjective: the corpora's "
        "listeners (mostly Western, online raters) disagree with each other, and scores are agreement with them, not "
        "truth. Valence/arousal are corpus averages of static ratings of 30-45 s excerpts. Not for decisions about "
        "people."
    )
    text = Path(template).read_text(encoding="utf-8") if template else DEFAULT_TEMPLATE
    return ModelCard.from_template(
        card_data, template_str=text, model_id=repo_id, description=_description(config), outputs=_outputs(config),
        provenance=_provenance(training, conversion, config), results=_results_table(scores), limits=limits,
        licences=_licences(config, corpora, learnt),
        zero_shot_example=', candidate_labels=["nostalgic", "tense"]' if config.label_embedding_dim else "",
    )


def push_model(model_dir: str | os.PathLike, repo_id: str, private: bool = False) -> str:
    """Publish a model folder (weights, config, code, and the card saved as its README.md); returns the commit URL.
    Hidden files and folders (`.env`, `.ipynb_checkpoints`, a `.cache`) and `*.tmp` files stay here."""
    return push_folder(model_dir, repo_id, "model", [".*", "*/.*", "*.tmp"], "Upload with music2emo-hf", private)


__all__ = [
    "CONVERSION_INFO",
    "DEFAULT_TEMPLATE",
    "RESULTS",
    "TRAINING_INFO",
    "Scored",
    "build_card",
    "eval_results",
    "push_model",
    "results_by_corpus",
]
