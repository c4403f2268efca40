//! Shared-secret authentication: a mutual challenge–response over HMAC-SHA256.
//!
//! Without it, anyone who can reach a node's port can read and write every
//! key, and can say FOLLOWER_HELLO and be sent the whole dataset. With
//! `--auth-file PATH`, every connection to the node — a client's, a
//! follower's, a member asking for a vote — must first prove that it knows
//! the secret in that file, and the node proves in turn that it knows it
//! too, so that a follower knows it reached the real leader and a client
//! does not hand its writes to an impostor. This is the idea of Redis's
//! `requirepass`/`masterauth` and of PostgreSQL's SCRAM, reduced to its core.
//!
//! ## The handshake (four messages, before anything else)
//!
//! ```text
//! client                                                 server
//!   | --- AUTH_HELLO [scope u8][client_nonce 32] ----------> |  1. a fresh random nonce
//!   | <-- AUTH_CHALLENGE [server_nonce 32] ----------------- |  2. a fresh random nonce
//!   | --- AUTH_PROOF [HMAC(secret, "C" · both nonces)] ----> |  3. the client proves first
//!   | <-- AUTH_OK [HMAC(secret, "S" · both nonces)] -------- |  4. checked (constant time); the
//!   |                                                        |     server proves in turn
//!   | (the client checks the server's proof, then sends its requests)
//! ```
//!
//! A proof is `HMAC-SHA256(secret, "kvstore auth v1" · side · scope ·
//! client_nonce · server_nonce)`, where `side` is the byte `C` for the
//! client's proof and `S` for the server's. Every field has a fixed length,
//! so no two different inputs ever read the same. Why each part is there:
//!
//! - **The secret never travels**, only MACs of it; HMAC-SHA256 does not
//!   give the key away, and the `hmac` and `sha2` crates compute it (no
//!   hand-written cryptography here).
//! - **Nothing is replayable**: the server's nonce is new on every
//!   connection, so a client proof captured on the wire is worth nothing on
//!   the next connection. The client's nonce does the same for the proof
//!   the server sends.
//! - **The two proofs differ by `side`**, so a server cannot be used to
//!   compute a client's proof (sending its own challenge back to it), nor
//!   the other way round.
//! - **The client proves first.** The server is the side anyone can reach;
//!   had it proved first, every stranger who connects would be handed a MAC
//!   of the secret to try passwords against offline. A client only dials a
//!   server it chose.
//! - **The proof is checked in constant time** (`Mac::verify_slice`), so
//!   the time a refusal takes says nothing of how much of a guess was right.
//! - **The scope is in the MAC**: a connection says what it is for.
//!   `Client` allows client requests; `Replication` also allows what
//!   members say to each other (FOLLOWER_HELLO, votes, announcements,
//!   TIMEOUT_NOW). With `--replication-auth-file` the two scopes have two
//!   secrets, so a client's secret cannot pose as a follower and be sent
//!   the whole log (Redis's `masterauth` split); without it, one secret
//!   serves both.
//!
//! An unauthenticated connection, or one whose proof is wrong, gets one
//! ERROR (code 15 or 16) and is closed. It learns nothing else — not the
//! cluster id, not the leader's address — and the refusal is counted, not
//! logged one line per attempt ([`crate::admission`]).
//!
//! ## What this does not do
//!
//! It authenticates the start of a connection; it does not encrypt or sign
//! what follows. Someone who can read the traffic sees the keys and values,
//! and someone who can rewrite it (an attacker on the path) can take over a
//! connection after its handshake. Against them, add TLS ([`crate::tls`],
//! `--tls-cert`, `--tls-key`, `--tls-ca`): the handshake then runs inside
//! the TLS session, unchanged. A secret short enough to
//! guess can be found offline from one captured handshake, so a secret must
//! have at least [`AUTH_SECRET_BYTES_MIN`] bytes: make one with
//! `head -c 32 /dev/urandom | base64 > kvstore.secret`.
//!
//! ## The secret file
//!
//! The secret is the file's content with surrounding whitespace (a final
//! newline) trimmed. Like ssh with a private key, a node refuses to start
//! if the file can be read or written by anyone but its owner
//! ([`Secret::load`]).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::error::{Error, ErrorCode, Result};
use crate::limits::{AUTH_FRAME_BYTES_MAX, AUTH_SECRET_BYTES_MAX, AUTH_SECRET_BYTES_MIN};
use crate::protocol::{read_frame, write_message, Message};

