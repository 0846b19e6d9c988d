//! The small HTTP client every network provider shares (the idea of
//! afterburn's retry client): one place decides what is transient, how long a
//! request may take and how much body we accept.
//!
//! - Each request has its own timeout (`Options::request_timeout`), so a
//!   blackholed endpoint never hangs the boot.
//! - Timeouts, refused/dropped connections, 5xx, 429 and 410 are retried
//!   with `crate::retry`'s capped backoff; every other status is handed back
//!   to the provider, which knows what 404 or 401 means for it.
//! - No proxy (metadata services must be reached directly; Azure's docs
//!   insist), no redirects, no pooled connections (a stale pooled socket
//!   would turn into a spurious retry).

use std::time::Duration;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode};
use url::Url;

use super::{MetadataError, Options, ProviderKind};
use crate::http::describe;
pub use crate::http::install_crypto_provider;
use crate::retry::{self, Backoff};

/// Largest body we accept from a metadata service (user data is at most
/// 16 KiB on AWS and 64 KiB on Azure; this leaves room and bounds memory).
pub const MAX_BODY: usize = 1 << 20;

/// One HTTP answer that was not a transient fault.
pub(crate) struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

/// Why a single attempt failed.
#[derive(Debug)]
enum Fault {
    /// Timeout, refused or dropped connection, or a retryable status.
    Transient(String),
    /// Anything retrying cannot fix (bad request, body too large).
    Permanent(String),
}

pub(crate) struct HttpClient {
    provider: ProviderKind,
    client: reqwest::Client,
    backoff: Backoff,
    timeout: Duration,
}

impl HttpClient {
    pub fn new(provider: ProviderKind, opts: &Options) -> Result<Self, MetadataError> {
        install_crypto_provider();
        let client = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(opts.request_timeout)
            .connect_timeout(opts.request_timeout)
            .pool_max_idle_per_host(0)
            .user_agent(concat!("muster-agent/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| MetadataError::NotConfigured {
                provider,
                what: format!(
                    "cannot build an HTTP client: {}",
                    describe(&e, opts.request_timeout)
                ),
            })?;
        Ok(HttpClient {
            provider,
            client,
            backoff: opts.backoff,
            timeout: opts.request_timeout,
        })
    }

    /// Sends a request, retrying transient faults within the backoff budget.
    /// Any non-transient reply (2xx, 3xx, 4xx) is returned for the caller to judge.
    pub async fn send(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
    ) -> Result<Reply, MetadataError> {
        let result = retry::retry(
            self.backoff,
            |f: &Fault| matches!(f, Fault::Transient(_)),
            |attempt| {
                let method = method.clone();
                async move {
                    if attempt > 0 {
                        tracing::debug!(url = %url, attempt, "retrying metadata request");
                    }
                    self.attempt(method, url, headers, self.timeout).await
                }
            },
        )
        .await;
        result.map_err(|gave_up| match gave_up.last {
            Fault::Transient(cause) => MetadataError::Unreachable {
                provider: self.provider,
                url: url.to_string(),
                attempts: gave_up.attempts,
                elapsed: gave_up.elapsed,
                cause,
            },
            Fault::Permanent(cause) => MetadataError::Http {
                provider: self.provider,
                url: url.to_string(),
                cause,
            },
        })
    }

    /// One attempt with its own timeout and no retries: used by detection,
    /// which must be quick and is retried as a whole.
    pub async fn probe(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, String> {
        self.attempt(method, url, headers, timeout)
            .await
            .map_err(|f| match f {
                Fault::Transient(c) | Fault::Permanent(c) => c,
            })
    }

    async fn attempt(
        &self,
        method: Method,
        url: &Url,
        headers: &[(&str, &str)],
        timeout: Duration,
    ) -> Result<Reply, Fault> {
        let mut request = self.client.request(method, url.clone()).timeout(timeout);
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let mut response = request.send().await.map_err(|e| classify(&e, timeout))?;
        let status = response.status();
        if is_transient_status(status) {
            return Err(Fault::Transient(format!("HTTP {status}")));
        }
        if response
            .content_length()
            .is_some_and(|n| n > MAX_BODY as u64)
        {
            return Err(Fault::Permanent(format!(
                "response body larger than {MAX_BODY} bytes"
            )));
        }
        let headers = response.headers().clone();
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| classify(&e, timeout))? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(Fault::Permanent(format!(
                    "response body larger than {MAX_BODY} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

/// The shared rule, plus 410: Azure documents it as "retry after some time
/// for a max of 70 seconds".
fn is_transient_status(status: StatusCode) -> bool {
    crate::http::is_transient_status(status) || status == StatusCode::GONE
}

fn classify(e: &reqwest::Error, timeout: Duration) -> Fault {
    let cause = describe(e, timeout);
    if e.is_builder() || e.is_redirect() {
        Fault::Permanent(cause)
    } else {
        Fault::Transient(cause)
    }
}

/// Joins a relative path onto a provider's base URL.
pub(crate) fn join(provider: ProviderKind, base: &Url, path: &str) -> Result<Url, MetadataError> {
    base.join(path).map_err(|e| MetadataError::NotConfigured {
        provider,
        what: format!("cannot form a URL from {base} and {path:?}: {e}"),
    })
}

/// The endpoint to use: `Options::endpoint` or the provider's well-known one.
pub(crate) fn endpoint(
    provider: ProviderKind,
    opts: &Options,
    default: &str,
) -> Result<Url, MetadataError> {
    match &opts.endpoint {
        Some(url) => Ok(url.clone()),
        None => Url::parse(default).map_err(|e| MetadataError::NotConfigured {
            provider,
            what: format!("bad built-in endpoint {default}: {e}"),
        }),
    }
}

/// Body as text; metadata services answer in UTF-8.
pub(crate) fn text(
    provider: ProviderKind,
    url: &Url,
    body: Vec<u8>,
) -> Result<String, MetadataError> {
    String::from_utf8(body)
        .map_err(|_| MetadataError::parse(provider, url.as_str(), "the answer is not UTF-8 text"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for s in [500u16, 502, 503, 504, 429, 410] {
            assert!(
                is_transient_status(StatusCode::from_u16(s).expect("valid")),
                "{s}"
            );
        }
        for s in [200u16, 301, 400, 401, 403, 404, 405] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).expect("valid")),
                "{s}"
            );
        }
    }

    #[test]
    fn joining_keeps_queries_and_endpoint_overrides_default() {
        let base = Url::parse("http://127.0.0.1:9/").expect("url");
        let u = join(
            ProviderKind::Azure,
            &base,
            "metadata/instance?api-version=2021-02-01",
        )
        .expect("join");
        assert_eq!(
            u.as_str(),
            "http://127.0.0.1:9/metadata/instance?api-version=2021-02-01"
        );
        let opts = Options {
            endpoint: Some(base.clone()),
            ..Options::default()
        };
        assert_eq!(
            endpoint(ProviderKind::Aws, &opts, "http://169.254.169.254/").expect("ep"),
            base
        );
        let opts = Options::default();
        assert_eq!(
            endpoint(ProviderKind::Aws, &opts, "http://169.254.169.254/")
                .expect("ep")
                .as_str(),
            "http://169.254.169.254/"
        );
    }
}
