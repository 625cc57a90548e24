"""The Space (spaces/app.py) as a person meets it: served locally, used through gradio_client and through a real
headless Chromium (Debian's, driven by Playwright; never a downloaded browser), with the tiny random models."""

from __future__ import annotations

import base64
import importlib.metadata
import importlib.util
import io
import itertools
import math
import re
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.conftest import ROOT, TINY_CONFIG, through_a_pipe, require_fixtures, tone

pytest.importorskip("gradio", reason="the Space's tests need its extra: pip install -e '.[dev]'")

from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from gradio_client.utils import Status

pytestmark = pytest.mark.filterwarnings("ignore::Warning:gradio.queueing")  # gradio's own pandas deprecations

CHROMIUM = Path("/usr/bin/chromium")
# Without the background-networking flags Chromium's own connections are refused on a closed network and stall it.
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"]
ARTIFACTS = ROOT / "test-artifacts"
UNPUBLISHED = "music2emo-hf/not-published"  # a Hub id no one can load, offline or online
LABELS = "happy, sad, good for studying"
TRACK_COLOUR = (0xD6, 0x27, 0x28)  # the circumplex's point for the whole clip


def load_space():
    spec = importlib.util.spec_from_file_location("music2emo_space", ROOT / "spaces" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def space_app():
    return load_space()


def save_tiny_model(out: Path, **changes) -> Path:
    """A tiny random model with `changes` to its config, saved as the package saves one."""
    from music2emo_hf import Music2EmoConfig, Music2EmoFeatureExtractor, Music2EmoModel, UntrainedModelWarning
    from music2emo_hf.pipeline_music2emo import save_model

    config = Music2EmoConfig(**{**Music2EmoConfig.from_pretrained(TINY_CONFIG).to_dict(), **changes, "untrained": True})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UntrainedModelWarning)
        model = Music2EmoModel(config)
    save_model(model, Music2EmoFeatureExtractor(config.sampling_rate, config.chunk_seconds), out)
    return out


@pytest.fixture(scope="module")
def zero_shot_model_dir(tmp_path_factory) -> Path:
    """A tiny random model with a zero-shot projector (its label encoder is the packaged offline copy)."""
    return save_tiny_model(tmp_path_factory.mktemp("tiny-zero-shot"), label_embedding_dim=384, projector_dim=32,
                           projector_heads=4)


@pytest.fixture(scope="module")
def space_url(space_app, tiny_model_dir, zero_shot_model_dir):
    """The Space served on the loopback, the model without a projector selected first."""
    demo = space_app.create_demo(
        model=str(tiny_model_dir), models=[str(tiny_model_dir), str(zero_shot_model_dir), UNPUBLISHED]
    )
    space_app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    yield demo.local_url
    demo.close()


@pytest.fixture(scope="module")
def client(space_url) -> Client:
    return Client(space_url, verbose=False)


@pytest.fixture
def clip() -> Path:
    return require_fixtures("emomusic", "audio", "3.mp3")  # CC-BY, 45 s


@pytest.fixture
def damaged_upload(tmp_path) -> Path:
    path = tmp_path / "damaged.mp3"
    path.write_bytes(b"not audio: a text file renamed to .mp3\n" * 100)
    return path


def png(plot: dict):
    """The image of a gr.Plot value (a matplotlib figure sent as a PNG data URL)."""
    from PIL import Image

    assert plot["type"] == "matplotlib"
    header, data = plot["plot"].split(",", 1)
    assert header == "data:image/png;base64"
    return Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB")


def has_colour(image, colour, tolerance=30) -> bool:
    pixels = np.asarray(image, dtype=np.int16)
    return bool((np.abs(pixels - np.array(colour)) <= tolerance).all(axis=-1).any())