/// Bytes of a nonce: 256 random bits never repeat.
pub const NONCE_BYTES: usize = 32;

/// Bytes of a proof: one HMAC-SHA256 output.
pub const PROOF_BYTES: usize = 32;

/// A number used once: 32 bytes from the operating system's random source.
pub type Nonce = [u8; NONCE_BYTES];

/// An HMAC-SHA256 over the handshake's fields, keyed with the secret.
pub type Proof = [u8; PROOF_BYTES];

/// The first bytes of every MAC input: a future handshake would change them.
const PROOF_LABEL: &[u8] = b"kvstore auth v1";

/// What an authenticated connection may do (`[scope u8]` in AUTH_HELLO).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Client requests: PUT, GET, DELETE, READ, STATUS and the operator's
    /// PROMOTE, FOLLOW and TRANSFER_LEADERSHIP.
    Client,
    /// Everything a client may do, and what members say to each other:
    /// FOLLOWER_HELLO, REQUEST_VOTE, PRE_VOTE, LEADER_ANNOUNCE, TIMEOUT_NOW.
    Replication,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Client => "client",
            Scope::Replication => "replication",
        }
    }

    /// The wire byte: 0 client, 1 replication.
    pub fn byte(self) -> u8 {
        match self {
            Scope::Client => 0,
            Scope::Replication => 1,
        }
    }

    pub fn from_byte(byte: u8) -> Result<Scope> {
        match byte {
            0 => Ok(Scope::Client),
            1 => Ok(Scope::Replication),
            other => Err(Error::Malformed(format!("auth scope {other} is neither 0 nor 1"))),
        }
    }

    /// True if a connection authenticated for this scope may send `message`.
    pub fn allows(self, message: &Message) -> bool {
        let member_only = matches!(
            message,
            Message::FollowerHello { .. }
                | Message::RequestVote { .. }
                | Message::PreVote { .. }
                | Message::LeaderAnnounce { .. }
                | Message::TimeoutNow { .. }
        );
        self == Scope::Replication || !member_only
    }
}

/// Which side of the handshake a proof comes from (`C` or `S` in the MAC).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client,
    Server,
}

impl Side {
    fn byte(self) -> u8 {
        match self {
            Side::Client => b'C',
            Side::Server => b'S',
        }
    }
}

/// A shared secret. Its bytes are never printed, not even by `{:?}`.
pub struct Secret {
    bytes: Vec<u8>,
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Secret({} bytes)", self.bytes.len())
    }
}

impl Secret {
    /// Read the secret in `path`, refusing a file others may read or write.
    pub fn load(path: &Path) -> Result<Secret> {
        let ctx = |what: &str| format!("{what} auth file {}", path.display());
        let meta = std::fs::metadata(path).map_err(|e| Error::io(ctx("reading"), e))?;
        if !meta.is_file() {
            return Err(Error::io(ctx("reading"), std::io::Error::other("not a regular file")));
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(Error::InsecurePermissions {
                path: path.to_path_buf(),
                mode,
                why: "a secret must be readable by its owner only",
                fix: format!("chmod 600 {}", path.display()),
            });
        }
        if meta.len() > AUTH_SECRET_BYTES_MAX as u64 {
            return Err(Error::TooLarge {
                what: "auth file",
                len: meta.len(),
                max: AUTH_SECRET_BYTES_MAX as u64,
            });
        }
        let bytes = std::fs::read(path).map_err(|e| Error::io(ctx("reading"), e))?;
        Secret::from_bytes(bytes.trim_ascii()).map_err(|e| match e {
            Error::Malformed(why) => Error::Malformed(format!("{}: {why}", path.display())),
            other => other,
        })
    }

