//! What can go wrong talking to AWS. Every variant names the service, the
//! action and the endpoint, and API errors carry AWS's own code, message and
//! request id, so an operator can act on the message (or open a support case)
//! without a debugger. No variant carries credentials.

use std::time::Duration;

/// An error document from AWS, with the call it answered.
#[derive(Debug, thiserror::Error)]
#[error(
    "aws {service} {action} at {endpoint}: {code}: {message} (HTTP {status}{}{}){}",
    .request_id.as_deref().map(|id| format!(", request id {id}")).unwrap_or_default(),
    retried(*.attempts, *.elapsed),
    hint(.code, .service, .action)
)]
pub struct ApiError {
    pub service: &'static str,
    pub action: String,
    pub endpoint: String,
    pub status: u16,
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
    pub attempts: u32,
    pub elapsed: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AwsError {
    /// AWS answered with an error document (`<Error><Code>…`). Boxed: it is
    /// the largest variant and errors travel by value.
    #[error(transparent)]
    Api(Box<ApiError>),

    /// An HTTP error without an AWS error document (a proxy, a load balancer).
    #[error("aws {service} {action} at {endpoint}: HTTP {status}{}: {body}", retried(*.attempts, *.elapsed))]
    Http {
        service: &'static str,
        action: String,
        endpoint: String,
        status: u16,
        body: String,
        attempts: u32,
        elapsed: Duration,
    },

    /// No answer at all (timeouts, refused or reset connections).
    #[error(
        "aws {service} {action} at {endpoint}: no answer after {attempts} attempts over {:.1}s ({cause})",
        .elapsed.as_secs_f64()
    )]
    Unreachable {
        service: &'static str,
        action: String,
        endpoint: String,
        attempts: u32,
        elapsed: Duration,
        cause: String,
    },

    /// A 2xx answer we could not understand.
    #[error("aws {service} {action} at {endpoint}: cannot understand the answer: {cause}")]
    Parse {
        service: &'static str,
        action: String,
        endpoint: String,
        cause: String,
    },

    /// The request could not be signed (bad region or endpoint).
    #[error("aws {service} {action}: cannot sign the request: {cause}")]
    Signing {
        service: &'static str,
        action: String,
        cause: String,
    },

    /// No usable credentials.
    #[error("aws credentials: {what}")]
    Credentials { what: String },

    /// The client's own settings are unusable (region, endpoint).
    #[error("aws client: {what}")]
    Config { what: String },
}

impl AwsError {
    /// AWS's error code, for callers that react to specific codes.
    pub fn code(&self) -> Option<&str> {
        match self {
            AwsError::Api(e) => Some(&e.code),
            _ => None,
        }
    }
}

fn retried(attempts: u32, elapsed: Duration) -> String {
    if attempts > 1 {
        format!(
            ", after {attempts} attempts over {:.1}s",
            elapsed.as_secs_f64()
        )
    } else {
        String::new()
    }
}

/// What the operator should look at for the common permanent codes.
fn hint(code: &str, service: &str, action: &str) -> String {
    let text = match code {
        "InvalidClientTokenId" | "UnrecognizedClientException" | "AuthFailure" | "InvalidAccessKeyId"
        | "SignatureDoesNotMatch" | "IncompleteSignature" | "MissingAuthenticationToken" => {
            "check the credentials (instance role, or AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN) and the region"
                .to_string()
        }
        "ExpiredToken" | "ExpiredTokenException" | "RequestExpired" => {
            "the credentials expired or the clock is off: refresh the instance-role credentials and check time sync"
                .to_string()
        }
        "AccessDenied" | "AccessDeniedException" | "UnauthorizedOperation" => {
            format!("the role needs the IAM permission {service}:{action}")
        }
        "OptInRequired" => "the account is not subscribed to this service in this region".to_string(),
        _ => return String::new(),
    };
    format!("; {text}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(code: &str, attempts: u32) -> AwsError {
        AwsError::Api(Box::new(ApiError {
            service: "autoscaling",
            action: "DescribeAutoScalingGroups".into(),
            endpoint: "https://autoscaling.eu-west-1.amazonaws.com/".into(),
            status: 403,
            code: code.into(),
            message: "User: arn:aws:sts::123456789012:assumed-role/node/i-0abc is not authorized"
                .into(),
            request_id: Some("7c6e177f".into()),
            attempts,
            elapsed: Duration::from_millis(1500),
        }))
    }

    #[test]
    fn api_errors_name_everything_the_operator_needs() {
        let e = api("AccessDenied", 1).to_string();
        assert_eq!(
            e,
            "aws autoscaling DescribeAutoScalingGroups at https://autoscaling.eu-west-1.amazonaws.com/: \
             AccessDenied: User: arn:aws:sts::123456789012:assumed-role/node/i-0abc is not authorized \
             (HTTP 403, request id 7c6e177f); the role needs the IAM permission autoscaling:DescribeAutoScalingGroups"
        );
        let e = api("Throttling", 4).to_string();
        assert!(e.contains("after 4 attempts over 1.5s"), "{e}");
        assert!(
            api("InvalidClientTokenId", 1)
                .to_string()
                .contains("check the credentials")
        );
        assert_eq!(api("Throttling", 1).code(), Some("Throttling"));
    }
}
