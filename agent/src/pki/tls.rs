//! rustls configurations with mutual TLS under the cluster CA, for
//! agent-to-agent (and agent-to-etcd) connections. ring provider only.

use std::path::Path;
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};

use super::error::PkiError;
use super::leaf::{CertKind, KeyPem};
use super::store::{CA_FILE, cert_paths};

/// A server that accepts only clients with a certificate from the CA in
/// `dir`, presenting `kind`'s certificate.
pub fn server_config(dir: &Path, kind: CertKind) -> Result<ServerConfig, PkiError> {
    let (ca, cert, key) = load(dir, kind)?;
    server_config_from_pem(&ca, &cert, &key)
}

/// A client that trusts only the CA in `dir` and presents `kind`'s
/// certificate.
pub fn client_config(dir: &Path, kind: CertKind) -> Result<ClientConfig, PkiError> {
    let (ca, cert, key) = load(dir, kind)?;
    client_config_from_pem(&ca, &cert, &key)
}

pub fn server_config_from_pem(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &KeyPem,
) -> Result<ServerConfig, PkiError> {
    let provider = provider();
    let roots = Arc::new(roots(ca_pem)?);
    let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
        .build()
        .map_err(|e| PkiError::Tls(rustls::Error::General(format!("client verifier: {e}"))))?;
    Ok(ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(certs(cert_pem)?, key(key_pem)?)?)
}

pub fn client_config_from_pem(
    ca_pem: &str,
    cert_pem: &str,
    key_pem: &KeyPem,
) -> Result<ClientConfig, PkiError> {
    Ok(ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots(ca_pem)?)
        .with_client_auth_cert(certs(cert_pem)?, key(key_pem)?)?)
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn load(dir: &Path, kind: CertKind) -> Result<(String, String, KeyPem), PkiError> {
    let read = |p: &Path| {
        std::fs::read_to_string(p).map_err(|e| PkiError::io("reading", p.to_path_buf(), e))
    };
    let (cert, key) = cert_paths(dir, kind);
    Ok((
        read(&dir.join(CA_FILE))?,
        read(&cert)?,
        KeyPem::new(read(&key)?),
    ))
}

fn bad(what: &'static str, reason: impl std::fmt::Display) -> PkiError {
    PkiError::Pem {
        what,
        reason: reason.to_string(),
    }
}

fn roots(ca_pem: &str) -> Result<RootCertStore, PkiError> {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        let cert = cert.map_err(|e| bad("CA certificate", e))?;
        roots.add(cert)?;
    }
    if roots.is_empty() {
        return Err(bad("CA certificate", "no certificate in the PEM"));
    }
    Ok(roots)
}

fn certs(cert_pem: &str) -> Result<Vec<CertificateDer<'static>>, PkiError> {
    let chain = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| bad("certificate", e))?;
    if chain.is_empty() {
        return Err(bad("certificate", "no certificate in the PEM"));
    }
    Ok(chain)
}

/// A fixed message: a PEM error may quote a line, and this is a key (S5).
fn key(key_pem: &KeyPem) -> Result<PrivateKeyDer<'static>, PkiError> {
    PrivateKeyDer::from_pem_slice(key_pem.expose().as_bytes()).map_err(|e| {
        let reason = match e {
            rustls::pki_types::pem::Error::NoItemsFound => "no private key in the PEM",
            _ => "malformed PEM",
        };
        bad("private key", reason)
    })
}
