"""Cross-corpus label alignment: embed every mood label with all-MiniLM-L6-v2 and cluster them with mean shift.

Labels of different corpora that mean the same ("sad", "sadness", "melancholic") land in one cluster, so a model can
be trained and evaluated across vocabularies (the cross-dataset alignment paper, ORIGINALS §2.2-2.3).

What is embedded is, per label, `template.format(text)` where `text` is the label's thesaurus expansion from
`label_expansions.json` (versioned data, since the paper's LLM-expanded texts were never published) or, with
`expand=False`, the bare label. Raw labels cluster poorly: all-MiniLM-L6-v2 puts "sad" nearer "happy" (cosine 0.37)
than "melancholic" (0.23), so no bandwidth merges sad with melancholic without merging it with happy.

Clustering follows the paper: `MeanShift(bandwidth=estimate_bandwidth(X, quantile=q, n_samples=len(X)))` with the
flat kernel over all labels at once; identical label texts (MTG's and CAL500's "happy") are embedded once.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

import numpy as np

from .labels import CAL500_EMOTIONS, DEFAULT_TEMPLATE, EMOTIFY_GEMS, LABEL_ENCODER_ID, MTG_JAMENDO_MOODS, check_template
from .zero_shot import embed_texts

DEFAULT_QUANTILE = 0.03
TAG_VOCABULARIES: Mapping[str, Sequence[str]] = {
    "mtg_jamendo": MTG_JAMENDO_MOODS,
    "cal500": CAL500_EMOTIONS,
    "emotify": EMOTIFY_GEMS,
}


def label_text(label: str) -> str:
    """A corpus label as words: CAL500's `Calming_/_Soothing` -> `calming, soothing`, Emotify's
    `joyful_activation` -> `joyful activation` (the paper's normalisation, extended to underscores)."""
    return label.replace("_/_", ", ").replace("_", " ").strip().lower()


@lru_cache(maxsize=1)
def label_expansions() -> dict[str, Any]:
    """The packaged, versioned expansion texts: `{"version": int, "expansions": {label text: expansion}}`."""
    with resources.files(__package__).joinpath("label_expansions.json").open(encoding="utf-8") as handle:
        return json.load(handle)


@dataclass
class LabelClusters:
    """The cluster table: one row per (corpus, label), its embedded text and cluster id, and the cluster centres."""

    corpora: list[str]
    labels: list[str]
    texts: list[str]
    clusters: list[int]
    centers: np.ndarray
    parameters: dict[str, Any] = field(default_factory=dict)

    def cluster_of(self, corpus: str, label: str) -> int:
        for c, l, k in zip(self.corpora, self.labels, self.clusters):
            if c == corpus and l == label:
                return k
        raise KeyError(f"label {label!r} of corpus {corpus!r} is not in the cluster table")

    def members(self) -> dict[int, list[tuple[str, str]]]:
        table: dict[int, list[tuple[str, str]]] = {}
        for c, l, k in zip(self.corpora, self.labels, self.clusters):
            table.setdefault(k, []).append((c, l))
        return dict(sorted(table.items()))

    def merged(self) -> list[list[str]]:
        """The clusters holding more than one distinct label text, as sorted label texts."""
        groups = []
        for members in self.members().values():
            texts = sorted({label_text(label) for _, label in members})
            if len(texts) > 1:
                groups.append(texts)
        return sorted(groups)

    def describe(self) -> str:
        """What merged, for people: one line per multi-label cluster."""
        lines = [
            f"{len(self.labels)} labels of {len(set(self.corpora))} corpora -> {len(self.centers)} clusters "
            f"(quantile {self.parameters.get('quantile')}, bandwidth {self.parameters.get('bandwidth', 0):.3f})"
        ]
        for k, members in self.members().items():
            if len({label_text(label) for _, label in members}) > 1:
                lines.append(f"  cluster {k}: " + ", ".join(f"{label} ({corpus})" for corpus, label in members))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return {
            "parameters": self.parameters,
            "table": [
                {"corpus": c, "label": l, "text": t, "cluster": k}
                for c, l, t, k in zip(self.corpora, self.labels, self.texts, self.clusters)
            ],
            "centers": self.centers.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> LabelClusters:
        table = data["table"]
        return cls(
            corpora=[row["corpus"] for row in table],
            labels=[row["label"] for row in table],
            texts=[row["text"] for row in table],
            clusters=[int(row["cluster"]) for row in table],
            centers=np.asarray(data["centers"], dtype=np.float64),
            parameters=dict(data["parameters"]),
        )


def align_labels(
    vocabularies: Mapping[str, Sequence[str]] = TAG_VOCABULARIES,
    quantile: float = DEFAULT_QUANTILE,
    template: str = DEFAULT_TEMPLATE,
    expand: bool = True,
) -> LabelClusters:
    """Cluster the labels of `vocabularies` (corpus -> labels) by meaning; see the module docstring."""
    if not 0 < quantile <= 1:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    check_template(template, "template")
    expansions = label_expansions()["expansions"] if expand else {}
    loose = [corpus for corpus, labels in vocabularies.items() if isinstance(labels, str | bytes)]
    if loose:  # its letters would be aligned as labels
        raise ValueError(f"{', '.join(loose)}: give a corpus's labels as a list of strings, not one string.")
    rows = [(corpus, label) for corpus, labels in vocabularies.items() for label in labels]
    blank = [f"{corpus}: {label!r}" for corpus, label in rows if not isinstance(label, str) or not label_text(label)]
    if blank:
        raise ValueError(f"labels without words cannot be aligned by meaning: {', '.join(blank)}")
    if len(rows) < 2:
        raise ValueError("label alignment needs at least two labels")
    texts = [template.format(expansions.get(label_text(label), label_text(label))) for _, label in rows]
    return _clustered(rows, texts, {
        "encoder": LABEL_ENCODER_ID,
        "template": template,
        "expansions_version": label_expansions()["version"] if expand else None,
    }, quantile=quantile)


def realign(clusters: LabelClusters, corpora: Sequence[str]) -> LabelClusters:
    """`clusters` cut to the labels of `corpora` and their texts clustered again with its bandwidth: a corpus left out
    (held out of training) shapes no cluster, as the paper clustered each pair of training corpora alone
    (ORIGINALS §2.3). The bandwidth is kept, not estimated again: mean shift over these few labels is a knife edge
    (for MTG-Jamendo with Emotify, the least quantile that works, 0.035, puts 29 of 65 labels, happy and sad
    among them, in one cluster), and it is one number, set once for the folder's corpora together."""
    rows = [(c, label, text) for c, label, text in zip(clusters.corpora, clusters.labels, clusters.texts)
            if c in corpora]
    missing = sorted(set(corpora) - {c for c, _, _ in rows})
    if missing:
        raise ValueError(f"the label alignment has no labels of {missing}; prepare those corpora into its folder.")
    return _clustered([(c, label) for c, label, _ in rows], [text for _, _, text in rows],
                      {**clusters.parameters, "corpora": sorted(set(corpora))},
                      bandwidth=float(clusters.parameters["bandwidth"]))


def _clustered(rows: Sequence[tuple[str, str]], texts: Sequence[str], parameters: dict[str, Any],
               quantile: float | None = None, bandwidth: float | None = None) -> LabelClusters:
    """Mean shift over the embeddings of the distinct `texts` (one per (corpus, label) row), with `bandwidth` or
    one estimated at `quantile`; `parameters` recorded with them."""
    from sklearn.cluster import MeanShift, estimate_bandwidth

    unique = list(dict.fromkeys(texts))
    embeddings = embed_texts(unique)
    if bandwidth is None:
        bandwidth = float(estimate_bandwidth(embeddings, quantile=quantile, n_samples=len(embeddings)))
        if bandwidth < 1e-6:  # each label's nearest neighbours are only itself (a rounding error above 0)
            raise ValueError(
                f"quantile {quantile} gives bandwidth 0 for {len(unique)} labels (every label would be its own "
                "cluster); raise the quantile"
            )
        parameters = {**parameters, "quantile": quantile}
    shift = MeanShift(bandwidth=bandwidth).fit(embeddings)
    cluster_of_text = dict(zip(unique, shift.labels_.tolist()))
    clusters = [cluster_of_text[text] for text in texts]
    largest = int(np.bincount(clusters).max())
    if len(rows) > 2 and largest > len(rows) / 2:  # the bare labels of the paper's raw form: 68 of 83
        warnings.warn(f"one cluster holds {largest} of the {len(rows)} labels (bandwidth {bandwidth:.3f}): this "
                      "alignment tells little apart; lower the quantile, or embed the labels' expansions in the "
                      "template (the defaults).", stacklevel=3)
    return LabelClusters(
        corpora=[corpus for corpus, _ in rows],
        labels=[label for _, label in rows],
        texts=list(texts),
        clusters=clusters,
        centers=shift.cluster_centers_,
        parameters={**parameters, "bandwidth": bandwidth},
    )


__all__ = [
    "DEFAULT_QUANTILE",
    "LabelClusters",
    "TAG_VOCABULARIES",
    "align_labels",
    "label_expansions",
    "label_text",
    "realign",
]


if __name__ == "__main__":  # `python -m music2emo_hf.label_alignment`: the default alignment of the real vocabularies
    print(align_labels().describe())
