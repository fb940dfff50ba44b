#!/usr/bin/env bash
# The libFuzzer target of the reqrep core (SPEC §10): builds csrc/tests/fuzz_chan.c
# with the core into csrc/tests/bin/fuzz_chan (clang -fsanitize=fuzzer,address,undefined)
# and runs it for a bounded time on a copy of csrc/tests/fuzz_corpus/ (the run's new
# inputs go to the copy, never into the repository).
#
#   csrc/tests/fuzz.sh [SECONDS]       fuzz for SECONDS (default 60)
#   csrc/tests/fuzz.sh --make-corpus   rewrite csrc/tests/fuzz_corpus/ from the generator
#
# Exits non-zero on a crash, sanitizer report, leak, timeout (5 s per input) or
# out-of-memory (2 GiB), and prints the reproducer's path and how to replay it.
# Environment: CC (default clang), FUZZ_ARGS (more libFuzzer flags, e.g. -seed=1),
# FUZZ_CFLAGS (more compile flags).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csrc=$(dirname "$here")
bin="$here/bin"
exe="$bin/fuzz_chan"
corpus="$here/fuzz_corpus"
CC=${CC:-clang}
flags="-g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all ${FUZZ_CFLAGS:-}"

build() {
    local obj="$bin/fuzz-obj" src objs=()
    rm -rf "$obj"
    mkdir -p "$obj"
    for src in "$csrc"/rr_*.c; do
        # shellcheck disable=SC2086
        $CC -std=c11 -Wall $flags -pthread -I"$csrc" -c "$src" \
            -o "$obj/$(basename "${src%.c}").o" || return 1
        objs+=("$obj/$(basename "${src%.c}").o")
    done
    # shellcheck disable=SC2086
    $CC -std=c11 -Wall -Wextra -Werror $flags -pthread -I"$csrc" \
        "$here/fuzz_chan.c" "${objs[@]}" -o "$exe" || return 1
}

mkdir -p "$bin"
echo "== building $exe (with $($CC --version | head -1))"
if ! build >"$bin/fuzz.build.log" 2>&1; then
    cat "$bin/fuzz.build.log"
    echo "== fuzzer build FAILED (needs clang with libFuzzer: -fsanitize=fuzzer)"
    exit 2
fi

if [[ ${1:-} == --make-corpus ]]; then
    rm -f "$corpus"/*
    "$exe" --make-corpus="$corpus" || exit 1
    echo "== wrote $(find "$corpus" -type f | wc -l) seeds, $(du -sk "$corpus" | cut -f1) KiB, to $corpus"
    exit 0
fi

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] || { echo "usage: $0 [SECONDS | --make-corpus]"; exit 2; }

# A scratch directory (tmpfs if there is one): the corpus copy, and the channel
# files the target opens by path (it puts them in TMPDIR).
scratch_root=/dev/shm
[[ -d $scratch_root && -w $scratch_root ]] || scratch_root=${TMPDIR:-/tmp}
work=$(mktemp -d "$scratch_root/rr-fuzz.XXXXXX") || exit 2
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/corpus" "$work/tmp"
cp "$corpus"/* "$work/corpus/"
artifacts="$bin/fuzz-artifacts/$(date +%Y%m%d-%H%M%S)-$$"
mkdir -p "$artifacts"
log="$bin/fuzz.log"

echo "== fuzzing for $seconds s on a copy of $corpus ($(find "$corpus" -type f | wc -l) seeds); log: $log"
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
# shellcheck disable=SC2086
TMPDIR="$work/tmp" "$exe" -max_total_time="$seconds" -timeout=5 -rss_limit_mb=2048 \
    -max_len=32768 -use_value_profile=1 -print_final_stats=1 -dict="$here/fuzz_chan.dict" \
    -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} "$work/corpus" >"$log" 2>&1
rc=$?

found=("$artifacts"/*)
[[ -e ${found[0]} ]] || found=()
if [[ $rc -eq 0 && ${#found[@]} -eq 0 ]]; then
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+[[:space:]]+DONE)' "$log"
    echo "== fuzzing passed: no crash, leak or timeout in $seconds s"
    rmdir "$artifacts" 2>/dev/null
    exit 0
fi
tail -n 80 "$log"
echo "== fuzzing FAILED (exit $rc); full log: $log"
for f in "${found[@]}"; do
    echo "   reproducer: $f"
    echo "   replay:     $exe -runs=1 $f"
    echo "   (FZ_TRACE=1 in the environment prints each operation it runs)"
done
[[ $rc -ne 0 ]] || rc=1
exit "$rc"
