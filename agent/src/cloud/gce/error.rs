//! What can go wrong talking to the Compute Engine API. Every variant names
//! the call and its URL; API errors carry Google's status, reason and
//! message. No variant carries the access token.

use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum GceError {
    /// The API answered with an error document (`{"error": {...}}`).
    #[error(
        "gce {call} at {url}: HTTP {status}{}: {message}{}{}",
        .reason.as_deref().map(|r| format!(" {r}")).unwrap_or_default(),
        retried(*.attempts, *.elapsed),
        hint(*.status, .call)
    )]
    Api {
        call: String,
        url: String,
        status: u16,
        reason: Option<String>,
        message: String,
        attempts: u32,
        elapsed: Duration,
    },

    /// No answer (timeouts, refused or reset connections).
    #[error(
        "gce {call} at {url}: no answer after {attempts} attempts over {:.1}s ({cause})",
        .elapsed.as_secs_f64()
    )]
    Unreachable {
        call: String,
        url: String,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },

    /// The metadata server gave no usable access token.
    #[error(
        "gce: no access token from the metadata server at {url} after {attempts} attempts: {cause}"
    )]
    Token {
        url: String,
        attempts: u32,
        cause: String,
    },

    /// A 2xx answer we could not understand.
    #[error("gce {call} at {url}: cannot understand the answer: {cause}")]
    Parse {
        call: String,
        url: String,
        cause: String,
    },

    /// A long-running operation was not done in time. It may still finish.
    #[error(
        "gce {call}: operation {operation} not done after {:.1}s ({url})",
        .waited.as_secs_f64()
    )]
    Unfinished {
        call: String,
        operation: String,
        url: String,
        waited: Duration,
    },

    /// The client's own settings are unusable.
    #[error("gce client: {what}")]
    Config { what: String },
}

impl GceError {
    /// The HTTP status of an API error (404 means "no such resource").
    pub fn status(&self) -> Option<u16> {
        match self {
            GceError::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

fn retried(attempts: u32, elapsed: Duration) -> String {
    if attempts > 1 {
        format!(
            " (after {attempts} attempts over {:.1}s)",
            elapsed.as_secs_f64()
        )
    } else {
        String::new()
    }
}

fn hint(status: u16, call: &str) -> &'static str {
    let moving_alias = call.starts_with("instances.updateNetworkInterface")
        || call.starts_with("instances.aggregatedList")
        || call.starts_with("zoneOperations");
    match status {
        403 if moving_alias => {
            "; moving the VIP needs compute.instances.get, compute.instances.list and \
             compute.instances.updateNetworkInterface, compute.zoneOperations.get \
             (roles/compute.instanceAdmin.v1 holds them) and the compute or cloud-platform scope"
        }
        401 => {
            "; the access token was refused: check the instance's service account \
             (metadata server service-accounts/default/token)"
        }
        403 => {
            "; the instance's service account needs compute.instanceGroupManagers.get and \
             compute.instances.get (roles/compute.viewer) and the compute.readonly or cloud-platform scope"
        }
        _ => "",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_errors_read_well() {
        let e = GceError::Api {
            call: "instanceGroupManagers.get".into(),
            url: "https://compute.googleapis.com/compute/v1/projects/p/zones/z/instanceGroupManagers/m".into(),
            status: 403,
            reason: Some("forbidden".into()),
            message: "Required 'compute.instanceGroupManagers.get' permission".into(),
            attempts: 1,
            elapsed: Duration::ZERO,
        };
        let text = e.to_string();
        assert!(
            text.starts_with("gce instanceGroupManagers.get at https://compute.googleapis.com/"),
            "{text}"
        );
        assert!(
            text.contains(
                "HTTP 403 forbidden: Required 'compute.instanceGroupManagers.get' permission"
            ),
            "{text}"
        );
        assert!(text.contains("roles/compute.viewer"), "{text}");
        assert_eq!(e.status(), Some(403));
    }
}
