"""Zero-shot emotion labels (the cross-dataset alignment paper, ORIGINALS §2): train the projector to map audio into
the label encoder's text space on some tag corpora, then score a corpus whose labels it never saw.

    accelerate launch training/train_zero_shot.py --config zero_shot_aligned --dataset DATA --model INIT_DIR \\
        --output-dir runs/zs-aligned [--held-out all|mtg_jamendo|cal500|emotify] [--train-corpus A B]

Leave-one-corpus-out (`--held-out all`, the default): for each of MTG-Jamendo, CAL500 and Emotify prepared in DATA,
train on the other two and test on it zero-shot, in OUTPUT/<held-out>/ (a resumable run each, as train_teacher.py's),
then write OUTPUT/table.md and table.json: macro-F1 of the top-k labels (k = 2 MTG-Jamendo, 4 CAL500, 3 Emotify),
per segment (chunk) and per song (segments vote), in the paper's layout. `training/evaluate_models.py --zero-shot
LABEL=OUTPUT ...` puts several such runs (methods) in one table.

Targets: a track's positive is the mean of the centres of its labels' clusters, each once (`targets: clusters`;
the training corpora's labels clustered alone with the bandwidth of the folder's label_clusters.json, so a held-out
corpus shapes no target; its corpora are then also scored over their clusters) or of its labels' own embeddings
(`targets: labels`); the negative the mean of k non-positive targets (random, as the paper, or the hardest);
`alignment_weight` (the paper's λ) pushes apart tracks whose labels share no cluster. Model selection reads only
the training corpora's validation splits (the paper monitored MTG's validation loss even when MTG was the held-out
corpus). The model's own heads keep training on the training corpora (`task_weight`), so the result is also a tagger
of their vocabularies.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from accelerate.utils import set_seed

import engine
from music2emo_hf import Music2EmoConfig, Music2EmoModel
from music2emo_hf.configuration_music2emo import corpus_task
from music2emo_hf.data.layout import CLUSTERS_FILE, DATA_DIR
from music2emo_hf.label_alignment import TAG_VOCABULARIES, LabelClusters, label_text, realign
from music2emo_hf.losses import alignment_regularizer, cosine_triplet_loss, sample_negatives
from music2emo_hf.metrics import f1_scores, song_vote_decisions, tag_metrics, top_k_decisions
from music2emo_hf.zero_shot import embed_texts, load_label_encoder

TAG_CORPORA = tuple(TAG_VOCABULARIES)
SHORT = {"mtg_jamendo": "MTG", "cal500": "CAL", "emotify": "EMO"}


@dataclass(frozen=True)
class ZeroShotRecipe(engine.Recipe):
    """A Recipe plus the zero-shot objective (training/configs/zero_shot_*.json)."""

    targets: str = "clusters"  # clusters | labels
    margin: float = 1.0
    negatives: str = "random"  # random | hard
    negative_count: int = 5
    alignment_weight: float = 0.0
    task_weight: float = 1.0  # the model's tag heads on the training corpora
    test_labels: str = "expanded"  # expanded (the folder's label texts, as the paper) | template (the bare label)
    top_k: dict[str, int] = field(default_factory=lambda: {"mtg_jamendo": 2, "cal500": 4, "emotify": 3})
    projector: dict[str, Any] = field(default_factory=dict)  # Music2EmoConfig projector settings, for a model without

    def __post_init__(self):
        super().__post_init__()
        for name, allowed in (("targets", ("clusters", "labels")), ("negatives", ("random", "hard")),
                              ("test_labels", ("expanded", "template"))):
            if getattr(self, name) not in allowed:
                raise ValueError(f"recipe {self.name!r}: {name} must be one of {list(allowed)}, got {getattr(self, name)!r}")
        if self.negative_count < 1 or self.alignment_weight < 0 or self.task_weight < 0:
            raise ValueError(f"recipe {self.name!r}: negative_count must be positive, weights not negative.")
        if not 0 < self.margin <= 2:  # cosine distances differ by at most 2
            raise ValueError(f"recipe {self.name!r}: margin must lie in (0, 2], got {self.margin!r}")
        sizes = {corpus: len(labels) for corpus, labels in TAG_VOCABULARIES.items()}
        if not isinstance(self.top_k, dict) or set(self.top_k) != set(sizes) or any(
                isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= sizes[corpus]
                for corpus, k in self.top_k.items()):
            raise ValueError(f"recipe {self.name!r}: top_k must give each tag corpus its k, from 1 to its number of "
                             f"labels ({sizes}), got {self.top_k!r}")
        settings = {"projector", "projector_dim", "projector_layers", "projector_heads", "projector_dropout"}
        if not isinstance(self.projector, dict) or set(self.projector) - settings:
            raise ValueError(f"recipe {self.name!r}: projector takes {sorted(settings)}, got {self.projector!r}")
        try:
            Music2EmoConfig(label_embedding_dim=1, **self.projector)  # its values, checked where the model is made
        except (TypeError, ValueError) as error:
            raise ValueError(f"recipe {self.name!r}: projector: {error}") from None


@dataclass
class LabelSpace:
    """What a corpus's tracks are scored against in the text space: its labels' embeddings, or (`clusters`) the
    centres of the clusters its labels fall into, each once, as the paper scored them, so that synonyms are one
    target, not copies that tie and that a negative can draw; `of_labels` maps the corpus's labels onto those
    targets, `clusters` the targets onto the alignment's clusters."""

    embeddings: torch.Tensor  # (targets, dim)
    of_labels: torch.Tensor  # (labels, targets) bool
    clusters: torch.Tensor  # (targets, clusters) bool

    def positives(self, labels: torch.Tensor) -> torch.Tensor:
        """The targets of each row's labels: (rows, labels) bool -> (rows, targets) bool."""
        return (labels.float() @ self.of_labels.to(labels.device).float()) > 0