@pytest.mark.slow
def test_client_gets_every_result_for_a_real_clip(client, clip, zero_shot_model_dir):
    (status, moods, circumplex, timeline, key, chords, labels_note, labels_plot, answer) = client.predict(
        handle_file(str(clip)), str(zero_shot_model_dir), LABELS, api_name="/analyse"
    )
    duration = sf.info(str(clip)).duration

    assert "untrained model" in status.lower() and "3.mp3" in status  # random weights never pass for predictions
    scores = [mood["score"] for mood in answer["moods"]]
    assert len(scores) == 56 and scores == sorted(scores, reverse=True) and all(0 <= s <= 1 for s in scores)
    assert [(c["label"], c["confidence"]) for c in moods["confidences"]] == [
        (m["label"], m["score"]) for m in answer["moods"][:10]
    ]  # the bars are the ten most probable moods
    for dimension in ("valence", "arousal"):
        assert 1 <= answer[dimension] <= 9
        assert answer[f"{dimension}_normalized"] == pytest.approx((answer[dimension] - 5) / 4, abs=1e-5)
    segments = answer["segments"]
    assert len(segments) == math.ceil(duration / 10)  # the tiny model's 10 s chunks
    assert segments[0]["start"] == 0 and segments[-1]["end"] == pytest.approx(duration, abs=0.05)
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(segments))
    assert key == answer["key"] and re.fullmatch(r"[A-G][#b]? (major|minor)|N", key)
    assert answer["chords"] and answer["chords"][-1]["end"] == pytest.approx(duration, abs=0.5)
    assert {s["label"] for s in answer["zero_shot"]} == {"happy", "sad", "good for studying"}
    similarities = [s["score"] for s in answer["zero_shot"]]
    assert similarities == sorted(similarities, reverse=True) and len(set(similarities)) == 3  # ranked, distinct
    assert "by similarity" in labels_note
    drawn = {name: png(plot) for name, plot in
             {"circumplex": circumplex, "timeline": timeline, "chords": chords, "labels": labels_plot}.items()}
    assert all(image.width > 300 and image.height > 100 for image in drawn.values())
    assert has_colour(drawn["circumplex"], TRACK_COLOUR)


def test_labels_for_a_model_without_projector_get_a_sentence(client, tiny_model_dir, write_wav):
    """Even labels the Space would refuse: the box is disabled for such a model, so they cannot be edited."""
    clip = write_wav("short.wav", tone(3.0))
    *_, labels_note, labels_plot, answer = client.predict(
        handle_file(str(clip)), str(tiny_model_dir), ",".join(f"word{i}" for i in range(60)), api_name="/analyse"
    )
    assert "zero_shot" not in answer and labels_plot is None
    assert labels_note == (
        f"Your labels were not scored: {tiny_model_dir.name} (local folder) has no zero-shot projector, "
        "so it cannot score your own labels."
    )


def test_client_errors_are_sentences(client, clip, damaged_upload, tiny_model_dir):
    with pytest.raises(AppError) as damaged:
        client.predict(handle_file(str(damaged_upload)), str(tiny_model_dir), "", api_name="/analyse")
    assert str(damaged.value) == (
        "damaged.mp3 could not be read as audio: it is damaged or not in a supported format "
        "(WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, W64, RF64, CAF, AU). Upload another file."
    )
    with pytest.raises(AppError) as unloadable:
        client.predict(handle_file(str(clip)), UNPUBLISHED, "", api_name="/analyse")
    message = str(unloadable.value)
    assert message.startswith(f"The model {UNPUBLISHED} could not be loaded")
    assert message.endswith("Choose another model.")
    assert "Traceback" not in message and "\n" not in message


