//! ensure_node_certs: files, modes, idempotence and every re-issue reason.

use crate::support::pki_fixtures;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, SystemTime};

use muster::pki::{
    CertKind, NodeIdentity, NodePki, Outcome, PkiError, Reason, ensure_certs_at, ensure_node_certs,
};
use pki_fixtures::{ca, ip, node, other_ca};
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

const DAY: Duration = Duration::from_secs(86_400);

fn mode(p: &Path) -> u32 {
    fs::metadata(p).unwrap().permissions().mode() & 0o777
}

fn outcomes(pki: &NodePki) -> Vec<(CertKind, Outcome)> {
    pki.certs
        .iter()
        .map(|c| (c.kind, c.outcome.clone()))
        .collect()
}

fn all(o: Outcome) -> Vec<(CertKind, Outcome)> {
    CertKind::ALL.iter().map(|&k| (k, o.clone())).collect()
}

/// (name, bytes, mtime, inode) of every file, sorted.
fn snapshot(dir: &Path) -> Vec<(String, Vec<u8>, i64, i64, u64)> {
    let mut v: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            let m = e.metadata().unwrap();
            let name = e.file_name().into_string().unwrap();
            (
                name,
                fs::read(e.path()).unwrap(),
                m.mtime(),
                m.mtime_nsec(),
                m.ino(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn first_run_writes_every_file_with_its_mode() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("state/pki");
    let pki = ensure_node_certs(&dir, &ca(), &node()).unwrap();

    assert_eq!(outcomes(&pki), all(Outcome::Issued(Reason::Missing)));
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("ca.crt")), 0o644);
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "ca.crt",
            "client.crt",
            "client.key",
            "etcd-peer.crt",
            "etcd-peer.key",
            "etcd-server.crt",
            "etcd-server.key"
        ]
    );
    for c in &pki.certs {
        assert_eq!(mode(&c.cert_path), 0o644, "{}", c.kind);
        assert_eq!(mode(&c.key_path), 0o600, "{}", c.kind);
        assert_eq!(fs::read_to_string(&c.cert_path).unwrap(), c.cert_pem);
        assert_eq!(fs::read_to_string(&c.key_path).unwrap(), c.key_pem.expose());
    }
    assert_eq!(fs::read_to_string(&pki.ca_path).unwrap(), ca().cert_pem());
}

#[test]
fn the_ca_private_key_is_never_on_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let ca_cert = CertificateDer::from_pem_slice(ca().cert_pem().as_bytes()).unwrap();
    let ca_spki = webpki::EndEntityCert::try_from(&ca_cert)
        .unwrap()
        .subject_public_key_info();
    for entry in fs::read_dir(tmp.path()).unwrap() {
        let path = entry.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        let is_key = path.extension().is_some_and(|e| e == "key");
        assert_eq!(text.contains("PRIVATE KEY"), is_key, "{}", path.display());
        if is_key {
            let key = rcgen::KeyPair::from_pem(&text).unwrap();
            use rcgen::PublicKeyData;
            assert_ne!(key.subject_public_key_info(), ca_spki.as_ref());
            assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
        }
    }
    assert_eq!(pki.certs.len(), 3);
}

#[test]
fn second_run_keeps_everything_untouched() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let before = snapshot(tmp.path());
    std::thread::sleep(Duration::from_millis(20)); // a rewrite would move mtime
    let second = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    assert_eq!(outcomes(&second), all(Outcome::Kept));
    assert_eq!(snapshot(tmp.path()), before);
    for (a, b) in first.certs.iter().zip(&second.certs) {
        assert_eq!(a.cert_pem, b.cert_pem);
        assert_eq!(a.key_pem, b.key_pem);
    }
}

#[test]
fn a_new_ip_reissues_the_certs_that_name_it() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let mut moved = node();
    moved.ips.push(ip("10.0.9.9"));
    let second = ensure_node_certs(tmp.path(), &ca(), &moved).unwrap();
    assert_eq!(
        outcomes(&second),
        vec![
            (CertKind::EtcdPeer, Outcome::Issued(Reason::NamesChanged)),
            (CertKind::EtcdServer, Outcome::Issued(Reason::NamesChanged)),
            (CertKind::Client, Outcome::Kept),
        ]
    );
    let peer = second.get(CertKind::EtcdPeer).unwrap();
    assert_ne!(peer.key_pem, first.get(CertKind::EtcdPeer).unwrap().key_pem);
    assert_eq!(mode(&peer.key_path), 0o600);
    // Same identity again: now stable.
    let third = ensure_node_certs(tmp.path(), &ca(), &moved).unwrap();
    assert_eq!(outcomes(&third), all(Outcome::Kept));
}

#[test]
fn a_new_hostname_reissues_everything() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let renamed = NodeIdentity::new("node-2", node().ips);
    let again = ensure_node_certs(tmp.path(), &ca(), &renamed).unwrap();
    assert_eq!(outcomes(&again), all(Outcome::Issued(Reason::NamesChanged)));
}

#[test]
fn certs_are_renewed_within_30_days_of_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    let now = SystemTime::now();
    ensure_certs_at(tmp.path(), &ca(), &node(), &CertKind::ALL, now).unwrap();
    let later =
        ensure_certs_at(tmp.path(), &ca(), &node(), &CertKind::ALL, now + 330 * DAY).unwrap();
    assert_eq!(outcomes(&later), all(Outcome::Kept));
    let near =
        ensure_certs_at(tmp.path(), &ca(), &node(), &CertKind::ALL, now + 340 * DAY).unwrap();
    assert_eq!(outcomes(&near), all(Outcome::Issued(Reason::ExpiresSoon)));
}

