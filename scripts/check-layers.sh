#!/usr/bin/env bash
# Check the module layering of src/: every `crate::<module>` path must point down the
# layer table below, or sideways to a module of the same layer without closing a cycle.
# Exits 1, printing file:line and the forbidden edge, when one does not.
# `scripts/check-layers.sh --edges` also lists the module graph (from -> to, first use).
#
# Run by .ci/run before the tests; plain bash + awk, well under a second.
#
# What is read: `crate::x` paths in src/**/*.rs (in `use` lines and inline, also inside
# `use crate::{a, b::c}` groups spanning lines), outside `//` comments. `super::` paths
# are not followed: they stay inside a module here (src/x.rs or src/x/), and the
# parent/child use inside one module is not a layering question.
set -euo pipefail
cd "$(dirname "$0")/.."
edges=0
[[ ${1:-} == --edges ]] && edges=1

# The layer table. A module is src/<name>.rs or src/<name>/ (all its files).
# A module may use any module of a lower layer, and modules of its own layer as long
# as those same-layer uses form no cycle. It may never use a module of a higher layer.
# A new top-level module must be added here (the check fails until it is).
LAYERS='
4  main lib serve
3  client admin
2  app pool server auth tls
1  config protocol router net sqlstate
'
# Layer 4: the binary and the accept loop. 3: what serves a connection (the client
# session; the admin console and metrics). 2: what they share (process state `app`:
# live config, client registry, tenant stats, console state) and the backend side
# (pools, server connections, authentication, TLS toward servers). 1: pure or
# near-pure foundations (configuration and its snapshot, wire protocol, the router,
# sockets, SQLSTATEs).

# shellcheck disable=SC2046 # file names under src/ have no spaces
exec awk -v layers="$LAYERS" -v edges="$edges" '
function module_of(path,    p) {
    p = path
    sub(/^src\//, "", p)
    sub(/\/.*$/, "", p)
    sub(/\.rs$/, "", p)
    return p
}

function edge(to, where,    from) {
    from = mod
    refs++
    if (!(to in layer)) {
        printf "%s: crate::%s is not in the layer table of scripts/check-layers.sh\n", where, to
        bad = 1
        return
    }
    if (to == from) return
    if (edges && !((from, to) in listed)) {
        listed[from, to] = 1
        printf "%-8s -> %-8s %s\n", from, to, where
    }
    if (layer[from] < layer[to]) {
        printf "%s: %s (layer %d) -> %s (layer %d): points up the layers\n", where, from, layer[from], to, layer[to]
        bad = 1
    } else if (layer[from] == layer[to] && !((from, to) in same)) {
        same[from, to] = where
        nsucc[from]++
        succ[from, nsucc[from]] = to
    }
}

# The leading identifiers of the items of a `{ ... }` group (depth 1 only).
function group_items(text, where,    i, c, depth, id, want) {
    depth = 0; want = 0; id = ""
    for (i = 1; i <= length(text); i++) {
        c = substr(text, i, 1)
        if (c == "{") { depth++; if (depth == 1) { want = 1; id = "" }; continue }
        if (c == "}") { if (depth == 1 && want && id != "") edge(id, where); depth--; want = 0; id = ""; continue }
        if (depth != 1) continue
        if (c == ",") { if (want && id != "") edge(id, where); want = 1; id = ""; continue }
        if (!want) continue
        if (c ~ /[A-Za-z0-9_]/) { id = id c; continue }
        if (c ~ /[ \t\n]/ && id == "") continue
        # `a::b`, `a as b`, `self`: the identifier is complete
        if (id != "" && id != "self") edge(id, where)
        want = 0; id = ""
    }
}

function braces(s,    t, o, c) {
    t = s; o = gsub(/\{/, "", t)
    t = s; c = gsub(/\}/, "", t)
    return o - c
}

BEGIN {
    n = split(layers, rows, "\n")
    for (r = 1; r <= n; r++) {
        k = split(rows[r], f, " ")
        for (j = 2; j <= k; j++) layer[f[j]] = f[1] + 0
    }
    bad = 0; refs = 0; files = 0
}

FNR == 1 {
    files++
    mod = module_of(FILENAME)
    grouping = 0
    if (!(mod in layer)) {
        printf "%s: module %s is not in the layer table of scripts/check-layers.sh\n", FILENAME, mod
        bad = 1
    }
}

{
    line = $0
    if (line ~ /^[ \t]*\/\//) next
    sub(/[ \t;]\/\/.*$/, "", line)
    if (grouping) {
        buf = buf "\n" line
        depth += braces(line)
        if (depth <= 0) { group_items(buf, gwhere); grouping = 0 }
        next
    }
    rest = line
    while (match(rest, /crate::[A-Za-z_{][A-Za-z0-9_]*/)) {
        before = substr(rest, 1, RSTART - 1)
        tok = substr(rest, RSTART + 7, RLENGTH - 7)
        after = substr(rest, RSTART + RLENGTH)
        if (before ~ /[A-Za-z0-9_$]$/) { rest = after; continue }
        where = FILENAME ":" FNR
        if (tok ~ /^\{/) {
            # a group: `crate::{a, b::{c, d}}`, possibly over several lines
            buf = "{" substr(tok, 2) after
            depth = braces(buf)
            if (depth <= 0) { group_items(buf, where) }
            else { grouping = 1; gwhere = where }
            break
        }
        edge(tok, where)
        rest = after
    }
}

END {
    # Same-layer uses must not close a cycle: depth-first search over them.
    for (m in layer) color[m] = 0
    for (m in layer) if (color[m] == 0) visit(m, 0)
    if (bad) {
        print "check-layers: FAILED (the layer table is at the top of scripts/check-layers.sh)"
        exit 1
    }
    printf "check-layers: %d files, %d crate:: references, layering OK\n", files, refs
}

function visit(m, d,    i, t, j) {
    color[m] = 1
    stack[d] = m
    for (i = 1; i <= nsucc[m]; i++) {
        t = succ[m, i]
        if (color[t] == 1) {
            printf "cycle between modules of layer %d:\n", layer[m]
            for (j = d; j >= 0 && stack[j] != t; j--) ;
            for (; j <= d; j++) {
                nxt = (j < d) ? stack[j + 1] : t
                printf "  %s: %s -> %s\n", same[stack[j], nxt], stack[j], nxt
            }
            bad = 1
        } else if (color[t] == 0) {
            visit(t, d + 1)
        }
    }
    color[m] = 2
}
' $(find src -name '*.rs' | LC_ALL=C sort)