def test_labels_are_read_as_typed_and_limited(client, zero_shot_model_dir, write_wav):
    """A trailing comma or a label per line is no error; more labels than the Space scores get a sentence."""
    clip = handle_file(str(write_wav("short.wav", tone(3.0))))
    *_, answer = client.predict(clip, str(zero_shot_model_dir), "happy, sad,\nnostalgic,", api_name="/analyse")
    assert {s["label"] for s in answer["zero_shot"]} == {"happy", "sad", "nostalgic"}
    *_, answer = client.predict(clip, str(zero_shot_model_dir), ",".join(f"word{i}" for i in range(50)),
                                api_name="/analyse")
    assert len(answer["zero_shot"]) == 50  # the limit itself is scored
    for count in (51, 10_001):  # told in the Space's terms, not the package's limit of 10,000 a call
        with pytest.raises(AppError, match=f"{count} labels: this Space scores up to 50 at a time"):
            client.predict(clip, str(zero_shot_model_dir), ",".join(f"word{i}" for i in range(count)),
                           api_name="/analyse")


def test_labels_are_drawn_as_typed(space_app):
    """`$` starts matplotlib's maths: `$x^$` failed to draw (a bare "Error" on every panel), `$5 or $6` came out
    in italics; a long label is cut, keeping its own bar."""
    import io

    labels = ["$x^$", "costs $5 or $6", "a" * 480, "a" * 481]
    figure = space_app.zero_shot_figure([{"label": label, "score": 0.1 * i} for i, label in enumerate(labels)])
    figure.savefig(io.BytesIO(), format="png")
    ticks = figure.axes[0].get_yticklabels()
    assert [tick.get_text() for tick in ticks] == [r"a" * 39 + "…"] * 2 + [r"costs \$5 or \$6", r"\$x^\$"]
    assert len(figure.axes[0].patches) == 4


def test_the_circumplex_puts_valence_across_and_arousal_up(space_app):
    """Russell's circumplex: a calm, pleasant clip (valence 7.5, arousal 2.5 on 1-9) is right and low, its segments
    drawn where each one is."""
    result = {"valence": 7.5, "arousal": 2.5, "valence_normalized": 0.625, "arousal_normalized": -0.625,
              "segments": [{"valence": 7.0, "arousal": 2.0}, {"valence": 8.0, "arousal": 3.0}],
              "scale": {name: {"range": [1, 9], "neutral": 5.0, "normalized": [-1.0, 1.0]}
                        for name in ("valence", "arousal")}}  # as the pipeline answers
    lines = {line.get_label(): line for line in space_app.circumplex_figure(result).axes[0].get_lines()}
    assert (list(lines["whole clip"].get_xdata()), list(lines["whole clip"].get_ydata())) == ([7.5], [2.5])
    assert (list(lines["segments"].get_xdata()), list(lines["segments"].get_ydata())) == ([7.0, 8.0], [2.0, 3.0])


def test_a_file_name_is_no_markup_in_the_status_line(space_app):
    assert space_app.as_text("[click](https:x) **b** $$x$$ <i>it_1.wav") == (
        r"\[click\](https:x) \*\*b\*\* \$\$x\$\$ \<i\>it\_1.wav")


def test_an_expired_upload_is_called_expired(space_app, tiny_model_dir, tmp_path):
    with pytest.raises(space_app.gr.Error, match="Your upload of gone.wav has expired .* upload it again"):
        space_app.analyse(str(tmp_path / "gone.wav"), str(tiny_model_dir), "")


@pytest.mark.parametrize("corpus,lacks", [("deam", "mood tags"), ("mtg_jamendo", "valence/arousal")])
def test_a_teacher_with_one_head_shows_what_it_has_and_says_what_it_lacks(space_app, tmp_path, corpus, lacks):
    """The selector offers the authors' single-corpus checkpoints (jamendo_best: moods alone; deam_best: valence and
    arousal alone), as training/train_teacher.py makes them: their panels failed with a bare "Error"."""
    from music2emo_hf.configuration_music2emo import tasks_for_corpora

    teacher = str(save_tiny_model(tmp_path / corpus, tasks=tasks_for_corpora([corpus])))
    info, _ = space_app.describe_model(teacher)
    assert f"no {lacks}" in info
    status, moods, circumplex, timeline, key, chords, *_, answer = space_app.analyse(
        str(require_fixtures("emomusic", "audio", "3.mp3")), teacher, "")
    assert f"no {lacks}: {corpus} (local folder) was trained on" in status and key == answer["key"] and chords
    if corpus == "deam":
        assert moods is None and circumplex is not None and timeline is not None
    else:
        assert len(moods) == 56 and circumplex is None and timeline is None