#[test]
fn a_new_secret_replaces_the_ca_and_every_cert() {
    let tmp = tempfile::tempdir().unwrap();
    ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let pki = ensure_node_certs(tmp.path(), &other_ca(), &node()).unwrap();
    for (kind, outcome) in outcomes(&pki) {
        assert!(
            matches!(&outcome, Outcome::Issued(Reason::NotTrusted(why)) if why.contains("InvalidSignatureForPublicKey")),
            "{kind}: {outcome:?}"
        );
    }
    assert_eq!(
        fs::read_to_string(&pki.ca_path).unwrap(),
        other_ca().cert_pem()
    );
}

#[test]
fn a_key_readable_by_others_is_replaced_not_chmodded() {
    let tmp = tempfile::tempdir().unwrap();
    let first = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let key_path = &first.get(CertKind::Client).unwrap().key_path;
    fs::set_permissions(key_path, fs::Permissions::from_mode(0o644)).unwrap();
    let second = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let client = second.get(CertKind::Client).unwrap();
    assert_eq!(client.outcome, Outcome::Issued(Reason::KeyExposed));
    assert_ne!(client.key_pem, first.get(CertKind::Client).unwrap().key_pem);
    assert_eq!(mode(key_path), 0o600);
}

#[test]
fn a_mismatched_key_is_detected() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    // Simulates a crash between the key and the cert rename.
    fs::copy(
        &pki.get(CertKind::Client).unwrap().key_path,
        &pki.get(CertKind::EtcdPeer).unwrap().key_path,
    )
    .unwrap();
    let again = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    assert_eq!(
        again.get(CertKind::EtcdPeer).unwrap().outcome,
        Outcome::Issued(Reason::KeyMismatch)
    );
    assert_eq!(again.get(CertKind::Client).unwrap().outcome, Outcome::Kept);
}

#[test]
fn garbage_or_missing_files_are_reissued() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    fs::write(
        &pki.get(CertKind::EtcdPeer).unwrap().cert_path,
        [0xff, 0xfe, 0x00],
    )
    .unwrap();
    fs::write(
        &pki.get(CertKind::EtcdServer).unwrap().cert_path,
        "-----BEGIN CERTIFICATE-----\n",
    )
    .unwrap();
    fs::remove_file(&pki.get(CertKind::Client).unwrap().key_path).unwrap();
    // A leftover temp file from a crash must not block the rewrite.
    fs::write(tmp.path().join(".client.key.tmp"), "junk").unwrap();
    let again = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    assert_eq!(
        outcomes(&again),
        vec![
            (CertKind::EtcdPeer, Outcome::Issued(Reason::Unparsable)),
            (CertKind::EtcdServer, Outcome::Issued(Reason::Unparsable)),
            (CertKind::Client, Outcome::Issued(Reason::Missing)),
        ]
    );
    assert!(!tmp.path().join(".client.key.tmp").exists());
    assert_eq!(
        outcomes(&ensure_node_certs(tmp.path(), &ca(), &node()).unwrap()),
        all(Outcome::Kept)
    );
}

#[test]
fn a_loose_existing_dir_is_tightened() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    ensure_node_certs(&dir, &ca(), &node()).unwrap();
    assert_eq!(mode(&dir), 0o700);
}

#[test]
fn bad_identity_fails_before_touching_disk() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("pki");
    let err = ensure_node_certs(&dir, &ca(), &NodeIdentity::new("bad host", [])).unwrap_err();
    assert!(matches!(err, PkiError::InvalidIdentity(_)), "{err:?}");
    assert!(!dir.exists());
}

#[test]
fn an_unwritable_dir_is_a_clear_error() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("not-a-dir");
    fs::write(&file, "").unwrap();
    let err = ensure_node_certs(&file.join("pki"), &ca(), &node()).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("creating") && text.contains("not-a-dir"),
        "{text}"
    );
}

#[test]
fn debug_of_node_pki_shows_no_pem() {
    let tmp = tempfile::tempdir().unwrap();
    let pki = ensure_node_certs(tmp.path(), &ca(), &node()).unwrap();
    let dbg = format!("{pki:?} {pki:#?}");
    assert!(!dbg.contains("BEGIN") && !dbg.contains("PRIVATE"), "{dbg}");
    for c in &pki.certs {
        let body = c.key_pem.expose().lines().nth(1).unwrap();
        assert!(!dbg.contains(body), "{dbg}");
    }
    assert!(dbg.contains("etcd-peer.key"), "{dbg}");
}

/// Figures, not an assertion: `cargo test -p muster-agent --test tier0 pki_store
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn print_timings() {
    let runs = 20u32;
    let t = std::time::Instant::now();
    for _ in 0..runs {
        let ca = ca();
        for kind in CertKind::ALL {
            let spec = muster::pki::LeafSpec::for_kind(kind, &node()).unwrap();
            ca.issue(&spec).unwrap();
        }
    }
    eprintln!("derive CA + issue 3 certs: {:?}", t.elapsed() / runs);

    let (mut first, mut again) = (Duration::ZERO, Duration::ZERO);
    for _ in 0..runs {
        let tmp = tempfile::tempdir().unwrap();
        let ca = ca();
        let t = std::time::Instant::now();
        ensure_node_certs(tmp.path(), &ca, &node()).unwrap();
        first += t.elapsed();
        let t = std::time::Instant::now();
        ensure_node_certs(tmp.path(), &ca, &node()).unwrap();
        again += t.elapsed();
    }
    eprintln!(
        "ensure_node_certs, fresh dir (writes + fsync): {:?}",
        first / runs
    );
    eprintln!(
        "ensure_node_certs, all kept (verify only): {:?}",
        again / runs
    );
}
