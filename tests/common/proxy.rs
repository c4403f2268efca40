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
//! - [`Fault::Delay`]: hold every chunk for a while before forwarding it.
//!
//! [`Fault::None`] forwards normally (and is how a fault is healed).

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
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
}

/// How often a pump thread looks at the current fault while idle.
const POLL: Duration = Duration::from_millis(20);

pub struct Proxy {
    pub addr: SocketAddr,
    fault: Arc<Mutex<Fault>>,
}

impl Proxy {
    /// Listen on a free port and forward every connection to `target`.
    pub fn start(target: SocketAddr) -> Proxy {
        let listener = super::bind_any();
        let addr = listener.local_addr().unwrap();
        let fault = Arc::new(Mutex::new(Fault::None));
        let shared = Arc::clone(&fault);
        std::thread::spawn(move || {
            for incoming in listener.incoming() {
                let Ok(client) = incoming else { continue };
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (from, to) = (from.try_clone().unwrap(), to.try_clone().unwrap());
                    let fault = Arc::clone(&shared);
                    std::thread::spawn(move || pump(from, to, &fault));
                }
            }
        });
        Proxy { addr, fault }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn set(&self, fault: Fault) {
        *self.fault.lock() = fault;
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
        match *fault.lock() {
            Fault::CutMidFrame => {
                let _ = to.write_all(&buf[..n / 2]);
                break;
            }
            Fault::Delay(d) => std::thread::sleep(d),
            Fault::None | Fault::Blackhole => {}
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}
