#!/usr/bin/env bash
# make demo-failover: a manual failover, end to end, on its own (docs/FAILOVER.md).
#
#   1. start a leader and two followers (write concern majority); write 5 keys
#   2. cut the leader off: pause both followers (SIGSTOP) until the leader
#      drops their links, then write 2 keys to the leader alone: they time
#      out, never confirmed, and sit in the leader's log only
#   3. the leader dies (SIGKILL); the followers resume (SIGCONT)
#   4. compare the followers and promote the one with the highest last LSN
#   5. point the other follower at the new leader; write 5 more keys
#   6. restart the old leader as a follower of the new one: its log diverges
#      after LSN 5, and it truncates its 2 unconfirmed records
#   7. all three nodes: same term, same last LSN, same digest
#
# Every process it starts is stopped on exit, on Ctrl-C and on failure.
# Ports: PORT (first leader), PORT+1 and PORT+2 (followers); default PORT=9001.
set -euo pipefail

PORT=${PORT:-9001}
P1=$PORT P2=$((PORT + 1)) P3=$((PORT + 2))
BIN=${BIN:-./build}
WORK=$(mktemp -d "${TMPDIR:-/tmp}/kvstore-failover.XXXXXX")
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
        kill -CONT "$pid" 2>/dev/null || true # a paused process cannot act on SIGTERM
    done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo; echo "demo: interrupted"; exit 130' INT TERM

if [ -t 1 ]; then BOLD=$'\033[1m' PLAIN=$'\033[0m'; else BOLD='' PLAIN=''; fi
say() { printf '\n%s== %s%s\n' "$BOLD" "$*" "$PLAIN"; }
fail() { echo "demo: $*" >&2; exit 1; }
indent() { sed 's/^/    /'; }

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Poll a command until it succeeds, for at most `seconds`.
wait_for() {
    local what=$1 seconds=$2; shift 2
    local deadline=$((SECONDS + seconds))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if "$@" >/dev/null 2>&1; then return 0; fi
        sleep 0.05
    done
    fail "timed out after ${seconds}s waiting for $what"
}

# kvstore's log lines without the timestamp and level: "[catch-up] ...".
log_lines() { # file pattern
    grep -E "$2" "$1" | sed -E 's/^[^ ]+ +[A-Z]+ +//' | indent
}

start() { # name port args...
    local name=$1 port=$2; shift 2
    echo "\$ $BIN/kvstore --port $port --data-dir ./$name $*"
    (cd "$WORK" && exec "$OLDPWD/$BIN/kvstore" --port "$port" --data-dir "./$name" "$@") \
        >>"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
    wait_for "$name to listen on port $port" 10 "$BIN/kv_client" --port "$port" status
}

kv() { # the command as the reader would type it, then its output
    echo "\$ kv_client $*"
    if ! "$BIN/kv_client" "$@" >"$WORK/kv.out" 2>&1; then
        indent <"$WORK/kv.out"
        fail "kv_client $* failed"
    fi
    indent <"$WORK/kv.out"
}

# Every acknowledged key has its value on every node; no unconfirmed key anywhere.
acknowledged_everywhere() { # ports...
    local p i
    for p in "$@"; do
        for i in $(seq 1 10); do
            [ "$("$BIN/kv_client" --port "$p" get "key$i")" = "value$i" ] || return 1
        done
        for i in 1 2; do
            "$BIN/kv_client" --port "$p" get "unconfirmed$i" >/dev/null 2>&1 && return 1
        done
    done
    return 0
}

# One field of `status --json` (top-level fields come before the follower rows).
field() { # port name
    "$BIN/kv_client" --port "$1" status --json |
        grep -o "\"$2\":[^,}]*" | head -n 1 | cut -d: -f2- | tr -d '"'
}

followers_in_state() { # port state count
    [ "$("$BIN/kv_client" --port "$1" status --json | grep -o "\"state\":\"$2\"" | wc -l)" -eq "$3" ]
}

same_position() { # ports...: same term, last LSN and digest everywhere
    local first='' p now
    for p in "$@"; do
        now="$(field "$p" term) $(field "$p" last_lsn) $(field "$p" digest)"
        [ -z "$first" ] && first=$now
        [ "$now" = "$first" ] || return 1
    done
}

[ -x "$BIN/kvstore" ] && [ -x "$BIN/kv_client" ] || fail "no binaries in $BIN: run 'make' first"
for p in $P1 $P2 $P3; do
    port_in_use "$p" && fail "port $p is already in use; pick others with: make demo-failover PORT=<base port>"
done

say "1. Start a leader (port $P1) and two followers ($P2, $P3), all with --write-concern majority"
echo "(the flag is read by whichever node leads: a follower that may be promoted needs it too)"
echo "(--failover manual: here a human fails over; by default a cluster of 3 elects a new leader by itself)"
start node1 "$P1" --role=leader --failover manual --peers="$P2,$P3" --write-concern majority --write-timeout-ms 1000
LEADER_PID=$LAST_PID
start node2 "$P2" --role=follower --failover manual --leader="$P1" --write-concern majority
F2_PID=$LAST_PID
start node3 "$P3" --role=follower --failover manual --leader="$P1" --write-concern majority
F3_PID=$LAST_PID
wait_for "both followers to stream from the leader" 10 followers_in_state "$P1" streaming 2
echo
for i in $(seq 1 5); do
    printf '$ kv_client --port %s put key%s value%s  -> ' "$P1" "$i" "$i"
    "$BIN/kv_client" --port "$P1" put "key$i" "value$i"
done
echo "Each OK came after a follower had the record in its WAL: at least 2 of 3 nodes hold LSN 1..5."

