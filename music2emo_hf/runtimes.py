"""Where the backbone runs and in what arithmetic: PyTorch, or an inference runtime built for the CPU (OpenVINO, ONNX
Runtime).

The backbone's pooled stage (`Music2EmoModel.embed_equal_chunks`: the layers up to the deepest pooled one and their
time means) is exported to ONNX once per set of weights, as two graphs: the convolutional front end over one segment
of audio (`SegmentedFeatureEncoder.segment`, run segment by segment as PyTorch does, so that no whole chunk's
activations are held) and the rest, from the front end's features. They are kept in a cache keyed by the weights'
content, so a new process, or another folder holding the same model, pays nothing again; OpenVINO also caches its
compiled form there. The cache is `$MUSIC2EMO_COMPILED_CACHE`, or `music2emo-hf/compiled` under HF_HOME.

An exported runtime is used only once its float32 graph has matched PyTorch float32 on a probe signal (every pooled
embedding at a cosine >= EXACT_COSINE); the int8 graph made from it is checked too, to INT8_COSINE (approximate by
design: its fidelity is what benchmarks/inference.py reports), and OpenVINO's bfloat16 run of the graph to
BFLOAT16_COSINE. The checks are recorded in the cache entry per runtime version. `runtime="auto"` takes, on a CPU,
the first installed runtime of CPU_RUNTIMES that passes (ONNX Runtime for int8, OpenVINO for bfloat16 where the CPU
has it natively), and PyTorch otherwise (GPUs, bfloat16 emulated).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import mmap
import os
import sys
import threading
import uuid
import warnings
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np
import torch

from .atomic import clear_partials, folder_in_place, write_atomic
from .released import note

RUNTIMES = ("auto", "torch", "openvino", "onnxruntime")
PRECISIONS = ("float32", "bfloat16", "int8", "auto")
# What `auto` tries on a CPU in float32, first choice first. Since the front end runs in segments, OpenVINO ran a
# 3-minute track 1.15x faster than PyTorch on a 2-core AVX-512 Xeon (benchmarks/runs/2026-12-02-cpu/
# inference-47e5cd4-xeon.txt), with the same answers; on a 2-core AVX2 machine PyTorch was 1.04x faster, in about
# 300-400 MiB less (docs/speed-and-memory.md). For int8, ONNX Runtime's graph beats torch's dynamic int8; OpenVINO
# runs that graph slower than its own float32. For bfloat16, OpenVINO ran the stage 2.0x faster than torch's autocast on a 2-core Xeon
# with AMX (benchmarks/runs/2026-12-02-cpu/inference-47e5cd4-xeon.txt).
CPU_RUNTIMES = {"float32": ("openvino", "onnxruntime"), "bfloat16": ("openvino",), "int8": ("onnxruntime",)}
EXACT_COSINE = 0.99999
# bfloat16 keeps 8 bits of mantissa: PyTorch's own bfloat16 autocast gives 0.9999 to 0.99999 (tiny-random, MERT-95M)
# against float32; a graph of other weights gave -0.9997 (tests/test_runtimes.py)
BFLOAT16_COSINE = 0.999
# int8 gave 0.99998 on the probe (tiny-random) and 0.9998 to 0.9999 on MERT-95M's real clips (benchmarks); the check
# catches a wrong graph (another model's int8 graph in the entry gave -0.9998), not the approximation
INT8_COSINE = 0.99
# Raised when the exported graphs change, so that entries made by an older exporter are made again.
EXPORT_FORMAT = 2
FRONT_END, ENCODER = "front_end.onnx", "encoder.onnx"


class RuntimeUnavailable(RuntimeError):
    """The runtime asked for cannot run this model here; the message says why and what to do."""


def native_bfloat16(device: torch.device) -> bool:
    """Whether bfloat16 matrix products are native on `device` (and so faster than float32)."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    if device.type == "cpu":
        return bool(torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported())
    return False


