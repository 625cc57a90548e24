"""The music2emo-hf Space: upload or record a clip and see how it feels (mood probabilities, valence/arousal on
Russell's circumplex, an emotion timeline, key and chords, scores for your own words), computed on CPU by the same
`music-emotion` pipeline as the package.

`python app.py` serves it. The model selector offers what `MUSIC2EMO_SPACE_MODELS` names (comma-separated Hub ids,
model folders, or folders of model folders), the authors' released checkpoints (converted on first use) and the
published models; a model is loaded when a page first opens (the
selected one) or when another is selected, never at start-up, so the Space starts with nothing fetched. Tests build it with `create_demo(model=...)`.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading

# Before gradio is imported: no usage analytics and no version check, so nothing leaves the server unasked.
os.environ["GRADIO_ANALYTICS_ENABLED"] = "False"
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import time
import warnings
from collections.abc import Sequence
from functools import lru_cache
from pathlib import Path

import gradio as gr
import soundfile as sf
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Circle, Patch

import music2emo_hf.hub
from music2emo_hf import PUBLISHED_MODEL_ID
from music2emo_hf.audio import (
    DECODED_FORMATS,
    AudioDecodeError,
    decoded_seconds,
    header_facts,
    why_unreadable,
)
from music2emo_hf.labels import RatingScale
from music2emo_hf.released import BACKBONE_REPO, CHECKPOINTS, DEFAULT_CHECKPOINT, LICENCES, RELEASED_REPO
from music2emo_hf.modeling_music2emo import UntrainedModelWarning
from music2emo_hf.zero_shot import check_labels

MODELS_VARIABLE = "MUSIC2EMO_SPACE_MODELS"
# The authors' eight released checkpoints, their default (J_all, the package's default model) first: converted on
# first selection and cached.
RELEASED_MODELS = tuple(RELEASED_REPO if name == DEFAULT_CHECKPOINT else f"{RELEASED_REPO}:{name}" for name in CHECKPOINTS)
# The variants of hub_configs/ (less tiny-random) under the project's Hub organisation, not published yet. This
# folder is deployed alone, so they are named here; tests/test_space.py keeps the two lists equal.
PUBLISHED_MODELS = (PUBLISHED_MODEL_ID, "music2emo-hf/music2emo-mert95m-improved", "music2emo-hf/music2emo-mert330m")
# The Hub repos the Space card lists as used.
CARD_MODELS = (RELEASED_REPO, BACKBONE_REPO, *PUBLISHED_MODELS)
MAX_UPLOAD_MB = 50  # enforced by gradio at upload time (see `launch`)
MAX_MINUTES = 10  # about 3 minutes of analysis for the published model on a 2-core CPU Space
LABELS_PER_REQUEST = 50  # each is a bar of the plot, and one request must not hold the queue for long
UPLOADS_KEPT_S = 3600  # how long gradio keeps an upload or recording (and how often it clears older ones)
TOP_MOODS = 10
# A Space on GPU hardware analyses there, given a CUDA build of torch (requirements.txt pins the CPU one).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
NO_PROJECTOR = "has no zero-shot projector, so it cannot score your own labels"
# Russell's circumplex: the feeling each quadrant of (valence, arousal) stands for.
QUADRANTS = {
    (1, 1): "excited · happy", (-1, 1): "tense · angry", (-1, -1): "sad · depressed", (1, -1): "calm · relaxed"
}

logger = logging.getLogger("music2emo-space")


class ModelUnavailable(RuntimeError):
    """A selected model could not be loaded; the message says which, why, and what to do."""


def available_models() -> list[str]:
    """The selector's models: the entries of MUSIC2EMO_SPACE_MODELS, a folder of model folders standing for the
    models inside it, then the released checkpoints and the published models (which need the Hub, or a copy in its
    cache)."""
    models = []
    for entry in filter(None, (part.strip() for part in os.environ.get(MODELS_VARIABLE, "").split(","))):
        path = Path(entry)
        if path.is_dir() and not (path / "config.json").is_file():
            models += sorted(str(child) for child in path.iterdir() if (child / "config.json").is_file())
        else:
            models.append(entry)
    return list(dict.fromkeys([*models, *RELEASED_MODELS, *PUBLISHED_MODELS]))


def model_name(model: str) -> str:
    if os.path.isdir(model):
        return f"{Path(model).name} (local folder)"
    if model == RELEASED_REPO:
        return f"{RELEASED_REPO} ({DEFAULT_CHECKPOINT}, the authors' default)"
    return model


_LOADING = threading.Lock()  # a page opening (outside the queue) and an analysis load a model once, not twice


def load_pipeline(model: str):
    """The pipeline of `model` (a folder or a Hub id), kept for the next request (`cache_clear` forgets them)."""
    with _LOADING:
        return _loaded_pipeline(model)


@lru_cache(maxsize=2)
def _loaded_pipeline(model: str):
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UntrainedModelWarning)  # the UI says so on every answer instead
            return music2emo_hf.hub.load_pipeline(model, device=DEVICE)
    except music2emo_hf.hub.ModelLoadError as error:
        reason = error.reason.split("; ")[0].rstrip(".")  # what is wrong; the rest tells an operator what to run
        if os.path.isdir(model):
            raise ModelUnavailable(
                f"The model in folder {model} could not be loaded ({reason}). Choose another model."
            ) from error
        raise ModelUnavailable(
            f"The model {model} could not be loaded: it is not a folder on this server and the Hugging Face Hub "
            f"could not provide it ({reason}). Choose another model."
        ) from error


load_pipeline.cache_clear = _loaded_pipeline.cache_clear


def refuse(message: str) -> gr.Error:
    """An error shown to the user as the sentence it is, kept on screen until closed."""
    return gr.Error(message, duration=None, print_exception=False)


def describe_model(model: str):
    """What the selected model is and whether it can score the user's own labels; loads it, so the first analysis
    does not wait for that."""
    try:
        pipe = load_pipeline(model)
    except ModelUnavailable as error:
        return f"⚠️ {error}", gr.update(interactive=False, info="Choose a model that loads first.")
    config = pipe.model.config
    heads = [f"{len(config.mood_labels)} moods" if config.mood_labels else "no mood tags",
             "valence/arousal" if config.tasks_of_type("regression") else "no valence/arousal"]
    facts = [f"**{model_name(model)}**", *heads, f"{config.chunk_seconds:g} s segments",
             f"backbone runtime: {pipe.backbone_runtime.name}"]
    if config.untrained:
        facts.append("⚠️ untrained (random weights): its scores are not predictions")
    if config.source:
        facts.append(f"{config.source['file']} at revision {config.source['revision'][:8]}. Terms: {LICENCES}")
    elif "MERT" in (config.backbone_name_or_path or ""):
        facts.append(f"Terms: its backbone, {config.backbone_name_or_path}, is CC-BY-NC-4.0: non-commercial use only")
    if not config.label_embedding_dim:
        facts.append("no zero-shot projector: your own labels cannot be scored with it")
        return " · ".join(facts), gr.update(interactive=False, info=f"This model {NO_PROJECTOR}.")
    facts.append("scores your own labels (zero-shot)")
    return " · ".join(facts), gr.update(interactive=True, info="Words, one per comma or line, scored zero-shot.")


def clip_seconds(path: str, name: str) -> float:
    """The clip's duration as its header states it (decoded where it states none), or a sentence saying why it cannot
    be analysed. A header over the limit is checked by decoding: an MP3's header only estimates its length (from its
    first frame, without a Xing header), which can be twice the truth."""
    limit = MAX_MINUTES * 60
    try:
        seconds = header_facts(path, stop_after=limit)[0] or 0.0  # one of unstated length: decoded just past it
        measured = decoded_seconds(path, stop_after=limit) if seconds > limit else 0.0
        if measured > limit:
            whole = math.ceil(seconds)  # 600.5 s is over the limit: not "10 min 0 s"
            # The same number twice: both decodings stopped just past the limit (no stated length, or one within
            # a decoded block of it), so only "over" is known.
            length = f"over {MAX_MINUTES} minutes" if measured == seconds else f"{whole // 60} min {whole % 60} s"
            raise refuse(f"{name} lasts {length}; this Space analyses up to {MAX_MINUTES} minutes. Upload an excerpt, "
                         "or run music2emo predict on your own machine for whole albums.")
    except (sf.LibsndfileError, RuntimeError) as error:
        raise refuse(unreadable(path, name)) from error
    except AudioDecodeError as error:  # a header the package refuses: its sentence
        raise refuse(str(error).replace(path, name)) from error
    return seconds  # as stated: a file whose decoded length falls short of it is cut short (said with the answer)


def unreadable(path: str, name: str) -> str:
    """Why no decoder opens the file, in the package's words where they are more precise than "not audio" (an empty
    file, one cut short)."""
    reason = why_unreadable(path) or "not audio"
    if reason.startswith("not audio"):
        reason = f"it is damaged or not in a supported format ({DECODED_FORMATS})."
    return f"{name} could not be read as audio: {reason} Upload another file."


def circumplex_figure(result: dict) -> Figure:
    """Valence right, arousal up, on the documented 1-9 scale (the normalised [-1, 1] on the opposite axes), the
    track as a large point and its segments as a path."""
    scale = RatingScale(*result["scale"]["valence"]["range"])
    low, high = scale.low, scale.high
    neutral, radius = scale.midpoint, (high - low) / 2
    figure = Figure(figsize=(5.2, 5.2), layout="constrained")
    ax = figure.add_subplot()
    ax.set(xlim=(low, high), ylim=(low, high), aspect="equal", title="Russell circumplex")
    ax.add_patch(Circle((neutral, neutral), radius, fill=False, color="0.6"))
    ax.axhline(neutral, color="0.85", zorder=0)
    ax.axvline(neutral, color="0.85", zorder=0)
    for (right, up), feeling in QUADRANTS.items():
        ax.text(neutral + right * radius * 0.62, neutral + up * radius * 0.78, feeling, ha="center", va="center",
                color="0.45", fontsize=10, style="italic")
    segments = result.get("segments", [])
    if len(segments) > 1:
        ax.plot([s["valence"] for s in segments], [s["arousal"] for s in segments], "o-", color="0.55", ms=3,
                lw=0.8, label="segments")
    ax.plot(result["valence"], result["arousal"], "o", color="#d62728", ms=12, label="whole clip")
    normalized = [round(result[f"{axis}_normalized"], 2) + 0.0 for axis in ("valence", "arousal")]  # + 0.0: no "-0.00"
    ax.annotate(f"V {result['valence']:.2f}, A {result['arousal']:.2f}\n({normalized[0]:+.2f}, {normalized[1]:+.2f})",
                (result["valence"], result["arousal"]), xytext=(10, -28), textcoords="offset points", fontsize=9)
    ticks = [low + step * radius / 2 for step in range(5)]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.set_xlabel(f"valence ({low:g} negative · {neutral:g} neutral · {high:g} positive)")
    ax.set_ylabel(f"arousal ({low:g} calm · {neutral:g} neutral · {high:g} energetic)")
    to_unit = (scale.to_unit, scale.from_unit)
    ax.secondary_xaxis("top", functions=to_unit).set_xlabel("normalized valence [-1, 1]", fontsize=8)
    ax.secondary_yaxis("right", functions=to_unit).set_ylabel("normalized arousal [-1, 1]", fontsize=8)
    figure.legend(loc="outside lower center", ncols=2, fontsize=8, frameon=False)  # off the plot: no point hidden
    return figure


def timeline_figure(result: dict) -> Figure:
    """Valence and arousal per segment over time, each segment's top mood above it."""
    segments = result["segments"]
    low, high = result["scale"]["valence"]["range"]
    figure = Figure(figsize=(9, 3), layout="constrained")
    ax = figure.add_subplot()
    middles = [(s["start"] + s["end"]) / 2 for s in segments]
    for dimension, colour in (("valence", "#1f77b4"), ("arousal", "#ff7f0e")):
        ax.plot(middles, [s[dimension] for s in segments], "o-", color=colour, label=dimension)
    ax.axhline(result["scale"]["valence"]["neutral"], color="0.7", ls="--", lw=0.8)
    for segment, middle in zip(segments, middles):
        ax.axvline(segment["start"], color="0.9", zorder=0)
        if segment.get("moods"):
            ax.text(middle, high - 0.4, segment["moods"][0]["label"], ha="center", va="top", fontsize=8, color="0.3")
    ax.set(xlim=(0, segments[-1]["end"]), ylim=(low, high), xlabel="time (s)",
           ylabel=f"rating ({low:g}-{high:g})", title="Emotion over time (one point per segment, its top mood above)")
    ax.legend(loc="lower right", fontsize=8, ncols=2)
    return figure


