# kvstore — build, test, lint, demo.
#
#   make            build release binaries into ./build (the lessons' paths)
#   make test       every test: unit, property and integration
#   make lint       rustfmt check + clippy with warnings as errors
#   make demo       lesson 5's late-joiner scenario, end to end, ending with the replication
#                   timeline (PORT=9001 to move it)
#   make demo-failover   a manual failover: promote, follow, the old leader's repair (PORT too)
#   make demo-faults     3 nodes through a seeded schedule of kills, pauses, cut, reset and slow
#                   links, narrated; ends by checking every acknowledged write on every node
#                   (SEED=7 replays a schedule, default a new one; PORT too: nodes PORT..PORT+2,
#                   proxies PORT+3..PORT+5; STEPS=8 by default)
#   make soak       the fault and snapshot tests at full counts (100 leader crashes, 1M writes,
#                   1M overwrites of 1,000 keys, 60 crashes in snapshots, ...)
#   make model      the cluster model of tests/model.rs, 100000 random histories (KVSTORE_SEED to replay)
#   make jepsen     tests/jepsen.rs for 300 s: puts and linearizable reads under a seeded nemesis,
#                   checked for linearizability (JEPSEN_SECS=600 for longer, KVSTORE_SEED to replay)
#   make jepsen-netns   the same for 120 s with each node in a network namespace of its own, faults
#                   made by the kernel (root only; installs nftables; skipped with a reason elsewhere)
#   make fuzz       coverage-guided fuzzing of the decoders (nightly + cargo-fuzz; FUZZ_SECONDS=60)
#   make certs      a throw-away CA and certificates for a local cluster in ./certs (TLS; docs/SECURITY.md)
#   make bench      the benchmark scenarios of docs/BENCHMARKS.md
#   make bench-compare   kvstore beside Redis (throughput, late joiner; single node in both
#                   client modes, with and without pipelining; 1 to 1,000 connections with
#                   the server's memory) and etcd (durable writes,
#                   failover time), same machine, same run (installs redis-server, etcd-server, etcd-client
#                   and the Go client's sources if missing)

CARGO ?= cargo
PORT ?= 9001

.PHONY: certs all build test lint demo demo-failover demo-faults soak model jepsen jepsen-netns fuzz bench bench-compare \
	examples clean

all: build

# Each binary is copied next to its old self and renamed over it: a node
# still running from ./build keeps its old binary (the file it has open)
# until restarted, and a rebuild never fails with "Text file busy".
build:
	$(CARGO) build --release --bins
	mkdir -p build
	for bin in kvstore kv_client; do \
		cp target/release/$$bin build/.$$bin.new && mv -f build/.$$bin.new build/$$bin || exit 1; \
	done

test:
	$(CARGO) test --all-targets
	$(CARGO) test --doc

lint:
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings

demo: build
	PORT=$(PORT) bash examples/demo.sh

demo-failover: build
	PORT=$(PORT) bash examples/demo_failover.sh

# SEED empty: the demo draws one and prints it.
demo-faults: build
	$(CARGO) build --release --example demo_faults
	./target/release/examples/demo_faults --port $(PORT) $(if $(SEED),--seed $(SEED)) $(if $(STEPS),--steps $(STEPS))

examples: build
	$(CARGO) build --release --examples

certs:
	$(CARGO) run --release --example make_certs -- certs

bench: examples
	bash examples/bench.sh

bench-compare: examples
	bash examples/bench_compare.sh

FUZZ_SECONDS ?= 60

fuzz:
	command -v cargo-fuzz >/dev/null || $(CARGO) install cargo-fuzz --locked
	for target in frame message handshake wal_recovery; do \
		$(CARGO) +nightly fuzz run --fuzz-dir tests/fuzz $$target -- \
			-max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=1024 || exit 1; \
	done

model:
	KVSTORE_MODEL_RUNS=100000 $(CARGO) test --release --test model -- --nocapture

# JEPSEN_SECS: 300 for jepsen, 120 for jepsen-netns, unless given.
jepsen:
	KVSTORE_JEPSEN_SECS=$(or $(JEPSEN_SECS),300) $(CARGO) test --release --test jepsen -- --nocapture

# nftables makes the partitions, resets and loss inside the namespaces; as
# root with apt-get, install it if missing (without it the test says so and
# is skipped).
jepsen-netns:
	@if ! command -v nft >/dev/null && [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
		echo "jepsen-netns: installing nftables"; \
		export DEBIAN_FRONTEND=noninteractive; \
		apt-get install -y -qq nftables >/dev/null 2>&1 \
			|| { apt-get update -qq && apt-get install -y -qq nftables >/dev/null; } \
			|| echo "jepsen-netns: could not install nftables"; \
	fi
	KVSTORE_JEPSEN_NET=netns KVSTORE_JEPSEN_SECS=$(or $(JEPSEN_SECS),120) \
		$(CARGO) test --release --test jepsen -- --nocapture

soak:
	KVSTORE_SOAK=1 $(CARGO) test --release --test faults --test snapshots -- --nocapture --test-threads=1 2>&1 \
		| grep -E '^(test |[a-z ]+: )|KVSTORE_SEED|test result'

clean:
	$(CARGO) clean
	rm -rf build