def _weight_sharing_copy(module: torch.nn.Module) -> torch.nn.Module:
    """A copy of `module` and of each submodule that holds the very same parameter and buffer tensors but its own
    containers (parameters, buffers, submodules, hooks): submodules swapped or hooks added in the copy leave `module`
    as it was, and no weight is duplicated."""
    clone = type(module).__new__(type(module))  # not copy.copy: parametrized modules (weight norm) refuse it
    clone.__dict__.update({name: value.copy() if isinstance(value, (dict, set)) else value
                           for name, value in module.__dict__.items()})
    clone._modules = {name: child if child is None else _weight_sharing_copy(child)
                      for name, child in module._modules.items()}
    return clone


def quantize_backbone(model: torch.nn.Module) -> torch.nn.Module:
    """A copy of `model` whose backbone transformer computes its Linear layers in dynamic int8 (int8 weights,
    activations quantised per call); the convolutional front end and the heads stay float32, sharing their tensors
    with `model`, which is left as it was (a deep copy held every float32 weight twice while quantising: 350 MB).
    Sharing means that changing `model` in place afterwards (`.to()`, training) changes those parts of the copy too:
    quantise again after such a change.
    These are the only int8 CPU kernels in torch, which deprecates them (pytorch#184982); ONNX Runtime's int8 is
    faster and is what `runtime="auto"` takes where it is installed."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantiz", category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        return torch.ao.quantization.quantize_dynamic(
            _weight_sharing_copy(model), {"backbone.encoder": torch.ao.quantization.default_dynamic_qconfig},
            inplace=True,
        )


def weights_state(module: torch.nn.Module) -> tuple | None:
    """Which weights `module` holds now, cheaply: each tensor's memory and count of changes in place (an optimiser
    step, `load_state_dict`, `.to()`), so that a runtime made from them can tell it is out of date. None where
    torch keeps no count (tensors made under `torch.inference_mode`)."""
    try:
        return tuple((tensor.data_ptr(), tensor._version) for tensor in (*module.parameters(), *module.buffers()))
    except RuntimeError:
        return None


def cache_root() -> Path:
    from .hub import package_cache

    return package_cache("MUSIC2EMO_COMPILED_CACHE", "compiled")


def fingerprint(model) -> str:
    """The cache key of `model`'s pooled stage: the content of the backbone weights it uses (not those of the layers
    past the deepest pooled one, which never run), the layers it pools, the backbone's settings (an activation, a
    stride: the same weights computed otherwise; not where it was loaded from), and the versions of torch and
    transformers, whose code the graph was traced from."""
    from importlib.metadata import version

    depth = max(model.config.pooled_layers)
    unused = tuple(f"encoder.layers.{i}." for i in range(depth, len(model.backbone.encoder.layers)))
    settings = {name: value for name, value in model.backbone.config.to_dict().items()
                if not name.startswith("_") and name not in ("transformers_version", "architectures")}
    digest = hashlib.sha256(json.dumps([EXPORT_FORMAT, model.config.pooled_layers, settings, torch.__version__,
                                        version("transformers")], sort_keys=True, default=str).encode())
    for name, tensor in model.backbone.state_dict().items():
        if not name.startswith(unused):
            digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
            digest.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy())  # no copy of the bytes
    return digest.hexdigest()[:32]


@contextmanager
def _evaluating(model):
    """`model` in eval mode (no dropout or LayerDrop) for the export and the check, then in its own mode again."""
    training = model.training
    model.eval()
    try:
        yield model
    finally:
        model.train(training)


class _FrontEndStage(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.front_end = model.backbone.feature_extractor

    def forward(self, audio, scale, shift):
        return self.front_end.segment(audio, scale, shift)


class _EncoderStage(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, features):
        return self.model.embed_equal_chunks(features)


def _export(model, folder: Path) -> None:
    """The pooled stage as ONNX (TorchScript exporter; batch and length dynamic), in float32: FRONT_END and ENCODER
    in `folder`."""
    example = 0.1 * torch.randn(1, 2 * model.config.sampling_rate, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad(), _evaluating(model):
        warnings.simplefilter("ignore")
        front_end = model.backbone.feature_extractor
        scale, shift = front_end.first_norm(example)
        torch.onnx.export(_FrontEndStage(model), (example, scale, shift), str(folder / FRONT_END),
                          input_names=["audio", "scale", "shift"], output_names=["features"],
                          dynamic_axes={"audio": {0: "chunks", 1: "samples"}, "scale": {0: "chunks"},
                                        "shift": {0: "chunks"}, "features": {0: "chunks", 2: "frames"}},
                          dynamo=False)
        torch.onnx.export(_EncoderStage(model), (front_end(example),), str(folder / ENCODER),
                          input_names=["features"], output_names=["embeddings"],
                          dynamic_axes={"features": {0: "chunks", 2: "frames"}}, dynamo=False)


def _int8_weights_in_7_bits() -> bool:
    """ONNX Runtime's advice for an x86-64 CPU without VNNI: its int8 products there can saturate, so weights are
    quantised to 7 bits (a tiny random model's int8 graph fell to cosine 0.968 with 8 bits on an AVX2 Zen 2, and
    passed the 0.99 check with 7)."""
    return torch.cpu._is_avx2_supported() and not torch.cpu._is_vnni_supported()


def encoder_int8() -> str:
    """The file name of ENCODER's int8 graph on this CPU: one per weight range, so a cache shared by machines that
    quantise otherwise holds both."""
    return "encoder-int8-7bit.onnx" if _int8_weights_in_7_bits() else "encoder-int8.onnx"


def _quantize(onnx_path: Path, int8_path: Path) -> None:
    """ONNX Runtime's dynamic int8 of the exported graph's matrix products (weights int8 per channel, in 7 bits
    where `_int8_weights_in_7_bits`; activations quantised per call; convolutions stay float32: in int8 they ran
    slower). Constant folding first turns the weight-normed positional convolution's weight into a constant."""
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.quantization.shape_inference import quant_pre_process

    folded = int8_path.with_name(int8_path.name + ".folded.onnx")
    try:
        quant_pre_process(str(onnx_path), str(folded), skip_symbolic_shape=True)
        quantize_dynamic(str(folded), str(int8_path), weight_type=QuantType.QInt8, op_types_to_quantize=["MatMul"],
                         per_channel=True, reduce_range=_int8_weights_in_7_bits())
    finally:
        folded.unlink(missing_ok=True)


