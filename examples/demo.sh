#!/usr/bin/env bash
# make demo: lesson 5's late-joiner scenario, end to end, on its own.
#
#   1. start a leader and one follower
#   2. write 10 keys to the leader
#   3. start a second follower late; it catches up from LSN 0
#   4. read key1 and key10 from the late follower, print the leader's status
#   5. draw the leader's replication timeline: when each follower connected,
#      caught up, and how its acknowledged LSN moved
#
# Every process it starts is stopped on exit, on Ctrl-C and on failure.
# Ports: PORT (leader), PORT+1 and PORT+2 (followers); default PORT=9001.
set -euo pipefail

PORT=${PORT:-9001}
P1=$PORT P2=$((PORT + 1)) P3=$((PORT + 2))
BIN=${BIN:-./build}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-demo.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
fail() { echo "demo: $*" >&2; exit 1; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Poll a command until it succeeds, for at most 10 seconds.
wait_for() {
    local what=$1; shift
    for _ in $(seq 1 200); do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    fail "timed out waiting for $what"
}

start() { # name port args...
    local name=$1 port=$2; shift 2
    echo "\$ $BIN/kvstore --port $port --data-dir ./$name $*"
    (cd "$WORK" && exec "$OLDPWD/$BIN/kvstore" --port "$port" --data-dir "./$name" "$@") \
        >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    wait_for "$name to listen on port $port" "$BIN/kv_client" --port "$port" status
}

[ -x "$BIN/kvstore" ] && [ -x "$BIN/kv_client" ] || fail "no binaries in $BIN: run 'make' first"
for p in $P1 $P2 $P3; do
    port_in_use "$p" && fail "port $p is already in use; pick others with: make demo PORT=<base port>"
done

say "1. Start the leader (port $P1) and follower 1 (port $P2)"
start node1 "$P1" --role=leader --peers="$P2,$P3"
start node2 "$P2" --role=follower --leader="$P1"

say "2. Write 10 keys to the leader; follower 2 is not running yet"
for i in $(seq 1 10); do
    printf '$ kv_client --port %s put key%s value%s  -> ' "$P1" "$i" "$i"
    "$BIN/kv_client" --port "$P1" put "key$i" "value$i"
done

say "3. Start follower 2 (port $P3), the late joiner"
start node3 "$P3" --role=follower --leader="$P1"
wait_for "follower 2 to catch up" grep -q "caught up" "$WORK/node3.log"
echo
echo "follower 2's log:"
sed 's/^/    /' "$WORK/node3.log"
echo "leader's catch-up lines:"
grep '\[catch-up\]' "$WORK/node1.log" | sed 's/^/    /'

say "4. Read from follower 2"
for k in key1 key10; do
    printf '$ kv_client --port %s get %s  -> ' "$P3" "$k"
    "$BIN/kv_client" --port "$P3" get "$k"
done

say "5. The leader's view (kv_client --port $P1 status)"
wait_for "both followers to acknowledge LSN 10" \
    bash -c "[ \"\$('$BIN/kv_client' --port $P1 status --json | grep -o '\"acked_lsn\":10' | wc -l)\" = 2 ]"
"$BIN/kv_client" --port "$P1" status

say "6. The replication timeline (kv_client --port $P1 status --timeline)"
"$BIN/kv_client" --port "$P1" status --timeline

say "Done: follower 2 received the 10 records it missed. Stopping all nodes."
