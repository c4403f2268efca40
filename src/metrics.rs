//! Prometheus metrics: what `GET /metrics` on `--metrics-port` serves
//! (lesson 4's numbers, for an operator's dashboard).
//!
//! Two kinds of series, kept in one [`prometheus::Registry`]:
//!
//! - **Counted as they happen**, by the code that does the work: requests
//!   by type and result, the write stages' latencies (the same samples as
//!   `status`'s `write_stages`, [`crate::stages`]), the size of each
//!   group-commit batch, catch-ups started, observers refused. Each is an
//!   atomic add; nothing is logged or allocated.
//! - **Read at scrape time** from the node's status report
//!   ([`crate::status::StatusReport`], the one `kv_client status` prints),
//!   so that `/metrics` and `status --json` always agree: role, term, LSNs,
//!   keys, WAL bytes, and on a leader one series per follower for its acked
//!   LSN, lag, last ACK and link state.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `kvstore_role` | gauge, 1 for the node's role | `role` (`leader`, `follower`) |
//! | `kvstore_term` | gauge | |
//! | `kvstore_last_lsn`, `kvstore_commit_lsn`, `kvstore_applied_lsn` | gauge | |
//! | `kvstore_keys` | gauge | |
//! | `kvstore_wal_bytes`, `kvstore_wal_segments`, `kvstore_wal_first_lsn` | gauge: the WAL on disk ([`crate::wal`]) | |
//! | `kvstore_snapshot_lsn`, `kvstore_snapshot_bytes`, `kvstore_snapshot_age_seconds` | gauge: the newest snapshot (absent before the first) | |
//! | `kvstore_snapshot_transfer_bytes` | gauge: a snapshot being sent (leader) or received (follower) | `follower` (the peer, `leader` on a follower), `what` (`sent`, `total`) |
//! | `kvstore_requests_total` | counter | `type` (`PUT`, `GET`, ...), `result` (`ok`, `not_found`, or the ERROR code's name) |
//! | `kvstore_write_stage_seconds` | histogram | `stage` (`queue`, `write`, `fsync`, `send`, `ack`, `wakeup`, `total`) |
//! | `kvstore_commit_batch_records` | histogram | |
//! | `kvstore_catch_ups_total` | counter | `kind` (`follower`, `observer`) |
//! | `kvstore_refusals_total` | counter | `reason` (`max_connections`, `max_observers`, `auth_failed`, `slow_frame`, ... one per kind of [`crate::admission::Refusal`]) |
//! | `kvstore_connections` | gauge: admission budgets in use | `kind` (`active`, `unauthenticated`, `catch_ups`) |
//! | `kvstore_follower_acked_lsn`, `kvstore_follower_lag_records` | gauge | `follower`, `kind` |
//! | `kvstore_follower_last_ack_seconds` | gauge: time since its last ACK | `follower`, `kind` |
//! | `kvstore_follower_link_state` | gauge, 1 for its state | `follower`, `kind`, `state` |
//! | `kvstore_replication_lag_seconds` | gauge: an acknowledged write until every follower had it | `quantile` (`0.5`, `0.99`, `1`) |
//! | `kvstore_links` | gauge: links up now | `kind` (`follower`, `observer`) |
//!
//! The registry is the process's own ([`global`]): counting costs the same
//! whether or not anyone scrapes, and is cheaper than asking first.

use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::{Error, ErrorCode, Result};
use crate::protocol::Message;
use crate::stages::Stage;
use crate::status::StatusReport;