def label_space(clusters: LabelClusters, corpus: str, mode: str, template: str) -> LabelSpace:
    """`clusters`: the (unit) centres of the corpus's clusters; `labels` / `expanded`: the embedding of the text the
    alignment embedded for each label; `template`: of `template` around the bare label."""
    where = {label: row for row, (c, label) in enumerate(zip(clusters.corpora, clusters.labels)) if c == corpus}
    labels = corpus_task(corpus)["labels"]
    missing = [label for label in labels if label not in where]
    if missing:
        raise ValueError(f"{CLUSTERS_FILE} has no row for {corpus} labels {missing}; prepare the corpus again.")
    rows = [where[label] for label in labels]
    of_label = [clusters.clusters[r] for r in rows]
    if mode == "clusters":
        kept = list(dict.fromkeys(of_label))  # in the order of each cluster's first label
        centres = torch.as_tensor(clusters.centers[kept], dtype=torch.float32)
        embeddings = torch.nn.functional.normalize(centres, dim=-1)
        of_labels = torch.tensor([[cluster == target for target in kept] for cluster in of_label])
    else:
        kept = of_label
        texts = [clusters.texts[r] for r in rows] if mode in ("labels", "expanded") else [
            template.format(label_text(label)) for label in labels]
        embeddings = torch.from_numpy(embed_texts(texts))
        of_labels = torch.eye(len(rows), dtype=torch.bool)
    membership = torch.zeros(len(kept), len(clusters.centers), dtype=torch.bool)
    membership[torch.arange(len(kept)), torch.tensor(kept)] = True
    return LabelSpace(embeddings, of_labels, membership)


