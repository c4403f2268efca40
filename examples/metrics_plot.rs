//! metrics_plot — what a Grafana dashboard of kvstore shows, drawn in the
//! terminal from the same series.
//!
//! It starts the lessons' cluster (a leader and two followers, from
//! `--bin`, on `--port` and the next two ports, each with `--metrics-port`
//! 100 above its own), keeps a few writers putting keys for `--seconds`,
//! stops follower 3 a third of the way through and starts it again at two
//! thirds, and meanwhile scrapes the leader's `GET /metrics` every
//! `--interval-ms`. At the end it draws, one chart a series, what the
//! panels of `docs/grafana/kvstore-dashboard.json` plot:
//!
//! - PUTs per second: `rate(kvstore_requests_total{type="PUT",result="ok"})`;
//! - write latency p99: `histogram_quantile(0.99, kvstore_write_stage_seconds{stage="total"})`
//!   over each interval;
//! - each follower's lag in records: `kvstore_follower_lag_records`.
//!
//! A learner sees lesson 4 (lag while a follower is down, the commit LSN
//! carried by the one left) and lesson 5 (the catch-up that empties the
//! lag) happen; an operator sees what the dashboard will show.
//!
//! ```text
//! make build examples
//! ./target/release/examples/metrics_plot --seconds 30
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use kvstore::client::Client;
use prometheus_parse::{HistogramCount, Scrape, Value};

#[derive(Parser, Debug)]
struct Args {
    /// The kvstore binary.
    #[arg(long, default_value = "./build/kvstore")]
    bin: PathBuf,
    /// The leader's port; the followers take the next two, and each node's
    /// metrics port is its own + 100.
    #[arg(long, default_value_t = 9301)]
    port: u16,
    /// How long the writers run.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Time between two scrapes (one column of each chart).
    #[arg(long, default_value_t = 500)]
    interval_ms: u64,
    /// Writers putting keys at once.
    #[arg(long, default_value_t = 4)]
    writers: usize,
}

/// Height of a chart, in rows.
const CHART_ROWS: usize = 8;

/// How long a node may take to answer after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(10);

type Failure = Box<dyn std::error::Error>;

/// One scrape's numbers that the charts need.
struct Sample {
    at: f64,
    puts_ok: f64,
    /// Cumulative (upper bound, count) buckets of the total write stage.
    write_buckets: Vec<HistogramCount>,
    lag: BTreeMap<String, f64>,
}

/// The processes started; killed when dropped.
struct Cluster {
    nodes: Vec<Option<Child>>,
    dir: tempfile::TempDir,
    bin: PathBuf,
    port: u16,
}

impl Cluster {
    fn start(bin: PathBuf, port: u16) -> Result<Cluster, Failure> {
        let dir = tempfile::tempdir()?;
        let mut cluster = Cluster { nodes: vec![None, None, None], dir, bin, port };
        for i in 0..3 {
            cluster.spawn(i)?;
        }
        Ok(cluster)
    }