/// Buckets of the write-stage histograms, in seconds: 10 µs to 10 s, about
/// three a decade — a stage takes microseconds (queue) to milliseconds
/// (fsync, a follower's ACK), and seconds only when something is wrong.
const STAGE_BUCKETS_SECONDS: [f64; 19] = [
    0.000_01, 0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// Buckets of the group-commit batch size, in records: 1 (no concurrency)
/// to the 4096 of one AppendEntries.
const BATCH_BUCKETS_RECORDS: [f64; 13] =
    [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];

/// The client requests counted with resolved `ok`/`not_found` series.
/// Their series exist (at 0) from the start; other types are counted too,
/// looked up by label.
const REQUEST_TYPES: [&str; 5] = ["PUT", "GET", "DELETE", "READ", "STATUS"];

/// Every series of the process.
pub struct Metrics {
    registry: Registry,
    requests: IntCounterVec,
    /// The common results' counters, resolved once: for each request type,
    /// `ok` and `not_found` (see [`Metrics::request`]).
    request_counters: Vec<(&'static str, IntCounter, IntCounter)>,
    stage_seconds: HistogramVec,
    /// One histogram per [`Stage`], in the order of [`Stage::ALL`].
    stage_histograms: Vec<Histogram>,
    batch_records: Histogram,
    catch_ups: IntCounterVec,
    refusals: IntCounterVec,
    role: IntGaugeVec,
    term: IntGauge,
    last_lsn: IntGauge,
    commit_lsn: IntGauge,
    applied_lsn: IntGauge,
    keys: IntGauge,
    wal_bytes: IntGauge,
    wal_segments: IntGauge,
    wal_first_lsn: IntGauge,
    snapshot_lsn: IntGauge,
    snapshot_bytes: IntGauge,
    snapshot_age_seconds: Gauge,
    snapshot_transfer_bytes: IntGaugeVec,
    follower_acked_lsn: IntGaugeVec,
    follower_lag_records: IntGaugeVec,
    follower_last_ack_seconds: GaugeVec,
    follower_link_state: IntGaugeVec,
    replication_lag_seconds: GaugeVec,
    links: IntGaugeVec,
    connections: IntGaugeVec,
    scrape_seconds: Gauge,
}

/// The process's metrics, made on first use.
pub fn global() -> &'static Metrics {
    static METRICS: OnceLock<Metrics> = OnceLock::new();
    METRICS.get_or_init(|| Metrics::new().expect("the metric definitions are valid"))
}

impl Metrics {
    fn new() -> prometheus::Result<Metrics> {
        let registry = Registry::new();
        let gauge = |name: &str, help: &str| -> prometheus::Result<IntGauge> {
            let g = IntGauge::new(name, help)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let gauges = |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntGaugeVec> {
            let g = IntGaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok(g)
        };
        let counters =
            |name: &str, help: &str, labels: &[&str]| -> prometheus::Result<IntCounterVec> {
                let c = IntCounterVec::new(Opts::new(name, help), labels)?;
                registry.register(Box::new(c.clone()))?;
                Ok(c)
            };
        let float_gauges = |name: &str, help: &str, labels: &[&str]| {
            let g = GaugeVec::new(Opts::new(name, help), labels)?;
            registry.register(Box::new(g.clone()))?;
            Ok::<_, prometheus::Error>(g)
        };
        let follower = ["follower", "kind"];
        let metrics = Metrics {
            requests: counters(
                "kvstore_requests_total",
                "Client requests answered, by type and result.",
                &["type", "result"],
            )?,
            stage_seconds: {
                let opts = HistogramOpts::new(
                    "kvstore_write_stage_seconds",
                    "Time of each stage of a write (see src/stages.rs); fsync and total are the \
                     fsync and write latencies.",
                )
                .buckets(STAGE_BUCKETS_SECONDS.to_vec());
                let h = HistogramVec::new(opts, &["stage"])?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            batch_records: {
                let opts = HistogramOpts::new(
                    "kvstore_commit_batch_records",
                    "Records written and fsynced together by one group commit.",
                )
                .buckets(BATCH_BUCKETS_RECORDS.to_vec());
                let h = Histogram::with_opts(opts)?;
                registry.register(Box::new(h.clone()))?;
                h
            },
            catch_ups: counters(
                "kvstore_catch_ups_total",
                "Links whose catch-up began on this leader, by kind.",
                &["kind"],
            )?,
            refusals: counters(
                "kvstore_refusals_total",
                "Connections refused, by reason.",
                &["reason"],
            )?,
            role: gauges("kvstore_role", "1 for this node's role.", &["role"])?,
            connections: gauges(
                "kvstore_connections",
                "Connections in each admission budget now (see src/admission.rs).",
                &["kind"],
            )?,
            term: gauge("kvstore_term", "This node's current term.")?,
            last_lsn: gauge("kvstore_last_lsn", "The last LSN in this node's WAL.")?,
            commit_lsn: gauge("kvstore_commit_lsn", "The highest LSN known committed.")?,
            applied_lsn: gauge("kvstore_applied_lsn", "The LSN this node's map is at.")?,
            keys: gauge("kvstore_keys", "Live keys in the map.")?,
            wal_bytes: gauge("kvstore_wal_bytes", "Bytes of every WAL segment on disk.")?,
            wal_segments: gauge("kvstore_wal_segments", "WAL segment files on disk.")?,
            wal_first_lsn: gauge(
                "kvstore_wal_first_lsn",
                "The oldest LSN the WAL holds; older ones are only in the snapshot.",
            )?,
            snapshot_lsn: gauge("kvstore_snapshot_lsn", "The LSN of the newest snapshot.")?,
            snapshot_bytes: gauge("kvstore_snapshot_bytes", "Size of the newest snapshot file.")?,
            snapshot_age_seconds: {
                let g = Gauge::new("kvstore_snapshot_age_seconds", "Age of the newest snapshot.")?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            snapshot_transfer_bytes: gauges(
                "kvstore_snapshot_transfer_bytes",
                "A snapshot install in progress: bytes through, and the snapshot's size.",
                &["follower", "what"],
            )?,
            follower_acked_lsn: gauges(
                "kvstore_follower_acked_lsn",
                "On a leader: the LSN each follower has acknowledged.",
                &follower,
            )?,
            follower_lag_records: gauges(
                "kvstore_follower_lag_records",
                "On a leader: records each follower is behind the leader's last LSN.",
                &follower,
            )?,
            follower_last_ack_seconds: float_gauges(
                "kvstore_follower_last_ack_seconds",
                "On a leader: seconds since each follower's last ACK.",
                &follower,
            )?,
            follower_link_state: gauges(
                "kvstore_follower_link_state",
                "On a leader: 1 for each follower's link state.",
                &["follower", "kind", "state"],
            )?,
            replication_lag_seconds: float_gauges(
                "kvstore_replication_lag_seconds",
                "On a leader: from a write's OK until every follower had it.",
                &["quantile"],
            )?,
            links: gauges(
                "kvstore_links",
                "On a leader: replication links up now, by kind.",
                &["kind"],
            )?,
            scrape_seconds: {
                let g = Gauge::new(
                    "kvstore_metrics_scrape_seconds",
                    "Time the previous scrape took to gather.",
                )?;
                registry.register(Box::new(g.clone()))?;
                g
            },
            request_counters: Vec::new(),
            stage_histograms: Vec::new(),
            registry,
        };
        metrics.resolve_children()
    }

    /// Look up the series every request touches once, here, rather than
    /// by label on each request: a lookup hashes the labels and clones a
    /// shared handle, an atomic every connection thread would contend on.
    fn resolve_children(mut self) -> prometheus::Result<Metrics> {
        for kind in REQUEST_TYPES {
            let ok = self.requests.get_metric_with_label_values(&[kind, "ok"])?;
            let not_found = self.requests.get_metric_with_label_values(&[kind, "not_found"])?;
            self.request_counters.push((kind, ok, not_found));
        }
        for stage in Stage::ALL {
            let histogram = self.stage_seconds.get_metric_with_label_values(&[stage.name()])?;
            self.stage_histograms.push(histogram);
        }
        Ok(self)
    }

    /// A client request of `kind` was answered with `reply`.
    pub fn request(&self, kind: &str, reply: &Message) {
        let counters = self.request_counters.iter().find(|(k, _, _)| *k == kind);
        match (reply, counters) {
            (Message::Error { code, .. }, _) => {
                let result = format!("{:?}", ErrorCode::from_u16(*code));
                self.requests.with_label_values(&[kind, &result]).inc();
            }
            (Message::NotFound, Some((_, _, not_found))) => not_found.inc(),
            (_, Some((_, ok, _))) => ok.inc(),
            (Message::NotFound, None) => {
                self.requests.with_label_values(&[kind, "not_found"]).inc()
            }
            (_, None) => self.requests.with_label_values(&[kind, "ok"]).inc(),
        }
    }

    /// One sample of a write stage ([`crate::stages`]).
    pub fn stage(&self, stage: Stage, took: Duration) {
        self.stage_histograms[stage as usize].observe(took.as_secs_f64());
    }

    /// A group commit wrote `records` records at once.
    pub fn commit_batch(&self, records: usize) {
        self.batch_records.observe(records as f64);
    }

    /// A catch-up began on a link of `kind` (`follower` or `observer`).
    pub fn catch_up(&self, kind: &str) {
        self.catch_ups.with_label_values(&[kind]).inc();
    }

    /// A connection was refused for `reason`.
    pub fn refused(&self, reason: &str) {
        self.refusals.with_label_values(&[reason]).inc();
    }

    /// Everything, in the Prometheus text format, the gauges read from
    /// `report` first.
    pub fn render(&self, report: &StatusReport) -> Result<String> {
        let started = std::time::Instant::now();
        self.refresh(report);
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&self.registry.gather(), &mut text)
            .map_err(|e| Error::Unexpected(format!("encoding metrics: {e}")))?;
        self.scrape_seconds.set(started.elapsed().as_secs_f64());
        Ok(text)
    }

    /// Set the scrape-time gauges from the node's status report.
    fn refresh(&self, report: &StatusReport) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.role.reset();
        self.role.with_label_values(&[&report.role]).set(1);
        self.term.set(int(report.term));
        self.last_lsn.set(int(report.last_lsn));
        self.commit_lsn.set(int(report.commit_lsn));
        // The report's last LSN is the map's (that of its digest): every
        // record up to it is durable and applied (see crate::db).
        self.applied_lsn.set(int(report.last_lsn));
        self.keys.set(int(report.keys));
        self.refresh_storage(report);
        if let Some(c) = &report.connections {
            for (kind, n) in [
                ("active", c.active),
                ("unauthenticated", c.unauthenticated),
                ("catch_ups", c.catch_ups),
            ] {
                self.connections.with_label_values(&[kind]).set(int(n));
            }
        }
        for vec in [&self.follower_acked_lsn, &self.follower_lag_records, &self.follower_link_state]
        {
            vec.reset();
        }
        self.follower_last_ack_seconds.reset();
        self.links.reset();
        self.replication_lag_seconds.reset();
        if report.role != "leader" {
            return;
        }
        let mut links = [0i64; 2];
        for row in &report.followers {
            let kind = match (row.observer, row.expected) {
                (true, _) => "observer",
                (false, true) => "follower",
                (false, false) => "extra",
            };
            let labels = [row.address.as_str(), kind];
            self.follower_acked_lsn.with_label_values(&labels).set(int(row.acked_lsn));
            self.follower_lag_records.with_label_values(&labels).set(int(row.lag_records));
            if let Some(ms) = row.last_ack_ms_ago {
                self.follower_last_ack_seconds.with_label_values(&labels).set(ms as f64 / 1000.0);
            }
            self.follower_link_state
                .with_label_values(&[row.address.as_str(), kind, row.state.as_str()])
                .set(1);
            if matches!(row.state.as_str(), "catching-up" | "streaming") {
                links[usize::from(row.observer)] += 1;
            }
        }
        self.links.with_label_values(&["follower"]).set(links[0]);
        self.links.with_label_values(&["observer"]).set(links[1]);
        if let Some(lag) = &report.replication_lag {
            for (quantile, us) in [("0.5", lag.p50_us), ("0.99", lag.p99_us), ("1", lag.max_us)] {
                self.replication_lag_seconds.with_label_values(&[quantile]).set(us as f64 / 1e6);
            }
        }
    }

    /// The WAL and snapshot gauges, and any snapshot transfer, from `report`.
    fn refresh_storage(&self, report: &StatusReport) {
        let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        self.snapshot_transfer_bytes.reset();
        if let Some(storage) = &report.storage {
            self.wal_bytes.set(int(storage.wal_bytes));
            self.wal_segments.set(int(storage.wal_segments));
            self.wal_first_lsn.set(int(storage.wal_first_lsn));
            if let Some(snapshot) = &storage.snapshot {
                self.snapshot_lsn.set(int(snapshot.lsn));
                self.snapshot_bytes.set(int(snapshot.bytes));
                self.snapshot_age_seconds.set(snapshot.age_ms as f64 / 1000.0);
            }
        }
        let transfer = |peer: &str, sent: u64, total: u64| {
            for (what, n) in [("sent", sent), ("total", total)] {
                self.snapshot_transfer_bytes.with_label_values(&[peer, what]).set(int(n));
            }
        };
        if let Some(resync) = &report.resync {
            transfer("leader", resync.received_bytes, resync.total_bytes);
        }
        for row in &report.followers {
            if let (Some(sent), Some(total)) = (row.snapshot_sent_bytes, row.snapshot_total_bytes) {
                transfer(&row.address, sent, total);
            }
        }
    }
}

/// The `Content-Type` of the Prometheus text format.
pub fn content_type() -> String {
    TextEncoder::new().format_type().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A leader's report with one follower and one observer.
    fn leader_report() -> StatusReport {
        serde_json::from_value(serde_json::json!({
            "role": "leader", "term": 3, "last_term": 3, "address": "127.0.0.1:9001",
            "cluster_id": null, "last_lsn": 44, "digest": "0000000000000000",
            "commit_lsn": 40, "keys": 7, "fsync": "always",
            "followers": [
                {"address": "127.0.0.1:9002", "state": "streaming", "expected": true,
                 "acked_lsn": 41, "lag_records": 3, "last_ack_ms_ago": 250},
                {"address": "127.0.0.1:50000", "state": "streaming", "expected": false,
                 "observer": true, "acked_lsn": 44, "lag_records": 0, "last_ack_ms_ago": null}
            ],
            "replication_lag": {"count": 10, "p50_us": 1500, "p99_us": 9000, "max_us": 12000},
            "storage": {"wal_bytes": 4096, "wal_segments": 1, "wal_first_lsn": 1,
                        "wal_bytes_since_snapshot": 4096, "snapshot_after_bytes": 67108864}
        }))
        .unwrap()
    }

    #[test]
    fn scrape_time_series_come_from_the_status_report() {
        // Goal: each follower has its series, labelled with its kind; an
        // observer's are marked so a dashboard can leave them out.
        let metrics = Metrics::new().unwrap();
        let text = metrics.render(&leader_report()).unwrap();
        for line in [
            "kvstore_role{role=\"leader\"} 1",
            "kvstore_term 3",
            "kvstore_last_lsn 44",
            "kvstore_commit_lsn 40",
            "kvstore_wal_bytes 4096",
            "kvstore_follower_acked_lsn{follower=\"127.0.0.1:9002\",kind=\"follower\"} 41",
            "kvstore_follower_lag_records{follower=\"127.0.0.1:9002\",kind=\"follower\"} 3",
            "kvstore_follower_last_ack_seconds{follower=\"127.0.0.1:9002\",kind=\"follower\"} 0.25",
            "kvstore_follower_acked_lsn{follower=\"127.0.0.1:50000\",kind=\"observer\"} 44",
            "kvstore_links{kind=\"follower\"} 1",
            "kvstore_links{kind=\"observer\"} 1",
            "kvstore_replication_lag_seconds{quantile=\"0.99\"} 0.009",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
    }

    #[test]
    fn a_node_that_steps_down_drops_its_follower_series() {
        // Goal: after stepping down, a node no longer reports followers.
        let metrics = Metrics::new().unwrap();
        metrics.render(&leader_report()).unwrap();
        let mut report = leader_report();
        report.role = "follower".into();
        report.followers.clear();
        let text = metrics.render(&report).unwrap();
        assert!(!text.contains("kvstore_follower_acked_lsn{"), "{text}");
        assert!(text.contains("kvstore_role{role=\"follower\"} 1"), "{text}");
        assert!(!text.contains("kvstore_role{role=\"leader\"}"), "{text}");
    }

    #[test]
    fn requests_are_counted_by_type_and_result() {
        let metrics = Metrics::new().unwrap();
        metrics.request("PUT", &Message::Ok { lsn: 1 });
        metrics.request("GET", &Message::NotFound);
        metrics.request("PUT", &Message::Error { code: 5, message: String::new() });
        let text = metrics.render(&leader_report()).unwrap();
        for line in [
            "kvstore_requests_total{result=\"ok\",type=\"PUT\"} 1",
            "kvstore_requests_total{result=\"not_found\",type=\"GET\"} 1",
            "kvstore_requests_total{result=\"WriteTimeout\",type=\"PUT\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "no line {line:?} in:\n{text}");
        }
    }
}
