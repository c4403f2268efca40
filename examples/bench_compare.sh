#!/usr/bin/env bash
# make bench-compare: kvstore beside Redis and etcd, same machine, same run.
#
# Load: 16 connections, 200,000 requests, 100-byte values, keys drawn from
# 100,000. The two load generators are matched by how they use threads:
# plain redis-benchmark drives all its connections from one event loop, like
# kv_bench --threads 1; redis-benchmark --threads 16 is the match for
# kv_bench's thread-per-connection mode (its default). Every row names the
# pair it compares.
#
# Part "redis": for RUNS rounds (default 3) it runs, interleaved so that
# both see the same machine noise, with redis-benchmark and kv_bench
# --threads 1:
#   - async replicated writes: Redis master + 2 replicas, no persistence,
#     vs kvstore leader + 2 followers, write concern local, fsync never;
#   - durable replicated writes: Redis with appendfsync always + 2 replicas,
#     vs kvstore with write concern majority and fsync always on every node;
#   - GET against the master / leader of the first setup;
#   - a late joiner catching up on 1,000,000 keys (16-byte keys, 100-byte
#     values): Redis full sync (diskless, no delay) vs kvstore catch-up from
#     the WAL, and vs kvstore when the leader's log is compacted (after
#     `kv_client snapshot`, --wal-retain-bytes=0): snapshot install.
# Then it prints each pair's median, min-max and the ratio.
#
# Part "single": one Redis without persistence vs one kvstore node with
# fsync never, SET/PUT for RUNS interleaved rounds, each client mode beside
# its match, without and with pipelining (-P 16 / --pipeline 16):
# throughput, p50, p99 and p99.9 of both.
#
# Part "connections": one Redis without persistence vs one kvstore node
# with fsync never, SET/PUT at 1, 16, 256 and 1,000 connections (CONN_COUNTS),
# 100,000 requests each, plain redis-benchmark vs kv_bench --threads 1 (one
# event loop each), a fresh server per count; throughput, p50, p99, p99.9
# and the server's peak resident memory (VmHWM), RUNS interleaved rounds.
#
# Part "etcd": durable replicated PUT, a 3-member etcd cluster (its own Go
# client, examples/etcd_put_bench, built offline from Debian's
# golang-etcd-server-dev) vs kvstore leader + 2 followers with write concern
# majority and fsync always; RUNS interleaved rounds, c=16.
#
# Part "failover": examples/failover_time.rs against a 3-member kvstore
# cluster and a 3-member etcd cluster, both with default timings, one after
# the other: the leader SIGKILLed FAILOVER_RUNS times (default 20), then
# SIGTERMed and asked to hand over HANDOVER_RUNS times each (default 10).
# It prints the medians, min-max and the ratio kvstore/etcd.
#
#   SCENARIOS="redis single connections etcd failover"   which parts to run (default: all)
#
# Redis and etcd come from the system's packages; they are installed if
# missing.
set -euo pipefail

RUNS=${RUNS:-3}
RECORDS=${LATE_RECORDS:-1000000}
BIN=${BIN:-./build}
EX=${EX:-./target/release/examples}
RP=${REDIS_PORT:-9600}
KP=${KVSTORE_PORT:-9610}
EP=${ETCD_PORT:-9620}   # etcd: clients on EP..EP+2, peers on EP+3..EP+5
SCENARIOS=${SCENARIOS:-"redis single connections etcd failover"}
CONN_COUNTS=${CONN_COUNTS:-"1 16 256 1000"}
FAILOVER_RUNS=${FAILOVER_RUNS:-20}
HANDOVER_RUNS=${HANDOVER_RUNS:-10}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-compare.XXXXXX")
PIDS=()
REDIS_PORTS=()