def chord_family(chord: str) -> str:
    """major, minor, other (diminished, augmented, suspended) or no chord, from a Harte label such as 'A:min7'."""
    if chord == "N":
        return "no chord"
    quality = chord.partition(":")[2]
    return "minor" if quality.startswith("min") else "major" if quality.startswith("maj") or quality == "7" else "other"


def chords_figure(result: dict) -> Figure:
    """The chord timeline as bars, labelled where they are wide enough to read."""
    chords = result["chords"]
    colours = {"major": "#f2a541", "minor": "#5b8fd9", "other": "#8cc084", "no chord": "#d0d0d0"}
    end = chords[-1]["end"] if chords else 1.0
    figure = Figure(figsize=(9, 1.9), layout="constrained")
    ax = figure.add_subplot()
    for chord in chords:
        width = chord["end"] - chord["start"]
        ax.broken_barh([(chord["start"], width)], (0, 1), color=colours[chord_family(chord["chord"])], ec="white")
        if width > end * 0.035:
            ax.text(chord["start"] + width / 2, 0.5, chord["chord"], ha="center", va="center", fontsize=7)
    ax.set(xlim=(0, end), ylim=(0, 1), yticks=[], xlabel="time (s)",
           title=f"Key: {result['key']} · {len(chords)} chord{'' if len(chords) == 1 else 's'}")
    figure.legend(handles=[Patch(color=c, label=f) for f, c in colours.items()], loc="outside right upper",
                  fontsize=8, frameon=False)
    return figure


