#!/usr/bin/env bash
# make bench: kvstore's benchmark scenarios (docs/BENCHMARKS.md), one row each.
#
# Each figure is the median of RUNS runs (default 3) with min-max beside it;
# scenario 7's are the median of its own runs (FAILOVER_RUNS, HANDOVER_RUNS).
# Ports BASE_PORT.. (default 9500) and FAILOVER_PORT..+2 (default 9601) must
# be free. Needs `make` and `cargo build --release --examples` first (the
# Makefile target does both).
#
#   SCENARIOS="1 2 3 4 5 6 7 8 9" which scenarios to run (default: all)
#   RUNS=3                    runs per figure
#   CATCHUP_RECORDS=1000,1000000,10000000   scenario 5's log sizes (10M: about
#                             3 minutes and 3 GB of disk while it runs)
#   FAILOVER_RUNS=20          scenario 7: leaders SIGKILLed
#   HANDOVER_RUNS=10          scenario 7: SIGTERMs and transfers of leadership
#   SNAP_WRITES=10000000 SNAP_KEYS=1000000   scenario 9's run (10M: about 8 minutes
#                             on 2 cores, 1.5 GB of disk while it runs; SNAP_WRITES
#                             must be at least 10 x SNAP_KEYS)
set -euo pipefail

RUNS=${RUNS:-3}
BASE=${BASE_PORT:-9500}
SCENARIOS=${SCENARIOS:-"1 2 3 4 5 6 7 8 9"}
BIN=${BIN:-./build}
EX=${EX:-./target/release/examples}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-bench.XXXXXX")
PIDS=()

cleanup() {
    stop_all
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

fail() { echo "bench: $*" >&2; exit 1; }

stop_all() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}

# start NAME PORT ARGS... : start a node with its own data dir; wait until it answers.
start() {
    local name=$1 port=$2; shift 2
    "$BIN/kvstore" --port "$port" --data-dir "$WORK/$name" "$@" >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 400); do
        "$BIN/kv_client" --port "$port" status >/dev/null 2>&1 && return 0
        sleep 0.025
    done
    fail "node $name on port $port did not start: $(tail -3 "$WORK/$name.log")"
}

# wait_log FILE PATTERN [FROM_LINE]: poll until a line matching PATTERN appears after FROM_LINE.
wait_log() {
    local file=$1 pattern=$2 from=${3:-0}
    for _ in $(seq 1 12000); do
        tail -n +"$((from + 1))" "$file" 2>/dev/null | grep -q -- "$pattern" && return 0
        sleep 0.01
    done
    fail "timed out waiting for '$pattern' in $file"
}

now_ns() { date +%s%N; }

# kvbench ARGS...: run kv_bench and print its ops/s.
kvbench() {
    "$EX/kv_bench" --quiet "$@" | awk '{for (i = 2; i <= NF; i++) if ($i == "ops/s") print $(i - 1)}'
}

# kvbench_p99 ARGS...: run kv_bench and print "OPS P99_US" (p99 in microseconds).
kvbench_p99() {
    "$EX/kv_bench" --quiet "$@" | awk '{
        for (i = 2; i <= NF; i++) if ($i == "ops/s") ops = $(i - 1)
        for (i = 1; i < NF; i++) if ($i == "p99") p = $(i + 1)
        us = p + 0
        if (p ~ /ms$/) us = p * 1000; else if (p ~ /[0-9]s$/ && p !~ /us$/) us = p * 1000000
        print ops, us }'
}

# stats VALUES...: "median (min-max)".
stats() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.0f (%.0f-%.0f)", m, v[1], v[NR] }'
}
stats_f() {
    printf '%s\n' "$@" | sort -g | awk '{v[NR] = $1} END {
        m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
        printf "%.2f (%.2f-%.2f)", m, v[1], v[NR] }'
}

# ft_stats OUTPUT WHAT: "median (min-max)" from a summary line of
# failover_time, WHAT being "failover time" or "longest gap".
ft_stats() {
    grep "^$2 (" <<<"$1" | sed -E 's/.*median ([0-9]+) ms, min ([0-9]+) ms, max ([0-9]+) ms.*/\1 (\2-\3)/'
}

row() { printf '| %-58s | %s |\n' "$1" "$2"; }

# thousands N: N with a comma between groups of three digits.
thousands() { sed -E ':a; s/([0-9])([0-9]{3})($|,)/\1,\2\3/; ta' <<<"$1"; }

json_field() { grep -o "\"$2\":[0-9]*" <<<"$1" | head -1 | cut -d: -f2; }

