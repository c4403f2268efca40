//! A clean stop on SIGTERM or SIGINT (Ctrl-C).
//!
//! Killing a leader costs its cluster an election timeout of refused
//! writes, and killing any node mid-request leaves its clients guessing
//! whether their write happened. A planned stop (a deploy, a reboot)
//! should cost neither, so on the first SIGTERM or SIGINT the node:
//!
//! 1. stops accepting connections (new ones are closed at once);
//! 2. if it leads a cluster, hands leadership to its most up-to-date
//!    follower
//!    ([`Replica::transfer_leadership`](crate::replication::replica::Replica::transfer_leadership))
//!    — milliseconds of paused writes instead of an election;
//! 3. waits for the requests already being handled to finish, and for its
//!    open connections to go quiet for [`SHUTDOWN_QUIET_MS`] (bounded by
//!    [`SHUTDOWN_DRAIN_MS_MAX`]): requests that keep arriving on open
//!    connections are answered — "not the leader, the leader is X" for a
//!    write after the handover, so the client goes there — rather than
//!    cut off by the exit, which would leave their outcome unknown;
//! 4. logs one line and exits with status 0.
//!
//! A second signal during all this exits at once (status 1), as a second
//! Ctrl-C does in most servers. The WAL needs no flushing: every write was
//! made durable before it was acknowledged (with `--fsync never`, the
//! kernel still holds it and writes it out after the process is gone).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;

use crate::error::{Error, Result};
use crate::limits::{SHUTDOWN_DRAIN_MS_MAX, SHUTDOWN_QUIET_MS};
use crate::replication::replica::RoleView;
use crate::server::Node;

/// Whether a stop was asked for, and how many requests are being handled.
#[derive(Debug)]
pub struct Shutdown {
    requested: AtomicBool,
    in_flight: AtomicUsize,
    /// When the last request began, in ms since `epoch`.
    last_request_ms: AtomicU64,
    epoch: Instant,
}

impl Default for Shutdown {
    fn default() -> Shutdown {
        Shutdown {
            requested: AtomicBool::new(false),
            in_flight: AtomicUsize::new(0),
            last_request_ms: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Shutdown {
    pub fn is_requested(&self) -> bool {
        self.requested.load(Ordering::Acquire)
    }

    /// Count one request as in flight until the guard is dropped.
    pub fn begin_request(&self) -> InFlight<'_> {
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        let now = self.epoch.elapsed().as_millis() as u64;
        self.last_request_ms.store(now, Ordering::Release);
        InFlight(&self.in_flight)
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// No request in flight, and none began in the last `quiet_ms`.
    fn is_quiet(&self, quiet_ms: u64) -> bool {
        let now = self.epoch.elapsed().as_millis() as u64;
        self.in_flight() == 0
            && now.saturating_sub(self.last_request_ms.load(Ordering::Acquire)) >= quiet_ms
    }
}

/// One request being handled; see [`Shutdown::begin_request`].
pub struct InFlight<'a>(&'a AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Start the thread that waits for SIGTERM/SIGINT and stops the node.
pub fn spawn_signal_handler(node: Arc<Node>) -> Result<()> {
    let mut signals = Signals::new([SIGTERM, SIGINT])
        .map_err(|e| Error::io("installing the SIGTERM/SIGINT handler", e))?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let mut forever = signals.forever();
            let Some(first) = forever.next() else { return };
            let name = if first == SIGTERM { "SIGTERM" } else { "SIGINT" };
            std::thread::spawn(move || stop(&node, name));
            // A second signal while we stop: stop now.
            if forever.next().is_some() {
                log::warn!("[server] second signal: exiting without finishing requests");
                std::process::exit(1);
            }
        })
        .map(|_| ())
        .map_err(|e| Error::io("spawning the signal thread", e))
}

/// Steps 1–4 of the module doc; never returns.
fn stop(node: &Node, signal: &str) -> ! {
    let started = Instant::now();
    node.shutdown.requested.store(true, Ordering::Release);
    log::info!("[server] {signal} received: no new connections; finishing requests in flight");
    let mut handed_to = String::new();
    if let RoleView::Leader { hub, .. } = node.replica.view() {
        if hub.majority() > 1 {
            match node.replica.transfer_leadership(None) {
                Ok(message) => handed_to = format!("; {message}"),
                Err(e) => log::warn!("[server] no handover before stopping: {e}"),
            }
        }
    }
    let deadline = started + Duration::from_millis(SHUTDOWN_DRAIN_MS_MAX);
    while !node.shutdown.is_quiet(SHUTDOWN_QUIET_MS) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(1));
    }
    let unfinished = node.shutdown.in_flight();
    log::info!(
        "[server] stopped on {signal} after {} ms at LSN {} (term {}){handed_to}{}",
        started.elapsed().as_millis(),
        node.db.last_lsn(),
        node.replica.term(),
        if unfinished > 0 {
            format!("; {unfinished} request(s) still unfinished")
        } else {
            String::new()
        }
    );
    std::process::exit(0)
}