def zero_shot_metrics(model: Music2EmoModel, dataset, space: LabelSpace, k: int, accelerator, batch_size: int = 16):
    """Macro-F1 of the top-k labels per segment (each chunk scored alone, labelled as its track) and per song (the
    segments vote), macro ROC-AUC of the track's cosine scores, and a loss (1 - cosine to the positive target)."""
    select = lambda output, _: torch.cat([output.label_embedding[:, None], output.chunk_label_embeddings], dim=1)  # noqa: E731
    per_track = engine.collect(model, dataset, select, accelerator, batch_size)
    labels = space.embeddings.numpy()
    targets = dataset.targets
    labelled = [i for i in range(len(per_track)) if not np.isnan(targets[i]).any() and targets[i].any()]
    tracks = np.stack([per_track[i][0] for i in labelled])
    segments = [per_track[i][1:][np.linalg.norm(per_track[i][1:], axis=1) > 0.5] for i in labelled]  # real chunks
    segment_scores = np.concatenate(segments) @ labels.T
    segment_tracks = [str(i) for i, chunks in zip(labelled, segments) for _ in range(len(chunks))]
    truth = space.positives(torch.from_numpy(targets[labelled] > 0.5)).numpy()
    segment_truth = np.repeat(truth, [len(chunks) for chunks in segments], axis=0)
    order, song_decisions = song_vote_decisions(segment_scores, segment_tracks, k)
    position = {str(i): n for n, i in enumerate(labelled)}
    song_truth = truth[[position[i] for i in order]]
    positives = truth @ labels / truth.sum(axis=1, keepdims=True)
    positives /= np.linalg.norm(positives, axis=1, keepdims=True)
    metrics = {
        "f1_macro_segment": f1_scores(segment_truth, top_k_decisions(segment_scores, k))["f1_macro"],
        "f1_macro_song": f1_scores(song_truth, song_decisions)["f1_macro"],
        "top_k": k,
        "tracks": len(labelled),
        "segments": len(segment_scores),
        "loss": float(np.mean(1 - np.sum(tracks * positives, axis=1))),
    }
    try:
        metrics["roc_auc_macro"] = tag_metrics(truth, tracks @ labels.T)["roc_auc_macro"]
    except ValueError:  # no label with both positive and negative tracks (a tiny split)
        pass
    metrics["score"] = metrics["f1_macro_segment"]
    return metrics


class ZeroShotTrainer(engine.Trainer):
    """The engine's loop with the zero-shot objective, and a held-out corpus scored zero-shot at the end."""

    def __init__(self, recipe: ZeroShotRecipe, model, extractor, corpora, output_dir, spaces: Mapping[str, LabelSpace],
                 held_out: engine.Corpus | None, held_out_space: LabelSpace | None, info=None, accelerator=None):
        self.spaces, self.held_out, self.held_out_space = dict(spaces), held_out, held_out_space
        super().__init__(recipe, model, extractor, corpora, output_dir, info=info, accelerator=accelerator)

    def _step_loss(self, output, rows, targets, teacher_outputs, state):
        recipe = self.recipe
        loss = recipe.task_weight * super()._step_loss(output, rows, targets, teacher_outputs, state)
        anchors, groups = [], []
        for number, corpus in enumerate(self.corpora):
            if corpus.name not in rows:
                continue
            space, anchor = self.spaces[corpus.name], output.label_embedding[rows[corpus.name]]
            embeddings = space.embeddings.to(anchor.device)
            positive = space.positives(targets[corpus.name].nan_to_num(0) > 0.5)
            target = positive.float() @ embeddings / positive.sum(dim=1, keepdim=True).clamp_min(1)
            negative = sample_negatives(embeddings, positive, recipe.negative_count, self._step_generator(state, 1000 + number),
                                        anchor.detach() if recipe.negatives == "hard" else None)
            keep = positive.any(dim=1) & ~negative.isnan().any(dim=1)
            if keep.any():
                loss = loss + cosine_triplet_loss(anchor[keep], target[keep], negative[keep], recipe.margin)
            if recipe.alignment_weight:
                anchors.append(anchor[keep])
                groups.append((positive[keep].float() @ space.clusters.to(anchor.device).float()) > 0)
        if anchors:
            regularizer = alignment_regularizer(torch.cat(anchors), torch.cat(groups))
            if regularizer is not None:
                loss = loss + recipe.alignment_weight * regularizer
        return loss

    def evaluate(self, model, split, corpora=None):
        return {
            corpus.name: zero_shot_metrics(model, corpus.splits[split], self.spaces[corpus.name],
                                           self.recipe.top_k[corpus.name], self.accelerator, self.recipe.batch_size)
            for corpus in (corpora or self.corpora)
        }

    def _tested(self, folder, model, corpora):
        """The engine's results, and best/'s zero-shot on the held-out corpus."""
        results = super()._tested(folder, model, corpora)
        if folder == "best" and self.held_out is not None:
            name = self.held_out.name
            results["zero_shot"] = {name: zero_shot_metrics(
                model, self.held_out.splits["test"], self.held_out_space, self.recipe.top_k[name], self.accelerator,
                self.recipe.batch_size)}
        return results


