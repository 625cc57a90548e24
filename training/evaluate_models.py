"""The results table of trained models, in the layout of the Music2Emo README: one row per training setting, one
column per corpus (tags: PR-AUC / ROC-AUC, macro; valence/arousal: R² V / R² A on the native scale).

    python training/evaluate_models.py --dataset DATA [--features NAME] [--split test] --output results/table \\
        --model "single=runs/teacher-mtg/best" --model "single=runs/teacher-deam/best" \\
        --model "J+D+E+P (KD)=runs/student/best-mtg_jamendo" --model "J+D+E+P (KD)=runs/student/best-deam" \\
        [--teacher deam=runs/teacher-deam/best ...]

Each model is scored on the corpora it was trained on (its training.json), and a `best-<corpus>/` export on its corpus
alone: the single-corpus teachers fill one row together, and so do a faithful student's exports, as Music2Emo's KD row
was made (J_all scored on MTG-Jamendo, D_all on DEAM, ...). With --teacher, a second table gives each model's distance
to the teachers' outputs on their corpora (tags: mean binary KL between the two models' tag probabilities;
valence/arousal: mean squared difference), which is what distillation should shrink. With --zero-shot LABEL=DIR (a
train_zero_shot.py leave-one-out folder, repeat per method), the zero-shot table in the cross-dataset paper's layout
follows. Writes OUTPUT.md and OUTPUT.json; prints the markdown.

A model the feature cache cannot score (a released checkpoint, converted, which hears chords by the authors' path;
one whose backbone was fine-tuned) enters the table by its predictions from audio: `music2emo predict --dataset DATA
--config CORPUS --split test --model ... --output-dataset preds/NAME`, then `--predictions LABEL=preds/NAME`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from accelerate import Accelerator
from engine import (TRAINING_INFO, corpus_metrics, corpus_task, exit_with, load_corpora, load_teacher,
                    pick_cache, predict, refuse_seen_tracks, teacher_paths)
from train_zero_shot import read_leave_one_out, table_row, zero_shot_table

from music2emo_hf import Music2EmoModel
from music2emo_hf.atomic import write_atomic
from music2emo_hf.data.cached import task_targets
from music2emo_hf.data.layout import split_rows
from music2emo_hf.dataset_predictions import MADE_BY
from music2emo_hf.jobs import MOOD_PREFIX
from music2emo_hf.metrics import sigmoid

# Column order and headers: Music2Emo's J, D, E, P, then the tag corpora of the cross-dataset paper.
COLUMNS = {
    "mtg_jamendo": "MTG-Jamendo PR / ROC",
    "deam": "DEAM R² V / A",
    "emomusic": "EmoMusic R² V / A",
    "pmemo": "PMEmo R² V / A",
    "cal500": "CAL500 PR / ROC",
    "emotify": "Emotify PR / ROC",
}


def labelled(option: str, spec: str, expected: str) -> tuple[str, Path]:
    """`LABEL=PATH` (the label may hold "=", the path not); `expected` says what, with an example."""
    label, sep, path = spec.rpartition("=")
    if not sep or not label or not path:
        raise ValueError(f"{option} {spec!r}: expected {expected}.")
    return label, Path(path)


def parse_models(specs: Sequence[str]) -> list[tuple[str, Path]]:
    models = []
    for spec in specs:
        label, path = labelled("--model", spec, "LABEL=MODEL_DIR (e.g. 'single=runs/teacher-deam/best')")
        if not (Path(path) / TRAINING_INFO).is_file():
            raise FileNotFoundError(f"--model {spec}: {path} is not a model written by train_teacher.py or distill.py "
                                    f"(no {TRAINING_INFO}).")
        models.append((label, path))
    return models


def score_predictions(dataset: str, folder: Path, split: str) -> tuple[str, dict[str, float], int, int]:
    """(the corpus, its metrics, the tracks scored, the split's tracks missing from them) of a `music2emo predict
    --dataset` output folder made on `split` of one corpus of `dataset`: its scores (`mood:<label>` probabilities, or
    valence and arousal) against the labels of the tracks it names."""
    from datasets import load_dataset

    if not folder.is_dir():
        raise FileNotFoundError(f"--predictions {folder}: no such folder; make it with `music2emo predict --dataset "
                                f"{dataset} --config CORPUS --split {split} --output-dataset {folder}`.")
    card = folder / "README.md"
    if not card.is_file() or MADE_BY not in card.read_text(encoding="utf-8", errors="replace"):  # else `datasets`
        # fails on its files, in its own words (a CastError's traceback for a training run's folder)
        raise ValueError(f"--predictions {folder}: not a `music2emo predict --dataset` output folder (its README.md "
                         f"does not say it was made so); make one with `music2emo predict --dataset {dataset} --config "
                         f"CORPUS --split {split} --output-dataset DIR`.")
    splits = load_dataset(str(folder))
    if split not in splits:
        raise ValueError(f"--predictions {folder}: it holds predictions of the {', '.join(splits)} split, not "
                         f"{split}; predict with --split {split}.")
    rows = splits[split].to_list()
    corpora = sorted({row.get("corpus") for row in rows})
    if len(corpora) != 1 or corpora[0] is None:
        raise ValueError(f"--predictions {folder}: its rows name the corpora {corpora}, not one; predict one corpus "
                         f"of {dataset} (--config CORPUS).")
    corpus, task = corpora[0], corpus_task(corpora[0])
    truth = {row["track_id"]: row for row in split_rows(dataset, corpus, split)}
    strays = [row["track_id"] for row in rows if row["track_id"] not in truth]
    if strays:
        raise ValueError(f"--predictions {folder}: {len(strays)} of its tracks are not in {corpus}'s {split} split "
                         f"of {dataset} (e.g. {strays[:3]}): predictions of another dataset or split.")
    columns = [MOOD_PREFIX + label for label in task["labels"]] if task["type"] == "multilabel" else task["labels"]
    absent = [name for name in columns if name not in rows[0] or any(row[name] is None for row in rows)]
    if absent:
        raise ValueError(f"--predictions {folder}: no score of every track in {absent[:3]}; predict with a model "
                         f"that has {corpus}'s labels, without --top-k or --threshold.")
    scores = np.array([[row[name] for name in columns] for row in rows], dtype=np.float64)
    if task["type"] == "multilabel":  # probabilities, as logits (the metrics take the heads' outputs)
        probabilities = np.clip(scores, 1e-7, 1 - 1e-7)
        scores = np.log(probabilities) - np.log1p(-probabilities)
    targets = np.stack([task_targets(truth[row["track_id"]], task) for row in rows])
    return corpus, corpus_metrics(task, targets, scores), len(rows), len(truth) - len({row["track_id"] for row in rows})


