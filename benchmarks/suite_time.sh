#!/usr/bin/env bash
# The test suite's time on this machine, as README.md and docs/development.md quote it: the README's test command
# (`python -m pytest -q`), or with --quick the quick subset (`-m "not slow"`), with its slowest tests, written to
# benchmarks/runs/<date>-cpu/suite[-quick]-<commit>.txt. Run it in a clean checkout of a commit (the record names one)
# on a quiet machine, in the activated environment:
#
#   bash benchmarks/suite_time.sh [--quick]
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -n "$(git status --porcelain --untracked-files=no)" ]; then
    echo "suite_time.sh: commit or stash the changes first: the record names the commit it ran" >&2
    exit 2
fi
name=suite
selection=()
if [[ "${1:-}" == "--quick" ]]; then
    name=suite-quick
    selection=(-m "not slow")
fi
commit=$(git rev-parse --short HEAD)
folder="benchmarks/runs/$(date -u +%Y-%m-%d)-cpu"
mkdir -p "$folder"
record="$folder/$name-$commit.txt"
# The CPU as precisely as its name does not say (a virtual machine's "AMD EPYC" was an AVX2 one, then a Zen 5).
cpu="$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), CPU family $(grep -m1 'cpu family' /proc/cpuinfo \
    | cut -d: -f2 | xargs), with $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' \
    | grep -xE 'avx2|avx512f|avx512_bf16|amx_tile' | paste -sd' ')"
started=$(date +%s)
{
    echo "# python -m pytest -q ${selection[*]:+-m \"not slow\" }-rs --durations=15 -p no:cacheprovider, at $commit;" \
        "$(nproc) CPUs ($cpu); $(date -u '+%Y-%m-%d, %H:%M UTC')"
    python -m pytest -q "${selection[@]}" -rs --durations=15 -p no:cacheprovider 2>&1 | grep -v '^\.*\s*\[\s*[0-9]*%\]$'
    status=${PIPESTATUS[0]}
    echo "# exit $status; wall time from the command's start: $(( ($(date +%s) - started) / 60 )) min" \
        "$(( ($(date +%s) - started) % 60 )) s"
} > "$record"
tail -3 "$record"
echo "written: $record"