def test_a_file_cut_short_is_said_to_be(client, clip, tiny_model_dir, tmp_path):
    """The first third of an MP3 (an interrupted download), or half a WAV, is analysed for what it holds, and the
    page says how little that is; an empty file gets the package's own reason."""
    cut = tmp_path / "cut.mp3"
    cut.write_bytes(clip.read_bytes()[: clip.stat().st_size // 3])
    status, *_, answer = client.predict(handle_file(str(cut)), str(tiny_model_dir), "", api_name="/analyse")
    heard = answer["segments"][-1]["end"]
    assert heard < 30 and ("⚠️ cut short: its header announces 45.0 s of audio and the file ends before that (not "
                           "downloaded or copied whole); what it holds is analysed.") in status
    whole = tmp_path / "whole.wav"  # a WAV's header gives its length too (libsndfile counts what the file holds)
    sf.write(whole, tone(20.0), 24000, subtype="PCM_16")
    (tmp_path / "cut.wav").write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    status, *_ = client.predict(handle_file(str(tmp_path / "cut.wav")), str(tiny_model_dir), "", api_name="/analyse")
    assert "⚠️ cut short: its header announces 20.0 s of audio and the file ends before that" in status
    (tmp_path / "empty.mp3").write_bytes(b"")
    with pytest.raises(AppError, match=r"^empty.mp3 could not be read as audio: the file is empty"):
        client.predict(handle_file(str(tmp_path / "empty.mp3")), str(tiny_model_dir), "", api_name="/analyse")


def test_an_mp3_the_decoder_would_read_in_part_is_refused_in_a_sentence(space_app, tmp_path):
    streamed = tmp_path / "streamed.mp3"
    streamed.write_bytes(through_a_pipe(tone(12.0, rate=44100), 44100, "MP3", "MPEG_LAYER_III"))
    with pytest.raises(space_app.gr.Error, match=r"upload.mp3: only its first [0-9.]+ s of 12.0 s can be decoded"):
        space_app.clip_seconds(str(streamed), "upload.mp3")


def test_an_mp3_whose_length_is_only_estimated_too_long_says_so(space_app, tiny_model_dir, tmp_path):
    """A constant-bitrate MP3 without a Xing or Info header (`lame -t`: LAME's file less its first, Info frame) and
    an APEv2 tag with cover art at its end (MP3Gain, foobar2000): its length is estimated from its size, tag included,
    1.5 s too long. All of its audio is analysed, and the page says why it is shorter than stated."""
    import struct

    encoded = io.BytesIO()
    sf.write(encoded, tone(10.0, rate=44100), 44100, format="MP3", bitrate_mode="CONSTANT", compression_level=0.5)
    data = encoded.getvalue()
    header = int.from_bytes(data[:4], "big")
    info_frame = 144 * (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320)[header >> 12 & 15] * 1000 \
        // 44100 + (header >> 9 & 1)
    assert data[4 : info_frame].find(b"Info") > 0  # the first frame is LAME's Info frame
    items = [(b"REPLAYGAIN_TRACK_GAIN", b"-6.50 dB"), (b"Cover Art (Front)", b"cover.jpg\0" + bytes(30_000))]
    body = b"".join(struct.pack("<II", len(value), 0) + key + b"\0" + value for key, value in items)
    footer = [b"APETAGEX" + struct.pack("<IIII", 2000, len(body) + 32, len(items), flags) + bytes(8)
              for flags in (0xA0000000, 0x80000000)]
    estimated = tmp_path / "estimated.mp3"
    estimated.write_bytes(data[info_frame:] + footer[0] + body + footer[1])
    status = space_app.analyse(str(estimated), str(tiny_model_dir), "")[0]
    assert "**estimated.mp3** · 10.0 s ·" in status
    assert ("⚠️ only 10.0 s of the 11.5 s its header states could be decoded: its header misstates its length"
            in status)


def test_a_flac_of_unstated_length_is_analysed_whole(client, tiny_model_dir, tmp_path):
    """As a streaming encoder writes it (its STREAMINFO states no length): it was refused as not audio."""
    streamed = tmp_path / "streamed.flac"
    streamed.write_bytes(through_a_pipe(tone(20.0, rate=22050), 22050))
    status, *_, answer = client.predict(handle_file(str(streamed)), str(tiny_model_dir), "", api_name="/analyse")
    assert "**streamed.flac** · 20.0 s ·" in status and "could be decoded" not in status
    assert answer["segments"][-1]["end"] == 20.0


@pytest.mark.slow
def test_a_second_user_waits_in_the_queue(client, tiny_model_dir, write_wav):
    clip = handle_file(str(write_wav("tone.wav", tone(20.0))))
    jobs = [client.submit(clip, str(tiny_model_dir), "", api_name="/analyse") for _ in range(2)]
    waiting_polls = longest_wait = 0  # consecutive looks at one request queued while the other is analysed
    while not all(job.done() for job in jobs):
        codes = {job.status().code for job in jobs}  # the one analysed streams its cleared panels, then its answer
        if Status.IN_QUEUE in codes and codes & {Status.PROCESSING, Status.ITERATING}:
            waiting_polls += 1
            longest_wait = max(longest_wait, waiting_polls)
        else:
            waiting_polls = 0
        time.sleep(0.02)
    assert longest_wait >= 5, "the two requests were not taken one after the other"
    assert all(job.result()[-1]["moods"] for job in jobs)  # and both were answered


def test_clips_over_the_duration_limit_are_refused(client, space_app, tiny_model_dir, write_wav):
    too_long = write_wav("long.wav", np.zeros((space_app.MAX_MINUTES + 1) * 60 * 8000), rate=8000, subtype="PCM_16")
    with pytest.raises(AppError) as refused:
        client.predict(handle_file(str(too_long)), str(tiny_model_dir), "", api_name="/analyse")
    limit = space_app.MAX_MINUTES
    assert str(refused.value).startswith(f"long.wav lasts {limit + 1} min 0 s; this Space analyses up to {limit} minutes.")
    just_over = write_wav("over.wav", np.zeros(limit * 60 * 8000 + 4000), rate=8000, subtype="PCM_16")
    with pytest.raises(AppError, match=f"over.wav lasts over {limit} minutes; this Space analyses up to {limit} "):
        client.predict(handle_file(str(just_over)), str(tiny_model_dir), "", api_name="/analyse")  # 0.5 s over
    streamed = write_wav("streamed.flac", np.zeros(0), rate=8000)  # of unstated length: decoded only past the limit
    streamed.write_bytes(through_a_pipe(np.zeros((limit + 20) * 60 * 8000, np.float32), 8000))
    with pytest.raises(space_app.gr.Error, match=f"streamed.flac lasts over {limit} minutes; this Space analyses"):
        space_app.clip_seconds(str(streamed), "streamed.flac")
    noise = 0.1 * np.random.default_rng(0).standard_normal((limit + 1) * 60 * 8000)
    whole = write_wav("long.flac", noise, rate=8000, subtype="PCM_16")  # its header: over the limit
    cut = whole.with_name("cut.flac")
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 60])  # measured, it holds seconds: analysed
    status, *_, answer = client.predict(handle_file(str(cut)), str(tiny_model_dir), "", api_name="/analyse")
    heard = answer["segments"][-1]["end"]
    assert f"⚠️ decoding stopped at {heard:.1f} s of the {(limit + 1) * 60:.1f} s its header announces" in status


