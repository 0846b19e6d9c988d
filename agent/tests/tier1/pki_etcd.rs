//! Tier 1: a real etcd 3.5 secured with the certificates of
//! `ensure_node_certs`. A client with a cluster certificate can write and
//! read; one from another cluster's CA, or with none, is refused.
//!
//! Needs etcd and etcdctl: `$MUSTER_ETCD_BIN` or the place
//! `ci/install-deps.sh` puts them. Without them this test FAILS.

use crate::support::etcd_bin::etcd_bin;
use crate::support::pki_fixtures;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use muster::pki::{
    CertKind, NodeIdentity, NodePki, client_config, client_config_from_pem, ensure_node_certs,
};
use pki_fixtures::{ca, ip, other_ca};
use rustls::pki_types::ServerName;
use tempfile::TempDir;

/// A port that was free a moment ago (etcd cannot bind port 0 and report it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Kills etcd and removes its data and certificates, also on panic.
struct Etcd {
    child: Child,
    client_url: String,
    peer_addr: String,
    log: PathBuf,
    _tmp: TempDir,
}

impl Drop for Etcd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Etcd {
    fn start(bin: &Path, tmp: TempDir, pki: &NodePki) -> Etcd {
        let (client, peer) = (free_port(), free_port());
        let client_url = format!("https://127.0.0.1:{client}");
        let peer_url = format!("https://127.0.0.1:{peer}");
        let path = |k| pki.dir.join(k).display().to_string();
        let log = tmp.path().join("etcd.log");
        let child = Command::new(bin)
            .args(["--name", "n1", "--data-dir"])
            .arg(tmp.path().join("data"))
            .args([
                "--listen-client-urls",
                &client_url,
                "--advertise-client-urls",
                &client_url,
            ])
            .args([
                "--listen-peer-urls",
                &peer_url,
                "--initial-advertise-peer-urls",
                &peer_url,
            ])
            .args([
                "--initial-cluster",
                &format!("n1={peer_url}"),
                "--initial-cluster-state",
                "new",
            ])
            .args(["--client-cert-auth", "--trusted-ca-file", &path("ca.crt")])
            .args([
                "--cert-file",
                &path("etcd-server.crt"),
                "--key-file",
                &path("etcd-server.key"),
            ])
            .args([
                "--peer-client-cert-auth",
                "--peer-trusted-ca-file",
                &path("ca.crt"),
            ])
            .args([
                "--peer-cert-file",
                &path("etcd-peer.crt"),
                "--peer-key-file",
                &path("etcd-peer.key"),
            ])
            .args(["--unsafe-no-fsync", "--log-level", "warn"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn etcd");
        Etcd {
            child,
            client_url,
            peer_addr: format!("127.0.0.1:{peer}"),
            log,
            _tmp: tmp,
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// etcdctl against `etcd` trusting `ca_dir`'s CA, presenting `client_dir`'s
/// client certificate (or none).
fn etcdctl(
    bin: &Path,
    etcd: &Etcd,
    ca_dir: &Path,
    client_dir: Option<&Path>,
    args: &[&str],
) -> Output {
    let mut cmd = Command::new(bin.with_file_name("etcdctl"));
    cmd.args([
        "--endpoints",
        &etcd.client_url,
        "--dial-timeout",
        "2s",
        "--command-timeout",
        "2s",
    ])
    .arg(format!("--cacert={}", ca_dir.join("ca.crt").display()));
    if let Some(dir) = client_dir {
        cmd.arg(format!("--cert={}", dir.join("client.crt").display()))
            .arg(format!("--key={}", dir.join("client.key").display()));
    }
    cmd.args(args).output().expect("run etcdctl")
}

/// `GET /version` on etcd's peer port over mTLS with `cfg`.
fn peer_get_version(addr: &str, cfg: rustls::ClientConfig) -> Result<String, String> {
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let sock = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, sock);
    tls.write_all(b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    tls.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    Ok(reply)
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn etcd_accepts_cluster_clients_and_refuses_others() {
    let bin = etcd_bin();
    let node = NodeIdentity::new("node-1", [ip("127.0.0.1")]);
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_node_certs(&tmp.path().join("pki"), &ca(), &node).unwrap();
    let other_tmp = tempfile::tempdir().unwrap();
    let other = ensure_node_certs(other_tmp.path(), &other_ca(), &node).unwrap();
    let etcd = Etcd::start(&bin, tmp, &pki);

    // Ready when an authenticated write succeeds.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = etcdctl(
            &bin,
            &etcd,
            &pki.dir,
            Some(&pki.dir),
            &["put", "muster/k", "v1"],
        );
        if out.status.success() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "etcd not ready in 30 s: {}\netcd log:\n{}",
            text(&out),
            etcd.log_tail()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let got = etcdctl(
        &bin,
        &etcd,
        &pki.dir,
        Some(&pki.dir),
        &["get", "muster/k", "--print-value-only"],
    );
    assert!(got.status.success(), "{}", text(&got));
    assert_eq!(String::from_utf8_lossy(&got.stdout).trim(), "v1");

    // Another cluster's client (it trusts our CA; its own cert is foreign).
    let foreign = etcdctl(
        &bin,
        &etcd,
        &pki.dir,
        Some(&other.dir),
        &["put", "muster/k", "evil"],
    );
    assert!(
        !foreign.status.success(),
        "foreign client was accepted: {}",
        text(&foreign)
    );

    // No client certificate at all.
    let anon = etcdctl(&bin, &etcd, &pki.dir, None, &["put", "muster/k", "anon"]);
    assert!(
        !anon.status.success(),
        "anonymous client was accepted: {}",
        text(&anon)
    );

    // A client that trusts the other CA refuses our server.
    let wrong_ca = etcdctl(
        &bin,
        &etcd,
        &other.dir,
        Some(&other.dir),
        &["get", "muster/k"],
    );
    assert!(!wrong_ca.status.success(), "{}", text(&wrong_ca));

    let after = etcdctl(
        &bin,
        &etcd,
        &pki.dir,
        Some(&pki.dir),
        &["get", "muster/k", "--print-value-only"],
    );
    assert_eq!(
        String::from_utf8_lossy(&after.stdout).trim(),
        "v1",
        "{}",
        text(&after)
    );
    assert!(
        text(&wrong_ca).contains("certificate signed by unknown authority"),
        "{}",
        text(&wrong_ca)
    );

    // The refusals were TLS refusals, not timeouts: etcd says why.
    let log = std::fs::read_to_string(&etcd.log).unwrap();
    assert!(
        log.contains("certificate signed by unknown authority"),
        "{log}"
    );
    assert!(log.contains("client didn't provide a certificate"), "{log}");

    // The peer port: our peer cert is accepted by etcd's Go TLS, another
    // cluster's is refused.
    let mine = client_config(&pki.dir, CertKind::EtcdPeer).unwrap();
    let reply = peer_get_version(&etcd.peer_addr, mine).expect("peer TLS with our cert");
    assert!(
        reply.starts_with("HTTP/1.1 200") && reply.contains("etcdserver"),
        "{reply}"
    );
    let theirs = client_config_from_pem(
        ca().cert_pem(),
        &other.get(CertKind::EtcdPeer).unwrap().cert_pem,
        &other.get(CertKind::EtcdPeer).unwrap().key_pem,
    )
    .unwrap();
    let refused = peer_get_version(&etcd.peer_addr, theirs);
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownCA")),
        "{refused:?}"
    );
}