def exported(model, say: Callable[[str], None], int8: bool = False) -> Path:
    """The cache folder of `model`'s pooled stage, holding FRONT_END and ENCODER (and `encoder_int8()`, ONNX Runtime's
    int8 of ENCODER, when `int8`), made now if they are not there. The graphs are made in a temporary place and
    renamed into place under a file lock: concurrent first runs make them once, and what a killed one left (a partial
    folder or graph: hundreds of MB for MERT) is removed by the next that makes them."""
    from filelock import FileLock

    folder = cache_root() / fingerprint(model)
    target = folder / (encoder_int8() if int8 else ENCODER)
    if target.is_file():
        return folder
    try:
        folder.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        problem = error.strerror or str(error)
    else:
        problem = None if os.access(folder.parent, os.W_OK) else "not writable"
    if problem:
        raise RuntimeUnavailable(f"its cache {folder.parent} cannot be written ({problem}); set "
                                 "MUSIC2EMO_COMPILED_CACHE to a folder this user can write")
    with FileLock(str(folder) + ".lock"):
        clear_partials(folder)
        if not (folder / ENCODER).is_file():
            say(f"exporting the backbone for this model, once (seconds to a minute); cached in {folder}")
            with folder_in_place(folder) as partial:
                _export(model, partial)
                (partial / "checks.json").write_text("{}\n", encoding="utf-8")
        if not target.is_file():
            say(f"quantising the exported backbone to int8, once; cached in {folder}")
            partial = folder / f".{target.name}.partial-{uuid.uuid4().hex}"
            try:
                _quantize(folder / ENCODER, partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)
    return folder


