//! Mutual TLS with the configs from the pki dir, over an in-memory pipe:
//! a peer from another cluster (or with no certificate) is refused.

use crate::support::pki_fixtures;

use std::io::{Read, Write};
use std::path::Path;
use std::sync::Arc;

use muster::pki::{
    CertKind, ClusterCa, KeyPem, client_config, client_config_from_pem, ensure_node_certs,
    server_config,
};
use pki_fixtures::{ca, node, other_ca};
use rustls::pki_types::ServerName;
use rustls::{
    ClientConfig, ClientConnection, Connection, RootCertStore, ServerConfig, ServerConnection,
};
use tempfile::TempDir;

fn pki_dir(ca: &ClusterCa) -> TempDir {
    let tmp = tempfile::tempdir().unwrap();
    ensure_node_certs(tmp.path(), ca, &node()).unwrap();
    tmp
}

/// Moves all pending TLS bytes from `from` to `to`; processes them.
fn pump(from: &mut Connection, to: &mut Connection) -> Result<(), rustls::Error> {
    while from.wants_write() {
        let mut buf = Vec::new();
        from.write_tls(&mut buf).unwrap();
        let mut rd = &buf[..];
        while !rd.is_empty() {
            to.read_tls(&mut rd).unwrap();
            to.process_new_packets()?;
        }
    }
    Ok(())
}

/// Handshake, then the client sends "ping" and the server must read it.
fn exchange(client: ClientConfig, server: ServerConfig, name: &str) -> Result<(), String> {
    let name = ServerName::try_from(name.to_owned()).unwrap();
    let mut c: Connection = ClientConnection::new(Arc::new(client), name)
        .unwrap()
        .into();
    let mut s: Connection = ServerConnection::new(Arc::new(server)).unwrap().into();
    c.writer().write_all(b"ping").unwrap();
    for _ in 0..10 {
        pump(&mut c, &mut s).map_err(|e| format!("server refused: {e}"))?;
        pump(&mut s, &mut c).map_err(|e| format!("client refused: {e}"))?;
        let mut got = [0u8; 4];
        if s.reader().read_exact(&mut got).is_ok() {
            assert_eq!(&got, b"ping");
            return Ok(());
        }
    }
    Err("no data after 10 rounds".into())
}

fn cfgs(client_dir: &Path, server_dir: &Path) -> (ClientConfig, ServerConfig) {
    (
        client_config(client_dir, CertKind::Client).unwrap(),
        server_config(server_dir, CertKind::EtcdServer).unwrap(),
    )
}

#[test]
fn same_cluster_client_and_server_talk() {
    let (a, b) = (pki_dir(&ca()), pki_dir(&ca()));
    for name in ["10.0.0.7", "node-1", "localhost", "127.0.0.1"] {
        let (c, s) = cfgs(a.path(), b.path());
        exchange(c, s, name).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
    // Peer certs serve and dial each other.
    let c = client_config(a.path(), CertKind::EtcdPeer).unwrap();
    let s = server_config(b.path(), CertKind::EtcdPeer).unwrap();
    exchange(c, s, "10.0.0.7").unwrap();
}

#[test]
fn client_from_another_cluster_is_refused() {
    let (mine, theirs) = (pki_dir(&ca()), pki_dir(&other_ca()));
    // The intruder trusts our CA (it is public) but holds a leaf of its own.
    let read = |f: &str| std::fs::read_to_string(theirs.path().join(f)).unwrap();
    let intruder = client_config_from_pem(
        ca().cert_pem(),
        &read("client.crt"),
        &KeyPem::new(read("client.key")),
    )
    .unwrap();
    let server = server_config(mine.path(), CertKind::EtcdServer).unwrap();
    let err = exchange(intruder, server, "10.0.0.7").unwrap_err();
    assert!(
        err.starts_with("server refused") && err.contains("BadSignature"),
        "{err}"
    );
}

#[test]
fn client_without_a_certificate_is_refused() {
    let mine = pki_dir(&ca());
    let mut roots = RootCertStore::empty();
    roots.add(ca().cert_der().clone()).unwrap();
    let anonymous =
        ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let server = server_config(mine.path(), CertKind::EtcdServer).unwrap();
    let err = exchange(anonymous, server, "10.0.0.7").unwrap_err();
    assert!(
        err.starts_with("server refused") && err.contains("no certificates"),
        "{err}"
    );
}

#[test]
fn server_from_another_cluster_is_refused() {
    let (mine, theirs) = (pki_dir(&ca()), pki_dir(&other_ca()));
    let (c, s) = cfgs(mine.path(), theirs.path());
    let err = exchange(c, s, "10.0.0.7").unwrap_err();
    assert!(
        err.starts_with("client refused") && err.contains("BadSignature"),
        "{err}"
    );
}

#[test]
fn a_client_cert_cannot_serve_and_names_are_checked() {
    let (a, b) = (pki_dir(&ca()), pki_dir(&ca()));
    let c = client_config(a.path(), CertKind::Client).unwrap();
    let s = server_config(b.path(), CertKind::Client).unwrap();
    let err = exchange(c, s, "10.0.0.7").unwrap_err();
    assert!(err.starts_with("client refused"), "{err}");

    let (c, s) = cfgs(a.path(), b.path());
    let err = exchange(c, s, "10.9.9.9").unwrap_err();
    assert!(
        err.starts_with("client refused") && err.contains("not valid for name"),
        "{err}"
    );
}

#[test]
fn missing_files_are_a_clear_error() {
    let empty = tempfile::tempdir().unwrap();
    let err = server_config(empty.path(), CertKind::EtcdServer).unwrap_err();
    assert!(err.to_string().contains("ca.crt"), "{err}");
}