    /// A secret from bytes already in memory (at least
    /// [`AUTH_SECRET_BYTES_MIN`], at most [`AUTH_SECRET_BYTES_MAX`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Secret> {
        if bytes.len() < AUTH_SECRET_BYTES_MIN {
            return Err(Error::Malformed(format!(
                "the secret has {} byte(s); at least {AUTH_SECRET_BYTES_MIN} are needed, or it \
                 could be guessed offline from one captured handshake (make one with `head -c 32 \
                 /dev/urandom | base64`)",
                bytes.len()
            )));
        }
        if bytes.len() > AUTH_SECRET_BYTES_MAX {
            return Err(Error::TooLarge {
                what: "secret",
                len: bytes.len() as u64,
                max: AUTH_SECRET_BYTES_MAX as u64,
            });
        }
        Ok(Secret { bytes: bytes.to_vec() })
    }

    /// The MAC over one side's view of a handshake.
    fn mac(
        &self,
        side: Side,
        scope: Scope,
        client_nonce: &Nonce,
        server_nonce: &Nonce,
    ) -> Hmac<Sha256> {
        // HMAC takes a key of any length; this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.bytes)
            .expect("HMAC-SHA256 accepts keys of any length");
        mac.update(PROOF_LABEL);
        mac.update(&[side.byte(), scope.byte()]);
        mac.update(client_nonce);
        mac.update(server_nonce);
        mac
    }

    fn proof(&self, side: Side, scope: Scope, client_nonce: &Nonce, server_nonce: &Nonce) -> Proof {
        self.mac(side, scope, client_nonce, server_nonce).finalize().into_bytes().into()
    }

    /// True if `proof` is right; compared in constant time.
    fn verify(
        &self,
        side: Side,
        scope: Scope,
        client_nonce: &Nonce,
        server_nonce: &Nonce,
        proof: &Proof,
    ) -> bool {
        self.mac(side, scope, client_nonce, server_nonce).verify_slice(proof).is_ok()
    }
}

/// A fresh nonce from the operating system's random source.
pub fn new_nonce() -> Result<Nonce> {
    let mut nonce = [0u8; NONCE_BYTES];
    getrandom::fill(&mut nonce)
        .map_err(|e| Error::io("generating a nonce", std::io::Error::other(e.to_string())))?;
    Ok(nonce)
}

/// The secrets a node checks incoming connections against: one for every
/// connection (`--auth-file`), and optionally another for replication
/// (`--replication-auth-file`).
#[derive(Debug, Clone)]
pub struct ServerKeys {
    client: Arc<Secret>,
    replication: Option<Arc<Secret>>,
}

impl ServerKeys {
    pub fn new(client: Arc<Secret>, replication: Option<Arc<Secret>>) -> ServerKeys {
        ServerKeys { client, replication }
    }

    /// The secret a connection of `scope` must know.
    pub fn secret(&self, scope: Scope) -> &Secret {
        match (scope, &self.replication) {
            (Scope::Replication, Some(replication)) => replication,
            _ => &self.client,
        }
    }

    /// The secrets in use, in words, for the start-up log line.
    pub fn describe(&self) -> &'static str {
        match self.replication {
            Some(_) => "--auth-file for clients, --replication-auth-file for members",
            None => "one secret, --auth-file, for clients and members",
        }
    }

    /// What this node proves itself with when it dials another member.
    pub fn member_credentials(&self) -> Credentials {
        let secret = self.replication.as_ref().unwrap_or(&self.client);
        Credentials::new(Arc::clone(secret), Scope::Replication)
    }
}

// ---- the server's side ------------------------------------------------------

/// The server's half of one handshake, between its steps 2 and 4.
#[derive(Debug)]
pub struct ServerHandshake {
    scope: Scope,
    client_nonce: Nonce,
    server_nonce: Nonce,
}

impl ServerHandshake {
    /// Step 2: `first` is the connection's first message. Anything but
    /// AUTH_HELLO is [`Error::AuthRequired`]; otherwise answer with our
    /// nonce in an AUTH_CHALLENGE.
    pub fn start(first: &Message, server_nonce: Nonce) -> Result<(ServerHandshake, Message)> {
        let Message::AuthHello { scope, client_nonce } = *first else {
            return Err(Error::AuthRequired);
        };
        let handshake = ServerHandshake { scope, client_nonce, server_nonce };
        Ok((handshake, Message::AuthChallenge { server_nonce }))
    }

