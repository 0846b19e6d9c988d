//! Leaf issuance: names, usages, validity, and chain to the right CA only.

use crate::support::pki_fixtures;

use std::time::{Duration, SystemTime};

use muster::pki::{CertKind, ClusterCa, LeafSpec, NodeIdentity, PkiError, San};
use pki_fixtures::{ca, ip, node, other_ca};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, UnixTime};
use webpki::{EndEntityCert, KeyUsage};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::*;

fn der(pem: &str) -> CertificateDer<'static> {
    CertificateDer::from_pem_slice(pem.as_bytes()).unwrap()
}

fn verify(
    ca_der: &CertificateDer<'_>,
    leaf: &CertificateDer<'_>,
    usage: KeyUsage,
) -> Result<(), webpki::Error> {
    let anchor = webpki::anchor_from_trusted_cert(ca_der).unwrap();
    let ee = EndEntityCert::try_from(leaf).unwrap();
    let algs = &[webpki::ring::ED25519, webpki::ring::ECDSA_P256_SHA256];
    ee.verify_for_usage(algs, &[anchor], &[], UnixTime::now(), usage, None, None)
        .map(|_| ())
}

fn sans_of(cert: &X509Certificate<'_>) -> Vec<String> {
    let Some(ext) = cert.subject_alternative_name().unwrap() else {
        return Vec::new();
    };
    let mut v: Vec<String> = ext
        .value
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::DNSName(d) => format!("DNS:{d}"),
            GeneralName::IPAddress(b) if b.len() == 4 => {
                format!(
                    "IP:{}",
                    std::net::IpAddr::from(<[u8; 4]>::try_from(*b).unwrap())
                )
            }
            GeneralName::IPAddress(b) => {
                format!(
                    "IP:{}",
                    std::net::IpAddr::from(<[u8; 16]>::try_from(*b).unwrap())
                )
            }
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    v.sort();
    v
}

#[test]
fn each_kind_has_its_names_and_usages() {
    let ca = ca();
    let cases: [(CertKind, &str, &[&str], bool, bool); 3] = [
        (
            CertKind::EtcdPeer,
            "node-1",
            &["DNS:node-1", "IP:10.0.0.7", "IP:fd00::7"],
            true,
            true,
        ),
        (
            CertKind::EtcdServer,
            "node-1",
            &[
                "DNS:localhost",
                "DNS:node-1",
                "IP:10.0.0.7",
                "IP:127.0.0.1",
                "IP:::1",
                "IP:fd00::7",
            ],
            true,
            true,
        ),
        (CertKind::Client, "muster-agent node-1", &[], false, true),
    ];
    for (kind, cn, sans, server, client) in cases {
        let issued = ca
            .issue(&LeafSpec::for_kind(kind, &node()).unwrap())
            .unwrap();
        let leaf = der(&issued.cert_pem);
        let (_, cert) = parse_x509_certificate(&leaf).unwrap();

        let got_cn = cert
            .subject()
            .iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap();
        assert_eq!(got_cn, cn, "{kind}");
        assert_eq!(sans_of(&cert), sans, "{kind}");
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert_eq!(
            (eku.server_auth, eku.client_auth, eku.any),
            (server, client, false),
            "{kind}"
        );
        let ku = cert.key_usage().unwrap().unwrap().value;
        assert!(ku.digital_signature() && !ku.key_cert_sign(), "{kind}");
        assert!(!cert.is_ca(), "{kind}");

        assert_eq!(
            verify(ca.cert_der(), &leaf, KeyUsage::client_auth()),
            Ok(()),
            "{kind}"
        );
        let as_server = verify(ca.cert_der(), &leaf, KeyUsage::server_auth());
        assert_eq!(as_server.is_ok(), server, "{kind}: {as_server:?}");
    }
}

#[test]
fn leaf_from_another_cluster_does_not_chain() {
    let mine = ca();
    let spec = LeafSpec::for_kind(CertKind::Client, &node()).unwrap();
    // Same cluster name, other secret: same issuer name, wrong key.
    let theirs = other_ca().issue(&spec).unwrap();
    let err = verify(
        mine.cert_der(),
        &der(&theirs.cert_pem),
        KeyUsage::client_auth(),
    )
    .unwrap_err();
    assert!(
        matches!(err, webpki::Error::InvalidSignatureForPublicKey),
        "{err:?}"
    );
    // Same secret, other cluster name: another CA altogether.
    let elsewhere = ClusterCa::derive("staging", pki_fixtures::SECRET)
        .unwrap()
        .issue(&spec)
        .unwrap();
    let err = verify(
        mine.cert_der(),
        &der(&elsewhere.cert_pem),
        KeyUsage::client_auth(),
    )
    .unwrap_err();
    assert!(matches!(err, webpki::Error::UnknownIssuer), "{err:?}");
}