def _probe(model) -> torch.Tensor:
    """Two different 3 s signals (a chord with noise), the same every time."""
    rate = model.config.sampling_rate
    t = np.arange(3 * rate) / rate
    rng = np.random.default_rng(0)
    rows = [sum(np.sin(2 * np.pi * f * t) for f in freqs) / 4 + 0.05 * rng.standard_normal(len(t))
            for freqs in ((261.6, 329.6, 392.0), (110.0, 220.0, 277.2))]
    return torch.tensor(np.stack(rows), dtype=torch.float32)


class TorchRuntime:
    """The backbone in PyTorch, on the model's device, under autocast when `autocast_dtype` is set. `model` may be
    `quantize_backbone`'s copy."""

    name = "torch"

    def __init__(self, model, autocast_dtype: torch.dtype | None = None):
        self.model, self.autocast_dtype = model, autocast_dtype

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(chunks, samples) float32 audio of one length -> (chunks, embedding_dim) pooled embeddings."""
        precision = (torch.autocast(self.model.device.type, dtype=self.autocast_dtype) if self.autocast_dtype
                     else nullcontext())
        with precision, torch.no_grad():
            return self.model.embed_equal_chunks(audio.to(self.model.device, self.model.dtype)).to(self.model.dtype)


class ExportedRuntime:
    """An exported pooled stage in an inference runtime on the CPU, with as many threads as torch uses: the front end
    run segment by segment by `model`'s `SegmentedFeatureEncoder.segmented`, then the encoder on its features."""

    name: str
    package: str
    requires: tuple[str, ...]

    def __init__(self, model, folder: Path, arithmetic: str = "float32"):
        self.front_end, self.threads, self.sessions = model.backbone.feature_extractor, torch.get_num_threads(), None
        self.arithmetic = arithmetic  # a key of CPU_RUNTIMES: int8 is a graph of its own, bfloat16 how one is run
        self.front_end_path = folder / FRONT_END
        self.encoder_path = folder / (encoder_int8() if arithmetic == "int8" else ENCODER)

    @property
    def key(self) -> str:
        """What its check is recorded under: the runtime, its version, the encoder's graph and, when it is not float32
        from the graph, the arithmetic. The version is the module's own: its distribution may have another name
        (onnxruntime-gpu, openvino-nightly)."""
        import importlib

        try:
            runtime_version = importlib.import_module(self.package).__version__
        except Exception as error:  # noqa: BLE001  (a broken install raises anything on import)
            raise RuntimeUnavailable(f"{self.name} could not be imported ({type(error).__name__}: {error})") from error
        return f"{self.name} {runtime_version} {self.encoder_path.name}" + (
            f" {self.arithmetic}" if self.arithmetic == "bfloat16" else "")

    def ready(self) -> ExportedRuntime:
        """Loaded (once), when first run: the float32 graph of an int8 run, checked before, is not loaded again."""
        if self.sessions is None:
            try:
                self.sessions = [self._session(path) for path in (self.front_end_path, self.encoder_path)]
            except Exception as error:  # noqa: BLE001  (whatever the runtime raises on this graph)
                raise RuntimeUnavailable(f"{self.name} could not load {self.encoder_path.parent} "
                                         f"({type(error).__name__}: {error})") from error
        return self

    def __call__(self, audio: torch.Tensor) -> torch.Tensor:
        """(chunks, samples) float32 audio of one length -> (chunks, embedding_dim) pooled embeddings."""
        front_end, encoder = self.ready().sessions

        def segment(*inputs: torch.Tensor) -> torch.Tensor:
            return torch.from_numpy(front_end(*(np.ascontiguousarray(tensor.numpy()) for tensor in inputs)))

        with torch.no_grad():
            features = self.front_end.segmented(audio.detach().cpu().float(), segment)
        return torch.from_numpy(np.ascontiguousarray(encoder(features.numpy())))


