//! Test cluster helpers: start the real `kvstore` binary in a temp dir on
//! `--port 0`, wait for it with a deadline, talk to it, kill and restart it.
//!
//! Nothing here sleeps a fixed time hoping something happened: every wait
//! polls a condition until a deadline and fails with what it was waiting for.

#![allow(dead_code)] // each test binary uses a different part of this file

pub mod certs;
pub mod proxy;
pub mod rng;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kvstore::client::Client;
use kvstore::dial::Dialer;
use kvstore::protocol::Message;
use kvstore::status::StatusReport;
use kvstore::tls::TlsFiles;
use kvstore::Lsn;
use parking_lot::Mutex;
use tempfile::TempDir;

/// Default deadline for anything a test waits for.
pub const DEADLINE: Duration = Duration::from_secs(20);

/// Poll `check` every 10 ms until it returns `Some`, or panic naming `what`.
pub fn eventually<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let until = Instant::now() + deadline;
    loop {
        if let Some(value) = check() {
            return value;
        }
        if Instant::now() > until {
            panic!("timed out after {deadline:?} waiting for: {what}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A port that was free a moment ago (for `--peers` lists, which must name
/// ports before the followers start).
///
/// The port is free now but nothing holds it until the node binds it, so a
/// listener that asks the kernel for "any port" in between could be given
/// it. Every port handed out here is remembered and never handed out again,
/// and [`bind_any`] (which the proxies use) skips them too.
pub fn free_port() -> u16 {
    bind_any().local_addr().unwrap().port()
}

/// Ports this test process has handed out or bound; see [`free_port`].
static PORTS_TAKEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());

/// Bind a listener on a port no other helper of this process has used.
pub fn bind_any() -> TcpListener {
    let mut refused = Vec::new(); // held until a fresh one is found
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut taken = PORTS_TAKEN.lock();
        if !taken.contains(&port) {
            taken.push(port);
            return listener;
        }
        refused.push(listener);
    }
}

impl proxy::Proxy {
    /// Listen on a free port (see [`bind_any`]) and forward every
    /// connection to `target`.
    pub fn start(target: SocketAddr) -> proxy::Proxy {
        proxy::Proxy::on(bind_any(), target).expect("the proxy's listening address")
    }
}

/// One running `kvstore` process.
pub struct Node {
    pub name: String,
    pub data_dir: PathBuf,
    pub addr: SocketAddr,
    args: Vec<String>,
    /// Shell commands run before exec'ing kvstore (e.g. `ulimit -f ...`).
    shell_prefix: Option<String>,
    /// A command that runs kvstore in its place, e.g. `ip netns exec NS`:
    /// the node then lives in a network namespace of its own.
    wrapper: Vec<String>,
    /// Extra environment for the process (e.g. `KVSTORE_FAILPOINT`).
    env: Vec<(String, String)>,
    child: Mutex<Option<Child>>,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Node {
    /// Start `kvstore --port 0 --data-dir DIR ARGS...` and wait until it listens.
    pub fn start(name: &str, data_dir: &Path, args: &[&str]) -> Node {
        Node::start_on(name, 0, data_dir, args)
    }

    /// Start on a given port (0 for any).
    pub fn start_on(name: &str, port: u16, data_dir: &Path, args: &[&str]) -> Node {
        let mut node = Node::unstarted(name, port, data_dir, args, &[]);
        node.spawn(port);
        node
    }

    /// Start with extra environment variables (`RUST_LOG` included) and
    /// wait until it listens.
    pub fn start_with_env(
        name: &str,
        port: u16,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let mut node = Node::unstarted(name, port, data_dir, args, env);
        node.spawn(port);
        node
    }

    /// Start with extra environment variables, without waiting for it to
    /// listen (a failpoint may make it die first). Use [`Node::wait_exit`]
    /// or [`Node::wait_for_log`] next.
    pub fn launch_with_env(
        name: &str,
        port: u16,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        let mut node = Node::unstarted(name, port, data_dir, args, env);
        node.launch(port);
        node
    }

    fn unstarted(
        name: &str,
        port: u16,
        data_dir: &Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Node {
        Node {
            name: name.to_string(),
            data_dir: data_dir.to_path_buf(),
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            args: args.iter().map(|s| s.to_string()).collect(),
            shell_prefix: None,
            wrapper: Vec::new(),
            env: env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
            child: Mutex::new(None),
            logs: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Start with `KVSTORE_FAILPOINT=failpoint` and wait until the process
    /// aborts there (it must, and log the failpoint's line).
    pub fn crash_at_failpoint(
        name: &str,
        port: u16,
        data_dir: &Path,
        args: &[&str],
        failpoint: &str,
    ) {
        let dying =
            Node::launch_with_env(name, port, data_dir, args, &[("KVSTORE_FAILPOINT", failpoint)]);
        let status = dying.wait_exit();
        assert!(status.contains("signal"), "{failpoint}: it aborted: {status}");
        let place = failpoint.split('@').next().unwrap_or(failpoint);
        dying.wait_for_log_text(&format!("[failpoint] {place}"));
    }

    /// Wait until the process exits; return its status text.
    pub fn wait_exit(&self) -> String {
        eventually(&format!("{} exits", self.name), DEADLINE, || self.exit_status())
    }

    /// Start again on the same data dir and port, with other flags.
    pub fn restart_with(&mut self, args: &[&str]) {
        self.args = args.iter().map(|s| s.to_string()).collect();
        self.env.clear();
        self.restart();
    }

    /// Start through `sh -c "PREFIX; exec kvstore ..."`: the shell sets
    /// limits or signal dispositions that kvstore inherits.
    pub fn start_with_prefix(name: &str, data_dir: &Path, args: &[&str], prefix: &str) -> Node {
        let mut node = Node::unstarted(name, 0, data_dir, args, &[]);
        node.shell_prefix = Some(prefix.to_string());
        node.spawn(0);
        node
    }

    /// Start `WRAPPER... kvstore --port PORT --data-dir DIR ARGS...` (the
    /// wrapper must exec kvstore, so signals reach it) and wait until it
    /// listens. Pass the address to bind in `args` (`--host`).
    pub fn start_wrapped(
        name: &str,
        wrapper: &[String],
        port: u16,
        data_dir: &Path,
        args: &[&str],
    ) -> Node {
        let mut node = Node::unstarted(name, port, data_dir, args, &[]);
        node.wrapper = wrapper.to_vec();
        node.spawn(port);
        node
    }

    fn spawn(&mut self, port: u16) {
        let from = self.launch(port);
        let line = self.wait_for_log_from(from, "listening on");
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("{}: cannot parse address from {line:?}", self.name));
        self.addr = addr;
    }

    /// Start the process; return the log line index its output starts at.
    fn launch(&mut self, port: u16) -> usize {
        let from = self.logs.lock().len();
        let bin = env!("CARGO_BIN_EXE_kvstore");
        let mut command = match (&self.shell_prefix, self.wrapper.split_first()) {
            (Some(prefix), _) => {
                let mut c = Command::new("sh");
                c.arg("-c").arg(format!("{prefix}; exec \"$0\" \"$@\"")).arg(bin);
                c
            }
            (None, Some((program, wrapper_args))) => {
                let mut c = Command::new(program);
                c.args(wrapper_args).arg(bin);
                c
            }
            (None, None) => Command::new(bin),
        };
        let mut child = command
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(&self.data_dir)
            .args(&self.args)
            // Tests that kill a leader decide themselves who leads next;
            // the election tests ask for `--failover auto` explicitly.
            .args(
                self.args
                    .iter()
                    .all(|a| !a.starts_with("--failover"))
                    .then_some("--failover=manual"),
            )
            .env("RUST_LOG", std::env::var("KVSTORE_TEST_LOG").unwrap_or_else(|_| "info".into()))
            // After RUST_LOG, so that a test can ask for another level.
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kvstore");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::clone(&self.logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                logs.lock().push(line);
            }
        });
        *self.child.lock() = Some(child);
        from
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// A client of this node; with the node's own `--auth-file` and TLS
    /// files, if it was started with them.
    pub fn client(&self) -> Client {
        let dialer = self.dialer();
        eventually(&format!("{} accepts connections", self.name), DEADLINE, || {
            Client::connect_with(self.addr, &dialer).ok()
        })
    }

    /// How a client dials this node: its `--auth-file=PATH`, and its
    /// `--tls-ca=`, `--tls-cert=` and `--tls-key=` (its own certificate
    /// serves as a client certificate), if any.
    pub fn dialer(&self) -> Dialer {
        let flag = |name: &str| {
            let prefix = format!("--{name}=");
            self.args.iter().find_map(|a| a.strip_prefix(prefix.as_str()).map(PathBuf::from))
        };
        let tls = TlsFiles { cert: flag("tls-cert"), key: flag("tls-key"), ca: flag("tls-ca") };
        Dialer::for_client(flag("auth-file").as_deref(), &tls)
            .expect("the node's auth and TLS files")
    }

    pub fn status(&self) -> StatusReport {
        self.client().status().expect("status")
    }

    pub fn last_lsn(&self) -> Lsn {
        self.status().last_lsn
    }

    /// Wait until this node's last LSN reaches `lsn`.
    pub fn wait_for_lsn(&self, lsn: Lsn) {
        eventually(&format!("{} reaches LSN {lsn}", self.name), DEADLINE, || {
            (self.client().status().ok()?.last_lsn >= lsn).then_some(())
        });
    }

    /// Wait for a log line containing `needle` (anywhere in the log so far).
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_from(0, needle)
    }

    /// Wait for a log line containing `needle` at or after line `from`.
    pub fn wait_for_log_from(&self, from: usize, needle: &str) -> String {
        eventually(&format!("{} logs {needle:?}", self.name), DEADLINE, || {
            if let Some(status) = self.exit_status() {
                panic!(
                    "{} exited ({status}) before logging {needle:?}:\n{}",
                    self.name,
                    self.log_text()
                );
            }
            self.logs.lock().iter().skip(from).find(|l| l.contains(needle)).cloned()
        })
    }

    /// Wait for a log line containing `needle`, also after the process
    /// exited (for a node expected to refuse to start).
    pub fn wait_for_log_text(&self, needle: &str) -> String {
        eventually(&format!("{} logs {needle:?}", self.name), DEADLINE, || {
            self.logs.lock().iter().find(|l| l.contains(needle)).cloned()
        })
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&self) -> Option<String> {
        let mut child = self.child.lock();
        match child.as_mut()?.try_wait() {
            Ok(Some(status)) => Some(status.to_string()),
            _ => None,
        }
    }

    /// Number of log lines so far (to wait for lines after a point).
    pub fn log_len(&self) -> usize {
        self.logs.lock().len()
    }

    pub fn log_text(&self) -> String {
        self.logs.lock().join("\n")
    }

    /// SIGKILL: no clean shutdown, exactly like a crash.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.lock().take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same data dir and the same port.
    pub fn restart(&mut self) {
        self.kill();
        let port = self.port();
        self.logs.lock().push(format!("---- {} restarted ----", self.name));
        // A wrapped node binds in a namespace of its own, where nobody
        // else can take its port.
        if self.wrapper.is_empty() {
            eventually(&format!("port {port} is free again"), DEADLINE, || {
                TcpListener::bind(("127.0.0.1", port)).ok().map(drop)
            });
        }
        self.spawn(port);
    }

    pub fn pid(&self) -> u32 {
        self.child.lock().as_ref().expect("running").id()
    }

    /// Resident memory of the process, in KiB (VmRSS from /proc).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .expect("VmRSS")
    }

    /// Send a signal by name (STOP, CONT, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.lock().as_ref().expect("running").id();
        let status = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{name} {pid}");
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let logs = self.logs.lock();
            let tail = logs.len().saturating_sub(60);
            eprintln!("==== last log lines of {} ====\n{}", self.name, logs[tail..].join("\n"));
        }
        self.kill();
    }
}

