//! TLS over blocking sockets (rustls), and [`Conn`]: one connection, plain
//! or encrypted, that two threads can read and write at once.
//!
//! [`crate::auth`] keeps strangers from opening a connection; it does not
//! hide keys and values from someone who can read the packets, nor keep an
//! attacker on the path from taking an authenticated connection over. TLS
//! does both: `--tls-cert`/`--tls-key` make a node serve TLS, and
//! `--tls-ca` makes it require a client certificate signed by that CA
//! (mutual TLS, etcd's `--client-cert-auth`) and trust that CA when it
//! dials its leader and the other members. `kv_client` and `kv_bench` take
//! the same flags. The handshake is rustls's; nothing cryptographic is
//! written here.
//!
//! ## Why not `rustls::StreamOwned`
//!
//! kvstore splits a connection between two threads: a leader's sender
//! writes AppendEntries while its ack reader reads ACKs; plain TCP allows
//! that with `try_clone`. A TLS session is one state machine, so its two
//! directions must share it. [`Conn`] does so with a lock that is never
//! held across a socket call:
//!
//! - **read**: take plaintext the session already decrypted; if there is
//!   none, read raw bytes from the socket *without* the lock (this is the
//!   call that blocks), then take the lock, feed them to the session and
//!   try again;
//! - **write**: under a write-order lock (so records leave in order), take
//!   the session lock, encrypt, release it, then write the records.
//!
//! So the sender never waits for the ack reader's blocking read, and the
//! socket's own timeouts and `shutdown` work as they do for plain TCP.
//!
//! A connection over the limits of [`crate::admission`] is closed without
//! an ERROR when TLS is on: the ERROR could only be sent after a handshake
//! it is not worth spending on a connection that is refused.

use std::fs::File;
use std::io::{self, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, ClientConnection, RootCertStore, ServerConfig, ServerConnection};

use crate::error::{Error, Result};

/// Bytes read from the socket at a time for the session: one TLS record.
const TLS_READ_BYTES: usize = 16 * 1024 + 256;

/// `--tls-cert`, `--tls-key` and `--tls-ca`, as given.
#[derive(Debug, Clone, Default)]
pub struct TlsFiles {
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    pub ca: Option<PathBuf>,
}

impl TlsFiles {
    pub fn is_empty(&self) -> bool {
        self.cert.is_none() && self.key.is_none() && self.ca.is_none()
    }

    /// A certificate and its key, both or neither.
    fn identity(&self) -> Result<Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>> {
        match (&self.cert, &self.key) {
            (Some(cert), Some(key)) => Ok(Some((load_certs(cert)?, load_key(key)?))),
            (None, None) => Ok(None),
            _ => Err(Error::Refused("--tls-cert and --tls-key go together".into())),
        }
    }

