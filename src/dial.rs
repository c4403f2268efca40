//! Opening a connection to a node: TCP, then TLS if this process has a CA
//! to check the node with ([`crate::tls`]), then the handshake of
//! [`crate::auth`] if it has a secret. Clients, followers dialling their
//! leader and members asking each other questions all dial through here,
//! so each layer is added in one place and in one order.

use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use rustls::ClientConfig;

use crate::auth::Credentials;
use crate::error::{Error, Result};
use crate::tls::{Conn, TlsFiles};

/// How this process opens connections: with TLS or not, with a secret or not.
#[derive(Clone, Default)]
pub struct Dialer {
    credentials: Credentials,
    tls: Option<Arc<ClientConfig>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("credentials", &self.credentials)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl From<Credentials> for Dialer {
    fn from(credentials: Credentials) -> Dialer {
        Dialer { credentials, tls: None }
    }
}

impl Dialer {
    /// Plain TCP, no secret: as the lessons connect.
    pub fn plain() -> Dialer {
        Dialer::default()
    }

    pub fn new(credentials: Credentials, tls: Option<Arc<ClientConfig>>) -> Dialer {
        Dialer { credentials, tls }
    }

    /// A client's dialer from its flags: `--auth-file` and `--tls-ca`
    /// (with `--tls-cert`/`--tls-key` for a client certificate).
    pub fn for_client(auth_file: Option<&Path>, tls: &TlsFiles) -> Result<Dialer> {
        Ok(Dialer::new(Credentials::client_from_file(auth_file)?, tls.client_config()?))
    }

    /// Resolve `address` (`host:port`) and [`Dialer::dial`] its first address.
    pub fn dial_address(
        &self,
        address: impl ToSocketAddrs + std::fmt::Display,
        timeout: Duration,
    ) -> Result<Conn> {
        let ctx = format!("connecting to {address}");
        let addr = address
            .to_socket_addrs()
            .map_err(|e| Error::io(&ctx, e))?
            .next()
            .ok_or_else(|| Error::io(&ctx, std::io::Error::other("no address")))?;
        self.dial(addr, timeout)
    }

    /// Connect to `address`; each step (connect, every handshake read and
    /// write) waits at most `timeout`. The socket keeps those timeouts and
    /// has Nagle's algorithm off; the caller changes them as it needs.
    pub fn dial(&self, address: SocketAddr, timeout: Duration) -> Result<Conn> {
        let ctx = |e| Error::io(format!("connecting to {address}"), e);
        let socket = TcpStream::connect_timeout(&address, timeout).map_err(ctx)?;
        socket.set_nodelay(true).map_err(ctx)?;
        socket.set_read_timeout(Some(timeout)).map_err(ctx)?;
        socket.set_write_timeout(Some(timeout)).map_err(ctx)?;
        let mut conn = match &self.tls {
            Some(config) => Conn::connect(socket, config, address)?,
            None => Conn::plain(socket),
        };
        self.credentials.authenticate(&mut conn, &address.to_string())?;
        Ok(conn)
    }
}