fail() { echo "bench-compare: $*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; else SUDO="sudo"; fi
if [[ " $SCENARIOS " == *" redis "* || " $SCENARIOS " == *" single "* \
    || " $SCENARIOS " == *" connections "* ]] \
    && { ! command -v redis-server >/dev/null || ! command -v redis-benchmark >/dev/null; }; then
    echo "bench-compare: installing redis-server and redis-tools from the system's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server redis-tools >/dev/null
fi
if [[ " $SCENARIOS " == *" etcd "* ]] && { ! command -v etcd >/dev/null || ! command -v etcdctl >/dev/null \
    || ! command -v go >/dev/null || [ ! -d /usr/share/gocode/src/go.etcd.io/etcd/clientv3 ]; }; then
    echo "bench-compare: installing etcd-server, etcd-client, golang-go and golang-etcd-server-dev from the system's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server etcd-client golang-go \
        golang-etcd-server-dev >/dev/null
fi
if [[ " $SCENARIOS " == *" failover "* ]] && ! command -v etcd >/dev/null; then
    echo "bench-compare: installing etcd-server from the system's packages"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq etcd-server >/dev/null
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

# redis_bench TEST ARGS...: "ops/s p50 p99 p99.9" (latencies in us) of
# redis-benchmark's SET or GET; ARGS add e.g. -P 16 or --threads 16. p50 and
# p99 come from its summary; p99.9 is the first line of its percentile
# distribution at or above 99.9% (it prints no exact p99.9).
redis_bench() {
    local test=$1; shift
    redis-benchmark -p "$RP" -t "$test" -c "${CONNS:-16}" -n "${OPS:-200000}" -d 100 -r 100000 "$@" 2>/dev/null \
        | tr '\r' '\n' | awk '
            /^Latency by percentile distribution/ { dist = 1; next }
            /^Cumulative distribution/ { dist = 0 }
            dist && $2 == "<=" && p999 == "" && substr($1, 1, length($1) - 1) + 0 >= 99.9 {
                p999 = $3 * 1000 }
            /throughput summary:/ { ops = $3 }
            $1 == "avg" && $3 == "p50" && $5 == "p99" { getline; p50 = $3 * 1000; p99 = $5 * 1000 }
            END { if (ops == "" || p99 == "" || p999 == "") exit 1; print ops, p50, p99, p999 }'
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

# kv_bench TEST ARGS...: "ops/s p50 p99 p99.9" (latencies in us) of
# kv_bench's PUT or GET; ARGS add e.g. --threads 1 or --pipeline 16.
kv_bench() {
    local test=$1 json="$WORK/kv_bench.json"; shift
    "$EX/kv_bench" --quiet --port "$KP" -c "${CONNS:-16}" -n "${OPS:-200000}" -d 100 -r 100000 -t "$test" \
        --json "$json" "$@" >/dev/null || return 1
    awk -F '[:,]' '/"throughput_ops_per_s"/ {ops = $2} /"p50_us"/ {p50 = $2}
        /"p99_us"/ {p99 = $2} /"p999_us"/ {p999 = $2}
        END {printf "%.0f %d %d %d\n", ops, p50, p99, p999}' "$json"
}

# ---- figures -----------------------------------------------------------------

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }

# record KEY CMD...: run CMD (redis_bench or kv_bench) and keep its figures
# as KEY_ops, KEY_p50, KEY_p99 and KEY_p999.
record() {
    local key=$1 out ops p50 p99 p999; shift
    out=$("$@") || fail "$key: $* printed no figures"
    read -r ops p50 p99 p999 <<<"$out"
    add "${key}_ops" "$ops"
    add "${key}_p50" "$p50"
    add "${key}_p99" "$p99"
    add "${key}_p999" "$p999"
}


median() { printf '%s\n' $1 | sort -g | awk '{v[NR] = $1} END {
    print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
range() { printf '%s\n' $1 | sort -g | awk '{v[NR] = $1} END { printf "%s-%s", v[1], v[NR] }'; }

line() { # LABEL PEER-KEY KVSTORE-KEY UNIT TARGET
    local r k
    r=$(median "${R[$2]}") k=$(median "${R[$3]}")
    printf '| %-44s | %12s (%s) | %12s (%s) | %5.2fx | %s |\n' "$1" "$r" "$(range "${R[$2]}")" \
        "$k" "$(range "${R[$3]}")" "$(awk -v a="$k" -v b="$r" 'BEGIN {print (b > 0) ? a / b : 0}')" "$5"
}

# latency_lines PEER-KEY KVSTORE-KEY P99-TARGET: the p50, p99 and p99.9 rows
# under a throughput row.
latency_lines() {
    line "  p50 (us)" "$1_p50" "$2_p50" us ""
    line "  p99 (us)" "$1_p99" "$2_p99" us "$3"
    line "  p99.9 (us)" "$1_p999" "$2_p999" us ""
}

# ---- kvstore vs Redis -------------------------------------------------------

if [[ " $SCENARIOS " == *" redis "* ]]; then
    for run in $(seq 1 "$RUNS"); do
        echo "bench-compare: round $run of $RUNS" >&2
        redis_cluster "async-$run"
        record redis_set_async redis_bench set
        record redis_get redis_bench get
        stop_all
        kv_cluster "async-$run" --write-concern=local --fsync=never
        record kv_put_async kv_bench put --threads 1
        record kv_get kv_bench get --threads 1
        stop_all

        redis_cluster "durable-$run" --appendonly yes --appendfsync always
        record redis_set_durable redis_bench set
        stop_all
        kv_cluster "durable-$run" --write-concern=majority --fsync=always
        record kv_put_durable kv_bench put --threads 1
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

        # The same, the leader's log compacted: the follower gets the snapshot.
        # (A standalone leader, the follower an extra one: a leader expecting
        # it could not commit, and so not snapshot, while it is away.)
        kv_start "late-$run-cl" "$KP" --role=leader --fsync=never --wal-retain-bytes=0
        "$EX/kv_bench" --quiet --port "$KP" --preload -r "$RECORDS" -n 0 -d 100 >/dev/null
        "$BIN/kv_client" --port "$KP" snapshot >/dev/null
        t0=$(now_ns)
        kv_start "late-$run-cf" $((KP + 1)) --role=follower --leader="$KP"
        poll 600 grep -q "caught up to LSN $RECORDS" "$WORK/late-$run-cf.log"
        add kv_late_snapshot "$(awk -v t="$(( $(now_ns) - t0 ))" 'BEGIN {print t / 1e9}')"
        stop_all
    done

    echo
    echo "kvstore vs Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $RUNS interleaved rounds"
    echo
    echo "| scenario | Redis | kvstore | kvstore/Redis | target |"
    echo "|---|---|---|---|---|"
    line "replicated PUT/SET, async, no fsync (ops/s)" redis_set_async_ops kv_put_async_ops ops ">= 1.0x"
    latency_lines redis_set_async kv_put_async ""
    line "replicated PUT/SET, fsync always (ops/s)" redis_set_durable_ops kv_put_durable_ops ops ">= 1.0x"
    latency_lines redis_set_durable kv_put_durable ""
    line "GET (ops/s)" redis_get_ops kv_get_ops ops ">= 1.0x"
    latency_lines redis_get kv_get ""
    line "late joiner, $RECORDS keys (seconds)" redis_late kv_late s "<= 0.5x"
    line "late joiner, $RECORDS keys, log compacted: snapshot install (seconds)" redis_late kv_late_snapshot s "<= 0.5x"
fi

# ---- kvstore vs Redis, single node: both client modes, pipelining ------------

if [[ " $SCENARIOS " == *" single "* ]]; then
    for run in $(seq 1 "$RUNS"); do
        echo "bench-compare: single node, round $run of $RUNS" >&2
        redis_start "$RP" "$WORK/single-$run/m"
        record redis_one redis_bench set -P 1
        record redis_threads redis_bench set -P 1 --threads 16
        record redis_one_p16 redis_bench set -P 16
        record redis_threads_p16 redis_bench set -P 16 --threads 16
        stop_all
        kv_start "single-$run" "$KP" --role=leader --fsync=never
        record kv_one kv_bench put --threads 1
        record kv_threads kv_bench put
        record kv_one_p16 kv_bench put --threads 1 --pipeline 16
        record kv_threads_p16 kv_bench put --pipeline 16
        stop_all
    done

    echo
    echo "kvstore vs Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), single node without persistence / fsync never, PUT/SET, on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $RUNS interleaved rounds"
    echo
    echo "| scenario | Redis | kvstore | kvstore/Redis | target |"
    echo "|---|---|---|---|---|"
    line "one client thread: redis-benchmark vs kv_bench --threads 1 (ops/s)" redis_one_ops kv_one_ops ops ""
    latency_lines redis_one kv_one ""
    line "16 client threads: redis-benchmark --threads 16 vs kv_bench thread per connection (ops/s)" redis_threads_ops kv_threads_ops ops ""
    # the tail target: p99 at c=16 within 2x Redis's with a threaded client
    latency_lines redis_threads kv_threads "<= 2.0x"
    line "pipelined, one client thread: -P 16 vs --threads 1 --pipeline 16 (ops/s)" redis_one_p16_ops kv_one_p16_ops ops ""
    latency_lines redis_one_p16 kv_one_p16 ""
    line "pipelined, 16 client threads: -P 16 --threads 16 vs --pipeline 16 (ops/s)" redis_threads_p16_ops kv_threads_p16_ops ops ""
    latency_lines redis_threads_p16 kv_threads_p16 ""
fi

# ---- kvstore vs Redis, single node: 1 to 1,000 connections -----------------

# peak_rss_mib PID: the process's peak resident memory (VmHWM) in MiB.
peak_rss_mib() { awk '/^VmHWM/ {printf "%.1f", $2 / 1024}' "/proc/$1/status"; }

if [[ " $SCENARIOS " == *" connections "* ]]; then
    # 1,000 connections need 1,000 descriptors in the client and two per
    # connection in kvstore (reader and writer).
    ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
    for run in $(seq 1 "$RUNS"); do
        for c in $CONN_COUNTS; do
            echo "bench-compare: connections $c, round $run of $RUNS" >&2
            redis_start "$RP" "$WORK/conns-$run-$c/m" --maxclients 20000
            CONNS=$c OPS=100000 record "redis_c$c" redis_bench set
            add "redis_c${c}_rss" "$(peak_rss_mib "$(redis-cli -p "$RP" info server \
                | tr -d '\r' | awk -F: '$1 == "process_id" {print $2}')")"
            stop_all
            kv_start "conns-$run-$c" "$KP" --role=leader --fsync=never
            CONNS=$c OPS=100000 record "kv_c$c" kv_bench put --threads 1
            add "kv_c${c}_rss" "$(peak_rss_mib "${PIDS[-1]}")"
            stop_all
        done
    done

    echo
    echo "kvstore vs Redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-), single node without persistence / fsync never, PUT/SET, redis-benchmark vs kv_bench --threads 1, on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $RUNS interleaved rounds"
    echo
    echo "| scenario | Redis | kvstore | kvstore/Redis | target |"
    echo "|---|---|---|---|---|"
    for c in $CONN_COUNTS; do
        target=""
        [ "$c" = 256 ] && target=">= 0.9x"
        [ "$c" = 1000 ] && target=">= 0.8x"
        line "$c connections (ops/s)" "redis_c${c}_ops" "kv_c${c}_ops" ops "$target"
        target=""
        [ "$c" = 256 ] && target="<= 3.0x"
        latency_lines "redis_c$c" "kv_c$c" "$target"
        line "  server peak RSS (MiB)" "redis_c${c}_rss" "kv_c${c}_rss" MiB ""
    done
fi

# ---- kvstore vs etcd: durable replicated writes ----------------------------

# etcd_cluster NAME: three members, clients on EP..EP+2, peers on EP+3..EP+5.
etcd_cluster() {
    local name=$1 cluster="" i
    for i in 0 1 2; do cluster+="${cluster:+,}m$i=http://127.0.0.1:$((EP + 3 + i))"; done
    for i in 0 1 2; do
        etcd --name "m$i" --data-dir "$WORK/$name/m$i" \
            --listen-client-urls "http://127.0.0.1:$((EP + i))" \
            --advertise-client-urls "http://127.0.0.1:$((EP + i))" \
            --listen-peer-urls "http://127.0.0.1:$((EP + 3 + i))" \
            --initial-advertise-peer-urls "http://127.0.0.1:$((EP + 3 + i))" \
            --initial-cluster "$cluster" --initial-cluster-state new \
            --initial-cluster-token "$name" >"$WORK/$name-m$i.log" 2>&1 &
        PIDS+=($!)
    done
    poll 30 env ETCDCTL_API=3 etcdctl --endpoints="127.0.0.1:$EP" endpoint health
}

# etcd_bench: "ops/s p50 p99 p99.9" (us) of examples/etcd_put_bench, etcd's
# own Go client, 16 clients sharing one gRPC connection to the members.
etcd_bench() {
    "$ETCD_BENCH" -endpoints "127.0.0.1:$EP,127.0.0.1:$((EP + 1)),127.0.0.1:$((EP + 2))" \
        -c 16 -n "${ETCD_OPS:-20000}" -d 100 -r 100000 -brief
}

if [[ " $SCENARIOS " == *" etcd "* ]]; then
    # Built offline from Debian's etcd client sources (GOPATH mode).
    ETCD_BENCH="$PWD/target/etcd_put_bench"
    (cd examples/etcd_put_bench && GO111MODULE=off GOPATH=/usr/share/gocode \
        GOCACHE="$PWD/../../target/gocache" go build -o "$ETCD_BENCH" .) \
        || fail "building examples/etcd_put_bench"
    for run in $(seq 1 "$RUNS"); do
        echo "bench-compare: etcd round $run of $RUNS" >&2
        etcd_cluster "etcd-$run"
        record etcd_put etcd_bench
        stop_all
        kv_cluster "kv-etcd-$run" --write-concern=majority --fsync=always
        record kv_put_majority kv_bench put --threads 1
        stop_all
    done

    echo
    echo "kvstore vs etcd $(etcd --version | awk '/^etcd Version/ {print $3}'): durable replicated PUT, 3 members on loopback (etcd fsyncs always; kvstore --write-concern=majority --fsync=always), c=16, 100-byte values, on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $RUNS interleaved rounds"
    echo
    echo "| scenario | etcd | kvstore | kvstore/etcd | target |"
    echo "|---|---|---|---|---|"
    line "durable replicated PUT (ops/s)" etcd_put_ops kv_put_majority_ops ops ">= 4.0x"
    line "  p50 (us)" etcd_put_p50 kv_put_majority_p50 us ""
    line "  p99 (us)" etcd_put_p99 kv_put_majority_p99 us ""
    line "  p99.9 (us)" etcd_put_p999 kv_put_majority_p999 us ""
fi

# ---- kvstore vs etcd: failover time -----------------------------------------

# failover TARGET FAULT RUNS PORT: run examples/failover_time.rs and keep
# every run's figures in R (TARGET_FAULT_failover, TARGET_FAULT_gap).
failover() {
    local target=$1 fault=$2 runs=$3 port=$4 bin out
    bin="$BIN/kvstore"
    [[ $target == etcd ]] && bin=$(command -v etcd)
    echo "bench-compare: $target, leader $fault, $runs runs" >&2
    out=$("$EX/failover_time" --target "$target" --bin "$bin" --port "$port" --fault "$fault" \
        --runs "$runs" --dir "$WORK/failover-$target-$fault" 2>&1) \
        || fail "failover_time --target $target --fault $fault: $(tail -3 <<<"$out")"
    grep -E '^(failover time|longest gap) \(' <<<"$out" >&2
    local ms gap
    while read -r ms gap; do
        add "${target}_${fault}_failover" "$ms"
        add "${target}_${fault}_gap" "$gap"
    done < <(sed -nE 's/^run +[0-9]+: .* after ([0-9]+) ms; longest gap between acknowledged writes ([0-9]+) ms$/\1 \2/p' <<<"$out")
}

if [[ " $SCENARIOS " == *" failover "* ]]; then
    for fault in sigkill sigterm transfer; do
        runs=$HANDOVER_RUNS
        [[ $fault == sigkill ]] && runs=$FAILOVER_RUNS
        failover kvstore "$fault" "$runs" "$KP"
        failover etcd "$fault" "$runs" "$EP"
    done

    echo
    echo "kvstore vs etcd $(etcd --version | awk '/^etcd Version/ {print $3}'): failover time, 3 members on loopback, default timings, on $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ); median (min-max) of $FAILOVER_RUNS SIGKILLs, $HANDOVER_RUNS SIGTERMs, $HANDOVER_RUNS transfers"
    echo
    echo "| scenario | etcd | kvstore | kvstore/etcd | target |"
    echo "|---|---|---|---|---|"
    line "SIGKILL: to the new leader's first ack (ms)" etcd_sigkill_failover kvstore_sigkill_failover ms "median <= 1500 ms"
    line "SIGKILL: longest gap between acked writes (ms)" etcd_sigkill_gap kvstore_sigkill_gap ms ""
    line "SIGTERM: longest gap between acked writes (ms)" etcd_sigterm_gap kvstore_sigterm_gap ms "< 100 ms"
    line "SIGTERM: to the new leader's first ack (ms)" etcd_sigterm_failover kvstore_sigterm_failover ms ""
    line "transfer: longest gap between acked writes (ms)" etcd_transfer_gap kvstore_transfer_gap ms "< 100 ms"
    line "transfer: to the new leader's first ack (ms)" etcd_transfer_failover kvstore_transfer_failover ms ""
fi