def test_the_folder_deploys_as_a_gradio_space(space_app):
    """The metadata a Space reads: the app it runs, a gradio the package accepts, the models it offers, and
    requirements that install the package with the Space's extra."""
    from huggingface_hub import SpaceCard
    from packaging.requirements import Requirement

    card = SpaceCard.load(ROOT / "spaces" / "README.md").data
    assert card.sdk == "gradio" and (ROOT / "spaces" / card.app_file).is_file()
    assert card.models == list(space_app.CARD_MODELS)
    gradio_range = next(
        Requirement(line).specifier for line in importlib.metadata.requires("music2emo-hf")
        if Requirement(line).name == "gradio"
    )
    assert card.sdk_version in gradio_range
    requirements = [Requirement(line) for line in (ROOT / "spaces" / "requirements.txt").read_text().splitlines()
                    if line and not line.startswith(("#", "--"))]
    assert any(r.name == "music2emo-hf" and "space" in r.extras for r in requirements)


def test_the_published_models_are_the_hub_configs(space_app):
    from music2emo_hf import DEFAULT_MODEL_ID, PUBLISHED_MODEL_ID
    from music2emo_hf.released import CHECKPOINTS, parse_reference

    variants = {f"music2emo-hf/{folder.name}" for folder in (ROOT / "hub_configs").iterdir() if folder.is_dir()}
    assert set(space_app.PUBLISHED_MODELS) == variants - {"music2emo-hf/tiny-random"}
    assert space_app.PUBLISHED_MODELS[0] == PUBLISHED_MODEL_ID
    assert space_app.available_models()[0] == DEFAULT_MODEL_ID  # the package's default is the Space's
    assert [parse_reference(m).checkpoint for m in space_app.RELEASED_MODELS] == list(CHECKPOINTS)