#[test]
fn validity_is_a_year_starting_five_minutes_ago() {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let issued = ca()
        .issue(&LeafSpec::for_kind(CertKind::EtcdPeer, &node()).unwrap())
        .unwrap();
    let leaf = der(&issued.cert_pem);
    let (_, cert) = parse_x509_certificate(&leaf).unwrap();
    let nb = cert.validity().not_before.timestamp();
    let na = cert.validity().not_after.timestamp();
    assert!(
        (nb - (now - 300)).abs() <= 5,
        "not_before {nb} vs now {now}"
    );
    assert!(
        (na - (now + 365 * 86_400)).abs() <= 5,
        "not_after {na} vs now {now}"
    );
}

#[test]
fn issuer_and_authority_key_id_are_the_ca() {
    let ca = ca();
    let (_, ca_cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    let issued = ca
        .issue(&LeafSpec::for_kind(CertKind::Client, &node()).unwrap())
        .unwrap();
    let leaf = der(&issued.cert_pem);
    let (_, cert) = parse_x509_certificate(&leaf).unwrap();
    assert_eq!(cert.issuer(), ca_cert.subject());

    let ski = ca_cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::SubjectKeyIdentifier(k) => Some(k.0),
            _ => None,
        });
    let aki = cert
        .extensions()
        .iter()
        .find_map(|e| match e.parsed_extension() {
            ParsedExtension::AuthorityKeyIdentifier(a) => a.key_identifier.as_ref().map(|k| k.0),
            _ => None,
        });
    assert!(ski.is_some());
    assert_eq!(ski, aki);
}

#[test]
fn every_issue_has_a_fresh_key_and_serial() {
    let spec = LeafSpec::for_kind(CertKind::Client, &node()).unwrap();
    let (a, b) = (ca().issue(&spec).unwrap(), ca().issue(&spec).unwrap());
    assert_ne!(a.key_pem, b.key_pem);
    let serial = |pem: &str| {
        parse_x509_certificate(&der(pem))
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    assert_ne!(serial(&a.cert_pem), serial(&b.cert_pem));
    // PKCS#8 ECDSA P-256, loadable by rcgen (and so by Go's x509 for etcd).
    let key = rcgen::KeyPair::from_pem(a.key_pem.expose()).unwrap();
    assert_eq!(key.algorithm(), &rcgen::PKCS_ECDSA_P256_SHA256);
    assert!(
        a.key_pem
            .expose()
            .starts_with("-----BEGIN PRIVATE KEY-----")
    );
}

#[test]
fn debug_of_an_issued_cert_shows_no_pem() {
    let issued = ca()
        .issue(&LeafSpec::for_kind(CertKind::EtcdPeer, &node()).unwrap())
        .unwrap();
    let dbg = format!("{issued:?} {issued:#?} {:?}", issued.key_pem);
    assert!(!dbg.contains("BEGIN") && !dbg.contains("PRIVATE"), "{dbg}");
    let key_body = issued.key_pem.expose().lines().nth(1).unwrap();
    assert!(!dbg.contains(key_body), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
}

#[test]
fn sans_are_canonical() {
    let n = NodeIdentity::new(
        "Node-1",
        [ip("10.0.0.7"), ip("::ffff:10.0.0.7"), ip("10.0.0.2")],
    );
    let spec = LeafSpec::for_kind(CertKind::EtcdPeer, &n).unwrap();
    assert_eq!(
        spec.sans,
        vec![
            San::Dns("node-1".into()),
            San::Ip(ip("10.0.0.2")),
            San::Ip(ip("10.0.0.7"))
        ]
    );
}

#[test]
fn bad_hostname_is_refused_clearly() {
    for bad in ["", "node 1", "-", "a..b"] {
        let err = LeafSpec::for_kind(CertKind::EtcdPeer, &NodeIdentity::new(bad, [])).unwrap_err();
        assert!(
            matches!(err, PkiError::InvalidIdentity(_)),
            "{bad:?}: {err:?}"
        );
        assert!(err.to_string().contains("hostname"), "{err}");
    }
}

#[test]
fn issue_at_a_given_time() {
    let then = SystemTime::now() + Duration::from_secs(400 * 86_400);
    let spec = LeafSpec::for_kind(CertKind::Client, &node()).unwrap();
    let issued = ca().issue_at(&spec, then).unwrap();
    // Not yet valid now: the clock of issue_at is honoured.
    let ca = ca();
    let err = verify(
        ca.cert_der(),
        &der(&issued.cert_pem),
        KeyUsage::client_auth(),
    )
    .unwrap_err();
    assert!(
        matches!(err, webpki::Error::CertNotValidYet { .. }),
        "{err:?}"
    );
}
