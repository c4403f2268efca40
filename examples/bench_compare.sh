#!/usr/bin/env bash
# make bench-compare: kvstore and Redis side by side, same machine, same run.
#
# For RUNS rounds (default 3) it runs, interleaved so that both see the same
# machine noise:
#   - async replicated writes: Redis master + 2 replicas, no persistence,
#     vs kvstore leader + 2 followers, write concern local, fsync never;
#   - durable replicated writes: Redis with appendfsync always + 2 replicas,
#     vs kvstore with write concern majority and fsync always on every node;
#   - GET against the master / leader of the first setup;
#   - a late joiner catching up on 1,000,000 keys (16-byte keys, 100-byte
#     values): Redis full sync (diskless, no delay) vs kvstore catch-up.
# Then it prints each pair's median, min-max and the ratio.
#
# Redis comes from the system's packages; it is installed if missing.
set -euo pipefail

RUNS=${RUNS:-3}
RECORDS=${LATE_RECORDS:-1000000}
BIN=${BIN:-./build}
EX=${EX:-./target/release/examples}
RP=${REDIS_PORT:-9600}
KP=${KVSTORE_PORT:-9610}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-compare.XXXXXX")
PIDS=()
REDIS_PORTS=()

fail() { echo "bench-compare: $*" >&2; exit 1; }

if ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; then
    echo "bench-compare: installing redis-server and redis-tools from the system's packages"
    if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi

