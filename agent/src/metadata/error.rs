//! What can go wrong while identifying the machine. Every variant names the
//! provider and where it looked (URL or path), so an operator can act on the
//! message alone. No variant ever carries user data (it may hold the cluster
//! secret): parse errors describe *where* input is wrong, never echo it.

use std::path::PathBuf;
use std::time::Duration;

use super::ProviderKind;

#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// Transient faults (timeouts, refused or dropped connections, 5xx) until
    /// the retry budget ran out.
    #[error(
        "{provider} metadata at {url}: no answer after {attempts} attempts over {:.1}s ({cause})",
        .elapsed.as_secs_f64()
    )]
    Unreachable {
        provider: ProviderKind,
        url: String,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },

    /// A permanent HTTP failure: 403, an unexpected status, an oversized body.
    #[error("{provider} metadata at {url}: {cause}")]
    Http {
        provider: ProviderKind,
        url: String,
        cause: String,
    },

    /// AWS refused the IMDSv2 token and IMDSv1 is not allowed.
    #[error(
        "aws metadata at {url}: IMDSv2 was refused ({cause}) and IMDSv1 is disabled; \
         require IMDSv2 on the instance (metadata option http-tokens) or allow IMDSv1 explicitly"
    )]
    Imdsv2Refused { url: String, cause: String },

    /// Something answered, but it is not the provider we asked for.
    #[error("{provider} metadata at {url}: the answer is not from {provider} ({why})")]
    WrongService {
        provider: ProviderKind,
        url: String,
        why: String,
    },

    /// A response or file could not be understood.
    #[error("{provider} metadata in {origin}: {cause}")]
    Parse {
        provider: ProviderKind,
        origin: String,
        cause: String,
    },

    /// A file the provider needs could not be read.
    #[error("{provider} metadata: cannot read {}: {cause}", .path.display())]
    Read {
        provider: ProviderKind,
        path: PathBuf,
        #[source]
        cause: std::io::Error,
    },

    /// The provider lacks a setting it cannot work without.
    #[error("{provider} metadata: {what}")]
    NotConfigured {
        provider: ProviderKind,
        what: String,
    },

    /// `muster.platform=` names no provider we know.
    #[error(
        "muster.platform={value:?} on the kernel command line is not a known provider \
         (one of: aws, gce, azure, openstack, nocloud, qemu, metal, file)"
    )]
    UnknownPlatform { value: String },

    /// Detection found nothing within its time budget.
    #[error("no metadata source found after {:.1}s; looked for: {}", .elapsed.as_secs_f64(), .tried.join("; "))]
    NotDetected {
        tried: Vec<String>,
        elapsed: Duration,
    },
}

impl MetadataError {
    /// The provider the error is about, when there is one.
    pub fn provider(&self) -> Option<ProviderKind> {
        match self {
            MetadataError::Unreachable { provider, .. }
            | MetadataError::Http { provider, .. }
            | MetadataError::WrongService { provider, .. }
            | MetadataError::Parse { provider, .. }
            | MetadataError::Read { provider, .. }
            | MetadataError::NotConfigured { provider, .. } => Some(*provider),
            MetadataError::Imdsv2Refused { .. } => Some(ProviderKind::Aws),
            MetadataError::UnknownPlatform { .. } | MetadataError::NotDetected { .. } => None,
        }
    }

    pub(crate) fn parse(
        provider: ProviderKind,
        origin: impl Into<String>,
        cause: impl Into<String>,
    ) -> Self {
        MetadataError::Parse {
            provider,
            origin: origin.into(),
            cause: cause.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_reads_like_the_operator_needs() {
        let e = MetadataError::Unreachable {
            provider: ProviderKind::Aws,
            url: "http://127.0.0.1:1234/latest/api/token".into(),
            attempts: 5,
            elapsed: Duration::from_millis(12_340),
            cause: "connection refused".into(),
        };
        assert_eq!(
            e.to_string(),
            "aws metadata at http://127.0.0.1:1234/latest/api/token: \
             no answer after 5 attempts over 12.3s (connection refused)"
        );
        assert_eq!(e.provider(), Some(ProviderKind::Aws));
    }

    #[test]
    fn not_detected_lists_what_was_tried() {
        let e = MetadataError::NotDetected {
            tried: vec!["a".into(), "b".into()],
            elapsed: Duration::from_secs(2),
        };
        assert_eq!(
            e.to_string(),
            "no metadata source found after 2.0s; looked for: a; b"
        );
        assert_eq!(e.provider(), None);
    }
}