say "2. Cut the leader off: pause both followers, then write to the leader alone"
echo "\$ kill -STOP <node2> <node3>"
kill -STOP "$F2_PID" "$F3_PID"
echo "Waiting for the leader to notice (no ACK for 5 s closes a link). Until then, records it"
echo "sends would wait in the paused followers' socket buffers and arrive when they resume."
wait_for "the leader to drop both links" 15 followers_in_state "$P1" disconnected 2
log_lines "$WORK/node1.log" 'silent peer'
echo
for i in 1 2; do
    echo "\$ kv_client --port $P1 put unconfirmed$i lost$i"
    if out=$("$BIN/kv_client" --port "$P1" put "unconfirmed$i" "lost$i" 2>&1); then
        fail "a majority write succeeded with both followers paused: $out"
    fi
    echo "$out" | indent
done
echo "Both are in the leader's WAL (LSN 6 and 7, term 1) and nowhere else; no client"
echo "was told OK. The leader's own view:"
kv --port "$P1" status

say "3. The leader dies; the followers resume"
echo "\$ kill -KILL <node1>; kill -CONT <node2> <node3>"
kill -KILL "$LEADER_PID"
wait "$LEADER_PID" 2>/dev/null || true
kill -CONT "$F2_PID" "$F3_PID"
for p in $P2 $P3; do
    wait_for "the follower on $p to notice the leader is gone" 10 followers_in_state "$p" connecting 1
done
echo "Both followers found the connection closed and keep redialling port $P1 in vain."
echo
kv --port "$P2" status
echo
kv --port "$P3" status

say "4. Promote the follower with the highest last LSN"
best=$P2 other=$P3
if [ "$(field "$P3" last_term)" -gt "$(field "$P2" last_term)" ] ||
    { [ "$(field "$P3" last_term)" -eq "$(field "$P2" last_term)" ] &&
        [ "$(field "$P3" last_lsn)" -gt "$(field "$P2" last_lsn)" ]; }; then
    best=$P3 other=$P2
fi
echo "node on $P2: last LSN $(field "$P2" last_lsn) (term $(field "$P2" last_term));" \
    "node on $P3: last LSN $(field "$P3" last_lsn) (term $(field "$P3" last_term)): promote $best"
kv --port "$best" promote
new=node$((best - PORT + 1)) third=node$((other - PORT + 1))
echo "$new's log:"
log_lines "$WORK/$new.log" '\[failover\] leader of term'
echo "$third's log (it voted, so it is in term 2 and no longer follows the dead leader):"
log_lines "$WORK/$third.log" '\[failover\] .*(candidate|voted)'

say "5. Point $third at the new leader; write 5 more keys"
kv --port "$other" follow "127.0.0.1:$best"
echo "(the new leader also announces itself every second to members not following it,"
echo " so $third may already have switched: then follow says so)"
wait_for "$third to stream from the new leader" 10 followers_in_state "$best" streaming 1
echo
for i in $(seq 6 10); do
    printf '$ kv_client --port %s put key%s value%s  -> ' "$best" "$i" "$i"
    "$BIN/kv_client" --port "$best" put "key$i" "value$i"
done
echo
echo "Two histories now hold different records at LSN 6 and 7:"
echo "\$ kv_client wal-dump ./node1    # the old leader (not running)"
"$BIN/kv_client" wal-dump "$WORK/node1" | grep -E '^lsn=(5|6|7) ' | indent
echo "\$ kv_client wal-dump ./$new    # the new leader"
"$BIN/kv_client" wal-dump "$WORK/$new" | grep -E '^lsn=(5|6|7) ' | indent

say "6. Restart the old leader as a follower of the new leader"
start node1 "$P1" --role=follower --failover manual --leader="$best" --write-concern majority
wait_for "the old leader to repair its log" 10 grep -q 'truncating' "$WORK/node1.log"
# The new leader's log: LSN 1..5, its NOOP at 6 (term 2 starts), key6..key10 at 7..11.
last=$(field "$best" last_lsn)
wait_for "the old leader to catch up" 10 grep -q "caught up to LSN $last" "$WORK/node1.log"
echo
echo "node1's log since the restart:"
sed -n '/started with --role=follower/,$p' "$WORK/node1.log" |
    log_lines /dev/stdin '\[(catch-up|failover)\]'
echo "$new's side:"
log_lines "$WORK/$new.log" "\\[catch-up\\] .*follower 127.0.0.1:$P1"
echo
printf '$ kv_client --port %s get unconfirmed1  -> ' "$P1"
"$BIN/kv_client" --port "$P1" get unconfirmed1 2>&1 || true

say "7. All three nodes"
wait_for "all three nodes to agree" 10 same_position "$P1" "$P2" "$P3"
kv --port "$best" status
echo
printf '    %-6s %-9s %-5s %-9s %s\n' PORT ROLE TERM LAST_LSN DIGEST
for p in $P1 $P2 $P3; do
    printf '    %-6s %-9s %-5s %-9s %s\n' "$p" "$(field "$p" role)" "$(field "$p" term)" \
        "$(field "$p" last_lsn)" "$(field "$p" digest)"
done
echo
same_position "$P1" "$P2" "$P3" || fail "the three nodes disagree"
echo "check: all three nodes in term $(field "$best" term), at last LSN $(field "$best" last_lsn)," \
    "digest $(field "$best" digest): identical"
acknowledged_everywhere "$P1" "$P2" "$P3" || fail "a node lacks an acknowledged key or holds an unconfirmed one"
echo "check: key1..key10 read back on all three nodes; unconfirmed1 and unconfirmed2 on none"

say "Done: no acknowledged write was lost; the 2 unconfirmed ones were. Stopping all nodes."