# stage_p50 STATUS-JSON STAGE: the p50 (us) of one write stage (src/stages.rs).
stage_p50() {
    grep -o "\"stage\":\"$2\",\"count\":[0-9]*,\"p50_us\":[0-9]*" <<<"$1" | grep -o '[0-9]*$' || true
}
STAGES=(queue write fsync send ack wakeup total)

LOAD=(-c 16 -n 200000 -d 100 -r 100000)

echo "kvstore benchmarks: $(nproc) cores, $(date -u +%Y-%m-%dT%H:%MZ), $RUNS runs per figure"
echo
row "scenario" "median (min-max)"
row "--------" "----------------"

# 1. Single node: PUT and GET, fsync never and always.
if [[ " $SCENARIOS " == *" 1 "* ]]; then
    for fsync in never always; do
        put=() get=()
        for run in $(seq 1 "$RUNS"); do
            start "single-$fsync-$run" "$BASE" --fsync="$fsync"
            put+=("$(kvbench --port "$BASE" "${LOAD[@]}" -t put)")
            get+=("$(kvbench --port "$BASE" "${LOAD[@]}" -t get)")
            stop_all
        done
        row "1. single node PUT, fsync $fsync (ops/s)" "$(stats "${put[@]}")"
        row "1. single node GET, fsync $fsync (ops/s)" "$(stats "${get[@]}")"
    done
fi

# 2. Leader + 2 followers: local/fsync never, and majority/fsync always.
if [[ " $SCENARIOS " == *" 2 "* ]]; then
    L=$BASE F1=$((BASE + 1)) F2=$((BASE + 2))
    for mode in "local never" "majority always"; do
        set -- $mode
        concern=$1 fsync=$2
        put=() p50=() p99=()
        declare -A stage=()
        for run in $(seq 1 "$RUNS"); do
            start "l-$concern-$run" "$L" --role=leader --peers="$F1,$F2" \
                --write-concern="$concern" --fsync="$fsync"
            start "f1-$concern-$run" "$F1" --role=follower --leader="$L" --fsync="$fsync"
            start "f2-$concern-$run" "$F2" --role=follower --leader="$L" --fsync="$fsync"
            put+=("$(kvbench --port "$L" "${LOAD[@]}" -t put)")
            status=$("$BIN/kv_client" --port "$L" status --json)
            p50+=("$(json_field "$status" p50_us)")
            p99+=("$(json_field "$status" p99_us)")
            for s in "${STAGES[@]}"; do
                stage[$s]="${stage[$s]:-} $(stage_p50 "$status" "$s")"
            done
            fstatus=$("$BIN/kv_client" --port "$F1" status --json)
            stage[follower-fsync]="${stage[follower-fsync]:-} $(stage_p50 "$fstatus" fsync)"
            stop_all
        done
        row "2. leader + 2 followers PUT, $concern, fsync $fsync (ops/s)" "$(stats "${put[@]}")"
        row "2.   replication lag p50, $concern (us)" "$(stats "${p50[@]}")"
        row "2.   replication lag p99, $concern (us)" "$(stats "${p99[@]}")"
        if [[ $fsync == always ]]; then
            # Where a durable write's time goes (docs/BENCHMARKS.md, "Durable writes").
            for s in "${STAGES[@]}" follower-fsync; do
                # shellcheck disable=SC2086
                row "2.   stage $s p50, $concern (us)" "$(stats ${stage[$s]})"
            done
        fi
        unset stage
    done
fi

