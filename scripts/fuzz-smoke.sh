#!/usr/bin/env bash
# Build every fuzz target and run each one briefly from its checked-in seeds.
#
#   scripts/fuzz-smoke.sh [SECONDS [TARGET...]]   # default: 20 s, every target; -s none
#   FUZZ_SMOKE_RUNS=N scripts/fuzz-smoke.sh        # N inputs per target, fixed seed
#
# With FUZZ_SMOKE_RUNS each target runs its seeds and then exactly N mutated
# inputs from libFuzzer's seed FUZZ_SMOKE_SEED (default 1), so two runs of the
# same code try the same inputs: a test run that passes once passes again. A
# time limit tries as many inputs as the machine's speed allows, which made the
# test run's verdict depend on the machine. Fuzzing for real (new inputs, hours)
# is `cargo fuzz run`; see fuzz/README.md.
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
    if [[ -n ${FUZZ_SMOKE_RUNS:-} ]]; then
        limit=(-runs="$FUZZ_SMOKE_RUNS" -seed="${FUZZ_SMOKE_SEED:-1}")
        echo "fuzz-smoke: $t (${FUZZ_SMOKE_RUNS} inputs, seed ${FUZZ_SMOKE_SEED:-1})" >&2
    else
        limit=(-max_total_time="$secs")
        echo "fuzz-smoke: $t (${secs} s)" >&2
    fi
    if ! cargo fuzz run "$t" -s none "${dirs[@]}" -- "${limit[@]}" \
        -print_final_stats=1 >"$corpus.log" 2>&1; then
        tail -40 "$corpus.log" >&2
        # A CI log keeps only part of the output: the panic's own line and the
        # input itself come last, so the failure can be reproduced from the log.
        grep -m5 -A3 "panicked at" "$corpus.log" >&2 || true
        for a in $(ls -t "artifacts/$t"/* 2>/dev/null | head -1); do
            if (($(stat -c %s "$a") <= 8192)); then
                echo "fuzz-smoke: $a as base64 (base64 -d > crash; cargo fuzz run -s none $t crash):" >&2
                base64 -w0 "$a" >&2
                echo >&2
            fi
        done
        echo "fuzz-smoke: $t FAILED (input in fuzz/artifacts/$t/)" >&2
        rm -rf "$corpus"
        exit 1
    fi
    grep -E "^stat::number_of_executed_units" "$corpus.log" | sed "s/^/fuzz-smoke: $t /" >&2 || true
    rm -rf "$corpus" "$corpus.log"
done
echo "fuzz-smoke: all $(wc -w <<<"$targets") targets clean in $((SECONDS - started)) s" >&2
