//! The Query API call: form-encode, sign, send, retry, classify.
//!
//! Transient (retried with `crate::retry`): no answer (timeouts, refused or
//! reset connections), 5xx, 429, and AWS's throttling and internal-error
//! codes even when they come with a 400. Everything else (bad credentials,
//! access denied, validation errors) fails at once: retrying cannot fix it.

use std::time::SystemTime;

use aws_sigv4::http_request::{
    PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
    UriPathNormalizationMode, sign,
};
use aws_sigv4::sign::v4;
use tracing::Instrument;
use url::Url;

use super::{ApiError, AwsClient, AwsError, Service, xml};
use crate::cloud::http::{self, Reply, TransportError};
use crate::retry;

const CONTENT_TYPE: &str = "application/x-www-form-urlencoded; charset=utf-8";

/// How one attempt failed.
#[derive(Debug)]
enum Fault {
    Transport(TransportError),
    Api { status: u16, body: xml::ErrorBody },
    Http { status: u16, body: String },
    Signing(String),
}

impl Fault {
    fn is_transient(&self) -> bool {
        match self {
            Fault::Transport(t) => t.transient,
            Fault::Api { status, body } => {
                *status >= 500 || *status == 429 || is_transient_code(&body.code)
            }
            Fault::Http { status, .. } => *status >= 500 || *status == 429,
            Fault::Signing(_) => false,
        }
    }
}

/// Throttling and internal-error codes (the set the AWS SDKs retry).
pub(crate) fn is_transient_code(code: &str) -> bool {
    matches!(
        code,
        "Throttling"
            | "ThrottlingException"
            | "ThrottledException"
            | "RequestThrottledException"
            | "RequestThrottled"
            | "TooManyRequestsException"
            | "ProvisionedThroughputExceededException"
            | "TransactionInProgressException"
            | "RequestLimitExceeded"
            | "BandwidthLimitExceeded"
            | "SlowDown"
            | "PriorRequestNotComplete"
            | "EC2ThrottledException"
            | "InternalError"
            | "InternalFailure"
            | "ServiceUnavailable"
            | "Unavailable"
            | "RequestTimeout"
            | "RequestTimeoutException"
    )
}

/// The form body: `Action`, `Version`, then the parameters in order.
pub(crate) fn form_body(service: &Service, action: &str, params: &[(String, String)]) -> String {
    let mut form = url::form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action)
        .append_pair("Version", service.api_version);
    for (k, v) in params {
        form.append_pair(k, v);
    }
    form.finish()
}

impl AwsClient {
    /// Calls `action` on `service` with Query API `params` and returns the
    /// XML answer of a successful call. Retries transient faults within the
    /// client's backoff budget.
    pub async fn query(
        &self,
        service: &Service,
        action: &str,
        params: &[(String, String)],
    ) -> Result<String, AwsError> {
        let endpoint = self.endpoint(service);
        let body = form_body(service, action, params);
        let request = Request {
            method: "POST",
            url: endpoint,
            content_type: Some(CONTENT_TYPE),
            body: body.into(),
            region: None,
        };
        let reply = self.call(service, action, &request).await?;
        utf8(reply, service, action, &request.url)
    }

    /// A REST call (Route 53): `method` on `path_and_query` below the
    /// service's endpoint, with an XML `body` (empty for reads). `action`
    /// names the call in errors and logs.
    pub async fn rest(
        &self,
        service: &Service,
        action: &str,
        method: &'static str,
        path_and_query: &str,
        body: String,
    ) -> Result<String, AwsError> {
        let base = self.endpoint(service);
        let url = base
            .join(path_and_query.trim_start_matches('/'))
            .map_err(|e| AwsError::Config {
                what: format!("{base}{path_and_query}: {e}"),
            })?;
        let request = Request {
            method,
            url,
            content_type: (!body.is_empty()).then_some("application/xml"),
            body: body.into(),
            region: None,
        };
        let reply = self.call(service, action, &request).await?;
        utf8(reply, service, action, &request.url)
    }

    /// An S3 call: `method` on `url` (from [`super::s3::object_url`]) with
    /// a binary `body`, signed for the bucket's `region`; returns the
    /// answer's bytes. `action` names the call in errors and logs.
    pub(crate) async fn object_in(
        &self,
        region: &str,
        action: &str,
        method: &'static str,
        url: Url,
        body: bytes::Bytes,
    ) -> Result<Vec<u8>, AwsError> {
        let request = Request {
            method,
            url,
            content_type: (!body.is_empty()).then_some("application/octet-stream"),
            body,
            region: Some(region.to_string()),
        };
        self.call(&super::S3, action, &request).await
    }

