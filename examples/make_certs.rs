//! `make certs`: a throw-away CA and certificates for a local cluster, to
//! try TLS (`--tls-cert`, `--tls-key`, `--tls-ca`; docs/SECURITY.md).
//!
//! ```text
//! cargo run --release --example make_certs -- [DIR] [NAME...]
//! ```
//!
//! writes into DIR (default `./certs`):
//!
//! - `ca.pem`: the CA certificate every node and client trusts (`--tls-ca`);
//! - `NAME.pem` and `NAME.key` for each NAME (default `node1 node2 node3
//!   client`): a certificate signed by the CA, valid for `localhost` and
//!   `127.0.0.1`, for both ends of a connection (a node serves with it and
//!   dials other members with it; a client presents it for mutual TLS).
//!
//! The CA's key is not kept: nobody can sign another certificate for this
//! cluster later, which is what a throw-away CA is for. Keys are written
//! with mode 0600. For a cluster across machines, use your own CA and put
//! each machine's name or address in its certificate.

use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, KeyPair,
    KeyUsagePurpose,
};

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(args.next().unwrap_or_else(|| "certs".into()));
    let mut names: Vec<String> = args.collect();
    if names.is_empty() {
        names = ["node1", "node2", "node3", "client"].map(String::from).to_vec();
    }
    match make(&dir, &names) {
        Ok(()) => {
            println!(
                "wrote {}/ca.pem and a certificate and key for {}",
                dir.display(),
                names.join(", ")
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("make_certs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn make(dir: &Path, names: &[String]) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    let ca_key = KeyPair::generate().map_err(|e| e.to_string())?;
    let mut ca = CertificateParams::new(Vec::<String>::new()).map_err(|e| e.to_string())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "kvstore throw-away CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).map_err(|e| e.to_string())?;
    write(&dir.join("ca.pem"), &ca.pem(), 0o644)?;
    for name in names {
        let key = KeyPair::generate().map_err(|e| e.to_string())?;
        let sans = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let mut params = CertificateParams::new(sans).map_err(|e| e.to_string())?;
        params.distinguished_name.push(DnType::CommonName, name.as_str());
        params.extended_key_usages =
            vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params.signed_by(&key, &ca, &ca_key).map_err(|e| e.to_string())?;
        write(&dir.join(format!("{name}.pem")), &cert.pem(), 0o644)?;
        write(&dir.join(format!("{name}.key")), &key.serialize_pem(), 0o600)?;
    }
    Ok(())
}

/// Write `text` to `path` with `mode` (a key is never readable by others,
/// not even for a moment).
fn write(path: &Path, text: &str, mode: u32) -> Result<(), String> {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(path)
        .map_err(|e| format!("writing {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| format!("setting the mode of {}: {e}", path.display()))?;
    file.write_all(text.as_bytes()).map_err(|e| format!("writing {}: {e}", path.display()))
}