def cell(metrics: Mapping[str, float] | None) -> str:
    if metrics is None:
        return "–"
    if "roc_auc_macro" in metrics:
        return f"{metrics['pr_auc_macro']:.4f} / {metrics['roc_auc_macro']:.4f}"
    return f"{metrics['r2_valence']:.4f} / {metrics['r2_arousal']:.4f}"


def binary_kl(p: np.ndarray, q: np.ndarray) -> float:
    """Mean over tracks and tags of KL(p || q) between Bernoulli probabilities."""
    p, q = np.clip(p, 1e-7, 1 - 1e-7), np.clip(q, 1e-7, 1 - 1e-7)
    return float(np.mean(p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))))


def evaluate(
    dataset: str, features: str | None, models: Sequence[tuple[str, Path]], split: str,
    teachers: Mapping[str, str], accelerator: Accelerator, predictions: Sequence[tuple[str, Path]] = (),
) -> dict[str, Any]:
    cache = pick_cache(dataset, features) if models or teachers else None
    rows: dict[str, dict[str, Any]] = {}
    left_out: dict[str, dict[str, int]] = {}  # corpus (or "corpus, row LABEL") -> tracks of the split not scored, by why

    def add(label: str, source: Path, corpus: str, metrics: dict[str, float]) -> dict[str, Any]:
        row = rows.setdefault(label, {"label": label, "models": [], "metrics": {}, "teacher_distance": {}})
        if corpus in row["metrics"]:
            raise ValueError(f"row {label!r}: two models are scored on {corpus}; give them different labels.")
        row["models"].append(str(source))
        row["metrics"][corpus] = metrics
        return row

    for label, folder in predictions:
        corpus, metrics, scored, missing = score_predictions(dataset, folder, split)
        add(label, folder, corpus, metrics)
        if missing:
            left_out[f"{corpus}, row {label}"] = {"scored": scored, "not_predicted": missing}
    for label, path in models:
        model = Music2EmoModel.from_pretrained(path).to(accelerator.device).eval()
        info = json.loads((path / TRAINING_INFO).read_text(encoding="utf-8"))
        scored_on = [info["selected_for"]] if "selected_for" in info else info["corpora"]  # a best-<corpus>/ export
        for corpus in load_corpora(dataset, cache, scored_on, model, splits=[split], named=f"--model {label}={path}"):
            if split != "train":
                refuse_seen_tracks(path, corpus, split, dataset, f"--model {label}={path}", "its scores")
            part = corpus.splits[split]
            if part.without_audio or part.without_features:
                left_out[corpus.name] = {"scored": len(part), "without_audio": len(part.without_audio),
                                         "without_features": len(part.without_features)}
            outputs = predict(model, part, corpus.task, accelerator, batch_size=16)
            row = add(label, path, corpus.name, corpus_metrics(corpus.task, part.targets, outputs))
            if corpus.name in teachers:
                teacher = load_teacher(teachers[corpus.name], cache).to(accelerator.device).eval()
                taught = predict(teacher, part, corpus.task, accelerator, batch_size=16)
                row["teacher_distance"][corpus.name] = (
                    binary_kl(sigmoid(taught), sigmoid(outputs))
                    if corpus.task["type"] == "multilabel"
                    else float(np.mean((outputs - taught) ** 2))
                )
    return {"dataset": str(Path(dataset).resolve()), "features": str(cache.resolve()) if cache else None,
            "split": split, "rows": list(rows.values()), "left_out": left_out}