def prepared_tag_corpora(dataset: str | Path) -> list[str]:
    return [c for c in TAG_CORPORA if any((Path(dataset) / DATA_DIR / c).glob("*.parquet"))]


def train_one(args, recipe: ZeroShotRecipe, held_out: str | None, train_corpora: Sequence[str], output: Path,
              accelerator) -> dict[str, Any]:
    clusters_path = Path(args.dataset) / CLUSTERS_FILE
    if not clusters_path.is_file():
        raise FileNotFoundError(f"{clusters_path}: no label alignment; prepare the corpora with music2emo prepare-data.")
    clusters = LabelClusters.from_dict(json.loads(clusters_path.read_text(encoding="utf-8")))
    trained = realign(clusters, train_corpora)  # the held-out corpus's labels shape no training target
    template = clusters.parameters.get("template", "{}")
    dimension = load_label_encoder().get_sentence_embedding_dimension()
    set_seed(recipe.seed)
    overrides = {"hypothesis_template": template}  # the pipeline then words labels as the targets were
    init_config = json.loads((Path(args.model) / "config.json").read_text(encoding="utf-8"))
    if not init_config.get("label_embedding_dim"):
        overrides.update(label_embedding_dim=dimension, **recipe.projector)
    model, extractor = engine.build_model(args.model, train_corpora, overrides)
    cache = engine.pick_cache(args.dataset, args.features)
    corpora = engine.load_corpora(args.dataset, cache, train_corpora, model, audio=recipe.finetune_backbone,
                                  named=f"--model {args.model}")
    spaces = {c: label_space(trained, c, "clusters" if recipe.targets == "clusters" else "labels", template)
              for c in train_corpora}
    held, held_space = None, None
    if held_out is not None:
        held = engine.load_corpora(args.dataset, cache, [held_out], model, splits=["test"])[0]
        held_space = label_space(clusters, held_out, recipe.test_labels, template)
    for corpus in [*corpora, *([held] if held else [])]:
        engine.refuse_seen_tracks(args.model, corpus, "test", args.dataset, "--model", "this run's test scores")
    info = {"script": "train_zero_shot", "dataset": str(Path(args.dataset).resolve()), "features": str(cache.resolve()),
            "init": str(Path(args.model).resolve()), "held_out": held_out}
    trainer = ZeroShotTrainer(recipe, model, extractor, corpora, output, spaces, held, held_space, info, accelerator)
    engine.check_same_run(output, engine.run_settings(info, recipe, corpora, accelerator), accelerator)
    return trainer.train()