    /// Signs, sends and retries `request`; classifies the final failure.
    async fn call(
        &self,
        service: &Service,
        action: &str,
        request: &Request,
    ) -> Result<Vec<u8>, AwsError> {
        let endpoint = &request.url;
        let span = tracing::debug_span!("aws", service = service.endpoint_prefix, action, endpoint = %endpoint);
        async {
            let outcome = retry::retry(
                self.opts.backoff,
                Fault::is_transient,
                |attempt| async move {
                    if attempt > 0 {
                        tracing::debug!(attempt, "retrying");
                    }
                    self.attempt(service, request).await
                },
            )
            .await;
            let gave_up = match outcome {
                Ok(reply) => return Ok(reply.body),
                Err(gave_up) => gave_up,
            };
            let (service, action, endpoint) = (
                service.endpoint_prefix,
                action.to_string(),
                endpoint.to_string(),
            );
            let (attempts, elapsed) = (gave_up.attempts, gave_up.elapsed);
            let err = match gave_up.last {
                Fault::Transport(t) => AwsError::Unreachable {
                    service,
                    action,
                    endpoint,
                    attempts,
                    elapsed,
                    cause: t.cause,
                },
                Fault::Api { status, body } => AwsError::Api(Box::new(ApiError {
                    service,
                    action,
                    endpoint,
                    status,
                    code: body.code,
                    message: body.message,
                    request_id: body.request_id,
                    attempts,
                    elapsed,
                })),
                Fault::Http { status, body } => AwsError::Http {
                    service,
                    action,
                    endpoint,
                    status,
                    body,
                    attempts,
                    elapsed,
                },
                Fault::Signing(cause) => AwsError::Signing {
                    service,
                    action,
                    cause,
                },
            };
            tracing::debug!(error = %err, "aws call failed");
            Err(err)
        }
        .instrument(span)
        .await
    }

    /// One signed attempt. Signed afresh each time: the signature covers the time.
    async fn attempt(&self, service: &Service, r: &Request) -> Result<Reply, Fault> {
        let credentials = self.credentials();
        let signed = sign_headers(
            &credentials,
            service,
            r.region
                .as_deref()
                .or(service.signing_region)
                .unwrap_or(&self.opts.region),
            r,
            SystemTime::now(),
        )
        .map_err(Fault::Signing)?;
        let method = reqwest::Method::from_bytes(r.method.as_bytes())
            .map_err(|e| Fault::Signing(format!("method {}: {e}", r.method)))?;
        let mut request = self
            .http
            .request(method, r.url.clone())
            .body(r.body.clone());
        if let Some(ct) = r.content_type {
            request = request.header("content-type", ct);
        }
        for (name, value) in signed {
            request = request.header(name, value);
        }
        let reply = http::send(request, self.opts.request_timeout)
            .await
            .map_err(Fault::Transport)?;
        if reply.status.is_success() {
            return Ok(reply);
        }
        let status = reply.status.as_u16();
        let text = String::from_utf8_lossy(&reply.body);
        Err(match xml::parse_error_response(&text) {
            Some(body) => Fault::Api { status, body },
            None => Fault::Http {
                status,
                body: http::snippet(&reply.body, 200),
            },
        })
    }
}