class OpenVINORuntime(ExportedRuntime):
    name = package = "openvino"
    requires = ("openvino", "onnx")  # onnx: torch's exporter writes the graph with it

    def _session(self, onnx_path: Path):
        import openvino as ov

        core = ov.Core()
        core.set_property({"CACHE_DIR": str(onnx_path.parent / "openvino")})  # the compiled model, reused
        compiled = core.compile_model(str(onnx_path), "CPU", {
            # OpenVINO's CPU default is bfloat16 where that is native: asked for only as precision="bfloat16"/"auto"
            "INFERENCE_PRECISION_HINT": "bf16" if self.arithmetic == "bfloat16" else "f32",
            "INFERENCE_NUM_THREADS": self.threads,
            # Pinned, the threads of processes sharing a machine's cores (accelerate launch, torchrun) went to the
            # same cores: two one-thread processes on 2 cores took 86 s where PyTorch took 58 (benchmarks/catalog.py)
            "ENABLE_CPU_PINNING": False,
            "PERFORMANCE_HINT": "LATENCY",
        })
        request, lock = compiled.create_infer_request(), threading.Lock()

        def infer(*inputs):
            with lock:  # one request, which reuses its buffers: callers in several threads take turns
                return request.infer(list(inputs))[0].copy()

        return infer


class ONNXRuntime(ExportedRuntime):
    name = package = "onnxruntime"
    requires = ("onnxruntime", "onnx")

    def _session(self, onnx_path: Path):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = self.threads, 1
        # its per-shape memory plans held about twice the memory for no measured speed (docs/speed-and-memory.md)
        options.enable_mem_pattern = False
        session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
        names = [graph_input.name for graph_input in session.get_inputs()]
        return lambda *inputs: session.run(None, dict(zip(names, inputs, strict=True)))[0]


_EXPORTED = {"openvino": OpenVINORuntime, "onnxruntime": ONNXRuntime}


def missing(name: str) -> list[str]:
    """The packages that runtime `name` needs and this environment lacks."""
    from importlib.util import find_spec

    return [package for package in _EXPORTED[name].requires if find_spec(package) is None]


def installed(name: str) -> bool:
    return not missing(name)


def _exported_or_unavailable(model, say: Callable[[str], None], int8: bool) -> Path:
    """`exported`, with a failure of torch's exporter (e.g. an operator it cannot write) or of the quantisation
    reported as the runtimes being unavailable for this model, which `auto` answers by running PyTorch."""
    try:
        return exported(model, say, int8)
    except RuntimeUnavailable:
        raise
    except Exception as error:  # noqa: BLE001  (whatever the exporter raises; interrupts pass through)
        made = "export this model to ONNX" + (" or quantise it" if int8 else "")
        raise RuntimeUnavailable(f"torch could not {made} ({type(error).__name__}: {error})") from error


def _checked(runtime: ExportedRuntime, model, least_cosine: float = EXACT_COSINE) -> ExportedRuntime:
    """`runtime`, once it has matched PyTorch float32 on the probe to `least_cosine` (recorded in the cache entry,
    under the entry's lock: processes share the cache, and each adds its checks to the others'). A check already
    recorded is read without the lock, so that a cache made read-only (shared, or on a read-only volume) serves; one
    it lacks (a runtime upgraded since) is made for this process alone."""
    from filelock import FileLock

    folder = runtime.encoder_path.parent
    checks_file = folder / "checks.json"

    def recorded() -> dict:
        try:
            return json.loads(checks_file.read_text(encoding="utf-8"))
        except (OSError, ValueError):  # gone or damaged: the checks are made again
            return {}

    def check() -> dict:
        probe = _probe(model)
        with torch.no_grad(), _evaluating(model):
            reference = model.embed_equal_chunks(probe)
        answer = runtime(probe)
        return {"cosine": torch.nn.functional.cosine_similarity(answer, reference, dim=-1).min().item(),
                "max_abs_difference": (answer - reference).abs().max().item()}

    checks = recorded()
    if runtime.key not in checks:
        try:
            with FileLock(str(folder) + ".lock"):
                checks = recorded()  # another process may have made it meanwhile
                if runtime.key not in checks:
                    checks[runtime.key] = check()
                    write_atomic(checks_file, json.dumps(checks, indent=2) + "\n", concurrent=True)
        except OSError:  # a cache that cannot be written (read-only, shared): checked for this process alone
            if runtime.key not in checks:
                checks[runtime.key] = check()
    if checks[runtime.key]["cosine"] < least_cosine:
        raise RuntimeUnavailable(f"{runtime.key} does not reproduce PyTorch on this model (cosine "
                                 f"{checks[runtime.key]['cosine']:.6f} < {least_cosine}); use runtime='torch'")
    return runtime