def test_model_choices_come_from_the_environment(space_app, tiny_model_dir, zero_shot_model_dir, tmp_path,
                                                 monkeypatch):
    monkeypatch.delenv(space_app.MODELS_VARIABLE, raising=False)
    assert space_app.available_models() == [*space_app.RELEASED_MODELS, *space_app.PUBLISHED_MODELS]
    shelf = tmp_path / "models"  # a folder of model folders, as a Space's persistent storage would hold them
    shelf.mkdir()
    for model in (tiny_model_dir, zero_shot_model_dir):
        (shelf / model.name).symlink_to(model)
    monkeypatch.setenv(space_app.MODELS_VARIABLE, f"{shelf}, someone/their-model")
    assert space_app.available_models() == [
        str(shelf / tiny_model_dir.name), str(shelf / zero_shot_model_dir.name), "someone/their-model",
        *space_app.RELEASED_MODELS, *space_app.PUBLISHED_MODELS,
    ]


def test_serving_the_space_contacts_no_one(space_app, monkeypatch):
    """No analytics and no version check: starting the Space as deployed and serving its page look up and connect to
    nothing but the loopback."""
    import httpx

    looked_up, connected = [], []
    real_getaddrinfo, real_connect = socket.getaddrinfo, socket.socket.connect

    def getaddrinfo(host, *args, **kwargs):
        looked_up.append(host)
        return real_getaddrinfo(host, *args, **kwargs)

    def connect(sock, address):
        connected.append(address[0])
        return real_connect(sock, address)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setattr(socket.socket, "connect", connect)
    monkeypatch.delenv(space_app.MODELS_VARIABLE, raising=False)
    demo = space_app.create_demo()
    space_app.launch(demo, server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        assert httpx.get(demo.local_url).status_code == 200
    finally:
        demo.close()
    assert connected and set(looked_up) | set(connected) <= {"127.0.0.1", "localhost"}


# --- a real browser -------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chromium(tmp_path_factory):
    """Debian's Chromium under Playwright, headless, with a fresh profile."""
    if not CHROMIUM.exists():
        pytest.skip(f"headless Chromium is not installed at {CHROMIUM} (apt-get install chromium, as .ci/run does)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the browser tests need playwright (the dev extra)")
    with sync_api.sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            tmp_path_factory.mktemp("chromium-profile"),  # --user-data-dir
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_FLAGS,
            viewport={"width": 1400, "height": 1000},
        )
        yield context
        context.close()