def tick_label(label: str, width: int = 40) -> str:
    """A user's label as a tick shows it: as typed (a `$` is not the start of matplotlib's maths, whose parser fails
    on `$x^$`), cut to `width` characters (a long one squeezed the plot out of its panel)."""
    shown = label if len(label) <= width else label[:width - 1] + "…"
    return shown.replace("$", r"\$")


def zero_shot_figure(scores: list[dict]) -> Figure:
    """The user's labels by cosine similarity (-1 to 1), best on top; one bar per label, even where two labels cut
    to the same tick."""
    figure = Figure(figsize=(6, 0.6 + 0.35 * len(scores)), layout="constrained")
    ax = figure.add_subplot()
    ranked = scores[::-1]
    ax.barh(range(len(ranked)), [s["score"] for s in ranked], color="#2ca02c")
    ax.set_yticks(range(len(ranked)), [tick_label(s["label"]) for s in ranked])
    ax.axvline(0, color="0.6", lw=0.8)
    ax.set(xlim=(-1, 1), xlabel="cosine similarity with the clip (-1 to 1)", title="Your labels")
    return figure


def as_text(name: str) -> str:
    """A file's name for the Markdown status line, shown as named: `[x](y)`, `**`, `$$` and `<i>` are no markup."""
    return re.sub(r"([\\`*_\[\]<>$|~])", r"\\\1", name)  # inside bold text, no other character starts markup