stop_all() {
    for port in "${REDIS_PORTS[@]}"; do redis-cli -p "$port" shutdown nosave >/dev/null 2>&1 || true; done
    REDIS_PORTS=()
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
cleanup() { stop_all; rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

now_ns() { date +%s%N; }
poll() { # poll SECONDS CMD...: until CMD succeeds
    local deadline=$(( $(date +%s) + $1 )); shift
    until "$@" >/dev/null 2>&1; do
        [ "$(date +%s)" -lt "$deadline" ] || fail "timed out: $*"
        sleep 0.01
    done
}

# ---- Redis -------------------------------------------------------------------

redis_start() { # PORT DIR EXTRA-CONFIG...
    local port=$1 dir=$2; shift 2
    mkdir -p "$dir"
    redis-server --port "$port" --dir "$dir" --save '' --daemonize yes \
        --logfile "$dir/redis.log" --repl-diskless-sync-delay 0 --enable-debug-command local "$@"
    REDIS_PORTS+=("$port")
    poll 10 redis-cli -p "$port" ping
}

redis_cluster() { # NAME EXTRA-CONFIG...: master on RP, replicas on RP+1, RP+2
    local name=$1; shift
    redis_start "$RP" "$WORK/$name/m" "$@"
    for i in 1 2; do
        redis_start $((RP + i)) "$WORK/$name/r$i" "$@" --replicaof 127.0.0.1 "$RP"
        poll 30 bash -c "redis-cli -p $((RP + i)) info replication | grep -q 'master_link_status:up'"
    done
}

redis_bench() { # TEST: ops/s of redis-benchmark's SET or GET
    redis-benchmark -p "$RP" -t "$1" -c 16 -n 200000 -d 100 -P 1 -r 100000 -q 2>/dev/null \
        | tr '\r' '\n' | grep -E "^$(tr a-z A-Z <<<"$1"): [0-9.]+ requests per second" | tail -1 \
        | awk '{print $2}'
}

# ---- kvstore -----------------------------------------------------------------

kv_start() { # NAME PORT ARGS...
    local name=$1 port=$2; shift 2
    "$BIN/kvstore" --port "$port" --data-dir "$WORK/$name" "$@" >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    poll 10 "$BIN/kv_client" --port "$port" status
}

kv_cluster() { # NAME LEADER-ARGS...: leader on KP, followers on KP+1, KP+2
    local name=$1; shift
    local fsync=never
    [[ " $* " == *" --fsync=always "* ]] && fsync=always
    kv_start "$name-l" "$KP" --role=leader --peers=$((KP + 1)),$((KP + 2)) "$@"
    for i in 1 2; do
        kv_start "$name-f$i" $((KP + i)) --role=follower --leader="$KP" --fsync="$fsync"
        poll 30 grep -q "caught up" "$WORK/$name-f$i.log"
    done
}

kv_bench() { # TEST: ops/s of kv_bench
    "$EX/kv_bench" --quiet --port "$KP" -c 16 -n 200000 -d 100 -r 100000 -t "$1" \
        | awk '{for (i = 2; i <= NF; i++) if ($i == "ops/s") print $(i - 1)}'
}

# ---- rounds ------------------------------------------------------------------

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }

for run in $(seq 1 "$RUNS"); do
    echo "bench-compare: round $run of $RUNS" >&2
    redis_cluster "async-$run"
    add redis_set_async "$(redis_bench set)"
    add redis_get "$(redis_bench get)"
    stop_all
    kv_cluster "async-$run" --write-concern=local --fsync=never
    add kv_put_async "$(kv_bench put)"
    add kv_get "$(kv_bench get)"
    stop_all

    redis_cluster "durable-$run" --appendonly yes --appendfsync always
    add redis_set_durable "$(redis_bench set)"
    stop_all
    kv_cluster "durable-$run" --write-concern=majority --fsync=always
    add kv_put_durable "$(kv_bench put)"
    stop_all

    # Late joiner: load the master/leader, then time a new replica/follower.
    redis_start "$RP" "$WORK/late-$run/m"
    redis-cli -p "$RP" debug populate "$RECORDS" key:00000 100 >/dev/null
    t0=$(now_ns)
    redis_start $((RP + 1)) "$WORK/late-$run/r" --replicaof 127.0.0.1 "$RP"
    poll 600 bash -c "redis-cli -p $((RP + 1)) info replication | grep -q 'master_link_status:up' \
        && redis-cli -p $((RP + 1)) info replication | grep -q 'master_sync_in_progress:0' \
        && [ \"\$(redis-cli -p $((RP + 1)) dbsize)\" -ge $RECORDS ]"
    add redis_late "$(awk -v t="$(( $(now_ns) - t0 ))" 'BEGIN {print t / 1e9}')"
    stop_all

    kv_start "late-$run-l" "$KP" --role=leader --peers=$((KP + 1)) --fsync=never
    "$EX/kv_bench" --quiet --port "$KP" --preload -r "$RECORDS" -n 0 -d 100 >/dev/null
    t0=$(now_ns)
    kv_start "late-$run-f" $((KP + 1)) --role=follower --leader="$KP"
    poll 600 grep -q "caught up to LSN $RECORDS" "$WORK/late-$run-f.log"
    add kv_late "$(awk -v t="$(( $(now_ns) - t0 ))" 'BEGIN {print t / 1e9}')"
    stop_all
done

# ---- report ------------------------------------------------------------------

median() { printf '%s\n' $1 | sort -g | awk '{v[NR] = $1} END {
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' $1 | sort -g | awk '{v[NR] = $1} END { printf "%s-%s", v[1], v[NR] }'; }

line() { # LABEL REDIS-KEY KVSTORE-KEY UNIT TARGET
    local r k
    r=$(median "${R[$2]}") k=$(median "${R[$3]}")
    printf '| %-44s | %12s (%s) | %12s (%s) | %5.2fx | %s |\n' "$1" "$r" "$(range "${R[$2]}")" \
        "$k" "$(range "${R[$3]}")" "$(awk -v a="$k" -v b="$r" 'BEGIN {print a / b}')" "$5"
}

echo
echo "kvstore vs Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $RUNS interleaved rounds"
echo
echo "| scenario | Redis | kvstore | kvstore/Redis | target |"
echo "|---|---|---|---|---|"
line "replicated PUT/SET, async, no fsync (ops/s)" redis_set_async kv_put_async ops ">= 1.0x"
line "replicated PUT/SET, fsync always (ops/s)" redis_set_durable kv_put_durable ops ">= 1.0x"
line "GET (ops/s)" redis_get kv_get ops ">= 1.0x"
line "late joiner, $RECORDS keys (seconds)" redis_late kv_late s "<= 0.5x"