    /// The server side: serve TLS with our certificate; with a CA, require
    /// clients to present a certificate it signed. `None` without a cert.
    pub fn server_config(&self) -> Result<Option<Arc<ServerConfig>>> {
        let Some((certs, key)) = self.identity()? else {
            if self.ca.is_some() {
                return Err(Error::Refused(
                    "--tls-ca on a server needs --tls-cert and --tls-key".into(),
                ));
            }
            return Ok(None);
        };
        let builder = ServerConfig::builder();
        let builder = match &self.ca {
            Some(ca) => {
                let verifier = WebPkiClientVerifier::builder(Arc::new(load_roots(ca)?))
                    .build()
                    .map_err(|e| tls_error(&format!("client verifier from {}", ca.display()), e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let config = builder
            .with_single_cert(certs, key)
            .map_err(|e| tls_error("the certificate and key", e))?;
        Ok(Some(Arc::new(config)))
    }

    /// The client side: trust the CA, present our certificate if we have
    /// one. `None` without a CA (no TLS when dialling).
    pub fn client_config(&self) -> Result<Option<Arc<ClientConfig>>> {
        let Some(ca) = &self.ca else {
            if self.cert.is_some() || self.key.is_some() {
                return Err(Error::Refused(
                    "a client certificate (--tls-cert, --tls-key) needs --tls-ca, the CA that \
                     signed the server's certificate"
                        .into(),
                ));
            }
            return Ok(None);
        };
        let builder = ClientConfig::builder().with_root_certificates(load_roots(ca)?);
        let config = match self.identity()? {
            Some((certs, key)) => builder
                .with_client_auth_cert(certs, key)
                .map_err(|e| tls_error("the client certificate and key", e))?,
            None => builder.with_no_client_auth(),
        };
        Ok(Some(Arc::new(config)))
    }
}

fn tls_error(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Refused(format!("TLS: {what}: {e}"))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>> {
    let certs: std::result::Result<Vec<_>, _> = CertificateDer::pem_file_iter(path)
        .map_err(|e| tls_error(&format!("reading {}", path.display()), e))?
        .collect();
    let certs = certs.map_err(|e| tls_error(&format!("reading {}", path.display()), e))?;
    if certs.is_empty() {
        return Err(tls_error(&path.display().to_string(), "no certificate in the file"));
    }
    Ok(certs)
}

fn load_roots(path: &Path) -> Result<RootCertStore> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| tls_error(&format!("CA {}", path.display()), e))?;
    }
    Ok(roots)
}

/// A private key, refused if others may read it (like `--auth-file`).
fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>> {
    let meta = std::fs::metadata(path)
        .map_err(|e| Error::io(format!("reading key file {}", path.display()), e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(Error::InsecurePermissions {
            path: path.to_path_buf(),
            mode,
            why: "a private key must be readable by its owner only",
            fix: format!("chmod 600 {}", path.display()),
        });
    }
    let mut reader = BufReader::new(
        File::open(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
    );
    PrivateKeyDer::from_pem_reader(&mut reader)
        .map_err(|e| tls_error(&format!("reading key {}", path.display()), e))
}

// ---- one connection ----------------------------------------------------------

/// A TLS session shared by the two halves of a connection.
struct Session {
    conn: Mutex<rustls::Connection>,
    /// Held while records are taken from the session and written, so that
    /// records of two writers never interleave or reorder.
    write_order: Mutex<()>,
}

/// One connection: plain TCP, or TLS over it. Clones share the TLS
/// session; each clone may be used by its own thread.
pub struct Conn {
    socket: TcpStream,
    tls: Option<Arc<Session>>,
}

impl Conn {
    pub fn plain(socket: TcpStream) -> Conn {
        Conn { socket, tls: None }
    }

    /// Run a server handshake on `socket` (bounded by its timeouts).
    pub fn accept(socket: TcpStream, config: &Arc<ServerConfig>) -> Result<Conn> {
        let conn = ServerConnection::new(Arc::clone(config))
            .map_err(|e| tls_error("starting a session", e))?;
        Conn::handshake(socket, rustls::Connection::Server(conn))
    }

    /// Run a client handshake with `server` on `socket`.
    pub fn connect(
        socket: TcpStream,
        config: &Arc<ClientConfig>,
        server: SocketAddr,
    ) -> Result<Conn> {
        let name = ServerName::IpAddress(server.ip().into());
        let conn = ClientConnection::new(Arc::clone(config), name)
            .map_err(|e| tls_error("starting a session", e))?;
        Conn::handshake(socket, rustls::Connection::Client(conn))
    }

    fn handshake(mut socket: TcpStream, mut conn: rustls::Connection) -> Result<Conn> {
        while conn.is_handshaking() {
            conn.complete_io(&mut socket)
                .map_err(|e| Error::Link(format!("TLS handshake: {e}")))?;
        }
        let session = Session { conn: Mutex::new(conn), write_order: Mutex::new(()) };
        Ok(Conn { socket, tls: Some(Arc::new(session)) })
    }

    pub fn try_clone(&self) -> io::Result<Conn> {
        Ok(Conn { socket: self.socket.try_clone()?, tls: self.tls.clone() })
    }

    /// The TCP socket underneath: for timeouts, `shutdown`, addresses.
    pub fn socket(&self) -> &TcpStream {
        &self.socket
    }

    pub fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket.set_read_timeout(timeout)
    }

    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        self.socket.shutdown(how)
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match &self.tls {
            None => self.socket.read(buf),
            Some(session) => session.read(&self.socket, buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match &self.tls {
            None => self.socket.write(buf),
            Some(session) => session.write(&self.socket, buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Session {
    fn read(&self, socket: &TcpStream, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            // 1. Plaintext already decrypted?
            match self.conn.lock().reader().read(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == ErrorKind::UnexpectedEof => return Ok(0),
                Err(e) => return Err(e),
            }
            // 2. Read raw bytes without the lock: this is where we wait.
            let mut raw = [0u8; TLS_READ_BYTES];
            let n = (&*socket).read(&mut raw)?;
            // 3. Feed them to the session.
            let wants_write = {
                let mut conn = self.conn.lock();
                let mut input = &raw[..n];
                loop {
                    let used = conn.read_tls(&mut input)?;
                    conn.process_new_packets()
                        .map_err(|e| io::Error::new(ErrorKind::InvalidData, e))?;
                    if input.is_empty() {
                        break;
                    }
                    if used == 0 {
                        return Err(io::Error::other("TLS session buffer full"));
                    }
                }
                conn.wants_write()
            };
            if wants_write {
                self.send_records(socket, None)?;
            }
            if n == 0 {
                // End of stream: what the session holds, then the end.
                return match self.conn.lock().reader().read(buf) {
                    Ok(n) => Ok(n),
                    Err(_) => Ok(0),
                };
            }
        }
    }

    fn write(&self, socket: &TcpStream, buf: &[u8]) -> io::Result<usize> {
        self.send_records(socket, Some(buf))?;
        Ok(buf.len())
    }

    /// Encrypt `plaintext` (if any) and write every record the session has
    /// to send, in order. The session takes a bounded amount of plaintext
    /// at a time (rustls buffers at most 64 KiB of records), so a large
    /// frame goes out in rounds: encrypt what it takes, send, repeat.
    fn send_records(&self, socket: &TcpStream, plaintext: Option<&[u8]>) -> io::Result<()> {
        let _order = self.write_order.lock();
        let mut rest = plaintext.unwrap_or_default();
        loop {
            let mut records = Vec::new();
            {
                let mut conn = self.conn.lock();
                if !rest.is_empty() {
                    let taken = conn.writer().write(rest)?;
                    rest = &rest[taken..];
                }
                while conn.wants_write() {
                    conn.write_tls(&mut records)?;
                }
            }
            (&*socket).write_all(&records)?;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}
