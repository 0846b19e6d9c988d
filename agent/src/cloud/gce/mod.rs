//! A light Compute Engine client: JSON over reqwest with an OAuth token from
//! the metadata server (`instance/service-accounts/default/token`), retries
//! and typed errors. Both base URLs can be overridden for tests (no GCE
//! emulator exists; the tests use an HTTP fake).
//!
//! The token is cached until a minute before it expires and dropped when
//! the API answers 401. It never reaches logs or errors.

pub mod alias;
pub mod compute;
mod error;
pub mod storage;

use std::fmt;
use std::time::Duration;

use reqwest::Method;
use tokio::sync::Mutex;
use tokio::time::Instant;
use tracing::Instrument;
use url::Url;

pub use error::GceError;

use crate::cloud::http::{self, Reply, TransportError};
use crate::retry::{self, Backoff};

/// An OAuth access token. `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct AccessToken(String);

impl AccessToken {
    pub fn new(token: impl Into<String>) -> Self {
        AccessToken(token.into())
    }
    fn bearer(&self) -> String {
        format!("Bearer {}", self.0)
    }
}

impl fmt::Debug for AccessToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("AccessToken(<redacted>)")
    }
}

/// Where and how to reach Compute Engine.
#[derive(Debug, Clone)]
pub struct GceOptions {
    /// Compute API root; default `https://compute.googleapis.com/compute/v1/`.
    pub api_base: Url,
    /// Metadata server root; default `http://169.254.169.254/`.
    pub metadata_base: Url,
    /// A fixed token instead of the metadata server's (tests, off-GCE tools).
    pub static_token: Option<AccessToken>,
    pub backoff: Backoff,
    pub request_timeout: Duration,
}

impl Default for GceOptions {
    fn default() -> Self {
        let parse =
            |s: &str| Url::parse(s).unwrap_or_else(|e| unreachable!("built-in URL {s}: {e}"));
        GceOptions {
            api_base: parse("https://compute.googleapis.com/compute/v1/"),
            metadata_base: parse("http://169.254.169.254/"),
            static_token: None,
            backoff: crate::cloud::aws::API_BACKOFF,
            request_timeout: Duration::from_secs(10),
        }
    }
}

impl GceOptions {
    /// The defaults with the agent's overrides: the metadata server at
    /// `metadata` (the agent's `--endpoint`), the Compute API at `api`
    /// (`cloud.endpoint`), and the retry policy of the caller.
    pub fn with_endpoints(metadata: Option<&Url>, api: Option<&Url>, backoff: Backoff) -> Self {
        let mut opts = GceOptions {
            backoff,
            ..GceOptions::default()
        };
        if let Some(base) = metadata {
            opts.metadata_base = base.clone();
        }
        if let Some(api) = api {
            opts.api_base = api.clone();
        }
        opts
    }
}

/// The shared Compute Engine client.
pub struct GceClient {
    http: reqwest::Client,
    metadata_http: reqwest::Client,
    opts: GceOptions,
    token: Mutex<Option<(AccessToken, Instant)>>,
}

impl fmt::Debug for GceClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GceClient")
            .field("opts", &self.opts)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
enum Fault {
    Transport(TransportError),
    Api {
        status: u16,
        reason: Option<String>,
        message: String,
    },
    /// The metadata server gave no usable token.
    Token {
        cause: String,
        transient: bool,
    },
}

