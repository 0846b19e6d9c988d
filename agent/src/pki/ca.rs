//! The cluster CA, derived from the cluster secret, and leaf issuance.

use std::fmt;
use std::time::SystemTime;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, PublicKeyData, SanType,
    SerialNumber, date_time_ymd, string::Ia5String,
};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hkdf};
use rustls::pki_types::{CertificateDer, PrivatePkcs8KeyDer};
use time::OffsetDateTime;

use super::error::PkiError;
use super::leaf::{CLOCK_SKEW, IssuedCert, KeyPem, LeafSpec, San, Usage};

/// Shortest accepted cluster secret. The derivation has no key stretching,
/// and the CA certificate (public: every TLS handshake shows it) lets anyone
/// test guesses offline, so the secret must be high-entropy, not a password.
pub const MIN_SECRET_LEN: usize = 32;

/// Domain separation: bump the version to change the derivation.
const HKDF_SALT: &[u8] = b"muster/pki/v1";

/// RFC 8410 PKCS#8 v1 for Ed25519: SEQUENCE { INTEGER 0, AlgorithmIdentifier
/// { 1.3.101.112 }, OCTET STRING { OCTET STRING (32-byte seed) } }.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// "muster-ca " + name must fit the 64-character limit of an X.520 CN.
const MAX_NAME_LEN: usize = 54;

/// The CA validity is fixed (not "now + N") so that every node, whenever it
/// boots, computes the same certificate bytes.
const CA_NOT_BEFORE: (i32, u8, u8) = (2025, 1, 1);
const CA_NOT_AFTER: (i32, u8, u8) = (2125, 1, 1);

/// A CA derived from the cluster secret. The etcd (cluster) CA holds its
/// key in memory only; the Kubernetes CAs' keys are written on
/// control-plane nodes, where kube-controller-manager signs with them.
pub struct ClusterCa {
    name: String,
    issuer: Issuer<'static, CaKey>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

/// The CA's key: Ed25519 for the etcd CA; ECDSA P-256 for the Kubernetes
/// CAs, whose keys Go's Kubernetes components must load (they take RSA
/// and ECDSA keys only).
enum CaKey {
    Ed25519(KeyPair),
    P256(DerivedP256),
}

/// A P-256 key from a derived scalar, signing deterministically (RFC
/// 6979), so every node computes the byte-identical CA certificate.
pub struct DerivedP256 {
    key: p256::ecdsa::SigningKey,
    /// The uncompressed public point, as X.509 carries it.
    public: Vec<u8>,
}

impl DerivedP256 {
    /// Derives the key for `label` (a purpose, e.g. `service-account/`)
    /// and `cluster_name` from the secret. A scalar out of range (odds
    /// about 2^-32) is derived again with a counter.
    pub fn derive(
        label: &[u8],
        cluster_name: &str,
        secret: &[u8],
    ) -> Result<DerivedP256, PkiError> {
        if secret.len() < MIN_SECRET_LEN {
            return Err(PkiError::SecretTooShort { len: secret.len() });
        }
        for counter in 0u8..=u8::MAX {
            let mut scalar = [0u8; 32];
            hkdf_sha256(
                secret,
                HKDF_SALT,
                &[label, cluster_name.as_bytes(), &[counter]],
                &mut scalar,
            )?;
            if let Ok(key) = p256::ecdsa::SigningKey::from_bytes(&scalar.into()) {
                let public = key
                    .verifying_key()
                    .to_encoded_point(false)
                    .as_bytes()
                    .to_vec();
                return Ok(DerivedP256 { key, public });
            }
        }
        Err(PkiError::Crypto("deriving a P-256 scalar"))
    }

    /// The private key as PKCS#8 PEM (`PRIVATE KEY`). Call sites are the
    /// places to audit (S5).
    pub fn private_pem(&self) -> Result<KeyPem, PkiError> {
        use p256::pkcs8::EncodePrivateKey;
        let pem = p256::SecretKey::from(self.key.as_nonzero_scalar())
            .to_pkcs8_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| PkiError::Crypto("encoding a P-256 key"))?;
        Ok(KeyPem::new(pem.to_string()))
    }

    /// The public key as SubjectPublicKeyInfo PEM (`PUBLIC KEY`).
    pub fn public_pem(&self) -> Result<String, PkiError> {
        use p256::pkcs8::EncodePublicKey;
        self.key
            .verifying_key()
            .to_public_key_pem(p256::pkcs8::LineEnding::LF)
            .map_err(|_| PkiError::Crypto("encoding a P-256 public key"))
    }
}

/// S5: never the key.
impl fmt::Debug for DerivedP256 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DerivedP256(<redacted>)")
    }
}

