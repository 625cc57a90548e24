"""Where the backbone's time goes, module by module, and what running the positional convolution in float32 under
autocast buys (the model does so on CUDA; `--compare-positional` times the plain bfloat16 module beside it), and the
convolutional front end in segments against Hubert's on the whole chunk (`--compare-front-end`).

    python benchmarks/backbone_modules.py --device cuda --batches 8 32 --compare-positional --compare-front-end
    python benchmarks/backbone_modules.py --batches 1 --precision float32          # this CPU

Random weights at the published architecture (hub_configs/music2emo-mert95m); 30 s chunks of noise; per-module
times are taken with the device synchronised around each module (so they add up to a little more than the call).
In segments the front end's first layer is not called as a module: "front end" is the whole of it.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from transformers.models.hubert.modeling_hubert import HubertFeatureEncoder, HubertPositionalConvEmbedding

from music2emo_hf import Music2EmoModel

sys.path.insert(0, str(Path(__file__).resolve().parent))
from inference import ROOT, synchronize  # noqa: E402


def seconds_per_call(model, audio, lengths, autocast, repeats: int = 3) -> float:
    with torch.inference_mode(), autocast:
        model.embed_chunks(audio, lengths)  # warm-up
        synchronize(audio.device)
        start = time.perf_counter()
        for _ in range(repeats):
            model.embed_chunks(audio, lengths)
        synchronize(audio.device)
    return (time.perf_counter() - start) / repeats


def module_seconds(model, audio, lengths, autocast) -> dict[str, float]:
    """Seconds in the front end and each of its convolutions, the projection, the positional convolution and each
    layer the model runs (it stops the backbone past its deepest pooled layer: that layer's call starts, and never
    ends)."""
    backbone, device = model.backbone, audio.device
    named = [("front end", backbone.feature_extractor)]
    named += [(f"conv{i}", conv) for i, conv in enumerate(backbone.feature_extractor.conv_layers)]
    named += [("projection", backbone.feature_projection), ("positional", backbone.encoder.pos_conv_embed)]
    named += [(f"layer{i}", layer) for i, layer in enumerate(backbone.encoder.layers)]
    seconds, started, handles = {}, {}, []
    for name, module in named:
        def before(_module, _inputs, name=name):
            synchronize(device)
            started[name] = time.perf_counter()

        def after(_module, _inputs, _output, name=name):
            synchronize(device)
            seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - started.pop(name)

        handles += [module.register_forward_pre_hook(before), module.register_forward_hook(after)]
    try:
        with torch.inference_mode(), autocast:
            model.embed_chunks(audio, lengths)
    finally:
        for handle in handles:
            handle.remove()
    return {name: seconds[name] for name, _ in named if name in seconds}


def seconds_as(module, cls, name: str, model, audio, lengths, autocast) -> tuple[float, float]:
    """(seconds per call, seconds in module `name`) with `module` made a `cls` for the while."""
    kept, module.__class__ = module.__class__, cls
    try:
        return seconds_per_call(model, audio, lengths, autocast), module_seconds(model, audio, lengths, autocast)[name]
    finally:
        module.__class__ = kept


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "hub_configs" / "music2emo-mert95m"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--batches", type=int, nargs="+", default=[1])
    parser.add_argument("--precision", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--compare-positional", action="store_true",
                        help="also time the positional convolution left in bfloat16 under autocast")
    parser.add_argument("--compare-front-end", action="store_true",
                        help="also time Hubert's front end on the whole chunk, as the authors' model runs it")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    device = torch.device(args.device)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "music2emo_hf.cli", "init", "--config", args.config, folder],
                       check=True, capture_output=True)
        model = Music2EmoModel.from_pretrained(folder).eval().to(device)
    comparisons = [(f"positional convolution in {args.precision} too", model.backbone.encoder.pos_conv_embed,
                    HubertPositionalConvEmbedding, "positional")] * args.compare_positional
    comparisons += [("front end on the whole chunk", model.backbone.feature_extractor, HubertFeatureEncoder,
                     "front end")] * args.compare_front_end
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bfloat16")
    print(f"device: {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}   "
          f"precision: {args.precision}   torch {torch.__version__}")
    for batch in args.batches:
        rate = model.config.sampling_rate
        audio = 0.1 * torch.randn(batch, 30 * rate, device=device)
        lengths = torch.full((batch,), audio.shape[-1], device=device)
        seconds = seconds_per_call(model, audio, lengths, autocast)
        print(f"\nbatch {batch}: {seconds * 1000:.1f} ms per call, {batch * 30 / seconds:.0f}x real time")
        modules = module_seconds(model, audio, lengths, autocast)
        print("  ms per module: " + "  ".join(f"{name} {value * 1000:.1f}" for name, value in modules.items()))
        for label, module, cls, name in comparisons:
            other, other_module = seconds_as(module, cls, name, model, audio, lengths, autocast)
            print(f"  {label}: {other * 1000:.1f} ms per call ({batch * 30 / other:.0f}x real time), the {name} "
                  f"{other_module * 1000:.1f} ms against {modules[name] * 1000:.1f}")


if __name__ == "__main__":
    main()