    /// Step 4: check the client's AUTH_PROOF against the secret of the
    /// scope it asked for; if right, answer AUTH_OK with our own proof and
    /// return the scope the connection may act in.
    pub fn finish(&self, keys: &ServerKeys, answer: &Message) -> Result<(Scope, Message)> {
        let Message::AuthProof { client_proof } = answer else {
            return Err(Error::AuthFailed(format!("{} instead of AUTH_PROOF", answer.name())));
        };
        let secret = keys.secret(self.scope);
        let (client_nonce, server_nonce) = (&self.client_nonce, &self.server_nonce);
        if !secret.verify(Side::Client, self.scope, client_nonce, server_nonce, client_proof) {
            return Err(Error::AuthFailed("wrong proof".into()));
        }
        let server_proof = secret.proof(Side::Server, self.scope, client_nonce, server_nonce);
        Ok((self.scope, Message::AuthOk { server_proof }))
    }
}

// ---- the client's side ------------------------------------------------------

/// The client's half of one handshake.
#[derive(Debug)]
pub struct ClientHandshake {
    scope: Scope,
    client_nonce: Nonce,
}

impl ClientHandshake {
    /// Step 1: the AUTH_HELLO that opens the connection.
    pub fn start(scope: Scope, client_nonce: Nonce) -> (ClientHandshake, Message) {
        (ClientHandshake { scope, client_nonce }, Message::AuthHello { scope, client_nonce })
    }

    /// Step 3: answer the server's AUTH_CHALLENGE with our proof; return the
    /// server's nonce (for step 5) and the AUTH_PROOF to send.
    pub fn prove(&self, secret: &Secret, answer: &Message) -> Result<(Nonce, Message)> {
        let Message::AuthChallenge { server_nonce } = *answer else {
            return Err(unexpected_answer(answer, "AUTH_CHALLENGE"));
        };
        let client_proof =
            secret.proof(Side::Client, self.scope, &self.client_nonce, &server_nonce);
        Ok((server_nonce, Message::AuthProof { client_proof }))
    }

    /// Step 5: the server's AUTH_OK must prove it knows the secret too.
    pub fn check(&self, secret: &Secret, server_nonce: &Nonce, answer: &Message) -> Result<()> {
        let Message::AuthOk { server_proof } = answer else {
            return Err(unexpected_answer(answer, "AUTH_OK"));
        };
        if !secret.verify(Side::Server, self.scope, &self.client_nonce, server_nonce, server_proof)
        {
            return Err(Error::AuthFailed(
                "the server's proof is wrong: it does not know the secret (an impostor, or a \
                 node with another --auth-file)"
                    .into(),
            ));
        }
        Ok(())
    }
}

/// The server answered a handshake step with something else: an ERROR
/// keeps its code and text; any other message is a protocol error.
fn unexpected_answer(answer: &Message, expected: &str) -> Error {
    match answer {
        Message::Error { code, message } => {
            Error::Server { code: ErrorCode::from_u16(*code), message: message.clone() }
        }
        other => Error::AuthFailed(format!("{} instead of {expected}", other.name())),
    }
}

/// How a connection this process opens proves itself: not at all (no
/// secret), or with a secret for a scope. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Credentials {
    secret: Option<Arc<Secret>>,
    scope: Scope,
}

impl Default for Credentials {
    fn default() -> Credentials {
        Credentials::none()
    }
}

impl Credentials {
    /// No secret: connections start with their first request, as before.
    pub fn none() -> Credentials {
        Credentials { secret: None, scope: Scope::Client }
    }

    pub fn new(secret: Arc<Secret>, scope: Scope) -> Credentials {
        Credentials { secret: Some(secret), scope }
    }

    /// `--auth-file PATH` of kv_client and kv_bench, if given.
    pub fn client_from_file(path: Option<&Path>) -> Result<Credentials> {
        match path {
            Some(path) => Ok(Credentials::new(Arc::new(Secret::load(path)?), Scope::Client)),
            None => Ok(Credentials::none()),
        }
    }

    pub fn is_none(&self) -> bool {
        self.secret.is_none()
    }

    /// Steps 1, 3 and 5 on a freshly opened `stream` to `server`, if we
    /// have a secret; nothing otherwise. The caller bounds the time with
    /// the socket's read timeout.
    pub fn authenticate<S: Read + Write>(&self, stream: &mut S, server: &str) -> Result<()> {
        let Some(secret) = &self.secret else { return Ok(()) };
        let (handshake, hello) = ClientHandshake::start(self.scope, new_nonce()?);
        send(stream, &hello)?;
        let (server_nonce, proof) = handshake.prove(secret, &receive(stream, server)?)?;
        send(stream, &proof)?;
        handshake.check(secret, &server_nonce, &receive(stream, server)?)
    }
}

