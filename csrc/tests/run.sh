#!/usr/bin/env bash
# Checks the core's dependency graphs (deps.sh), then builds the C-level tests
# of the reqrep core three ways and runs them:
#   asan  -fsanitize=address,undefined (all groups)
#   tsan  -fsanitize=thread            (the "threads" group: TSan and fork do not mix)
#   plain -O2                          (all groups)
# Binaries go to csrc/tests/bin/. Exits non-zero if any build or run fails.
#
#   csrc/tests/run.sh [asan|tsan|plain]...   (default: all three)
# Environment: CC (default gcc; the three builds run in parallel),
# RR_TEST_SCALE / RR_TEST_SKIP (passed to test_core), RUN_TIMEOUT (per run, s).
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csrc=$(dirname "$here")
bin="$here/bin"
mkdir -p "$bin"
CC=${CC:-gcc}
RUN_TIMEOUT=${RUN_TIMEOUT:-600}

core_srcs=("$csrc"/rr_*.c)
test_srcs=("$here"/test_core.c "$here"/t_*.c "$here"/echo.c)

builds=("$@")
[[ ${#builds[@]} -eq 0 ]] && builds=(asan tsan plain)

flags_for() {
    case $1 in
    asan) echo "-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all" ;;
    tsan) echo "-g -O1 -fsanitize=thread" ;;
    plain) echo "-O2 -g" ;;
    *) return 1 ;;
    esac
}

# One build: core and tests compiled separately (the tests with -Werror; the
# core with the warnings its own build uses, and its test hooks), then linked.
build() {
    local kind=$1 flags out log
    flags=$(flags_for "$kind") || { echo "unknown build '$kind'"; return 2; }
    out="$bin/$kind"
    log="$bin/$kind.build.log"
    rm -rf "$out"
    mkdir -p "$out"
    {
        local objs=() src obj
        for src in "${core_srcs[@]}"; do
            obj="$out/core_$(basename "${src%.c}").o"
            # shellcheck disable=SC2086
            $CC -std=c11 -Wall $flags -DRR_TEST_HOOKS -pthread -I"$csrc" -c "$src" -o "$obj" \
                || return 1
            objs+=("$obj")
        done
        for src in "${test_srcs[@]}"; do
            obj="$out/test_$(basename "${src%.c}").o"
            # shellcheck disable=SC2086
            $CC -std=c11 -Wall -Wextra -Werror $flags -pthread -I"$csrc" -c "$src" -o "$obj" \
                || return 1
            objs+=("$obj")
        done
        # shellcheck disable=SC2086
        $CC $flags -pthread "${objs[@]}" -o "$out/test_core" || return 1
    } >"$log" 2>&1
}

status=0
t_start=$SECONDS

# The core's include and call graphs must stay acyclic (a few seconds).
echo "== dependency graphs: csrc/tests/deps.sh"
if ! bash "$here/deps.sh" >"$bin/deps.log" 2>&1; then
    cat "$bin/deps.log"
    echo "== dependency check FAILED"
    status=1
fi

echo "== building: ${builds[*]} (with $($CC --version | head -1))"
declare -A build_pid
for kind in "${builds[@]}"; do
    build "$kind" &
    build_pid[$kind]=$!
done
declare -A built
for kind in "${builds[@]}"; do
    if wait "${build_pid[$kind]}"; then
        built[$kind]=1
    else
        echo "== build $kind FAILED:"
        cat "$bin/$kind.build.log"
        status=1
    fi
done
echo "   built in $((SECONDS - t_start)) s"

summary=()
run() {
    local kind=$1
    shift
    local exe="$bin/$kind/test_core" log="$bin/$kind${1:+-$1}.log" t0=$SECONDS rc
    echo "== run $kind: test_core $*"
    timeout --kill-after=10 "$RUN_TIMEOUT" "$exe" "$@" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    local last
    last=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1)
    [[ -z $last ]] && last="no summary (exit $rc)"
    if grep -qE '^(==[0-9]+==ERROR|SUMMARY: (Address|Undefined|Thread|Leak)Sanitizer|WARNING: ThreadSanitizer)|runtime error:' "$log"; then
        echo "== $kind: sanitizer report in $log"
        [[ $rc -eq 0 ]] && rc=1
    fi
    summary+=("$(printf '%-6s %-26s %-28s %4d s  exit %d' "$kind" "${*:-(all)}" "$last" \
        $((SECONDS - t0)) "$rc")")
    [[ $rc -ne 0 ]] && status=1
    return 0
}


# Sanitizer settings: stop at the first report; no leak check in children
# (they _exit). TSan: go on after a report (to see every race), fail at exit.
export ASAN_OPTIONS=${ASAN_OPTIONS:-abort_on_error=0:halt_on_error=1:detect_leaks=1:strict_string_checks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
export TSAN_OPTIONS=${TSAN_OPTIONS:-halt_on_error=0:second_deadlock_stack=1}

for kind in "${builds[@]}"; do
    [[ -n ${built[$kind]:-} ]] || continue
    case $kind in
    asan) run asan ;;
    # TSan slows everything ~5-15x; the thread tests at a lower scale still
    # make hundreds of thousands of racing operations. No suppressions.
    tsan) RR_TEST_SCALE=${RR_TEST_SCALE:-0.5} run tsan threads ;;
    plain) run plain ;;
    esac
done

echo "== summary ($((SECONDS - t_start)) s)"
for line in "${summary[@]}"; do
    echo "   $line"
done
if [[ $status -ne 0 ]]; then
    echo "== C core tests FAILED"
else
    echo "== C core tests passed"
fi
exit "$status"
