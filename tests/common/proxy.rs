//! A fault-injecting TCP proxy for the replication link.
//!
//! A follower is pointed at the proxy instead of at its leader; the proxy
//! forwards bytes both ways and, on command, breaks the link the ways real
//! networks do:
//!
//! - [`Fault::CutMidFrame`]: forward half of the next chunk, then close both
//!   sides — a connection reset in the middle of a message;
//! - [`Fault::Blackhole`]: stop forwarding without closing anything — a
//!   partition or half-open connection: both peers still see an open socket;
//! - [`Fault::Delay`]: hold every chunk for a while before forwarding it;
//! - [`Fault::Refuse`]: stop listening, so that connecting is refused, as
//!   it is to the port of a process that died (set it when the node behind
//!   the proxy is killed: otherwise the proxy accepts a connection and
//!   closes it at once, which a peer reads as a link lost after it sent).
//!
//! [`Fault::None`] forwards normally (and is how a fault is healed).
//!
//! The tests reach it as `common::proxy` (`Proxy::start` in `common/mod.rs`
//! picks the port); `examples/demo_faults.rs` includes this same file with
//! `#[path]` and binds the ports it prints.

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

/// How the proxy treats the bytes it is given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    None,
    CutMidFrame,
    Blackhole,
    Delay(Duration),
    Refuse,
}

/// How often a pump thread looks at the current fault while idle.
const POLL: Duration = Duration::from_millis(20);

pub struct Proxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
}

impl Proxy {
    /// Forward every connection `listener` accepts to `target`.
    pub fn on(listener: TcpListener, target: SocketAddr) -> std::io::Result<Proxy> {
        let addr = listener.local_addr()?;
        let fault = Arc::new(Mutex::new(Fault::None));
        let shared = Arc::clone(&fault);
        std::thread::spawn(move || accept_loop(listener, target, &shared));
        Ok(Proxy { addr, fault })
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, fault: Fault) {
        let was = std::mem::replace(&mut *self.fault.lock(), fault);
        if fault == Fault::Refuse && was != Fault::Refuse {
            // Wake the accept loop, so that it closes its listener now.
            let _ = TcpStream::connect(self.addr);
        }
    }
}

/// Accept connections and forward each to `target`; while the fault is
/// [`Fault::Refuse`], listen on nothing.
fn accept_loop(listener: TcpListener, target: SocketAddr, fault: &Arc<Mutex<Fault>>) {
    let Ok(addr) = listener.local_addr() else { return };
    let mut listening = Some(listener);
    loop {
        let Some(listener) = &listening else {
            if *fault.lock() != Fault::Refuse {
                listening = TcpListener::bind(addr).ok();
            }
            if listening.is_none() {
                std::thread::sleep(POLL);
            }
            continue;
        };
        let Ok((client, _)) = listener.accept() else { continue };
        if *fault.lock() == Fault::Refuse {
            listening = None; // closed: every later attempt is refused
            continue;
        }
        forward(client, target, fault);
    }
}

/// Connect to `target` and pump bytes both ways, a thread each.
fn forward(client: TcpStream, target: SocketAddr, fault: &Arc<Mutex<Fault>>) {
    let Ok(server) = TcpStream::connect(target) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(from), Ok(to)) = (from.try_clone(), to.try_clone()) else {
            // Out of file descriptors: the link fails, as a real one
            // might; both peers see it close.
            let _ = client.shutdown(Shutdown::Both);
            let _ = server.shutdown(Shutdown::Both);
            return;
        };
        let fault = Arc::clone(fault);
        std::thread::spawn(move || pump(from, to, &fault));
    }
}

/// Copy `from` → `to` until either side closes, obeying the current fault.
fn pump(mut from: TcpStream, mut to: TcpStream, fault: &Mutex<Fault>) {
    let _ = from.set_read_timeout(Some(POLL));
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let current = *fault.lock();
        if current == Fault::Blackhole {
            // Read nothing, write nothing, close nothing.
            std::thread::sleep(POLL);
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        // Copied out, so that the lock is not held while a delay sleeps:
        // healing (or another link's chunk) never waits behind this one.
        let current = *fault.lock();
        match current {
            Fault::CutMidFrame => {
                let _ = to.write_all(&buf[..n / 2]);
                break;
            }
            Fault::Delay(d) => std::thread::sleep(d),
            Fault::None | Fault::Blackhole | Fault::Refuse => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