/// S3 signs its payload's hash into `x-amz-content-sha256` and its paths
/// as they are (no normalisation, no double encoding); the other services
/// take SigV4's defaults.
fn signing_settings(service: &Service) -> SigningSettings {
    let mut settings = SigningSettings::default();
    if service.object_store {
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    settings
}

/// The SigV4 headers (`authorization`, `x-amz-date`, `x-amz-security-token`)
/// for a form POST to `endpoint`. The host (with any non-default port) is
/// taken from the URL, as reqwest will send it.
/// One HTTP request to sign and send.
pub(crate) struct Request {
    pub method: &'static str,
    pub url: Url,
    pub content_type: Option<&'static str>,
    /// Cheap to clone: each retry sends it again.
    pub body: bytes::Bytes,
    /// The region to sign for when not the service's or the client's (an
    /// S3 bucket's own).
    pub region: Option<String>,
}

/// A text answer (the Query and REST APIs answer XML).
fn utf8(body: Vec<u8>, service: &Service, action: &str, url: &Url) -> Result<String, AwsError> {
    String::from_utf8(body).map_err(|_| AwsError::Parse {
        service: service.endpoint_prefix,
        action: action.to_string(),
        endpoint: url.to_string(),
        cause: "the answer is not UTF-8".into(),
    })
}

pub(crate) fn sign_headers(
    credentials: &super::Credentials,
    service: &Service,
    region: &str,
    r: &Request,
    time: SystemTime,
) -> Result<Vec<(&'static str, String)>, String> {
    let identity = credentials.to_sdk().into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service.signing_name)
        .time(time)
        .settings(signing_settings(service))
        .build()
        .map_err(|e| e.to_string())?
        .into();
    let headers = r.content_type.map(|ct| ("content-type", ct));
    let request = SignableRequest::new(
        r.method,
        r.url.as_str(),
        headers.into_iter(),
        SignableBody::Bytes(&r.body),
    )
    .map_err(|e| e.to_string())?;
    let (instructions, _signature) = sign(request, &params)
        .map_err(|e| e.to_string())?
        .into_parts();
    let (headers, _query) = instructions.into_parts();
    Ok(headers
        .into_iter()
        .map(|h| (h.name(), h.value().to_string()))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cloud::aws::{AUTOSCALING, Credentials, EC2};
    use std::time::Duration;

    #[test]
    fn forms_are_encoded_in_order() {
        let params = vec![
            (
                "AutoScalingGroupNames.member.1".to_string(),
                "my asg&co".to_string(),
            ),
            ("NextToken".to_string(), "a+b/c=".to_string()),
        ];
        assert_eq!(
            form_body(&AUTOSCALING, "DescribeAutoScalingGroups", &params),
            "Action=DescribeAutoScalingGroups&Version=2011-01-01\
             &AutoScalingGroupNames.member.1=my+asg%26co&NextToken=a%2Bb%2Fc%3D"
        );
    }

    #[test]
    fn throttling_is_transient_auth_is_not() {
        let api = |status, code: &str| Fault::Api {
            status,
            body: xml::ErrorBody {
                code: code.into(),
                message: String::new(),
                request_id: None,
            },
        };
        assert!(api(400, "Throttling").is_transient());
        assert!(api(503, "RequestLimitExceeded").is_transient());
        assert!(api(500, "ResourceContention").is_transient());
        assert!(!api(403, "InvalidClientTokenId").is_transient());
        assert!(!api(400, "ValidationError").is_transient());
        assert!(!api(401, "AuthFailure").is_transient());
        assert!(
            Fault::Http {
                status: 502,
                body: String::new()
            }
            .is_transient()
        );
        assert!(
            !Fault::Http {
                status: 404,
                body: String::new()
            }
            .is_transient()
        );
        assert!(!Fault::Signing(String::new()).is_transient());
    }

    #[test]
    fn signing_matches_the_sigv4_scope_and_carries_the_session_token() {
        // 2015-08-30T12:36:00Z, the date of AWS's SigV4 test suite.
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let creds = Credentials::new(
            "AKIDEXAMPLE",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            Some("SESSION".into()),
        );
        let request = Request {
            method: "POST",
            url: Url::parse("http://127.0.0.1:5000/").expect("url"),
            content_type: Some(CONTENT_TYPE),
            body: "Action=DescribeInstances".into(),
            region: None,
        };
        let headers = sign_headers(&creds, &EC2, "us-east-1", &request, time).expect("signs");
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.as_str())
        };
        assert_eq!(get("x-amz-date"), Some("20150830T123600Z"));
        assert_eq!(get("x-amz-security-token"), Some("SESSION"));
        let auth = get("authorization").expect("authorization header");
        assert!(
            auth.starts_with(
                "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ec2/aws4_request, "
            ),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        // The same request signed by botocore's SigV4Auth (the reference the
        // AWS CLI uses), host with its port included.
        assert!(
            auth.ends_with(
                "Signature=8b39fbd26389d7ab2c5255b1795dd8456eafd4c4ad4a91ab235bacaba046143d"
            ),
            "{auth}"
        );
        assert!(!auth.contains("wJalr"));
    }

    #[test]
    fn s3_signs_the_payload_hash_into_its_own_header() {
        let time = SystemTime::UNIX_EPOCH + Duration::from_secs(1_440_938_160);
        let creds = Credentials::new("AKIDEXAMPLE", "secret", None);
        let request = Request {
            method: "PUT",
            url: Url::parse("http://127.0.0.1:5000/bucket/a%20b/c.db").expect("url"),
            content_type: Some("application/octet-stream"),
            body: bytes::Bytes::from_static(b"snapshot"),
            region: None,
        };
        let headers = sign_headers(&creds, &crate::cloud::aws::S3, "eu-west-1", &request, time)
            .expect("signs");
        let get = |n: &str| {
            headers
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| v.clone())
        };
        let hash = get("x-amz-content-sha256").expect("payload hash header");
        let expected: String = ring::digest::digest(&ring::digest::SHA256, b"snapshot")
            .as_ref()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hash, expected);
        let auth = get("authorization").expect("authorization header");
        assert!(auth.contains("/eu-west-1/s3/aws4_request"), "{auth}");
        assert!(auth.contains("x-amz-content-sha256"), "{auth}");
        // Route 53 and the Query API sign without it.
        let headers = sign_headers(&creds, &EC2, "eu-west-1", &request, time).expect("signs");
        assert!(headers.iter().all(|(k, _)| *k != "x-amz-content-sha256"));
    }
}
