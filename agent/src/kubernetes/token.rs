//! The cluster's bootstrap token, derived from the cluster secret like the
//! CAs: every control-plane node computes the same one, so no node has to
//! create it and hand it out, and it never expires (kubeadm's 24 h default
//! breaks scale-outs a day later). Workers present it for kubelet TLS
//! bootstrap; its id is public, its secret half a credential (S5).

use std::fmt;

use crate::pki::{PkiError, derive_bytes};

/// `[a-z0-9]{6}.[a-z0-9]{16}`, as Kubernetes requires.
#[derive(Clone, PartialEq, Eq)]
pub struct BootstrapToken {
    id: String,
    secret: String,
}

const ALPHABET: &[u8; 36] = b"abcdefghijklmnopqrstuvwxyz0123456789";

impl BootstrapToken {
    pub fn derive(cluster_name: &str, cluster_secret: &[u8]) -> Result<BootstrapToken, PkiError> {
        // Rejection sampling: bytes >= 252 (7 * 36) would bias the
        // alphabet's first letters; 128 bytes leave a wide margin for 22
        // characters (each byte is kept with probability 252/256).
        let mut bytes = [0u8; 128];
        derive_bytes(
            cluster_secret,
            b"bootstrap-token/",
            cluster_name,
            &mut bytes,
        )?;
        let chars: String = bytes
            .iter()
            .filter(|b| **b < 252)
            .map(|b| char::from(ALPHABET[usize::from(*b % 36)]))
            .take(22)
            .collect();
        if chars.len() < 22 {
            return Err(PkiError::Crypto("deriving the bootstrap token"));
        }
        Ok(BootstrapToken {
            id: chars[..6].to_string(),
            secret: chars[6..].to_string(),
        })
    }

    /// Parses `id.secret` (the worker-only config's join credential).
    pub fn parse(text: &str) -> Option<BootstrapToken> {
        let (id, secret) = text.split_once('.')?;
        let ok = |s: &str, n| s.len() == n && s.bytes().all(|b| ALPHABET.contains(&b));
        (ok(id, 6) && ok(secret, 16)).then(|| BootstrapToken {
            id: id.into(),
            secret: secret.into(),
        })
    }

    /// The public half: names the Secret `bootstrap-token-<id>`.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The secret half. Call sites are the places to audit.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    /// `id.secret`, the bearer token.
    pub fn bearer(&self) -> String {
        format!("{}.{}", self.id, self.secret)
    }
}

/// S5: the id only.
impl fmt::Debug for BootstrapToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "BootstrapToken({}.<redacted>)", self.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn derived_tokens_have_kubernetes_format_and_differ_per_cluster() {
        let a = BootstrapToken::derive("prod", SECRET).expect("token");
        assert_eq!(a, BootstrapToken::derive("prod", SECRET).expect("token"));
        assert_ne!(a, BootstrapToken::derive("prod2", SECRET).expect("token"));
        let bearer = a.bearer();
        assert_eq!(BootstrapToken::parse(&bearer), Some(a.clone()));
        assert_eq!(a.id().len(), 6);
        assert_eq!(a.secret().len(), 16);
        assert!(!format!("{a:?}").contains(a.secret()));
        for bad in [
            "abc.0123456789abcdef",
            "abcdef.0123456789ABCDEF",
            "abcdef0123456789abcdef",
        ] {
            assert_eq!(BootstrapToken::parse(bad), None, "{bad}");
        }
    }
}
