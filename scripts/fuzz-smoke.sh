#!/usr/bin/env bash
# Build every fuzz target and run each one briefly from its checked-in seeds.
#
#   scripts/fuzz-smoke.sh [SECONDS [TARGET...]]   # default: 20 s, every target; -s none
#
# Fails on the first crash or failed assertion (the input is kept under
# fuzz/artifacts/<target>/). Needs cargo-fuzz (`cargo install cargo-fuzz`). Not run
# by .ci/run: see fuzz/README.md, "Smoke runs", for the time it takes.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs=${1:-20}
shift || true
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-smoke: cargo-fuzz is not installed (cargo install cargo-fuzz)" >&2
    exit 1
fi
started=$SECONDS
if (($#)); then
    targets="$*"
    for t in $targets; do cargo fuzz build -s none "$t"; done
else
    targets=$(cargo fuzz list)
    cargo fuzz build -s none
fi
echo "fuzz-smoke: built in $((SECONDS - started)) s" >&2
for t in $targets; do
    corpus=$(mktemp -d)
    dirs=("$corpus")
    [[ -d seeds/$t ]] && dirs+=("seeds/$t")
    echo "fuzz-smoke: $t (${secs} s)" >&2
    if ! cargo fuzz run "$t" -s none "${dirs[@]}" -- -max_total_time="$secs" \
        -print_final_stats=1 >"$corpus.log" 2>&1; then
        tail -40 "$corpus.log" >&2
        echo "fuzz-smoke: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        rm -rf "$corpus"
        exit 1
    fi
    grep -E "^stat::number_of_executed_units" "$corpus.log" | sed "s/^/fuzz-smoke: $t /" >&2 || true
    rm -rf "$corpus" "$corpus.log"
done
echo "fuzz-smoke: all $(wc -w <<<"$targets") targets clean in $((SECONDS - started)) s" >&2
