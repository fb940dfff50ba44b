#!/usr/bin/env bash
# Model checks of the response-slot protocol (csrc/rr_slots.pml) and of the
# Int request queue (csrc/rr_intq.pml) with spin: exhaustive searches (no
# bitstate), one per scope, with process death at every step. Then the
# mutation checks: each puts back one old (or known-bad) transition and the
# search must find an error, or the model would prove nothing.
#
#   csrc/tests/spin.sh            all checks
#   csrc/tests/spin.sh PATTERN    only the checks whose name contains PATTERN
# Environment: SPIN (default spin), CC (default gcc), SPIN_MEMLIM (MB of
# state storage per search, default 3072), SPIN_KEEP=1 (keep the work dirs).
# Work dirs go to csrc/tests/bin/spin/ (gitignored); a failing check's dir
# and trail are kept and named. Exits non-zero if any check fails.
set -uo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csrc=$(dirname "$here")
work="$here/bin/spin"
SPIN=${SPIN:-spin}
CC=${CC:-gcc}
MEMLIM=${SPIN_MEMLIM:-3072}
pattern=${1:-}

if ! command -v "$SPIN" >/dev/null; then
    echo "spin: '$SPIN' not found (Debian/Ubuntu: apt-get install spin)"
    exit 2
fi
mkdir -p "$work"

passed=0
failed=0

# check NAME EXPECT MODEL [spin -D flags...]
#   EXPECT: pass (exhaustive, no error) or fail (an error must be found)
check() {
    local name=$1 expect=$2 model=$3
    shift 3
    [[ -n $pattern && $name != *"$pattern"* ]] && return 0
    local dir="$work/${name//\//_}" out t0 t1 secs states errors why verdict
    rm -rf "$dir"
    mkdir -p "$dir"
    cp "$csrc/$model" "$dir/"
    t0=$(date +%s.%N)
    if ! (cd "$dir" && "$SPIN" -a "$@" "$model" >spin.log 2>&1); then
        echo "spin: $name  FAILED  (spin -a: $(head -1 "$dir/spin.log"))"
        failed=$((failed + 1))
        return 0
    fi
    # the searches that must fail stop at their first error: not worth -O2
    local opt=-O2
    [[ $expect == fail ]] && opt=-O0
    if ! (cd "$dir" && $CC $opt -w -DSAFETY -DCOLLAPSE -DMEMLIM="$MEMLIM" -o pan pan.c \
        >cc.log 2>&1); then
        echo "spin: $name  FAILED  (cc: $(head -1 "$dir/cc.log"))"
        failed=$((failed + 1))
        return 0
    fi
    (cd "$dir" && ./pan -m100000 >pan.out 2>&1)
    t1=$(date +%s.%N)
    out="$dir/pan.out"
    secs=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }')
    states=$(awk '/states, stored/ { print $1; exit }' "$out")
    errors=$(sed -n 's/.*errors: \([0-9]*\).*/\1/p' "$out" | head -1)
    why=$(grep -m1 -E '^pan:1: ' "$out" | sed 's/^pan:1: //; s/ (at depth [0-9]*)//')
    # An exhaustive search must not stop at the memory or depth bound.
    local cut=""
    grep -qE 'MEMLIM|max search depth too small|out of memory' "$out" && cut=yes
    if [[ -z $errors ]]; then
        verdict=FAILED
        why="no result from pan (see $out)"
    elif [[ $expect == pass ]]; then
        if [[ $errors == 0 && -z $cut ]] && ! grep -q 'Search not completed' "$out"; then
            verdict=passed
        else
            verdict=FAILED
            [[ -n $cut ]] && why="search cut short (memory or depth bound)"
        fi
    else
        if [[ $errors != 0 && -z $cut && -n $why ]]; then
            verdict=passed
            why="error found as expected: $why"
        else
            verdict=FAILED
            why="the model found no error: it cannot tell this defect${cut:+ (search cut short)}"
        fi
    fi
    if [[ $verdict == passed ]]; then
        passed=$((passed + 1))
        printf 'spin: %-28s passed  %10s states, %s errors, %5ss%s\n' \
            "$name" "${states:-?}" "$errors" "$secs" "${why:+  ($why)}"
        [[ ${SPIN_KEEP:-0} == 1 ]] || rm -rf "$dir"
    else
        failed=$((failed + 1))
        printf 'spin: %-28s FAILED  %10s states, %s errors, %5ss  %s\n' \
            "$name" "${states:-?}" "${errors:-?}" "$secs" "$why"
        if [[ -f "$dir/$model.trail" ]]; then
            (cd "$dir" && "$SPIN" -t -p -g "$@" "$model" >trail.txt 2>&1)
            echo "      trail: $dir/trail.txt"
        fi
    fi
}