    /// Start node `i` (0 leads) on its data dir.
    fn spawn(&mut self, i: usize) -> Result<(), Failure> {
        let port = self.port + i as u16;
        let role = if i == 0 {
            format!("--role=leader --peers={},{}", self.port + 1, self.port + 2)
        } else {
            format!("--role=follower --leader={}", self.port)
        };
        let log = std::fs::File::create(self.dir.path().join(format!("node{}.log", i + 1)))?;
        let child = Command::new(&self.bin)
            .args(["--port", &port.to_string(), "--metrics-port", &(port + 100).to_string()])
            .arg("--data-dir")
            .arg(self.dir.path().join(format!("node{}", i + 1)))
            .args(role.split(' '))
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("starting {}: {e}", self.bin.display()))?;
        self.nodes[i] = Some(child);
        let deadline = Instant::now() + START_TIMEOUT;
        while Client::connect(format!("127.0.0.1:{port}")).is_err() {
            if Instant::now() > deadline {
                return Err(format!("node {} did not answer on port {port}", i + 1).into());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    fn stop(&mut self, i: usize) {
        if let Some(mut child) = self.nodes[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for i in 0..3 {
            self.stop(i);
        }
    }
}

fn main() {
    if let Err(e) = run(&Args::parse()) {
        eprintln!("metrics_plot: {e}");
        std::process::exit(1);
    }
}

fn run(args: &Args) -> Result<(), Failure> {
    let mut cluster = Cluster::start(args.bin.clone(), args.port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let writers: Vec<_> = (0..args.writers)
        .map(|w| {
            let (stop, port) = (Arc::clone(&stop), args.port);
            std::thread::spawn(move || write_until(&stop, port, w))
        })
        .collect();

    let url = format!("http://127.0.0.1:{}/metrics", args.port + 100);
    let agent: ureq::Agent =
        ureq::Agent::config_builder().timeout_global(Some(Duration::from_secs(5))).build().into();
    let (started, total) = (Instant::now(), Duration::from_secs(args.seconds));
    let interval = Duration::from_millis(args.interval_ms);
    let (mut samples, mut stopped, mut restarted) = (Vec::new(), None, None);
    while started.elapsed() < total {
        let elapsed = started.elapsed();
        if stopped.is_none() && elapsed >= total / 3 {
            cluster.stop(2);
            stopped = Some(elapsed.as_secs_f64());
        }
        if restarted.is_none() && elapsed >= total * 2 / 3 {
            cluster.spawn(2)?;
            restarted = Some(started.elapsed().as_secs_f64());
        }
        let body = agent.get(&url).call()?.body_mut().read_to_string()?;
        samples.push(sample(started.elapsed().as_secs_f64(), &body)?);
        std::thread::sleep(interval.saturating_sub(started.elapsed() - elapsed));
    }
    stop.store(true, Ordering::Relaxed);
    for writer in writers {
        writer.join().map_err(|_| "a writer panicked")??;
    }

    let columns: Vec<(f64, f64, f64)> = samples
        .windows(2)
        .map(|w| {
            let seconds = w[1].at - w[0].at;
            let rate = (w[1].puts_ok - w[0].puts_ok) / seconds;
            (w[1].at, rate, p99_ms(&w[0].write_buckets, &w[1].write_buckets))
        })
        .collect();
    let at: Vec<f64> = columns.iter().map(|c| c.0).collect();
    let marks = [(stopped, "follower 3 stopped"), (restarted, "follower 3 restarted")];
    println!("kvstore metrics, scraped from the leader's /metrics every {} ms", args.interval_ms);
    println!("({} writers; {})", args.writers, describe_marks(&marks));
    chart("PUTs per second (kvstore_requests_total, rate)", &at, &columns_of(&columns, 1), &marks);
    chart(
        "write latency p99, ms (kvstore_write_stage_seconds, stage=total)",
        &at,
        &columns_of(&columns, 2),
        &marks,
    );
    let followers: Vec<String> = samples.iter().flat_map(|s| s.lag.keys().cloned()).collect();
    let mut followers: Vec<String> = followers.into_iter().collect();
    followers.sort();
    followers.dedup();
    for follower in followers {
        let lag: Vec<f64> =
            samples[1..].iter().map(|s| s.lag.get(&follower).copied().unwrap_or(0.0)).collect();
        let title = format!("lag of {follower}, records (kvstore_follower_lag_records)");
        chart(&title, &at, &lag, &marks);
    }
    Ok(())
}

/// Put keys on the leader until `stop`; a refused write is a failure.
fn write_until(stop: &AtomicBool, port: u16, writer: usize) -> Result<(), String> {
    let mut client = Client::connect(format!("127.0.0.1:{port}")).map_err(|e| e.to_string())?;
    let mut i = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let key = format!("w{writer}:{}", i % 10_000);
        client.put(key.as_bytes(), b"a value of a few bytes").map_err(|e| e.to_string())?;
        i += 1;
    }
    Ok(())
}

/// The numbers of one scrape of `/metrics`.
fn sample(at: f64, body: &str) -> Result<Sample, Failure> {
    let scrape = Scrape::parse(body.lines().map(|l| Ok(l.to_string())))?;
    let mut sample = Sample { at, puts_ok: 0.0, write_buckets: Vec::new(), lag: BTreeMap::new() };
    for s in &scrape.samples {
        let label = |name: &str| s.labels.get(name).unwrap_or("");
        match (s.metric.as_str(), &s.value) {
            ("kvstore_requests_total", Value::Counter(v))
                if label("type") == "PUT" && label("result") == "ok" =>
            {
                sample.puts_ok = *v
            }
            ("kvstore_write_stage_seconds", Value::Histogram(buckets))
                if label("stage") == "total" =>
            {
                sample.write_buckets = buckets.clone()
            }
            ("kvstore_follower_lag_records", Value::Gauge(v)) if label("kind") != "observer" => {
                sample.lag.insert(label("follower").to_string(), *v);
            }
            _ => {}
        }
    }
    Ok(sample)
}

/// The p99 of the writes between two scrapes, in ms: the upper bound of
/// the first bucket holding 99% of them (what `histogram_quantile` gives,
/// without its interpolation inside the bucket).
fn p99_ms(before: &[HistogramCount], after: &[HistogramCount]) -> f64 {
    let count = |b: &[HistogramCount], le: f64| {
        b.iter().find(|h| h.less_than == le).map_or(0.0, |h| h.count)
    };
    let deltas: Vec<(f64, f64)> =
        after.iter().map(|h| (h.less_than, h.count - count(before, h.less_than))).collect();
    let total = deltas.last().map_or(0.0, |d| d.1);
    if total <= 0.0 {
        return 0.0;
    }
    deltas.iter().find(|(_, n)| *n >= 0.99 * total).map_or(0.0, |(le, _)| {
        if le.is_finite() {
            le * 1000.0
        } else {
            0.0
        }
    })
}

fn columns_of(columns: &[(f64, f64, f64)], which: usize) -> Vec<f64> {
    columns.iter().map(|c| if which == 1 { c.1 } else { c.2 }).collect()
}

fn describe_marks(marks: &[(Option<f64>, &str)]) -> String {
    let parts: Vec<String> =
        marks.iter().filter_map(|(at, what)| at.map(|t| format!("{what} at {t:.1} s"))).collect();
    parts.join(", ")
}

/// Draw `values` (one column each, at times `at`) as a bar chart of
/// [`CHART_ROWS`] rows, the maximum on the top row's label, and a time
/// axis with `|` under the columns where a mark happened.
fn chart(title: &str, at: &[f64], values: &[f64], marks: &[(Option<f64>, &str)]) {
    let max = values.iter().copied().fold(0.0, f64::max);
    println!("\n{title}");
    for row in (0..CHART_ROWS).rev() {
        let label = if row == CHART_ROWS - 1 {
            format!("{max:>9.0}")
        } else if row == 0 {
            format!("{:>9}", 0)
        } else {
            " ".repeat(9)
        };
        let line: String = values
            .iter()
            .map(|v| {
                let level = if max > 0.0 { v / max * CHART_ROWS as f64 } else { 0.0 };
                if level >= row as f64 + 0.75 {
                    '█'
                } else if level > row as f64 + 0.25 {
                    '▄'
                } else {
                    ' '
                }
            })
            .collect();
        println!("{label} │{line}");
    }
    let axis: String = at
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let before = if i == 0 { 0.0 } else { at[i - 1] };
            let marked = marks.iter().any(|(m, _)| m.is_some_and(|m| m > before && m <= *t));
            if marked {
                '|'
            } else {
                '─'
            }
        })
        .collect();
    println!("{:>9} └{axis}", "");
    let last = at.last().copied().unwrap_or(0.0);
    println!(
        "{:>10} 0 s{:>width$}",
        "",
        format!("{last:.0} s"),
        width = at.len().saturating_sub(3)
    );
}