def markdown(results: Mapping[str, Any]) -> str:
    present = [c for c in COLUMNS if any(c in row["metrics"] for row in results["rows"])]
    features = f" (features {Path(results['features']).name})" if results["features"] else ""
    lines = [
        f"Split: {results['split']} of {results['dataset']}{features}.",
        "",
        "| Training sets | " + " | ".join(COLUMNS[c] for c in present) + " |",
        "|---|" + "---|" * len(present),
    ]
    for row in results["rows"]:
        lines.append(f"| {row['label']} | " + " | ".join(cell(row["metrics"].get(c)) for c in present) + " |")
    reasons = {"without_audio": "without audio", "without_features": "without cached features",
               "not_predicted": "not in the predictions"}
    for name, counts in results["left_out"].items():
        why = ", ".join(f"{counts[key]} {words}" for key, words in reasons.items() if key in counts)
        lines.append(f"\n{name}: scored on {counts['scored']} of its {sum(counts.values())} {results['split']} tracks "
                     f"({why}).")
    distances = [c for c in COLUMNS if any(c in row["teacher_distance"] for row in results["rows"])]
    if distances:
        lines += [
            "",
            "Distance to the teachers (tags: mean binary KL of tag probabilities; V/A: mean squared difference):",
            "",
            "| Model | " + " | ".join(distances) + " |",
            "|---|" + "---|" * len(distances),
        ]
        for row in results["rows"]:
            values = [row["teacher_distance"].get(c) for c in distances]
            lines.append(f"| {row['label']} | " + " | ".join("–" if v is None else f"{v:.4f}" for v in values) + " |")
    return "\n".join(lines) + "\n"


def table_stem(output: str) -> Path:
    """OUTPUT without a .md or .json suffix: the tables go to STEM.md and STEM.json (table.v2: table.v2.md)."""
    path = Path(output)
    return path.with_suffix("") if path.suffix in (".md", ".json") else path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", help="a folder made by `music2emo prepare-data` (to score --model)")
    parser.add_argument("--features", help="feature cache name under DATASET/features (default: the only one)")
    parser.add_argument("--model", action="append", default=[], dest="models", metavar="LABEL=DIR",
                        help="a trained model and the row it belongs to (repeat)")
    parser.add_argument("--predictions", action="append", default=[], metavar="LABEL=DIR",
                        help="a `music2emo predict --dataset` output folder of one corpus's split and its row (repeat)")
    parser.add_argument("--zero-shot", action="append", default=[], dest="zero_shot", metavar="LABEL=DIR",
                        help="a train_zero_shot.py leave-one-out output folder and its row (repeat)")
    parser.add_argument("--teacher", action="append", default=[], dest="teachers", metavar="CORPUS=DIR",
                        help="report each model's distance to this teacher on its corpus (repeat)")
    parser.add_argument("--split", default="test", choices=("train", "validation", "test"))
    parser.add_argument("--output", required=True, help="writes OUTPUT.md and OUTPUT.json")
    args = parser.parse_args(argv)
    if not args.models and not args.predictions and not args.zero_shot:
        parser.error("give at least one --model, --predictions or --zero-shot")
    if (args.models or args.predictions) and not args.dataset:
        parser.error("--model and --predictions need --dataset, the prepared folder to score them on")
    stem = table_stem(args.output)
    if stem.is_dir():
        parser.error(f"--output {args.output}: is a folder; name the tables' file in it, e.g. {stem / 'table'} "
                     "(writes table.md and table.json there)")
    nearest = next(folder for folder in (stem.parent.absolute(), *stem.parent.absolute().parents) if folder.exists())
    if not nearest.is_dir() or not os.access(nearest, os.W_OK):  # found now, not once every model is scored
        parser.error(f"--output {args.output}: cannot write there ({nearest} is not a folder this user can write to)")
    accelerator = Accelerator()
    try:
        results: dict[str, Any] = {}
        if args.models or args.predictions:
            predictions = [labelled("--predictions", spec, "LABEL=DIR, a `music2emo predict --dataset` output "
                                    "(e.g. 'released=preds/D_all')") for spec in args.predictions]
            results = evaluate(args.dataset, args.features, parse_models(args.models), args.split,
                               teacher_paths(args.teachers), accelerator, predictions)
        zero_shot_rows = []
        for spec in args.zero_shot:
            label, folder = labelled("--zero-shot", spec, "LABEL=FOLDER (a train_zero_shot.py output folder)")
            zero_shot_rows.append(table_row(label, read_leave_one_out(folder)))
    except (OSError, ValueError, KeyError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if zero_shot_rows:
        results["zero_shot"] = zero_shot_rows
    if accelerator.is_main_process:
        stem.parent.mkdir(parents=True, exist_ok=True)
        parts = [markdown(results)] if args.models or args.predictions else []
        text = "\n".join(parts + ([zero_shot_table(zero_shot_rows)] if zero_shot_rows else []))
        write_atomic(f"{stem}.md", text)
        write_atomic(f"{stem}.json", json.dumps(results, indent=1) + "\n")
        print(text, end="")
    accelerator.end_training()
    return 0


if __name__ == "__main__":
    exit_with(main, "run the same command again")
