#!/usr/bin/env bash
# Runs every cargo-fuzz target of switchboard-core for a while, one after the other, on the stable
# toolchain (RUSTC_BOOTSTRAP=1, no sanitizer), each on a temporary copy of its seed corpus so that
# fuzz/corpus is never grown by a run. Prints each target's executions; exits non-zero if any target
# crashed (or hung, or ran out of memory), with the path of the input that did it.
#
#   bash fuzz/run.sh [SECONDS_PER_TARGET]          # default 60
#   FUZZ_TARGETS="channel config" bash fuzz/run.sh 120   # only these targets
#
# See fuzz/README.md for running one target by hand and reproducing a crash.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [SECONDS_PER_TARGET]" >&2
    exit 2
fi

export RUSTC_BOOTSTRAP=1
export CARGO_BUILD_JOBS="${CARGO_BUILD_JOBS:-2}"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz: installing cargo-fuzz"
    cargo install --locked cargo-fuzz
fi

targets="${FUZZ_TARGETS:-$(cargo fuzz list)}"

echo "fuzz: building $(echo $targets | wc -w) targets"
cargo fuzz build --sanitizer none

work="$(mktemp -d "${TMPDIR:-/tmp}/switchboard-fuzz.XXXXXX")"
trap 'rm -rf "$work"' EXIT

failed=()
summary=()
for target in $targets; do
    corpus="$work/corpus/$target"
    mkdir -p "$corpus"
    if [ -d "corpus/$target" ]; then
        cp -R "corpus/$target/." "$corpus/"
    fi
    log="$work/$target.log"
    echo "fuzz: $target for ${seconds}s"
    status=0
    started=$SECONDS
    # -timeout: one input taking longer than this is a hang, reported like a crash.
    cargo fuzz run --sanitizer none "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=20 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    took=$((SECONDS - started))
    executions="$(sed -n 's/^stat::number_of_executed_units: *\([0-9]*\).*/\1/p' "$log" | tail -n 1)"
    line="$(printf '%-16s %12s executions in %ss' "$target" "${executions:-?}" "$took")"
    if [ "$status" -ne 0 ]; then
        # libFuzzer names the input it saved: "Test unit written to …/fuzz/artifacts/<target>/crash-…".
        artifact="$(sed -n 's/.*Test unit written to \(.*\)$/\1/p' "$log" | tail -n 1)"
        echo "----- $target failed (exit $status):"
        if grep -q 'panicked at' "$log"; then
            # The panic message and the first frames of its backtrace.
            sed -n '/panicked at/,$p' "$log" | head -n 30
        else
            grep -v '^#[0-9]' "$log" | tail -n 40
        fi
        grep -E 'ERROR: libFuzzer|^SUMMARY|Test unit written' "$log" || true
        if [ -n "$artifact" ]; then
            echo "reproduce: (cd fuzz && RUSTC_BOOTSTRAP=1 cargo fuzz run --sanitizer none $target $artifact)"
        fi
        echo "-----"
        line="$line  FAILED (exit $status)${artifact:+, input saved at $artifact}"
        failed+=("$target")
    fi
    echo "fuzz: $line"
    summary+=("$line")
done

echo
echo "fuzz summary (${seconds}s per target):"
printf '  %s\n' "${summary[@]}"
if [ "${#failed[@]}" -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]}" >&2
    exit 1
fi
