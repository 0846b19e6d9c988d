//! The derived cluster CA: determinism, shape, and S5.

use crate::support::pki_fixtures;

use muster::pki::{ClusterCa, PkiError};
use pki_fixtures::{OTHER_SECRET, SECRET, ca};
use x509_parser::prelude::*;

#[test]
fn same_secret_and_name_give_a_byte_identical_ca() {
    let a = ClusterCa::derive("prod", SECRET).unwrap();
    let b = ClusterCa::derive("prod", SECRET.to_vec().as_slice()).unwrap();
    assert_eq!(a.cert_der(), b.cert_der());
    assert_eq!(a.cert_pem(), b.cert_pem());
    assert_eq!(a.spki_sha256(), b.spki_sha256());
}

#[test]
fn another_secret_or_name_gives_another_key() {
    let base = ca().spki_sha256();
    let other_secret = ClusterCa::derive("prod", OTHER_SECRET).unwrap();
    let other_name = ClusterCa::derive("prod2", SECRET).unwrap();
    assert_ne!(base, other_secret.spki_sha256());
    assert_ne!(base, other_name.spki_sha256());
    assert_ne!(other_secret.spki_sha256(), other_name.spki_sha256());
}

#[test]
fn ca_certificate_is_a_pathlen_0_ed25519_ca() {
    let ca = ca();
    let (rest, cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    assert!(rest.is_empty());

    let bc = cert.basic_constraints().unwrap().expect("basicConstraints");
    assert!(bc.critical);
    assert!(bc.value.ca);
    assert_eq!(bc.value.path_len_constraint, Some(0));

    let ku = cert.key_usage().unwrap().expect("keyUsage").value;
    assert!(ku.key_cert_sign() && ku.crl_sign());
    assert!(!ku.digital_signature() && !ku.key_encipherment());

    let cn = |n: &X509Name| {
        n.iter_common_name()
            .next()
            .unwrap()
            .as_str()
            .unwrap()
            .to_owned()
    };
    assert_eq!(cn(cert.subject()), "muster-ca prod");
    assert_eq!(cert.subject(), cert.issuer());
    let org = cert.subject().iter_organization().next().unwrap();
    assert_eq!(org.as_str().unwrap(), "muster");

    // Ed25519 (1.3.101.112), fixed validity.
    assert_eq!(
        cert.signature_algorithm.algorithm.to_id_string(),
        "1.3.101.112"
    );
    assert_eq!(cert.validity().not_before.timestamp(), 1_735_689_600); // 2025-01-01
    assert_eq!(cert.validity().not_after.timestamp(), 4_891_363_200); // 2125-01-01

    let serial = cert.raw_serial();
    assert!(serial.len() <= 16 && serial[0] & 0x80 == 0, "{serial:02x?}");
}

#[test]
fn serial_is_derived_too() {
    let serial = |c: &ClusterCa| {
        parse_x509_certificate(c.cert_der())
            .unwrap()
            .1
            .raw_serial()
            .to_vec()
    };
    let other = ClusterCa::derive("prod", OTHER_SECRET).unwrap();
    assert_eq!(serial(&ca()), serial(&ca()));
    assert_ne!(serial(&ca()), serial(&other));
}

#[test]
fn short_secret_is_refused_without_echoing_it() {
    let secret = b"hunter2-hunter2-hunter2-hunter2"; // 31 bytes
    let err = ClusterCa::derive("prod", secret).unwrap_err();
    assert!(
        matches!(err, PkiError::SecretTooShort { len: 31 }),
        "{err:?}"
    );
    let text = format!("{err} {err:?}");
    assert!(
        text.contains("31 bytes") && text.contains("at least 32"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
}

#[test]
fn debug_of_the_ca_shows_no_key_or_secret() {
    let ca = ca();
    let dbg = format!("{ca:?} {ca:#?}");
    let secret = std::str::from_utf8(SECRET).unwrap();
    assert!(!dbg.contains(secret), "{dbg}");
    assert!(!dbg.contains("BEGIN") && !dbg.contains("PRIVATE"), "{dbg}");
    assert!(dbg.contains("<redacted>") && dbg.contains("prod"), "{dbg}");
    assert!(dbg.contains(&ca.spki_sha256()), "{dbg}");
}

#[test]
fn spki_pin_is_sha256_of_the_public_key_info() {
    let ca = ca();
    let (_, cert) = parse_x509_certificate(ca.cert_der()).unwrap();
    let spki = cert.public_key().raw;
    let hash = ring::digest::digest(&ring::digest::SHA256, spki);
    let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(ca.spki_sha256(), format!("sha256:{hex}"));
}