impl GceClient {
    pub fn new(mut opts: GceOptions) -> Result<Self, GceError> {
        for url in [&mut opts.api_base, &mut opts.metadata_base] {
            if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
                return Err(GceError::Config {
                    what: format!("{url} is not an http(s) URL with a host"),
                });
            }
            // Relative joins need the trailing slash.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
        }
        let build = |via_proxy| {
            http::client(opts.request_timeout, via_proxy).map_err(|cause| GceError::Config {
                what: format!("cannot build an HTTP client: {cause}"),
            })
        };
        let (http, metadata_http) = (build(true)?, build(false)?);
        Ok(GceClient {
            http,
            metadata_http,
            opts,
            token: Mutex::new(None),
        })
    }

    /// The Compute API root every resource path is joined onto.
    pub fn api_base(&self) -> &Url {
        &self.opts.api_base
    }

    /// Sends an authorised API request and returns the JSON text of a 2xx
    /// answer. `call` names the API method in logs and errors.
    pub async fn call(&self, method: Method, call: &str, url: &Url) -> Result<String, GceError> {
        self.call_with_body(method, call, url, None).await
    }

    /// Like [`GceClient::call`], with a JSON body (Cloud DNS changes).
    pub async fn call_with_body(
        &self,
        method: Method,
        call: &str,
        url: &Url,
        body: Option<String>,
    ) -> Result<String, GceError> {
        let body = body.map(|b| (bytes::Bytes::from(b), "application/json"));
        let answer = self.call_bytes(method, call, url, body).await?;
        String::from_utf8(answer)
            .map_err(|_| parse_failure(call, url, "the answer is not UTF-8".into()))
    }

    /// The request and retries of every call: a `(body, content type)`
    /// when there is one; the bytes of a 2xx answer (Cloud Storage objects
    /// are binary).
    pub async fn call_bytes(
        &self,
        method: Method,
        call: &str,
        url: &Url,
        body: Option<(bytes::Bytes, &'static str)>,
    ) -> Result<Vec<u8>, GceError> {
        let span = tracing::debug_span!("gce", call, url = %url);
        async {
            let mut refreshed = false;
            let outcome = retry::retry(
                self.opts.backoff,
                |f: &Fault| match f {
                    Fault::Transport(t) => t.transient,
                    Fault::Token { transient, .. } => *transient,
                    // One retry with a fresh token; a second 401 is real.
                    Fault::Api { status: 401, .. }
                        if !refreshed && self.opts.static_token.is_none() =>
                    {
                        refreshed = true;
                        true
                    }
                    Fault::Api { status, reason, .. } => {
                        *status >= 500
                            || *status == 429
                            || (*status == 403
                                && matches!(
                                    reason.as_deref(),
                                    Some("rateLimitExceeded" | "userRateLimitExceeded")
                                ))
                    }
                },
                |_| {
                    let method = method.clone();
                    let body = body.clone();
                    async move {
                        let token = self.token().await?;
                        let mut request = self
                            .http
                            .request(method.clone(), url.clone())
                            .header("authorization", token.bearer());
                        if let Some((body, content_type)) = body {
                            request = request.header("content-type", content_type).body(body);
                        } else if method == Method::POST {
                            // listManagedInstances is a body-less POST and Google
                            // answers 411 without a length; hyper sends none for
                            // an empty body, so say it.
                            request = request.header("content-length", "0");
                        }
                        let reply = http::send(request, self.opts.request_timeout)
                            .await
                            .map_err(Fault::Transport)?;
                        if reply.status.as_u16() == 401 {
                            *self.token.lock().await = None;
                        }
                        into_bytes(reply)
                    }
                },
            )
            .await;
            outcome.map_err(|g| {
                let (call, url) = (call.to_string(), url.to_string());
                match g.last {
                    Fault::Transport(t) => GceError::Unreachable {
                        call,
                        url,
                        attempts: g.attempts,
                        elapsed: g.elapsed,
                        cause: t.cause,
                    },
                    Fault::Api {
                        status,
                        reason,
                        message,
                    } => GceError::Api {
                        call,
                        url,
                        status,
                        reason,
                        message,
                        attempts: g.attempts,
                        elapsed: g.elapsed,
                    },
                    Fault::Token { cause, .. } => GceError::Token {
                        url: self.token_url().map(|u| u.to_string()).unwrap_or_default(),
                        attempts: g.attempts,
                        cause,
                    },
                }
            })
        }
        .instrument(span)
        .await
    }

    /// The cached token, or a fresh one from the metadata server.
    async fn token(&self) -> Result<AccessToken, Fault> {
        if let Some(token) = &self.opts.static_token {
            return Ok(token.clone());
        }
        let mut cached = self.token.lock().await;
        if let Some((token, valid_until)) = cached.as_ref()
            && Instant::now() < *valid_until
        {
            return Ok(token.clone());
        }
        let token_fault = |cause: String, transient: bool| Fault::Token { cause, transient };
        let url = self.token_url().map_err(|e| token_fault(e, false))?;
        let request = self
            .metadata_http
            .get(url)
            .header("Metadata-Flavor", "Google");
        let reply = http::send(request, self.opts.request_timeout)
            .await
            .map_err(|t| token_fault(t.cause, t.transient))?;
        let status = reply.status;
        if !status.is_success() {
            // 404: the instance has no service account; 5xx: come back later.
            let hint = if status.as_u16() == 404 {
                " (does the instance have a service account?)"
            } else {
                ""
            };
            return Err(token_fault(
                format!("HTTP {status}{hint}"),
                http::is_transient_status(status),
            ));
        }
        let text = String::from_utf8(reply.body)
            .map_err(|_| token_fault("the answer is not UTF-8".into(), false))?;
        let (token, lifetime) = compute::parse_token(&text).map_err(|e| token_fault(e, false))?;
        // Renew a minute early so a token never expires in flight.
        let valid_until = Instant::now() + lifetime.saturating_sub(Duration::from_secs(60));
        *cached = Some((token.clone(), valid_until));
        Ok(token)
    }
}

impl GceClient {
    /// A metadata server value, e.g. `project/project-id`.
    pub async fn metadata_value(&self, path: &str) -> Result<String, GceError> {
        let url = self
            .opts
            .metadata_base
            .join(&format!("computeMetadata/v1/{path}"))
            .map_err(|e| GceError::Config {
                what: format!("metadata path {path}: {e}"),
            })?;
        let request = self
            .metadata_http
            .get(url.clone())
            .header("Metadata-Flavor", "Google");
        let reply = http::send(request, self.opts.request_timeout)
            .await
            .map_err(|t| GceError::Unreachable {
                call: format!("metadata {path}"),
                url: url.to_string(),
                attempts: 1,
                elapsed: Duration::ZERO,
                cause: t.cause,
            })?;
        let text = into_text(reply).map_err(|_| GceError::Config {
            what: format!("the metadata server has no {path}"),
        })?;
        Ok(text.trim().to_string())
    }

