# shellcheck shell=bash
# Helpers the scripts of this directory share (quickstart.sh, bench.sh,
# soak.sh, instructions.sh): messages, PostgreSQL's programs, running a
# server as `postgres` when root, free ports, and the release build.
#
# Source it after setting ROOT (the repository) and SCRIPT (the name die()
# prints before its message).

say() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf '%s: %s\n' "${SCRIPT:-${0##*/}}" "$*" >&2; exit 1; }

pg_bin() { # pg_bin NAME: print the path of a PostgreSQL program
    local name=$1 d
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return; fi
    # Debian and Ubuntu keep them off PATH, one directory per major version:
    # the newest first.
    for d in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k5,5 -V -r); do
        if [[ -x "$d/$name" ]]; then echo "$d/$name"; return; fi
    done
    die "$name not found on PATH nor in /usr/lib/postgresql/*/bin (install PostgreSQL, e.g. apt-get install postgresql)"
}

# PostgreSQL refuses to run as root: as root, server-side programs run as the
# `postgres` OS user.
need_postgres_user() {
    [[ $(id -u) -ne 0 ]] || id -u postgres >/dev/null 2>&1 ||
        die "running as root but there is no 'postgres' OS user (useradd -r postgres)"
}
as_pg() { # as_pg PROGRAM ARGS..: run it as `postgres` when we are root
    if [[ $(id -u) -eq 0 ]]; then
        need_postgres_user
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

port_in_use() { # true if something accepts TCP connections on 127.0.0.1:$1
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

TAKEN=()
free_port() { # free_port VAR: a port nobody listens on and not handed out yet
    # Sets VAR rather than printing: `$(free_port)` would run in a subshell,
    # which could not remember the ports it handed out.
    local p=$((20000 + RANDOM % 12000))
    while port_in_use "$p" || [[ " ${TAKEN[*]} " == *" $p "* ]]; do p=$((p + 1)); done
    TAKEN+=("$p")
    printf -v "$1" '%s' "$p"
}

next_free_port() { # next_free_port START [EXCLUDED..]: the first free one from START
    local p=$1
    shift
    while port_in_use "$p" || [[ " $* " == *" $p "* ]]; do p=$((p + 1)); done
    echo "$p"
}

wait_port() { # wait_port PORT PID [SECONDS]: until PORT accepts, while PID lives
    local i tries=$((${3:-20} * 20))
    for ((i = 0; i < tries; i++)); do
        port_in_use "$1" && return 0
        kill -0 "$2" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

build_shardbouncer() { # build_shardbouncer [CARGO ARGS..]: sets SB_BIN and SB_REV
    say "building shardbouncer (cargo build --release)"
    (cd "$ROOT" && cargo build --release "$@")
    local dir=${CARGO_TARGET_DIR:-$ROOT/target}
    [[ $dir = /* ]] || dir="$ROOT/$dir"
    SB_BIN="$dir/release/shardbouncer"
    [[ -x $SB_BIN ]] || die "built binary not found at $SB_BIN"
    SB_REV="$(git -C "$ROOT" log --oneline -1 2>/dev/null || echo '?')"
    if [[ -n $(git -C "$ROOT" status --porcelain --untracked-files=no -- src Cargo.toml Cargo.lock 2>/dev/null) ]]; then
        SB_REV+=" + uncommitted changes in src/"
    fi
}
