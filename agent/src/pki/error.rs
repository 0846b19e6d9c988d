//! The one error type of the pki module.
//!
//! S5: no variant carries secret or key bytes. Errors from rcgen, ring,
//! webpki and rustls describe *what* failed (an ASN.1 string, a signature
//! algorithm), never the key or the cluster secret, so wrapping them is safe.

use std::io;
use std::path::PathBuf;

use super::ca::MIN_SECRET_LEN;

#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Shows only the length: the value itself must never reach a log.
    #[error(
        "cluster secret is too short: {len} bytes, need at least {MIN_SECRET_LEN} \
         random bytes (for example `openssl rand -base64 32`); the value is not shown"
    )]
    SecretTooShort { len: usize },

    #[error("invalid cluster name {name:?} for the cluster CA: {reason}")]
    InvalidClusterName { name: String, reason: &'static str },

    #[error("invalid node identity: {0}")]
    InvalidIdentity(String),

    /// A ring primitive refused its input (HKDF length, PKCS#8, randomness).
    #[error("crypto failure while {0}")]
    Crypto(&'static str),

    #[error("building the {what} certificate: {source}")]
    Build {
        what: String,
        #[source]
        source: rcgen::Error,
    },

    #[error("{op} {}: {source}", path.display())]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// PEM that must hold a certificate or key does not.
    #[error("{what}: {reason}")]
    Pem { what: &'static str, reason: String },

    #[error("building the TLS configuration: {0}")]
    Tls(#[from] rustls::Error),
}

impl PkiError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>, source: io::Error) -> Self {
        PkiError::Io {
            op,
            path: path.into(),
            source,
        }
    }

    pub(crate) fn build(what: impl Into<String>, source: rcgen::Error) -> Self {
        PkiError::Build {
            what: what.into(),
            source,
        }
    }
}