@pytest.fixture
def requested() -> list[str]:
    return []


@pytest.fixture
def page(chromium, space_url, requested):
    """A fresh tab on the Space, its first model described (so the page is live); every URL it asks for is noted in
    `requested`."""
    page = chromium.new_page()
    page.on("request", lambda request: requested.append(request.url))
    page.goto(space_url)
    page.wait_for_selector("#model-info >> text=56 moods", timeout=60_000)
    yield page
    page.close()


@pytest.mark.slow
def test_browser_shows_every_panel(page, requested, space_url, clip, zero_shot_model_dir):
    assert "no zero-shot projector" in page.inner_text("#model-info")  # the first model cannot take labels...
    from music2emo_hf.runtimes import installed

    expected = "openvino" if installed("openvino") else "onnxruntime" if installed("onnxruntime") else "torch"
    assert f"backbone runtime: {expected}" in page.inner_text("#model-info")  # runtime="auto" on a CPU
    assert page.locator("#labels textarea").is_disabled()
    page.click("#model input")
    page.get_by_role("option", name=f"{zero_shot_model_dir.name} (local folder)").click()
    page.wait_for_selector("#model-info >> text=scores your own labels", timeout=60_000)
    assert page.locator("#labels textarea").is_enabled()  # ...the second one can

    page.set_input_files("#audio input[type=file]", str(clip))
    page.fill("#labels textarea", LABELS)
    page.click("#analyse")
    page.wait_for_selector("#zero-shot img", timeout=180_000)  # the last panel the answer fills

    bars = page.locator("#moods meter")
    assert bars.count() == 10
    values = [float(bars.nth(i).get_attribute("value")) for i in range(10)]
    assert values == sorted(values, reverse=True) and all(0 < v <= 1 for v in values)
    for panel in ("circumplex", "timeline", "chords", "zero-shot"):
        width = page.locator(f"#{panel} img").evaluate("image => image.complete ? image.naturalWidth : 0")
        assert width > 300, f"the {panel} plot was not drawn"
    source = page.locator("#circumplex img").get_attribute("src")
    assert has_colour(png({"type": "matplotlib", "plot": source}), TRACK_COLOUR)
    assert "untrained model" in page.inner_text("#status").lower()
    assert re.fullmatch(r"[A-G][#b]? (major|minor)|N", page.input_value("#key textarea"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "space.png", full_page=True)
    strangers = [url for url in requested if not url.startswith((space_url, "data:", "blob:"))]
    assert not strangers, f"the page fetched from outside the Space: {strangers}"


@pytest.mark.slow
def test_browser_damaged_upload_shows_a_sentence(page, damaged_upload):
    page.set_input_files("#audio input[type=file]", str(damaged_upload))
    page.click("#analyse")
    toast = page.wait_for_selector("[data-testid=toast-text]", timeout=60_000)
    sentence = ("damaged.mp3 could not be read as audio: it is damaged or not in a supported format "
                "(WAV, FLAC, Ogg Vorbis/Opus, MP3, AIFF, W64, RF64, CAF, AU). Upload another file.")
    assert toast.inner_text() == sentence
    assert page.inner_text("#status") == f"⚠️ {sentence}"  # still there once the toast is closed
    panels = ["moods", "circumplex", "timeline", "key", "chords", "labels-note", "zero-shot"]
    assert [panel for panel in panels if "Error" in page.inner_text(f"#{panel}")] == ["moods"]  # not all seven
    assert "Traceback" not in page.content()
    page.wait_for_function("getComputedStyle(document.querySelector('[data-testid=toast-body]')).opacity === '1'")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / "space-damaged-upload.png", full_page=True)