impl PublicKeyData for CaKey {
    fn der_bytes(&self) -> &[u8] {
        match self {
            CaKey::Ed25519(k) => k.der_bytes(),
            CaKey::P256(k) => &k.public,
        }
    }

    fn algorithm(&self) -> &'static rcgen::SignatureAlgorithm {
        match self {
            CaKey::Ed25519(_) => &PKCS_ED25519,
            CaKey::P256(_) => &PKCS_ECDSA_P256_SHA256,
        }
    }
}

impl rcgen::SigningKey for CaKey {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        match self {
            CaKey::Ed25519(k) => rcgen::SigningKey::sign(k, msg),
            CaKey::P256(k) => {
                use p256::ecdsa::signature::Signer;
                let sig: p256::ecdsa::Signature = k.key.sign(msg);
                Ok(sig.to_der().as_bytes().to_vec())
            }
        }
    }
}

/// Which derived CA, and what its certificate says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Authority {
    /// etcd's peer and client TLS, and agent to agent (Ed25519).
    Cluster,
    /// The Kubernetes cluster CA (`/etc/kubernetes/pki/ca.crt`).
    Kubernetes,
    /// The aggregation layer's request-header CA (`front-proxy-ca.crt`).
    FrontProxy,
}

impl Authority {
    /// HKDF info prefix of the CA's key.
    fn label(self) -> &'static [u8] {
        match self {
            Authority::Cluster => b"cluster-ca/",
            Authority::Kubernetes => b"kubernetes-ca/",
            Authority::FrontProxy => b"front-proxy-ca/",
        }
    }

    fn common_name(self, cluster: &str) -> String {
        match self {
            Authority::Cluster => format!("muster-ca {cluster}"),
            Authority::Kubernetes => format!("kubernetes-ca {cluster}"),
            Authority::FrontProxy => format!("front-proxy-ca {cluster}"),
        }
    }
}

impl ClusterCa {
    /// Derives the CA of `cluster_name` from the cluster secret. Pure and
    /// deterministic: same inputs, byte-identical CA certificate.
    pub fn derive(cluster_name: &str, secret: &[u8]) -> Result<ClusterCa, PkiError> {
        Self::derive_authority(Authority::Cluster, cluster_name, secret)
    }

    /// Derives one of the cluster's CAs. Pure and deterministic like
    /// [`ClusterCa::derive`]; each authority has its own key (HKDF label).
    pub fn derive_authority(
        authority: Authority,
        cluster_name: &str,
        secret: &[u8],
    ) -> Result<ClusterCa, PkiError> {
        validate_cluster_name(cluster_name)?;
        if secret.len() < MIN_SECRET_LEN {
            return Err(PkiError::SecretTooShort { len: secret.len() });
        }
        let name = cluster_name.as_bytes();
        let key = match authority {
            Authority::Cluster => {
                let mut pkcs8 = Vec::with_capacity(48);
                pkcs8.extend_from_slice(&ED25519_PKCS8_PREFIX);
                pkcs8.resize(48, 0);
                hkdf_sha256(
                    secret,
                    HKDF_SALT,
                    &[authority.label(), name],
                    &mut pkcs8[16..],
                )?;
                // PrivatePkcs8KeyDer wipes its bytes on drop; rcgen keeps its own copy.
                let key = KeyPair::from_pkcs8_der_and_sign_algo(
                    &PrivatePkcs8KeyDer::from(pkcs8),
                    &PKCS_ED25519,
                )
                .map_err(|_| PkiError::Crypto("loading the derived CA key"))?;
                CaKey::Ed25519(key)
            }
            Authority::Kubernetes | Authority::FrontProxy => CaKey::P256(DerivedP256::derive(
                authority.label(),
                cluster_name,
                secret,
            )?),
        };

        let mut serial = [0u8; 16];
        let serial_label: &[u8] = match authority {
            Authority::Cluster => b"cluster-ca-serial/",
            Authority::Kubernetes => b"kubernetes-ca-serial/",
            Authority::FrontProxy => b"front-proxy-ca-serial/",
        };
        hkdf_sha256(secret, HKDF_SALT, &[serial_label, name], &mut serial)?;
        serial[0] &= 0x7f; // a positive INTEGER

        let params = ca_params(&authority.common_name(cluster_name), &serial);
        // Ed25519 and RFC 6979 ECDSA signatures are deterministic and
        // rcgen's key identifiers are SHA-256 of the public key: nothing
        // random enters the bytes.
        let cert = params
            .self_signed(&key)
            .map_err(|e| PkiError::build("cluster CA", e))?;
        Ok(ClusterCa {
            name: cluster_name.to_owned(),
            cert_pem: cert.pem(),
            cert_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        })
    }