# 3. Late joiner: a leader holding 1,000,000 records; a new follower catches up.
if [[ " $SCENARIOS " == *" 3 "* ]]; then
    RECORDS=${LATE_RECORDS:-1000000}
    L=$BASE F=$((BASE + 1))
    start leader3 "$L" --role=leader --peers="$F" --fsync=never
    "$EX/kv_bench" --quiet --port "$L" --preload -r "$RECORDS" -n 0 -d 100 >/dev/null
    wal_bytes=$(cat "$WORK"/leader3/wal/*.seg | wc -c)
    secs=() rate=() mbs=()
    for run in $(seq 1 "$RUNS"); do
        t0=$(now_ns)
        start "late-$run" "$F" --role=follower --leader="$L"
        wait_log "$WORK/late-$run.log" "caught up to LSN $RECORDS"
        t=$(( $(now_ns) - t0 ))
        secs+=("$(awk -v t="$t" 'BEGIN {print t / 1e9}')")
        rate+=("$(awk -v t="$t" -v n="$RECORDS" 'BEGIN {print n / (t / 1e9)}')")
        mbs+=("$(awk -v t="$t" -v b="$wal_bytes" 'BEGIN {print b / 1048576 / (t / 1e9)}')")
        kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
    done
    row "3. late joiner, $RECORDS records: seconds to caught up" "$(stats_f "${secs[@]}")"
    row "3.   records/s" "$(stats "${rate[@]}")"
    row "3.   MB/s of WAL" "$(stats_f "${mbs[@]}")"
    stop_all
fi

# 4. Restart catch-up: a follower stopped while 100,000 records are written.
if [[ " $SCENARIOS " == *" 4 "* ]]; then
    L=$BASE F=$((BASE + 1))
    secs=()
    for run in $(seq 1 "$RUNS"); do
        start "leader4-$run" "$L" --role=leader --peers="$F" --fsync=never
        start "f4-$run" "$F" --role=follower --leader="$L"
        "$EX/kv_bench" --quiet --port "$L" -c 16 -n 100000 -d 100 -r 100000 -t put >/dev/null
        wait_log "$WORK/f4-$run.log" "caught up"
        kill -9 "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'
        "$EX/kv_bench" --quiet --port "$L" -c 16 -n 100000 -d 100 -r 100000 -t put >/dev/null
        from=$(wc -l <"$WORK/f4-$run.log")
        t0=$(now_ns)
        start "f4-$run" "$F" --role=follower --leader="$L"
        wait_log "$WORK/f4-$run.log" "caught up to LSN 200000" "$from"
        secs+=("$(awk -v t="$(( $(now_ns) - t0 ))" 'BEGIN {print t / 1e9}')")
        stop_all
    done
    row "4. restart catch-up of 100,000 records (s, incl. WAL replay)" "$(stats_f "${secs[@]}")"
fi

# 5. Catch-up throughput: a new follower catches up on a leader's log of
#    1,000, 1,000,000 and 10,000,000 records (examples/catch_up_bench.rs);
#    records/s should not depend on the log's size.
if [[ " $SCENARIOS " == *" 5 "* ]]; then
    sizes=${CATCHUP_RECORDS:-1000,1000000,10000000}
    out=$("$EX/catch_up_bench" --bin "$BIN/kvstore" --port "$BASE" --dir "$WORK" \
        --records "$sizes" --runs "$RUNS" --json 2>&1) \
        || fail "catch_up_bench: $(tail -3 <<<"$out")"
    while read -r line; do
        records=$(json_field "$line" records || true)
        [[ -n $records ]] || continue
        rates=$(grep -o '"records_per_s_runs":\[[0-9,]*' <<<"$line" | cut -d[ -f2 | tr , ' ')
        # shellcheck disable=SC2086
        row "5. catch-up from a log of $(thousands "$records") records (records/s)" \
            "$(stats $rates)"
        # CPU per record hardly moves with the machine's other load; the
        # example leaves it out (null) for catch-ups too short to count.
        cpu_f=$(grep -o '"follower_cpu_us_per_record":[0-9.]*' <<<"$line" | cut -d: -f2 || true)
        cpu_l=$(grep -o '"leader_cpu_us_per_record":[0-9.]*' <<<"$line" | cut -d: -f2 || true)
        [[ -n $cpu_f ]] && row "5.   CPU per record, follower / leader (us, median)" "$cpu_f / $cpu_l"
        row "5.   longest pause of the follower's progress (ms, max)" \
            "$(json_field "$line" longest_pause_ms)"
    done <<<"$out"
    ratio=$(grep -o '"max_min_ratio":[0-9.]*' <<<"$out" | cut -d: -f2)
    row "5.   fastest / slowest size, by median (target <= 1.3x)" "${ratio}x"
fi

# 6. Scaling: PUT throughput with 0, 1, 2 and 4 followers (local, fsync never).
if [[ " $SCENARIOS " == *" 6 "* ]]; then
    for n in 0 1 2 4; do
        put=()
        for run in $(seq 1 "$RUNS"); do
            peers=$(seq -s, $((BASE + 1)) $((BASE + n)))
            start "l6-$n-$run" "$BASE" --role=leader --peers="$peers" --fsync=never
            for i in $(seq 1 "$n"); do
                start "f6-$n-$run-$i" $((BASE + i)) --role=follower --leader="$BASE" --fsync=never
            done
            put+=("$(kvbench --port "$BASE" "${LOAD[@]}" -t put)")
            stop_all
        done
        row "6. PUT with $n follower(s), local, fsync never (ops/s)" "$(stats "${put[@]}")"
    done
fi

# 7. Failover time: a leader SIGKILLed, SIGTERMed, or asked to hand over,
#    while one client keeps writing (examples/failover_time.rs).
if [[ " $SCENARIOS " == *" 7 "* ]]; then
    FP=${FAILOVER_PORT:-9601}
    for fault in sigkill sigterm transfer; do
        runs=${HANDOVER_RUNS:-10} name=$fault
        [[ $fault == sigkill ]] && runs=${FAILOVER_RUNS:-20}
        [[ $fault == sig* ]] && name=$(tr a-z A-Z <<<"$fault")
        [[ $fault == transfer ]] && name=transfer-leadership
        out=$("$EX/failover_time" --bin "$BIN/kvstore" --port "$FP" --fault "$fault" \
            --runs "$runs" --dir "$WORK/failover-$fault" 2>&1) \
            || fail "failover_time --fault $fault: $(tail -3 <<<"$out")"
        row "7. $name ($runs runs): to new leader's 1st ack (ms)" \
            "$(ft_stats "$out" "failover time")"
        row "7.   $name: longest gap between acked writes (ms)" \
            "$(ft_stats "$out" "longest gap")"
    done
fi

# 8. The cost of security: one node, fsync never, PUT and GET throughput and
#    p99 in plain TCP, with --auth-file (a handshake per connection, then
#    nothing), and over mutual TLS (examples/make_certs.rs).
if [[ " $SCENARIOS " == *" 8 "* ]]; then
    CERTS="$WORK/certs"
    "$EX/make_certs" "$CERTS" node client >/dev/null || fail "make_certs failed"
    head -c 32 /dev/urandom | base64 >"$WORK/secret" && chmod 600 "$WORK/secret"
    for mode in plain auth tls; do
        case $mode in
            plain) server=() client=() ;;
            auth) server=(--auth-file "$WORK/secret") client=(--auth-file "$WORK/secret") ;;
            tls) server=(--tls-ca "$CERTS/ca.pem" --tls-cert "$CERTS/node.pem" --tls-key "$CERTS/node.key")
                 client=(--tls-ca "$CERTS/ca.pem" --tls-cert "$CERTS/client.pem" --tls-key "$CERTS/client.key") ;;
        esac
        put=() get=() put99=() get99=()
        for run in $(seq 1 "$RUNS"); do
            name="sec-$mode-$run"
            "$BIN/kvstore" --port "$BASE" --data-dir "$WORK/$name" --fsync=never "${server[@]}" \
                >>"$WORK/$name.log" 2>&1 &
            PIDS+=($!)
            wait_log "$WORK/$name.log" "listening on"
            read -r ops p99 <<<"$(kvbench_p99 --port "$BASE" "${client[@]}" "${LOAD[@]}" -t put)"
            put+=("$ops") put99+=("$p99")
            read -r ops p99 <<<"$(kvbench_p99 --port "$BASE" "${client[@]}" "${LOAD[@]}" -t get)"
            get+=("$ops") get99+=("$p99")
            stop_all
        done
        row "8. PUT, $mode (ops/s)" "$(stats "${put[@]}")"
        row "8.   PUT p99, $mode (us)" "$(stats "${put99[@]}")"
        row "8. GET, $mode (ops/s)" "$(stats "${get[@]}")"
        row "8.   GET p99, $mode (us)" "$(stats "${get99[@]}")"
    done
fi

# 9. Snapshots (docs/STORAGE.md): SNAP_WRITES PUTs (c=16, 100-byte values)
#    to SNAP_KEYS keys, twice: once without automatic snapshots, once with
#    the defaults. Prints the data dir's size along both runs; the restart
#    time (start to answering STATUS) and records replayed, without a
#    snapshot, with the snapshots the run left, and right after
#    `kv_client snapshot`; then PUT throughput and p99 on the 1M-key node
#    without a snapshot running and while snapshots are written back to back.
if [[ " $SCENARIOS " == *" 9 "* ]]; then
    WRITES=${SNAP_WRITES:-10000000} KEYS=${SNAP_KEYS:-1000000}
    P=$((BASE + 20))
    # stop_node: stop the node started last (SIGTERM, as an operator would).
    stop_node() { kill "${PIDS[-1]}"; wait "${PIDS[-1]}" 2>/dev/null || true; unset 'PIDS[-1]'; }
    # load NAME FLAGS...: WRITES PUTs in ten steps; SIZES gets the dir's size after each.
    load() {
        local name=$1; shift
        start "$name" "$P" --fsync=never "$@"
        SIZES=()
        for step in $(seq 1 10); do
            # The first tenth PUTs every key once (kv_bench draws the same
            # keys in every run, so without it some keys would never exist).
            preload=()
            if [ "$step" -eq 1 ]; then preload=(--preload); fi
            local n=$((WRITES / 10 - ${#preload[@]} * KEYS))
            "$EX/kv_bench" --quiet --port "$P" -c 16 -n "$n" -d 100 -r "$KEYS" -t put "${preload[@]}" >/dev/null
            SIZES+=("$(du -s -B1 "$WORK/$name" | cut -f1)")
        done
    }
    # restarts NAME FLAGS...: RUNS restarts; RESTART gets the times (s), REPLAYED the last count.
    restarts() {
        local name=$1; shift
        stop_node
        RESTART=()
        for run in $(seq 1 "$RUNS"); do
            local from t0
            from=$(wc -l <"$WORK/$name.log")
            t0=$(now_ns)
            start "$name" "$P" --fsync=never "$@"
            RESTART+=("$(awk -v t="$(( $(now_ns) - t0 ))" 'BEGIN {print t / 1e9}')")
            REPLAYED=$(tail -n +"$((from + 1))" "$WORK/$name.log" | grep -o 'replayed [0-9]*' | grep -o '[0-9]*')
            if [ "$run" -lt "$RUNS" ]; then stop_node; fi
        done
    }
    never=(--snapshot-after-bytes=1000000000000000)
    load snap-none "${never[@]}"
    sizes_none=("${SIZES[@]}")
    restarts snap-none "${never[@]}"
    row "9a. restart, $KEYS keys after $WRITES writes, no snapshot (s)" "$(stats_f "${RESTART[@]}") - replayed $(thousands "$REPLAYED")"
    "$BIN/kv_client" --port "$P" snapshot >/dev/null
    restarts snap-none "${never[@]}"
    row "9a. restart, the same right after kv_client snapshot (s)" "$(stats_f "${RESTART[@]}") - replayed $(thousands "$REPLAYED")"
    stop_node
    load snap-auto
    sizes_auto=("${SIZES[@]}")
    restarts snap-auto
    row "9a. restart, default flags, snapshots as the run left them (s)" "$(stats_f "${RESTART[@]}") - replayed $(thousands "$REPLAYED")"
    # (c) on the node of the default run.
    quiet=() quiet99=() busy=() busy99=()
    for run in $(seq 1 "$RUNS"); do
        read -r ops p99 <<<"$(kvbench_p99 --port "$P" -c 16 -n 300000 -d 100 -r "$KEYS" -t put)"
        quiet+=("$ops") quiet99+=("$p99")
        rm -f "$WORK/stop-snapshots"
        ( until [ -e "$WORK/stop-snapshots" ]; do "$BIN/kv_client" --port "$P" snapshot >/dev/null; done ) &
        looper=$!
        read -r ops p99 <<<"$(kvbench_p99 --port "$P" -c 16 -n 300000 -d 100 -r "$KEYS" -t put)"
        touch "$WORK/stop-snapshots"
        wait "$looper"
        busy+=("$ops") busy99+=("$p99")
    done
    row "9c. PUT c=16, $KEYS keys, no snapshot running (ops/s)" "$(stats "${quiet[@]}")"
    row "9c. PUT c=16, while snapshots are written back to back (ops/s)" "$(stats "${busy[@]}")"
    row "9c.   PUT p99, no snapshot running (us)" "$(stats "${quiet99[@]}")"
    row "9c.   PUT p99, while snapshots are written back to back (us)" "$(stats "${busy99[@]}")"
    row "9c. snapshots written during those runs" "$(grep -c '\[snapshot\] wrote' "$WORK/snap-auto.log") - last: $(grep '\[snapshot\] wrote' "$WORK/snap-auto.log" | tail -1 | sed 's/.*\[snapshot\] //')"
    echo
    echo "9d. data dir size on disk (bytes, du) after each tenth of the $WRITES writes:"
    echo
    echo "| writes | no automatic snapshot | default flags |"
    echo "|---|---|---|"
    for step in $(seq 1 10); do
        echo "| $(thousands $((WRITES / 10 * step))) | $(thousands "${sizes_none[$((step - 1))]}") | $(thousands "${sizes_auto[$((step - 1))]}") |"
    done
fi
