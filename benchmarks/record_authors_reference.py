"""Record what the authors' own inference answers on a clip, with seeded random weights, so that tests can compare
this package's faithful path with it (tests/authors_reference.json, read by tests/test_btc.py).

Runs `Music2emo.predict` of AMAAI-Lab/Music2Emotion (`music2emo.py`) as it is, in a temporary copy of a checkout
of https://github.com/AMAAI-Lab/Music2Emotion (none of that code is in this repository), with:
- their BTC weights file replaced by `seeded_state` weights (tests/originals.py) under their BTC_model's names, and a
  mean and std, saved as their `btc_model_large_voca.pt` is (a dict with `model`, `mean`, `std`);
- their `J_all.ckpt` replaced by seeded weights under their network's names, `model.`-prefixed as Lightning saves;
- MERT: `AutoModel.from_pretrained` answers with a native `HubertModel` of tests/originals.py's MERT-v1-style
  config holding seeded weights (their FeatureExtractorMERT code runs unchanged on it);
- torchaudio, which has no build for this torch, stood in for by soundfile + soxr (this package's decoder and
  resampler) for `torchaudio.load` and `transforms.Resample`: the MERT input is then equal by construction, and the
  comparison is about chords, key, tokens and heads. BTC's audio comes from their own `librosa.load`.

What it records, from their process: the `.lab` chord timeline they wrote, the key music21 found and the mode they
fed, the chord tokens, the pooled MERT embedding, the 56 mood probabilities, valence and arousal; where their code
fails (a `minmaj7` chord, which their token table lacks), the error, with the chords and key found before it.

Their extra packages go in a folder of their own, e.g.
    pip install --no-deps --target /tmp/refdeps mir_eval==0.8.2 pyyaml hydra-core==1.3.2 \\
        antlr4-python3-runtime==4.9.3 pretty_midi==0.2.10 "setuptools<81" music21==9.3.0
    PYTHONPATH=.:/tmp/refdeps python benchmarks/record_authors_reference.py --authors PATH/TO/Music2Emotion \\
        --clips ../shared/fixtures/emomusic/audio/*.mp3 --out tests/authors_reference.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import types
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from music2emo_hf.audio import resample  # noqa: E402
from tests.originals import BTC_MEAN, BTC_STD, MERT_V1_STYLE, SEEDS, seeded_state  # noqa: E402


def torchaudio_stand_in() -> types.ModuleType:
    """`torchaudio.load` and `torchaudio.transforms.Resample` on soundfile and soxr."""
    module = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")

    def load(path):
        audio, rate = sf.read(path, dtype="float32", always_2d=True)
        return torch.from_numpy(audio.T.copy()), rate

    class Resample:
        def __init__(self, orig_freq, new_freq):
            self.orig_freq, self.new_freq = orig_freq, new_freq

        def __call__(self, waveform):
            return torch.from_numpy(resample(waveform.numpy(), self.orig_freq, self.new_freq))

    module.load, transforms.Resample, module.transforms = load, Resample, transforms
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--authors", required=True, help="a checkout of AMAAI-Lab/Music2Emotion")
    parser.add_argument("--clips", required=True, nargs="+")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    clips = [str(Path(clip).resolve()) for clip in args.clips]
    out = Path(args.out).resolve()

    work = Path(tempfile.mkdtemp(prefix="authors-"))
    shutil.copytree(args.authors, work, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns(".git", "*.ckpt", "btc_model*.pt", "*.mp3"))
    os.chdir(work)
    sys.path.insert(0, str(work))
    sys.modules["torchaudio"] = torchaudio_stand_in()
    sys.modules["torchaudio.transforms"] = sys.modules["torchaudio"].transforms

    import transformers
    from model.linear_mt_attn_ck import FeedforwardModelMTAttnCK
    from utils.btc_model import BTC_model
    from utils.hparams import HParams

    config = HParams.load("inference/data/run_config.yaml")
    config.model["num_chords"] = 170
    btc = seeded_state(BTC_model(config=config.model).state_dict(), SEEDS["btc"])
    torch.save({"model": btc, "mean": BTC_MEAN, "std": BTC_STD}, "inference/data/btc_model_large_voca.pt")
    heads = seeded_state(FeedforwardModelMTAttnCK(1536, 56, 2).state_dict(), SEEDS["heads"])
    Path("saved_models").mkdir(exist_ok=True)
    torch.save({"state_dict": {f"model.{k}": v for k, v in heads.items()}}, "saved_models/J_all.ckpt")

    mert_config = transformers.HubertConfig(**MERT_V1_STYLE)
    mert = transformers.HubertModel(mert_config)
    mert.load_state_dict(seeded_state(mert.state_dict(), SEEDS["mert"]))
    transformers.AutoModel.from_pretrained = lambda *a, **k: mert.eval()
    transformers.Wav2Vec2FeatureExtractor.from_pretrained = lambda *a, **k: transformers.Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=24000, padding_value=0.0, do_normalize=False, return_attention_mask=True)

    import music2emo

    recorded: dict = {}
    normalize_chord = music2emo.normalize_chord

    def recording_normalize_chord(file_path, key, key_type="major"):
        recorded.update(key=key, key_type=key_type)
        return normalize_chord(file_path, key, key_type)

    music2emo.normalize_chord = recording_normalize_chord
    model = music2emo.Music2emo(model_weights="saved_models/J_all.ckpt")
    network_forward = model.music2emo_model.forward

    def recording_forward(inputs):
        moods, va = network_forward(inputs)
        recorded.update(
            x_mert=inputs["x_mert"][0].tolist(), chord_root_ids=inputs["x_chord_root"][0].tolist(),
            chord_quality_ids=inputs["x_chord_attr"][0].tolist(), mode_id=int(inputs["x_key"][0, 0]),
            mood_probabilities=torch.sigmoid(moods)[0].tolist(), valence_arousal=va[0].tolist(),
        )
        return moods, va

    model.music2emo_model.forward = recording_forward
    import librosa
    import music21

    results = {}
    for clip in clips:
        recorded.clear()
        try:
            with torch.no_grad():
                model.predict(clip)
        except Exception as error:  # their known failures (a `minmaj7` chord: KeyError): chords and key are kept
            recorded["error"] = f"{type(error).__name__}: {error}"
        lab = Path("temp_out") / (Path(clip).stem + ".lab")
        recorded["chords"] = [line.split() for line in lab.read_text().splitlines() if line.strip()]
        results[Path(clip).name] = dict(recorded)
        print(f"{Path(clip).name}: {len(recorded['chords'])} chord segments, key {recorded['key']} "
              f"{recorded['key_type']}{', ' + recorded['error'] if 'error' in recorded else ''}")
    out.write_text(json.dumps({
        "seeds": SEEDS, "btc_mean": BTC_MEAN, "btc_std": BTC_STD, "torch": torch.__version__,
        "numpy": np.__version__, "librosa": librosa.__version__, "music21": music21.__version__, "clips": results,
    }, indent=1) + "\n")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