    /// The CA's private key as PEM, for the Kubernetes CAs only (the
    /// controller-manager signs node certificates with it); `None` for the
    /// cluster CA, whose key never leaves memory.
    pub fn private_key_pem(&self) -> Result<Option<KeyPem>, PkiError> {
        match self.issuer.key() {
            CaKey::Ed25519(_) => Ok(None),
            CaKey::P256(k) => k.private_pem().map(Some),
        }
    }

    pub fn cluster_name(&self) -> &str {
        &self.name
    }

    /// The CA certificate (public), PEM.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// `sha256:<hex>` of the CA's SubjectPublicKeyInfo: the same pin format
    /// as kubeadm's `--discovery-token-ca-cert-hash`. Public; safe to log.
    pub fn spki_sha256(&self) -> String {
        let spki = self.issuer.key().subject_public_key_info();
        let hash = digest::digest(&digest::SHA256, &spki);
        let hex: String = hash.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("sha256:{hex}")
    }

    /// Issues a leaf with a fresh random ECDSA P-256 key, valid from now.
    pub fn issue(&self, spec: &LeafSpec) -> Result<IssuedCert, PkiError> {
        self.issue_at(spec, SystemTime::now())
    }

    /// [`ClusterCa::issue`] at a given time (tests, clock-skew handling).
    pub fn issue_at(&self, spec: &LeafSpec, now: SystemTime) -> Result<IssuedCert, PkiError> {
        let what = || format!("leaf {:?}", spec.common_name);
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)
            .map_err(|_| PkiError::Crypto("generating a leaf key"))?;
        let params = leaf_params(spec, OffsetDateTime::from(now))?;
        let cert = params
            .signed_by(&key, &self.issuer)
            .map_err(|e| PkiError::build(what(), e))?;
        Ok(IssuedCert {
            cert_pem: cert.pem(),
            key_pem: KeyPem::new(key.serialize_pem()),
        })
    }
}

/// S5: names the cluster and the public pin, never the key.
impl fmt::Debug for ClusterCa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterCa")
            .field("cluster_name", &self.name)
            .field("spki", &self.spki_sha256())
            .field("key", &format_args!("<redacted>"))
            .finish()
    }
}