def analyse(audio: str | None, model: str, labels: str):
    """One clip through the pipeline: every panel's content, and the whole answer as JSON."""
    if not audio:
        raise refuse("Upload or record a clip first, then press Analyse.")
    name = Path(audio).name
    if not os.path.exists(audio):  # deleted UPLOADS_KEPT_S after the upload, while the player still shows it
        raise refuse(f"Your upload of {name} has expired (uploads are deleted after an hour or two); upload it again.")
    seconds = clip_seconds(audio, name)
    try:
        pipe = load_pipeline(model)
    except ModelUnavailable as error:
        raise refuse(str(error)) from error
    typed = ",".join((labels or "").splitlines())  # one label per comma or line
    typed_any, wanted = bool(typed.replace(",", "").strip()), []
    if typed_any and pipe.model.config.label_embedding_dim:  # else they are not read (the box is disabled)
        pieces = {piece.strip() for piece in typed.split(",") if piece.strip()}
        if len(pieces) > LABELS_PER_REQUEST:  # told in the Space's terms before the package's own limits are met
            raise refuse(f"{len(pieces)} labels: this Space scores up to {LABELS_PER_REQUEST} at a time. Remove some, "
                         "or run the package on your own machine for more.")
        try:
            wanted = check_labels(typed)  # as the pipeline will read them
        except ValueError as error:
            raise refuse(str(error)) from error
    options = {"return_segments": True, "return_harmony": True}
    if wanted:
        options["candidate_labels"] = wanted
    started = time.perf_counter()
    try:
        result = pipe(audio, **options)
    except ValueError as error:  # the input or the labels: the message names the problem
        raise refuse(str(error).replace(audio, name)) from error
    except Exception as error:  # unforeseen: the sentence for the user, the traceback for the server's log
        logger.exception("analysis of %s with %s failed", name, model)
        raise refuse(
            f"The analysis of {name} failed ({type(error).__name__}: {error}). Try another file or model."
        ) from error
    elapsed = time.perf_counter() - started

    heard = result["segments"][-1]["end"]
    rated = "valence" in result  # a teacher trained on one corpus has one head: mood tags or valence/arousal
    summary = [
        f"**{as_text(name)}** · {heard:.1f} s · analysed by {model_name(model)} in {elapsed:.1f} s",
        f"valence **{result['valence']:.2f}**, arousal **{result['arousal']:.2f}** on the 1-9 scale (5 is neutral)"
        if rated else f"no valence/arousal: {model_name(model)} was trained on mood tags alone",
        f"key **{result['key']}**",
    ]
    if "moods" not in result:
        summary.insert(2, f"no mood tags: {model_name(model)} was trained on valence/arousal alone")
    if "audio_warning" in result:  # cut short, or damaged where decoding stopped: the package's own words
        summary.insert(1, f"⚠️ {result['audio_warning']}")
    elif seconds - heard > 1.0:
        summary.insert(1, f"⚠️ only {heard:.1f} s of the {seconds:.1f} s its header states could be decoded: its "
                          "header misstates its length")
    if "warning" in result:
        summary.insert(0, f"### ⚠️ {result['warning'][:1].upper()}{result['warning'][1:]}.")
    if "zero_shot" in result:
        labels_note, labels_plot = "Your labels, by similarity to the clip.", zero_shot_figure(result["zero_shot"])
    elif typed_any:
        labels_note, labels_plot = f"Your labels were not scored: {model_name(model)} {NO_PROJECTOR}.", None
    else:
        labels_note, labels_plot = "Type your own labels above to score them (models with a zero-shot projector).", None
    return (
        "\n\n".join(summary),
        {mood["label"]: mood["score"] for mood in result["moods"]} if "moods" in result else None,
        circumplex_figure(result) if rated else None,
        timeline_figure(result) if rated else None,
        result["key"],
        chords_figure(result),
        labels_note,
        labels_plot,
        result,
    )