MADV_PAGEOUT = 21  # Linux 5.4's madvise advice: reclaim these pages now (file pages are dropped, anonymous ones swapped)


def _page_out(module: torch.nn.Module) -> None:
    """Hand back to the kernel the pages of `module`'s weights, on Linux: read once to key the cache (`fingerprint`),
    they stayed resident although an exported runtime runs the backbone (232 MiB of MERT-95M's file, mapped by
    safetensors). A weight read again later is read from the file as before; memory that is not a file's (a model
    made in memory) stays where it is unless there is swap, and its contents never change. Elsewhere, or where the
    kernel refuses, nothing happens."""
    if not sys.platform.startswith("linux"):
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.madvise.argtypes, libc.madvise.restype = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int], ctypes.c_int
    for tensor in module.state_dict().values():
        storage = tensor.untyped_storage()
        first = -(-storage.data_ptr() // mmap.PAGESIZE)  # whole pages inside the storage only
        last = (storage.data_ptr() + storage.nbytes()) // mmap.PAGESIZE
        if last > first and libc.madvise(first * mmap.PAGESIZE, (last - first) * mmap.PAGESIZE, MADV_PAGEOUT):
            return  # refused (an older kernel): the rest would be too


def unusable_device(device: str | torch.device | int, on_cpu: str) -> str | None:
    """Why this torch cannot run on `device` (a name, a torch.device, or transformers' accelerator index, -1 for the
    CPU), with the way out; `on_cpu` says how to ask for the CPU where it is read (`--device cpu`). None: it can."""
    if isinstance(device, int) and not isinstance(device, bool):  # else transformers runs on the CPU, and says nothing
        count = torch.accelerator.device_count() if hasattr(torch, "accelerator") else torch.cuda.device_count()
        if device < count:  # torch >= 2.6 has torch.accelerator
            return None
        return (f"an accelerator's index, and this torch ({torch.__version__}) sees "
                + (f"{count} (0 to {count - 1})" if count else "none") + f"; use {on_cpu} (or -1) for the CPU.")
    try:
        device = torch.device(device)
    except (RuntimeError, ValueError, TypeError):
        return f"not a device name torch knows; use cpu, cuda, cuda:N or mps ({on_cpu} for the CPU)."
    kind = device.type
    if kind == "cuda" and not torch.cuda.is_available():
        return (f"this torch ({torch.__version__}) sees no CUDA GPU; use {on_cpu}, or install a CUDA build of torch on "
                "a machine with an NVIDIA GPU.")
    if kind == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        return f"torch sees {torch.cuda.device_count()} CUDA GPU(s) here, cuda:0 to cuda:{torch.cuda.device_count() - 1}."
    if kind == "mps" and not torch.backends.mps.is_available():
        return f"this torch ({torch.__version__}) sees no Apple GPU (MPS needs macOS on Apple silicon); use {on_cpu}."
    return None


def obstacles(runtime: str, precision: str, device, dtype=None) -> tuple[str, list[str]]:
    """(the arithmetic `precision` means on `device`, why `runtime` cannot run the backbone there: none when it can,
    or when `runtime` is "auto" or "torch"). Known before a model loads, but for its weights' `dtype`, so that a
    command refuses a wrong combination of options before loading anything."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime must be one of {RUNTIMES}, got {runtime!r}.")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}.")
    device = torch.device(device)
    if precision == "int8" and device.type != "cpu":
        raise ValueError(f"precision='int8' runs on CPU only; on {device} use 'bfloat16' or 'auto'.")
    bfloat16 = precision == "bfloat16" or precision == "auto" and native_bfloat16(device)
    arithmetic = "bfloat16" if bfloat16 else "int8" if precision == "int8" else "float32"
    reasons = []
    if runtime in ("auto", "torch"):
        return arithmetic, reasons
    if device.type != "cpu":
        reasons.append(f"the model is on {device}; the exported runtimes run on the CPU")
    if dtype is not None and dtype != torch.float32:
        reasons.append(f"the model's weights are {dtype}; exported runtimes take float32 weights")
    offered = CPU_RUNTIMES.get(arithmetic, ())
    if runtime not in offered:
        reasons.append(f"{runtime} is not offered in {arithmetic} (in {arithmetic}: {', '.join(offered + ('torch',))})")
    elif missing(runtime):  # where it is not offered, installing it would not help
        reasons.append(f"{' and '.join(missing(runtime))} not installed (pip install {' '.join(missing(runtime))})")
    elif arithmetic == "bfloat16" and not native_bfloat16(device):
        reasons.append(f"{runtime} runs bfloat16 only where the CPU has it natively (AVX512-BF16 or AMX), "
                       "and this one does not")
    return arithmetic, reasons


def backbone_runtime(model, runtime: str = "auto", precision: str = "float32", say: Callable[[str], None] = note):
    """What runs `model`'s backbone in the pipeline, given `runtime` (one of RUNTIMES) and `precision` (one of
    PRECISIONS; see `MusicEmotionPipeline`). `model` itself is left as it is."""
    device = model.device
    arithmetic, reasons = obstacles(runtime, precision, device, model.dtype)
    if precision == "bfloat16" and not native_bfloat16(device):
        warnings.warn(f"bfloat16 is emulated on this {device.type} and slower than float32; "
                      "precision='auto' picks what is fast here.", stacklevel=3)
    if runtime != "torch":
        if reasons:
            raise RuntimeUnavailable(f"runtime={runtime!r} cannot run here: {'; '.join(reasons)}.")
        candidates = [runtime] if runtime != "auto" else [
            name for name in CPU_RUNTIMES.get(arithmetic, ()) if not obstacles(name, precision, device, model.dtype)[1]]
        for name in candidates:
            try:
                folder = _exported_or_unavailable(model, say, int8=arithmetic == "int8")  # one weights hash
                exported_runtime = _checked(_EXPORTED[name](model, folder), model)  # the graph, then how it is run
                if arithmetic != "float32":
                    exported_runtime = _checked(_EXPORTED[name](model, folder, arithmetic), model,
                                                INT8_COSINE if arithmetic == "int8" else BFLOAT16_COSINE)
                exported_runtime.ready()
                _page_out(model.backbone)
                return exported_runtime
            except RuntimeUnavailable as error:
                if runtime != "auto":
                    raise
                warnings.warn(f"runtime='auto' passes over {name}: {error}", stacklevel=3)
    return TorchRuntime(quantize_backbone(model) if arithmetic == "int8" else model,
                        torch.bfloat16 if arithmetic == "bfloat16" else None)


__all__ = ["BFLOAT16_COSINE", "CPU_RUNTIMES", "EXACT_COSINE", "INT8_COSINE", "PRECISIONS", "RUNTIMES",
           "RuntimeUnavailable", "backbone_runtime", "cache_root", "exported", "fingerprint", "installed",
           "native_bfloat16", "obstacles", "quantize_backbone", "weights_state"]
