#!/usr/bin/env bash
# The core's dependency graphs, and the check that both are acyclic:
#   includes  each csrc/ file's #include "..." of the core's own headers; every
#             header's top comment must name them ("uses: ...")
#   calls     which core files each core file calls into (the symbols its
#             object leaves undefined that another core object defines)
# Prints both, and every cycle found; exit status 1 if there is one (or a
# header's "uses:" disagrees with its includes), 0 if not.
#
#   csrc/tests/deps.sh
# Environment: CC (default gcc).
set -uo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
csrc=$(dirname "$here")
obj=$(mktemp -d)
trap 'rm -rf "$obj"' EXIT
for src in "$csrc"/rr_*.c; do
    ${CC:-gcc} -std=gnu11 -O2 -I"$csrc" -c "$src" -o "$obj/$(basename "${src%.c}").o" || exit 2
done
cd "$csrc" || exit 2
python3 - "$obj" <<'PY'
import glob, os, re, subprocess, sys

status = 0


def cycles(graph, what):
    global status
    state = {}

    def visit(node, path):
        global status
        if state.get(node) == 1:
            print(f"{what} cycle: " + " -> ".join(path[path.index(node):] + [node]))
            status = 1
            return
        if state.get(node) != 2:
            state[node] = 1
            for nxt in graph[node]:
                visit(nxt, path + [node])
            state[node] = 2

    for node in graph:
        visit(node, [])


def show(graph, arrow):
    width = max(map(len, graph))
    for node, nxt in graph.items():
        print(f"  {node:<{width}}  {arrow} {' '.join(nxt) or '(nothing)'}")


files = sorted(glob.glob("*.h")) + sorted(glob.glob("rr_*.c"))
includes = {f: [m for m in re.findall(r'^#include "([^"]+)"', open(f).read(), re.M)
                if m in files] for f in files}
print("includes:")
show(includes, "->")
cycles(includes, "include")
for f in sorted(glob.glob("rr_*.h")):
    head = open(f).read().split("*/", 1)[0]
    m = re.search(r"uses:(.*)", head, re.S)
    named = set(re.findall(r"\b(rr_\w+\.h|reqrep\.h)\b", m.group(1))) if m else None
    if named is None:
        print(f"{f}: its top comment has no 'uses:'")
        status = 1
    elif not set(includes[f]) <= named <= set(includes[f]) | {"reqrep.h"}:
        print(f"{f}: says it uses {sorted(named)}, includes {sorted(includes[f])}")
        status = 1

objdir = sys.argv[1]
defined, undefined = {}, {}
for o in sorted(glob.glob(os.path.join(objdir, "*.o"))):
    name = os.path.basename(o)[:-2] + ".c"
    rows = [ln.split() for ln in subprocess.run(["nm", o], capture_output=True, text=True,
                                                 check=True).stdout.splitlines()]
    defined[name] = {r[2] for r in rows if len(r) == 3 and r[1] in "TDBR"}
    undefined[name] = {r[1] for r in rows if len(r) == 2 and r[0] == "U"}
owner = {sym: f for f, syms in defined.items() for sym in syms}
calls = {f: sorted({owner[s] for s in undefined[f] if owner.get(s, f) != f}) for f in defined}
print("calls (and data: the ops tables):")
show(calls, "->")
cycles(calls, "call")
print("no cycle" if status == 0 else "dependency check FAILED")
sys.exit(status)
PY