def analyse_afresh(audio: str | None, model: str, labels: str):
    """`analyse`, after clearing the last clip's results: an analysis that fails leaves no earlier answer on screen
    under its error, and says why on the status line as well as in the toast (which a click closes)."""
    yield "", *[None] * 8
    try:
        answer = analyse(audio, model, labels)
    except gr.Error as refusal:
        yield f"### ⚠️ {as_text(refusal.message)}", *[None] * 8
        raise
    yield answer


def figure_panel(label: str, elem_id: str) -> gr.Plot:
    """A panel for one of the figures above: lossless PNG (exact colours), no label over the figure's own title."""
    return gr.Plot(label=label, show_label=False, elem_id=elem_id, format="png")


def create_demo(model: str | None = None, models: Sequence[str] | None = None) -> gr.Blocks:
    """The Space's interface; `model` is selected first (a folder or a Hub id), `models` are the selector's choices
    (by default `available_models()`). Nothing is loaded until a page opens or an analysis runs."""
    choices = list(models) if models is not None else available_models()
    selected = model or choices[0]
    if selected not in choices:
        choices.insert(0, selected)
    with gr.Blocks(title="music2emo-hf: how does this music feel?", analytics_enabled=False,
                   delete_cache=(UPLOADS_KEPT_S, UPLOADS_KEPT_S)) as demo:
        gr.Markdown(
            "# How does this music feel?\n"
            "Mood tags with probabilities, valence and arousal, an emotion timeline, the key and the chords of a clip, "
            "by music2emo-hf (a re-implementation of [Music2Emo](https://arxiv.org/abs/2502.03979)) on CPU. "
            f"**Limits: files up to {MAX_UPLOAD_MB} MB, clips up to {MAX_MINUTES} minutes** "
            f"({DECODED_FORMATS}, or record one). Requests wait their turn in a queue."
        )
        with gr.Row():
            with gr.Column(scale=1):
                audio = gr.Audio(sources=["upload", "microphone"], type="filepath", elem_id="audio",
                                 label=f"Audio (up to {MAX_MINUTES} min, {MAX_UPLOAD_MB} MB)")
                model_choice = gr.Dropdown([(model_name(m), m) for m in choices], value=selected, label="Model",
                                           elem_id="model")
                model_info = gr.Markdown(elem_id="model-info")
                labels = gr.Textbox(label="Your own labels", placeholder="nostalgic, tense, good for studying",
                                    elem_id="labels")
                button = gr.Button("Analyse", variant="primary", elem_id="analyse")
            with gr.Column(scale=2):
                status = gr.Markdown(elem_id="status")
                with gr.Row():
                    moods = gr.Label(num_top_classes=TOP_MOODS, elem_id="moods",
                                     label="Top moods: probability (0.5 = above the tag's base rate)")
                    circumplex = figure_panel("Valence / arousal", "circumplex")
                timeline = figure_panel("Emotion timeline", "timeline")
                key = gr.Textbox(label="Key", interactive=False, elem_id="key")
                chords = figure_panel("Chords", "chords")
                labels_note = gr.Markdown(elem_id="labels-note")
                labels_plot = figure_panel("Your labels (zero-shot)", "zero-shot")
                with gr.Accordion("Everything, as JSON (the pipeline's answer)", open=False):
                    answer = gr.JSON(show_label=False, elem_id="answer")
        # One CPU worker for choosing a model and analysing: they never run at once or twice in parallel. An analysis
        # shows its queue place and progress on the moods panel alone: a failure shows one "Error", not one a panel.
        describe = {"fn": describe_model, "inputs": model_choice, "outputs": [model_info, labels],
                    "api_visibility": "undocumented"}
        demo.load(**describe, queue=False)  # a page opens whatever the queue holds (a full one refused it for good)
        model_choice.change(**describe, concurrency_id="cpu")
        button.click(analyse_afresh, [audio, model_choice, labels],
                     [status, moods, circumplex, timeline, key, chords, labels_note, labels_plot, answer],
                     api_name="analyse", concurrency_id="cpu", show_progress_on=moods)
    demo.queue(default_concurrency_limit=1, max_size=32)
    return demo


def launch(demo: gr.Blocks, **options):
    """Serve `demo` with the Space's settings: the upload limit, no share link, client-side rendering (no Node)."""
    return demo.launch(max_file_size=f"{MAX_UPLOAD_MB}mb", share=False, ssr_mode=False, **options)


if __name__ == "__main__":
    launch(create_demo())