/// Run `kv_client ARGS...` and return its output.
pub fn kv_client(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_kv_client")).args(args).output().expect("run kv_client")
}

/// stdout of a command as a trimmed string.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).trim().to_string()
}

/// Copy a data dir (its subdirectories too), leaving out its `LOCK`.
pub fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()));
        } else if entry.file_name() != "LOCK" {
            std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
        }
    }
}

// ---- counts and randomness ----------------------------------------------------

/// `ci` normally, `soak` when KVSTORE_SOAK is set.
pub fn scale(ci: u64, soak: u64) -> u64 {
    if std::env::var_os("KVSTORE_SOAK").is_some() {
        soak
    } else {
        ci
    }
}

/// A small deterministic PRNG (xorshift64*): fault timing must be random
/// but reproducible from the printed seed.
pub struct Rng(u64);

impl Rng {
    pub fn seeded(name: &str) -> Rng {
        let seed =
            std::env::var("KVSTORE_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_nanos() as u64
            }) | 1;
        eprintln!("{name}: KVSTORE_SEED={seed}");
        Rng(seed)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

// ---- clusters --------------------------------------------------------------

/// A leader expecting followers on `follower_ports`, plus its temp dir.
pub fn leader(dirs: &TempDir, follower_ports: &[u16], extra: &[&str]) -> Node {
    let peers: Vec<String> = follower_ports.iter().map(|p| p.to_string()).collect();
    let mut args = vec!["--role=leader".to_string(), format!("--peers={}", peers.join(","))];
    args.extend(extra.iter().map(|s| s.to_string()));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    Node::start("leader", &dirs.path().join("leader"), &args)
}

pub fn follower(name: &str, dirs: &TempDir, port: u16, leader: &Node) -> Node {
    let leader_arg = format!("--leader={}", leader.port());
    Node::start_on(name, port, &dirs.path().join(name), &["--role=follower", &leader_arg])
}

/// Wait until `node` serves `key` with `value` (or, with None, no value).
pub fn wait_for_value(node: &Node, key: &str, value: Option<&str>) {
    eventually(&format!("{} serves {key} = {value:?}", node.name), DEADLINE, || {
        let got = node.client().get(key.as_bytes()).ok()?;
        (got.as_deref() == value.map(str::as_bytes)).then_some(())
    });
}

/// Write `count` keys `key{i}` = `value{i}` (i from `first`), pipelined.
pub fn write_keys(client: &mut Client, first: usize, count: usize) {
    const WINDOW: usize = 64;
    let mut outstanding = 0;
    for i in first..first + count {
        let put = Message::Put { key: format!("key{i}").into(), value: format!("value{i}").into() };
        client.send(&put).unwrap();
        outstanding += 1;
        if outstanding == WINDOW {
            client.receive().unwrap();
            outstanding -= 1;
        }
    }
    for _ in 0..outstanding {
        client.receive().unwrap();
    }
}

/// The WAL of a data dir as `kv_client wal-dump` prints it.
pub fn wal_dump(node: &Node) -> String {
    let out = kv_client(&["wal-dump", node.data_dir.to_str().unwrap()]);
    assert!(out.status.success(), "wal-dump failed: {}", stderr(&out));
    stdout(&out)
}

/// `wal-dump` of a data dir as `lsn -> "term=T <op>"` (offsets left out, so
/// two nodes' dumps compare record by record).
pub fn wal_records(node: &Node) -> std::collections::BTreeMap<Lsn, String> {
    wal_dump(node)
        .lines()
        .filter(|l| l.starts_with("lsn="))
        .map(|line| {
            let mut parts = line.split_whitespace();
            let lsn = parts.next().unwrap().trim_start_matches("lsn=").parse().unwrap();
            let term = parts.next().unwrap().to_string();
            let _offset = parts.next();
            let op: Vec<&str> = parts.collect();
            (lsn, format!("{term} {}", op.join(" ")))
        })
        .collect()
}

/// Wait until every node reports the same last LSN and digest; return them.
pub fn wait_converged(nodes: &[&Node]) -> (Lsn, String) {
    eventually("all nodes at the same LSN with the same digest", DEADLINE, || {
        let reports: Vec<StatusReport> =
            nodes.iter().map(|n| n.client().status().ok()).collect::<Option<_>>()?;
        let first = &reports[0];
        reports
            .iter()
            .all(|r| r.last_lsn == first.last_lsn && r.digest == first.digest)
            .then(|| (first.last_lsn, first.digest.clone()))
    })
}

/// Write `secret` to `dir/name` with mode 0600 (as `--auth-file` needs)
/// and return its path.
pub fn secret_file(dir: &Path, name: &str, secret: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, format!("{secret}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// Three members elect a leader; it takes a write (`before`) and is
/// killed; the other two elect another, which takes a write (`after`) and
/// which both then hold. Returns (first leader, second leader).
pub fn elect_and_replace_leader(nodes: &mut [Node]) -> (usize, usize) {
    let first = leader_among(nodes, &[0, 1, 2], 0);
    let term = nodes[first].status().term;
    nodes[first].client().put(b"before", b"1").unwrap();
    nodes[first].kill();
    let alive: Vec<usize> = (0..3).filter(|i| *i != first).collect();
    let second = leader_among(nodes, &alive, term);
    assert_ne!(first, second);
    nodes[second].client().put(b"after", b"2").unwrap();
    let others: Vec<&Node> = alive.iter().map(|i| &nodes[*i]).collect();
    wait_converged(&others);
    (first, second)
}

/// The index of the one node among `nodes[alive]` that leads, in a term
/// after `after` (polls until exactly one does).
pub fn leader_among(nodes: &[Node], alive: &[usize], after: u64) -> usize {
    eventually("one leader", DEADLINE, || {
        let leaders: Vec<usize> = alive
            .iter()
            .copied()
            .filter(|i| {
                let status = nodes[*i].client().status();
                status.is_ok_and(|s| s.role == "leader" && s.term > after)
            })
            .collect();
        (leaders.len() == 1).then(|| leaders[0])
    })
}