    fn token_url(&self) -> Result<Url, String> {
        self.opts
            .metadata_base
            .join("computeMetadata/v1/instance/service-accounts/default/token")
            .map_err(|e| e.to_string())
    }
}

/// A 2xx answer we could not read, named after its call.
pub(crate) fn parse_failure(call: &str, url: &Url, cause: String) -> GceError {
    GceError::Parse {
        call: call.into(),
        url: url.to_string(),
        cause,
    }
}

/// Pages a list call can have before we call it a loop.
const MAX_PAGES: usize = 100;

/// Every page of a list call at `base` (`pageToken` after the first):
/// `parse` turns one page into its items and the next page's token.
pub(crate) async fn all_pages<T>(
    client: &GceClient,
    method: Method,
    call: &str,
    base: &Url,
    parse: impl Fn(&str) -> Result<(Vec<T>, Option<String>), String>,
) -> Result<Vec<T>, GceError> {
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut url = base.clone();
        if let Some(t) = &token {
            url.query_pairs_mut().append_pair("pageToken", t);
        }
        let text = client.call(method.clone(), call, &url).await?;
        let (items, next) = parse(&text).map_err(|e| parse_failure(call, &url, e))?;
        all.extend(items);
        match next {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => return Ok(all),
        }
    }
    Err(parse_failure(
        call,
        base,
        format!("still paging after {MAX_PAGES} pages"),
    ))
}

/// The URL of `project`'s `instances.aggregatedList` with partial success
/// (a zone that fails answers with a warning, not the whole call), only
/// `fields`, and `filter` when given.
pub(crate) fn aggregated_instances_url(
    client: &GceClient,
    project: &str,
    filter: Option<&str>,
    fields: &str,
) -> Result<Url, GceError> {
    let mut url = client.api_base().clone();
    url.path_segments_mut()
        .map_err(|()| GceError::Config {
            what: format!("{} cannot be a base URL", client.api_base()),
        })?
        .pop_if_empty()
        .extend(["projects", project, "aggregated", "instances"]);
    {
        let mut query = url.query_pairs_mut();
        if let Some(filter) = filter {
            query.append_pair("filter", filter);
        }
        query
            .append_pair("returnPartialSuccess", "true")
            .append_pair("fields", fields);
    }
    Ok(url)
}

/// One page of `instances.aggregatedList`: the instances of every zone, as
/// `T` (zones that answered with a warning instead are skipped), and the
/// next page's token (pure).
pub(crate) fn aggregated_instances<T: serde::de::DeserializeOwned>(
    text: &str,
) -> Result<(Vec<T>, Option<String>), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Aggregated<T> {
        #[serde(default = "std::collections::BTreeMap::new")]
        items: std::collections::BTreeMap<String, Scoped<T>>,
        next_page_token: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Scoped<T> {
        #[serde(default = "Vec::new")]
        instances: Vec<T>,
    }
    let page: Aggregated<T> =
        serde_json::from_str(text).map_err(|e| format!("unexpected JSON: {e}"))?;
    let instances = page.items.into_values().flat_map(|s| s.instances).collect();
    Ok((instances, page.next_page_token.filter(|t| !t.is_empty())))
}

/// A 2xx body as text, or the fault described by Google's error document.
fn into_text(reply: Reply) -> Result<String, Fault> {
    let status = reply.status.as_u16();
    String::from_utf8(into_bytes(reply)?).map_err(|_| Fault::Api {
        status,
        reason: None,
        message: "the answer is not UTF-8".into(),
    })
}

/// A 2xx body, or the fault described by Google's error document.
fn into_bytes(reply: Reply) -> Result<Vec<u8>, Fault> {
    let status = reply.status.as_u16();
    if reply.status.is_success() {
        return Ok(reply.body);
    }
    let (reason, message) = compute::parse_error(&reply.body)
        .unwrap_or_else(|| (None, http::snippet(&reply.body, 200)));
    Err(Fault::Api {
        status,
        reason,
        message,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_never_show_and_bases_get_a_slash() {
        assert_eq!(
            format!("{:?}", AccessToken::new("ya29.secret")),
            "AccessToken(<redacted>)"
        );
        let opts = GceOptions {
            api_base: Url::parse("http://127.0.0.1:9/compute/v1").expect("url"),
            ..GceOptions::default()
        };
        let client = GceClient::new(opts).expect("client");
        assert_eq!(client.api_base().as_str(), "http://127.0.0.1:9/compute/v1/");
        let bad = GceOptions {
            metadata_base: Url::parse("file:///x").expect("url"),
            ..GceOptions::default()
        };
        assert!(GceClient::new(bad).is_err());
    }
}