def table_row(label: str, runs: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """One row of the leave-one-out table: per held-out corpus, its zero-shot metrics and the training corpora."""
    return {"label": label, "held_out": {held: {"trained_on": run["trained_on"], **run["zero_shot"]}
                                         for held, run in runs.items()}}


def zero_shot_table(rows: Sequence[Mapping[str, Any]]) -> str:
    """The paper's layout: one column per held-out corpus ("Train MTG+CAL -> test EMO"), macro-F1 segment / song."""
    held = [c for c in ("emotify", "mtg_jamendo", "cal500") if any(c in row["held_out"] for row in rows)]

    def header(corpus: str) -> str:
        first = next(row["held_out"][corpus] for row in rows if corpus in row["held_out"])
        trained = "+".join(SHORT[c] for c in first["trained_on"])
        return f"Train {trained} -> test {SHORT[corpus]} (top-{first['top_k']})"

    lines = ["Zero-shot macro-F1, segment / song (majority vote of segments):", "",
             "| Method | " + " | ".join(header(c) for c in held) + " |", "|---|" + "---|" * len(held)]
    for row in rows:
        cells = []
        for corpus in held:
            m = row["held_out"].get(corpus)
            cells.append("–" if m is None else f"{m['f1_macro_segment']:.4f} / {m['f1_macro_song']:.4f}")
        lines.append(f"| {row['label']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_leave_one_out(output: str | Path) -> dict[str, dict[str, Any]]:
    """held-out corpus -> {"trained_on", "zero_shot" metrics} from a leave-one-out output folder."""
    runs = {}
    for corpus in TAG_CORPORA:
        results = Path(output) / corpus / engine.RESULTS
        if results.is_file():
            data = json.loads(results.read_text(encoding="utf-8"))
            trained_on = json.loads((Path(output) / corpus / "run.json").read_text(encoding="utf-8"))["corpora"]
            runs[corpus] = {"trained_on": trained_on, "zero_shot": data["best"]["zero_shot"][corpus]}
    if not runs:
        raise FileNotFoundError(f"{output}: no finished zero-shot run (expected <held-out corpus>/results.json).")
    return runs


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="zero_shot_aligned", help="recipe name in training/configs, or a JSON file")
    parser.add_argument("--dataset", required=True, type=engine.dataset_folder,
                        help="a folder made by `music2emo prepare-data`")
    parser.add_argument("--features", help="feature cache name under DATASET/features (default: the only one)")
    parser.add_argument("--model", required=True, type=engine.model_folder,
                        help="model folder to start from (the one the features were made with)")
    parser.add_argument("--held-out", default="all", help="the corpus scored zero-shot, 'all' (leave-one-out) or 'none'")
    parser.add_argument("--train-corpus", nargs="+", help="with one --held-out: the corpora to train on (default: the others)")
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="override recipe settings")
    args = parser.parse_args(argv)
    accelerator = engine.make_accelerator()
    try:
        recipe = ZeroShotRecipe.load(args.config, engine.parse_overrides(args.set))
        prepared = prepared_tag_corpora(args.dataset)
        if args.held_out == "all":
            if args.train_corpus:
                raise ValueError("--train-corpus goes with one --held-out corpus; leave-one-out trains on the others.")
            if len(prepared) < 2:
                raise ValueError(f"leave-one-out needs at least two prepared tag corpora in {args.dataset}, found {prepared}.")
            plan = [(held, [c for c in prepared if c != held]) for held in prepared]
        else:
            held = None if args.held_out == "none" else args.held_out
            if held is not None and held not in prepared:
                raise ValueError(f"--held-out {held}: not a prepared tag corpus of {args.dataset} ({prepared}).")
            train = args.train_corpus or [c for c in prepared if c != held]
            unknown = sorted(set(train) - set(prepared))
            if unknown or held in train or not train:
                raise ValueError(f"--train-corpus {train}: give prepared tag corpora ({prepared}) other than the held-out one.")
            plan = [(held, train)]
        single = len(plan) == 1
        engine.refuse_a_file(args.output_dir)  # leave-one-out runs go in folders under it
        runs = {}
        for held, train in plan:
            output = Path(args.output_dir) if single else Path(args.output_dir) / held
            results = train_one(args, recipe, held, train, output, accelerator)
            if held is not None:
                runs[held] = {"trained_on": train, "zero_shot": results["best"]["zero_shot"][held]}
    except (OSError, ValueError, KeyError, TypeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if accelerator.is_main_process and runs:
        row = table_row(recipe.name, runs)
        table = zero_shot_table([row])
        if not single:
            Path(args.output_dir, "table.md").write_text(table, encoding="utf-8")
            Path(args.output_dir, "table.json").write_text(json.dumps([row], indent=1) + "\n", encoding="utf-8")
        print(table, end="")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    engine.exit_with(main)