# Response slots (rr_slots.pml). Every scope has one reply given back (S14)
# and claimed again, and a stray second commit after each reply. Scopes:
#   reply   1 client (deadline or none, view/unview or Int get), 2 workers
#           handing ids to each other, a server's sweep or clear, 3 deaths
#   owners  2 clients racing for the slot (each sweeps once when none is
#           free), 1 worker, a server's sweep or clear, a queue of one entry
#           (a push can fail: abandon), 2 deaths
#   rounds  1 client, 2 requests in a row (stale ids in the queue), 1 worker,
#           2 server operations, a queue of one entry, 2 deaths
#   pins    1 client that may also pin its reply (PINNED: unpin freeing it,
#           or giving it back and collecting again), 1 worker, 2 server
#           operations (sweep, clear) against the pin, a queue of one entry,
#           3 deaths (two clients would be 60M+ states: too big)
#   reader  1 client, and a stranger holding its id that views its reply
#           (or looks a second time at one in READING), then releases or
#           unviews it, or dies at any step; the client's view and Int get
#           take READING as a second look; 1 worker, 2 server operations, a
#           queue of one entry, 3 deaths
reply=(-DROUNDS2=0 -DMAXDEATH=3)
owners=(-DNWORKER=1 -DC1FULL=0 -DC2FULL=0 -DQCAP=1 -DMAXDEATH=2)
rounds=(-DROUNDS2=0 -DROUNDS1=2 -DNWORKER=1 -DSERVER_OPS=2 -DQCAP=1 -DMAXDEATH=2)
pins=(-DPINS=1 -DROUNDS2=0 -DNWORKER=1 -DSERVER_OPS=2 -DQCAP=1 -DMAXDEATH=3)
reader=(-DREADER=1 -DROUNDS2=0 -DNWORKER=1 -DSERVER_OPS=2 -DQCAP=1 -DMAXDEATH=3)
# reply with a client that only waits (no deadline) and views: smaller, for
# the mutations that need two writers
waits=(-DROUNDS2=0 -DMAXDEATH=3 -DC1FULL=0)
check slots/reply pass rr_slots.pml "${reply[@]}"
check slots/owners pass rr_slots.pml "${owners[@]}"
check slots/rounds pass rr_slots.pml "${rounds[@]}"
check slots/pins pass rr_slots.pml "${pins[@]}"
check slots/reader pass rr_slots.pml "${reader[@]}"

# Int queue (rr_intq.pml): 2 producers (2 + 1 requests), 2 consumers, a final
# drain; a ring of 2 cells with 3 deaths, and of 1 cell with 2.
check intq/ring2 pass rr_intq.pml -DNCELL=2 -DMAXDEATH=3
check intq/ring1 pass rr_intq.pml -DNCELL=1 -DMAXDEATH=2

# Each of these must be caught.
check slots/reply-OLD_PUBLISH fail rr_slots.pml "${reply[@]}" -DOLD_PUBLISH
check slots/reply-OLD_RECORD fail rr_slots.pml "${reply[@]}" -DOLD_RECORD
check slots/reply-OLD_CANCEL fail rr_slots.pml "${reply[@]}" -DOLD_CANCEL
check slots/reply-OLD_SWEEP fail rr_slots.pml "${reply[@]}" -DOLD_SWEEP
check slots/reply-NOTES_OWNER fail rr_slots.pml "${reply[@]}" -DNOTES_OWNER
check slots/owners-NOTES_SWEEP fail rr_slots.pml "${owners[@]}" -DNOTES_SWEEP
check slots/reply-OLD_CLAIMED fail rr_slots.pml "${reply[@]}" -DOLD_CLAIMED
check slots/reply-MUT_UNCLAIM_ORDER fail rr_slots.pml "${reply[@]}" -DMUT_UNCLAIM_ORDER
check slots/waits-OLD_WRITER_CHECK fail rr_slots.pml "${waits[@]}" -DOLD_WRITER_CHECK
check slots/waits-STRICT_WAIT fail rr_slots.pml "${waits[@]}" -DSTRICT_WAIT
check slots/pins-MUT_SWEEP_PINNED fail rr_slots.pml "${pins[@]}" -DMUT_SWEEP_PINNED
check slots/pins-MUT_CLEAR_PINNED fail rr_slots.pml "${pins[@]}" -DMUT_CLEAR_PINNED
check slots/reader-OLD_INT_READING fail rr_slots.pml "${reader[@]}" -DOLD_INT_READING
check slots/reader-OLD_INT_DISCARD fail rr_slots.pml "${reader[@]}" -DOLD_INT_DISCARD
check slots/reader-OLD_RELEASE fail rr_slots.pml "${reader[@]}" -DOLD_RELEASE
check intq/ring2-C_REPAIR fail rr_intq.pml -DNCELL=2 -DMAXDEATH=3 -DC_REPAIR
check intq/ring2-MUT_TAKE_STORE fail rr_intq.pml -DNCELL=2 -DMAXDEATH=3 -DMUT_TAKE_STORE
check intq/ring2-MUT_RECORD_LATE fail rr_intq.pml -DNCELL=2 -DMAXDEATH=3 -DMUT_RECORD_LATE
check intq/ring2-MUT_NO_TAIL_HELP fail rr_intq.pml -DNCELL=2 -DMAXDEATH=3 -DMUT_NO_TAIL_HELP
check intq/ring2-MISJUDGE fail rr_intq.pml -DNCELL=2 -DMAXDEATH=3 -DMISJUDGE

echo "spin: $passed passed, $failed failed"
[[ $failed -eq 0 ]]
