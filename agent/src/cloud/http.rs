//! The HTTP plumbing every cloud API client shares: one way to build a
//! client, one body-size limit, one reading of "is this fault transient?".
//!
//! Unlike the metadata client, cloud API calls honour the usual proxy
//! environment variables (`HTTPS_PROXY`, `NO_PROXY`): nodes in private subnets
//! often reach the cloud APIs only through an egress proxy.

use std::time::Duration;

use reqwest::StatusCode;

pub use crate::http::{describe, install_crypto_provider, is_transient_status};

/// Largest answer we accept. A DescribeInstances page for 100 instances is
/// about 1 MiB; this bounds memory against a misbehaving endpoint.
pub const MAX_BODY: usize = 16 << 20;

/// One HTTP answer (any status) with its whole body.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// `Retry-After` in seconds, when the server sent one (rate limits).
    pub retry_after: Option<Duration>,
}

/// Why no answer came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportError {
    /// A short cause for the operator ("connection refused", "timed out after 5.0s").
    pub cause: String,
    /// Retrying may help (timeouts, refused or reset connections).
    pub transient: bool,
}

/// Builds the client for cloud API calls: per-request timeout, no redirects
/// (an API never redirects; a redirect means a wrong endpoint). `via_proxy`
/// false ignores the proxy variables: metadata servers must be reached directly.
pub fn client(timeout: Duration, via_proxy: bool) -> Result<reqwest::Client, String> {
    install_crypto_provider();
    let builder = reqwest::Client::builder();
    let builder = if via_proxy {
        builder
    } else {
        builder.no_proxy()
    };
    builder
        .redirect(reqwest::redirect::Policy::none())
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("muster-agent/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| describe(&e, timeout))
}

/// Sends one request and reads the whole body, whatever the status.
pub async fn send(
    request: reqwest::RequestBuilder,
    timeout: Duration,
) -> Result<Reply, TransportError> {
    let transient = |e: &reqwest::Error| TransportError {
        cause: describe(e, timeout),
        transient: !(e.is_builder() || e.is_redirect()),
    };
    let mut response = request.send().await.map_err(|e| transient(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .map(Duration::from_secs);
    let too_big = || TransportError {
        cause: format!("answer larger than {MAX_BODY} bytes"),
        transient: false,
    };
    if response
        .content_length()
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_big());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| transient(&e))? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(too_big());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Reply {
        status,
        body,
        retry_after,
    })
}

/// Text of a body for an error message: UTF-8 (lossy), whitespace folded,
/// cut at `max` characters.
pub fn snippet(body: &[u8], max: usize) -> String {
    let text = String::from_utf8_lossy(body);
    let folded: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match folded.char_indices().nth(max) {
        Some((cut, _)) => format!("{}…", &folded[..cut]),
        None => folded,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_statuses() {
        for s in [500u16, 502, 503, 504, 429] {
            assert!(
                is_transient_status(StatusCode::from_u16(s).expect("valid")),
                "{s}"
            );
        }
        for s in [200u16, 301, 400, 401, 403, 404] {
            assert!(
                !is_transient_status(StatusCode::from_u16(s).expect("valid")),
                "{s}"
            );
        }
    }

    #[test]
    fn snippets_are_short_and_single_line() {
        assert_eq!(
            snippet(b"<html>\n  <h1>Bad\n Gateway</h1>", 100),
            "<html> <h1>Bad Gateway</h1>"
        );
        assert_eq!(snippet("ééééé".as_bytes(), 3), "ééé…");
    }
}
