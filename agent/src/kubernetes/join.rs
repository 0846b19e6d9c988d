//! A worker that holds only a join credential (`cluster.join`: the
//! bootstrap token and the pin of the Kubernetes CA) learns the CA from the
//! API server itself, the way kubeadm's token discovery does, but without
//! sending anything to a server it has not checked: the apiserver serves
//! its certificate chain with the CA in it, and the TLS handshake is
//! accepted only if a certificate of the chain has the pinned public key
//! and signs the server's certificate for the endpoint's name. Only then
//! is the token shown, to check the API accepts it.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ring::digest;
use rustls::DigitallySignedStruct;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{CryptoProvider, verify_tls12_signature, verify_tls13_signature};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use webpki::{EndEntityCert, KeyUsage};

use super::token::BootstrapToken;

const TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum JoinError {
    #[error("cluster.join: {endpoint}: {message}")]
    Unreachable { endpoint: String, message: String },
    #[error(
        "cluster.join.caPin: the API server at {endpoint} shows no CA with the pinned key {pin} (a wrong pin, or not this cluster's API)"
    )]
    PinMismatch { endpoint: String, pin: String },
    #[error(
        "cluster.join.token: the API server at {endpoint} refused the join token (HTTP {status}): it is not this cluster's bootstrap token"
    )]
    TokenRefused { endpoint: String, status: u16 },
}

/// `sha256:<hex>` of a certificate's SubjectPublicKeyInfo (kubeadm's pin).
pub fn spki_pin(cert_der: &[u8]) -> Option<String> {
    use x509_parser::prelude::FromDer;
    let (_, cert) = x509_parser::certificate::X509Certificate::from_der(cert_der).ok()?;
    let hash = digest::digest(&digest::SHA256, cert.tbs_certificate.subject_pki.raw);
    Some(format!(
        "sha256:{}",
        hash.as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    ))
}

/// Accepts a server only through the certificate of its chain that has
/// the pinned key; remembers that certificate (the CA).
#[derive(Debug)]
struct PinnedChain {
    pin: String,
    provider: Arc<CryptoProvider>,
    found: Arc<Mutex<Option<Vec<u8>>>>,
}

static SIG_ALGS: &[&dyn rustls::pki_types::SignatureVerificationAlgorithm] = &[
    webpki::ring::ECDSA_P256_SHA256,
    webpki::ring::ECDSA_P384_SHA384,
    webpki::ring::ED25519,
    webpki::ring::RSA_PKCS1_2048_8192_SHA256,
];

impl ServerCertVerifier for PinnedChain {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        _ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let ca = intermediates
            .iter()
            .find(|c| spki_pin(c).as_deref() == Some(self.pin.as_str()))
            .ok_or_else(|| rustls::Error::General("no certificate with the pinned key".into()))?;
        let anchor = webpki::anchor_from_trusted_cert(ca)
            .map_err(|e| rustls::Error::General(format!("pinned CA: {e}")))?;
        let ee = EndEntityCert::try_from(end_entity)
            .map_err(|e| rustls::Error::General(format!("server certificate: {e}")))?;
        ee.verify_for_usage(
            SIG_ALGS,
            &[anchor],
            &[],
            now,
            KeyUsage::server_auth(),
            None,
            None,
        )
        .map_err(|e| {
            rustls::Error::General(format!("server certificate under the pinned CA: {e:?}"))
        })?;
        ee.verify_is_valid_for_subject_name(server_name)
            .map_err(|e| rustls::Error::General(format!("server name: {e:?}")))?;
        if let Ok(mut found) = self.found.lock() {
            *found = Some(ca.as_ref().to_vec());
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The Kubernetes CA (PEM) of the API at `endpoint` (`https://HOST:PORT`),
/// trusted through `pin`; then the token is checked against the API.
pub async fn discover_ca(
    endpoint: &str,
    pin: &str,
    token: &BootstrapToken,
) -> Result<String, JoinError> {
    crate::http::install_crypto_provider();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let found = Arc::new(Mutex::new(None));
    let unreachable = |message: String| JoinError::Unreachable {
        endpoint: endpoint.to_string(),
        message,
    };
    let tls = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| unreachable(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(PinnedChain {
            pin: pin.to_string(),
            provider,
            found: found.clone(),
        }))
        .with_no_client_auth();
    let client = reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .timeout(TIMEOUT)
        .no_proxy()
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let url = format!("{endpoint}/api");
    let answer = client.get(&url).bearer_auth(token.bearer()).send().await;
    let ca = found.lock().ok().and_then(|f| f.clone());
    let answer = match (answer, ca.as_ref()) {
        (Ok(a), Some(_)) => a,
        (Err(_), None) => {
            return Err(JoinError::PinMismatch {
                endpoint: endpoint.to_string(),
                pin: pin.to_string(),
            });
        }
        (Err(e), Some(_)) => return Err(unreachable(crate::http::describe(&e, TIMEOUT))),
        (Ok(_), None) => return Err(unreachable("no certificate was checked".into())),
    };
    let status = answer.status().as_u16();
    if status == 401 || status == 403 {
        return Err(JoinError::TokenRefused {
            endpoint: endpoint.to_string(),
            status,
        });
    }
    let der = ca.unwrap_or_default();
    Ok(pem(&der))
}

fn pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = String::from("-----BEGIN CERTIFICATE-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{Authority, ClusterCa};

    #[test]
    fn the_pin_of_a_ca_certificate_is_the_one_the_ca_reports() {
        let ca =
            ClusterCa::derive_authority(Authority::Kubernetes, "prod", &[7u8; 32]).expect("ca");
        assert_eq!(spki_pin(ca.cert_der()), Some(ca.spki_sha256()));
        let text = pem(ca.cert_der());
        assert_eq!(text.trim(), ca.cert_pem().trim());
    }
}
