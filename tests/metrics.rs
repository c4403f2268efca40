//! `--metrics-port`: `/metrics` in the Prometheus text format, parsed by a
//! Prometheus parser and checked against `status`, and `/healthz`.

mod common;

use std::time::Duration;

use common::*;
use prometheus_parse::{Sample, Scrape, Value};

/// GET `url`: (status code, body).
fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).call().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    let code = response.status().as_u16();
    (code, response.body_mut().read_to_string().unwrap())
}

/// GET /metrics on `port`, parsed.
fn scrape(port: u16) -> Scrape {
    let (code, body) = get(&format!("http://127.0.0.1:{port}/metrics"));
    assert_eq!(code, 200, "{body}");
    Scrape::parse(body.lines().map(|l| Ok(l.to_string()))).expect("the Prometheus text format")
}

/// The value of `metric` with `labels` (all given must match).
fn value(scrape: &Scrape, metric: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let matches =
        |s: &&Sample| s.metric == metric && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v));
    scrape.samples.iter().find(matches).map(|s| match &s.value {
        Value::Gauge(v) | Value::Counter(v) | Value::Untyped(v) => *v,
        other => panic!("{metric} is not a number: {other:?}"),
    })
}

#[test]
fn metrics_parse_and_agree_with_status() {
    // Goal: /metrics is valid Prometheus text, and its LSNs and each
    // follower's acked LSN are those status --json reports; the write
    // counters and stage histograms count what was done.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, metrics_port) = (free_port(), free_port());
    let port_arg = format!("--metrics-port={metrics_port}");
    let leader = leader(&dirs, &[p2], &[&port_arg]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    let mut client = leader.client();
    write_keys(&mut client, 1, 50);
    assert_eq!(client.get(b"missing").unwrap(), None);
    wait_converged(&[&leader, &f2]);
    eventually("the follower acked LSN 50", DEADLINE, || {
        leader.status().followers.iter().any(|r| r.acked_lsn == 50).then_some(())
    });

    let status = leader.status();
    let scrape = scrape(metrics_port);
    assert_eq!(value(&scrape, "kvstore_last_lsn", &[]), Some(status.last_lsn as f64));
    assert_eq!(value(&scrape, "kvstore_commit_lsn", &[]), Some(status.commit_lsn as f64));
    assert_eq!(value(&scrape, "kvstore_term", &[]), Some(1.0));
    assert_eq!(value(&scrape, "kvstore_role", &[("role", "leader")]), Some(1.0));
    for row in &status.followers {
        let labels = [("follower", row.address.as_str()), ("kind", "follower")];
        let acked = value(&scrape, "kvstore_follower_acked_lsn", &labels);
        assert_eq!(acked, Some(row.acked_lsn as f64), "{}", row.address);
        let state = [("follower", row.address.as_str()), ("state", "streaming")];
        assert_eq!(value(&scrape, "kvstore_follower_link_state", &state), Some(1.0));
    }
    let puts = value(&scrape, "kvstore_requests_total", &[("type", "PUT"), ("result", "ok")]);
    assert_eq!(puts, Some(50.0));
    let misses = [("type", "GET"), ("result", "not_found")];
    assert_eq!(value(&scrape, "kvstore_requests_total", &misses), Some(1.0));
    let fsyncs = scrape.samples.iter().find(|s| {
        s.metric == "kvstore_write_stage_seconds" && s.labels.get("stage") == Some("fsync")
    });
    match fsyncs.map(|s| &s.value) {
        Some(Value::Histogram(buckets)) => {
            let count = buckets.last().map_or(0.0, |b| b.count);
            assert!(count >= 1.0, "{buckets:?}");
        }
        other => panic!("no fsync histogram: {other:?}"),
    }
    assert!(value(&scrape, "kvstore_wal_bytes", &[]).unwrap() > 50.0 * 25.0);
}

#[test]
fn healthz_answers_200_with_the_role() {
    // Goal: a load balancer's check: 200 and the role while serving, on a
    // leader and on a follower; other paths are 404.
    let dirs = tempfile::tempdir().unwrap();
    let (p2, leader_http, follower_http) = (free_port(), free_port(), free_port());
    let leader = leader(&dirs, &[p2], &[&format!("--metrics-port={leader_http}")]);
    let leader_arg = format!("--leader={}", leader.port());
    let follower_port = format!("--metrics-port={follower_http}");
    let _f2 = Node::start_on(
        "follower2",
        p2,
        &dirs.path().join("follower2"),
        &["--role=follower", &leader_arg, &follower_port],
    );
    let (code, body) = get(&format!("http://127.0.0.1:{leader_http}/healthz"));
    assert_eq!((code, body.trim()), (200, "leader of term 1"));
    // Until its first LEADER_HELLO the follower is still in term 0.
    let expected = format!("follower of {} in term 1", leader.addr);
    let code = eventually("the follower heard from its leader", DEADLINE, || {
        let (code, body) = get(&format!("http://127.0.0.1:{follower_http}/healthz"));
        (body.trim() == expected).then_some(code)
    });
    assert_eq!(code, 200);
    let follower_scrape = scrape(follower_http);
    assert_eq!(value(&follower_scrape, "kvstore_role", &[("role", "follower")]), Some(1.0));
    assert_eq!(get(&format!("http://127.0.0.1:{leader_http}/nope")).0, 404);
}

#[test]
fn the_grafana_dashboard_asks_only_for_series_kvstore_serves() {
    // Goal: docs/grafana/kvstore-dashboard.json stays in step with
    // src/metrics.rs: every kvstore_* series a panel queries is in a real
    // scrape of a leader with a follower, after writes and one refusal.
    let dashboard: serde_json::Value =
        serde_json::from_str(include_str!("../docs/grafana/kvstore-dashboard.json"))
            .expect("the dashboard is JSON");
    let mut queried = std::collections::BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().into_iter().flatten() {
            let expr = target["expr"].as_str().expect("a PromQL expression");
            for (start, _) in expr.match_indices("kvstore_") {
                let name: String = expr[start..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                let name = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|suffix| name.strip_suffix(suffix))
                    .map_or(name.clone(), str::to_string);
                queried.insert(name);
            }
        }
    }
    assert!(queried.len() >= 15, "{queried:?}");

    let dirs = tempfile::tempdir().unwrap();
    let (p2, metrics_port) = (free_port(), free_port());
    let leader = leader(&dirs, &[p2], &[&format!("--metrics-port={metrics_port}")]);
    let f2 = follower("follower2", &dirs, p2, &leader);
    write_keys(&mut leader.client(), 1, 20);
    wait_converged(&[&leader, &f2]);
    // A snapshot, for the storage panels.
    leader.client().snapshot().expect("kv_client snapshot");
    // One refusal: a frame longer than any the server accepts.
    let mut garbage = std::net::TcpStream::connect(leader.addr).unwrap();
    std::io::Write::write_all(&mut garbage, &[0xff; 8]).unwrap();
    let served = eventually("every queried series is served", DEADLINE, || {
        let scrape = scrape(metrics_port);
        let names: std::collections::BTreeSet<&str> =
            scrape.samples.iter().map(|s| s.metric.as_str()).collect();
        let missing: Vec<&String> =
            queried.iter().filter(|q| !names.contains(q.as_str())).collect();
        missing.is_empty().then_some(names.len())
    });
    assert!(served >= queried.len());
}