fn send<S: Write>(stream: &mut S, message: &Message) -> Result<()> {
    write_message(stream, message)?;
    stream.flush().map_err(|e| Error::io(format!("sending {}", message.name()), e))
}

fn receive<S: Read>(stream: &mut S, server: &str) -> Result<Message> {
    let frame = read_frame(stream, AUTH_FRAME_BYTES_MAX)?.ok_or_else(|| {
        Error::Link(format!("{server} closed the connection during authentication"))
    })?;
    Message::decode(&frame)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(text: &str) -> Arc<Secret> {
        Arc::new(Secret::from_bytes(text.as_bytes()).unwrap())
    }

    fn keys(text: &str) -> ServerKeys {
        ServerKeys::new(secret(text), None)
    }

    const NONCE_A: Nonce = [0xa1; NONCE_BYTES];
    const NONCE_B: Nonce = [0xb2; NONCE_BYTES];

    /// Run the four steps in memory; the server's verdict, then the client's.
    fn run(client_secret: &str, server: &ServerKeys, scope: Scope) -> Result<Scope> {
        let client_secret = secret(client_secret);
        let (client, hello) = ClientHandshake::start(scope, NONCE_A);
        let (server_side, challenge) = ServerHandshake::start(&hello, NONCE_B)?;
        let (server_nonce, proof) = client.prove(&client_secret, &challenge)?;
        let (granted, ok) = server_side.finish(server, &proof)?;
        client.check(&client_secret, &server_nonce, &ok)?;
        Ok(granted)
    }

    #[test]
    fn both_sides_with_the_same_secret_authenticate_each_other() {
        // Goal: the happy path grants the scope asked for.
        let server = keys("correct horse battery staple");
        assert_eq!(
            run("correct horse battery staple", &server, Scope::Client).unwrap(),
            Scope::Client
        );
        let granted = run("correct horse battery staple", &server, Scope::Replication).unwrap();
        assert_eq!(granted, Scope::Replication);
    }

    #[test]
    fn a_wrong_secret_is_refused_by_the_server() {
        let server = keys("correct horse battery staple");
        let err = run("incorrect horse battery staple", &server, Scope::Client).unwrap_err();
        assert!(matches!(err, Error::AuthFailed(_)), "{err}");
        assert_eq!(err.code(), ErrorCode::AuthFailed);
    }

    #[test]
    fn a_server_without_the_secret_is_caught_by_the_client() {
        // Goal: mutual authentication. Method: a fake server that accepts
        // any proof and answers with a proof made from another secret.
        let real = secret("correct horse battery staple");
        let impostor = secret("some other secret entirely");
        let (client, _hello) = ClientHandshake::start(Scope::Replication, NONCE_A);
        let challenge = Message::AuthChallenge { server_nonce: NONCE_B };
        let (server_nonce, _proof) = client.prove(&real, &challenge).unwrap();
        let forged = impostor.proof(Side::Server, Scope::Replication, &NONCE_A, &NONCE_B);
        let ok = Message::AuthOk { server_proof: forged };
        assert!(matches!(client.check(&real, &server_nonce, &ok), Err(Error::AuthFailed(_))));
    }

    #[test]
    fn a_replayed_proof_fails_against_a_fresh_server_nonce() {
        // Goal: a proof captured on one connection is useless on the next.
        // Method: record a good client proof for server nonce B, then
        // present it to a server that challenged with nonce C.
        let keys = keys("correct horse battery staple");
        let client_secret = secret("correct horse battery staple");
        let (client, hello) = ClientHandshake::start(Scope::Client, NONCE_A);
        let (_, captured) = client
            .prove(&client_secret, &Message::AuthChallenge { server_nonce: NONCE_B })
            .unwrap();
        let (server, _) = ServerHandshake::start(&hello, [0xc3; NONCE_BYTES]).unwrap();
        assert!(matches!(server.finish(&keys, &captured), Err(Error::AuthFailed(_))));
    }

    #[test]
    fn a_server_proof_is_not_a_client_proof() {
        // Goal: reflection fails. Method: send the server's own AUTH_OK
        // proof back to it as the client's proof.
        let keys = keys("correct horse battery staple");
        let (server, _) = ServerHandshake::start(
            &Message::AuthHello { scope: Scope::Client, client_nonce: NONCE_A },
            NONCE_B,
        )
        .unwrap();
        let server_proof =
            keys.secret(Scope::Client).proof(Side::Server, Scope::Client, &NONCE_A, &NONCE_B);
        let reflected = Message::AuthProof { client_proof: server_proof };
        assert!(matches!(server.finish(&keys, &reflected), Err(Error::AuthFailed(_))));
    }

    #[test]
    fn the_scope_is_part_of_the_proof() {
        // Goal: a proof made for the client scope does not open the
        // replication scope (the scope byte cannot be swapped in flight).
        let keys = keys("correct horse battery staple");
        let hello = Message::AuthHello { scope: Scope::Replication, client_nonce: NONCE_A };
        let (server, _) = ServerHandshake::start(&hello, NONCE_B).unwrap();
        let secret = keys.secret(Scope::Client);
        let client_scoped = secret.proof(Side::Client, Scope::Client, &NONCE_A, &NONCE_B);
        let answer = Message::AuthProof { client_proof: client_scoped };
        assert!(matches!(server.finish(&keys, &answer), Err(Error::AuthFailed(_))));
    }

    #[test]
    fn a_separate_replication_secret_splits_the_scopes() {
        // Goal: with --replication-auth-file, the client secret opens the
        // client scope only, and the replication secret the other.
        let server = ServerKeys::new(
            secret("the client secret here"),
            Some(secret("the replication secret")),
        );
        assert!(run("the client secret here", &server, Scope::Client).is_ok());
        assert!(run("the client secret here", &server, Scope::Replication).is_err());
        assert!(run("the replication secret", &server, Scope::Replication).is_ok());
        assert!(run("the replication secret", &server, Scope::Client).is_err());
    }

    #[test]
    fn anything_but_auth_hello_first_is_auth_required() {
        let put = Message::Put { key: b"k".to_vec(), value: b"v".to_vec() };
        assert!(matches!(ServerHandshake::start(&put, NONCE_B), Err(Error::AuthRequired)));
        assert!(matches!(
            ServerHandshake::start(&Message::Status, NONCE_B),
            Err(Error::AuthRequired)
        ));
    }

    #[test]
    fn the_client_scope_may_not_speak_for_a_member() {
        let hello = Message::FollowerHello {
            last_lsn: 0,
            last_term: 0,
            term: 0,
            listen_port: None,
            cluster_id: None,
        };
        assert!(!Scope::Client.allows(&hello));
        assert!(Scope::Replication.allows(&hello));
        assert!(Scope::Client.allows(&Message::Get { key: b"k".to_vec() }));
    }

    #[test]
    fn short_secrets_are_refused_and_secrets_never_print() {
        assert!(Secret::from_bytes(b"short").is_err());
        let s = Secret::from_bytes(b"a long enough secret").unwrap();
        assert_eq!(format!("{s:?}"), "Secret(20 bytes)");
    }

    #[test]
    fn a_secret_file_others_can_read_is_refused_with_the_fix() {
        // Goal: like ssh, refuse a key file with group/other access, and
        // say how to fix it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        std::fs::write(&path, "a long enough secret\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = Secret::load(&path).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("0644") && text.contains("chmod 600"), "{text}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let loaded = Secret::load(&path).unwrap();
        assert_eq!(loaded.bytes, b"a long enough secret", "the final newline is trimmed");
    }

    #[test]
    fn credentials_run_the_whole_handshake_over_a_stream() {
        // Goal: `Credentials::authenticate` speaks the protocol byte for
        // byte. Method: a scripted server on a real socket.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let keys = keys("correct horse battery staple");
            let hello = receive(&mut stream, "client").unwrap();
            let (handshake, challenge) = ServerHandshake::start(&hello, NONCE_B).unwrap();
            send(&mut stream, &challenge).unwrap();
            let proof = receive(&mut stream, "client").unwrap();
            let (scope, ok) = handshake.finish(&keys, &proof).unwrap();
            send(&mut stream, &ok).unwrap();
            scope
        });
        let mut stream = std::net::TcpStream::connect(address).unwrap();
        let credentials = Credentials::new(secret("correct horse battery staple"), Scope::Client);
        credentials.authenticate(&mut stream, "server").unwrap();
        assert_eq!(server.join().unwrap(), Scope::Client);
    }
}