fn validate_cluster_name(name: &str) -> Result<(), PkiError> {
    let bad = |reason| PkiError::InvalidClusterName {
        name: name.to_owned(),
        reason,
    };
    if name.is_empty() {
        return Err(bad("it is empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(bad("it is longer than 54 characters"));
    }
    let ok = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_');
    if !name.chars().all(ok) {
        return Err(bad(
            "only ASCII letters, digits, '-', '.' and '_' are allowed",
        ));
    }
    Ok(())
}

fn ca_params(common_name: &str, serial: &[u8]) -> CertificateParams {
    let (y, m, d) = CA_NOT_BEFORE;
    let (y2, m2, d2) = CA_NOT_AFTER;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, "muster");
    dn.push(DnType::CommonName, common_name);

    let mut p = CertificateParams::default();
    p.not_before = date_time_ymd(y, m, d);
    p.not_after = date_time_ymd(y2, m2, d2);
    p.serial_number = Some(SerialNumber::from_slice(serial));
    p.distinguished_name = dn;
    // pathlen 0: the CA signs leaves only, never another CA.
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn leaf_params(spec: &LeafSpec, now: OffsetDateTime) -> Result<CertificateParams, PkiError> {
    let bad = |r: &str| PkiError::InvalidIdentity(format!("leaf {:?}: {r}", spec.common_name));
    let span = |d| time::Duration::try_from(d).map_err(|_| bad("duration out of range"));
    let not_before = now
        .checked_sub(span(CLOCK_SKEW)?)
        .ok_or_else(|| bad("clock out of range"))?;
    let not_after = now
        .checked_add(span(spec.validity)?)
        .ok_or_else(|| bad("validity out of range"))?;
    let (y, m, d) = CA_NOT_AFTER;
    if not_after > date_time_ymd(y, m, d) {
        return Err(bad("validity ends after the CA's"));
    }

    let mut dn = DistinguishedName::new();
    if let Some(o) = &spec.organization {
        dn.push(DnType::OrganizationName, o.as_str());
    }
    dn.push(DnType::CommonName, spec.common_name.as_str());

    let mut sans = Vec::with_capacity(spec.sans.len());
    for san in &spec.sans {
        sans.push(match san {
            San::Dns(d) => SanType::DnsName(
                Ia5String::try_from(d.as_str()).map_err(|e| PkiError::build(san.to_string(), e))?,
            ),
            San::Ip(ip) => SanType::IpAddress(*ip),
        });
    }

    let mut p = CertificateParams::default();
    p.not_before = not_before;
    p.not_after = not_after;
    p.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
    p.distinguished_name = dn;
    p.subject_alt_names = sans;
    p.is_ca = IsCa::ExplicitNoCa;
    // ECDSA keys sign; they never encipher.
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = spec
        .usages
        .iter()
        .map(|u| match u {
            Usage::ServerAuth => ExtendedKeyUsagePurpose::ServerAuth,
            Usage::ClientAuth => ExtendedKeyUsagePurpose::ClientAuth,
        })
        .collect();
    p.use_authority_key_identifier_extension = true;
    Ok(p)
}

/// 16 random bytes, positive and with its top byte non-zero (always a
/// full-length, non-zero INTEGER, which Go's x509 insists on).
fn random_serial() -> Result<[u8; 16], PkiError> {
    let mut s = [0u8; 16];
    SystemRandom::new()
        .fill(&mut s)
        .map_err(|_| PkiError::Crypto("drawing a serial number"))?;
    s[0] = (s[0] & 0x7f) | 0x40;
    Ok(s)
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// Bytes derived from the cluster secret for `label` (a purpose) and the
/// cluster name, in the same domain as the CAs: for credentials every
/// node must compute alike (the bootstrap token).
pub fn derive_bytes(
    secret: &[u8],
    label: &[u8],
    cluster_name: &str,
    out: &mut [u8],
) -> Result<(), PkiError> {
    if secret.len() < MIN_SECRET_LEN {
        return Err(PkiError::SecretTooShort { len: secret.len() });
    }
    hkdf_sha256(secret, HKDF_SALT, &[label, cluster_name.as_bytes()], out)
}

/// HKDF-SHA256 (RFC 5869) extract-then-expand into `out`.
pub(crate) fn hkdf_sha256(
    ikm: &[u8],
    salt: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) -> Result<(), PkiError> {
    let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, salt).extract(ikm);
    prk.expand(info, Len(out.len()))
        .and_then(|okm| okm.fill(out))
        .map_err(|_| PkiError::Crypto("expanding HKDF output"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn hkdf_matches_rfc5869_case_1() {
        let ikm = [0x0b; 22];
        let salt = unhex("000102030405060708090a0b0c");
        let info = unhex("f0f1f2f3f4f5f6f7f8f9");
        let mut okm = [0u8; 42];
        // Info given in two parts: ring concatenates them.
        hkdf_sha256(&ikm, &salt, &[&info[..3], &info[3..]], &mut okm).unwrap();
        let want =
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865";
        assert_eq!(okm.to_vec(), unhex(want));
    }

    #[test]
    fn derived_key_is_the_ed25519_key_of_the_hkdf_seed() {
        let secret = [7u8; 32];
        let ca = ClusterCa::derive("prod", &secret).unwrap();
        let mut seed = [0u8; 32];
        hkdf_sha256(&secret, HKDF_SALT, &[b"cluster-ca/prod"], &mut seed).unwrap();
        let ring_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        use ring::signature::KeyPair as _;
        assert_eq!(ca.issuer.key().der_bytes(), ring_key.public_key().as_ref());
    }

    #[test]
    fn cluster_names_are_checked() {
        let s = [1u8; 32];
        for bad in ["", "a b", "ünï", &"x".repeat(55), "a/b"] {
            let err = ClusterCa::derive(bad, &s).unwrap_err();
            assert!(
                matches!(err, PkiError::InvalidClusterName { .. }),
                "{bad}: {err}"
            );
        }
        assert!(ClusterCa::derive(&"x".repeat(54), &s).is_ok());
        assert!(ClusterCa::derive("prod-eu.1_a", &s).is_ok());
    }

    #[test]
    fn serial_is_positive_and_full_length() {
        for _ in 0..64 {
            let s = random_serial().unwrap();
            assert_eq!(s[0] & 0xc0, 0x40);
        }
    }

    #[test]
    fn leaf_validity_may_not_outlive_the_ca() {
        let ca = ClusterCa::derive("prod", &[3u8; 32]).unwrap();
        let node = super::super::NodeIdentity::new("n1", []);
        let mut spec = LeafSpec::for_kind(super::super::CertKind::Client, &node).unwrap();
        spec.validity = std::time::Duration::from_secs(200 * 365 * 24 * 3600);
        let err = ca.issue(&spec).unwrap_err();
        assert!(err.to_string().contains("after the CA"), "{err}");
    }
}
