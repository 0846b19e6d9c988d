//! HTTP plumbing shared by every HTTP client of the agent (metadata
//! services, cloud APIs): one rule for what is transient, one way to name a
//! failure for the operator, one crypto-provider set-up.

use std::error::Error as _;
use std::sync::Once;
use std::time::Duration;

use reqwest::StatusCode;

/// 5xx and 429 are the service asking us to come back later.
pub fn is_transient_status(status: StatusCode) -> bool {
    status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS
}

/// A short cause found by walking the error's sources down to the I/O error.
pub fn describe(e: &reqwest::Error, timeout: Duration) -> String {
    if e.is_timeout() {
        return format!("timed out after {:.1}s", timeout.as_secs_f64());
    }
    let mut innermost = None;
    let mut source = e.source();
    while let Some(s) = source {
        if let Some(io) = s.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            return match io.kind() {
                K::ConnectionRefused => "connection refused".to_string(),
                K::ConnectionReset => "connection reset".to_string(),
                K::ConnectionAborted => "connection aborted".to_string(),
                K::TimedOut => format!("timed out after {:.1}s", timeout.as_secs_f64()),
                _ => io.to_string(),
            };
        }
        innermost = Some(s.to_string());
        source = s.source();
    }
    innermost.unwrap_or_else(|| e.to_string())
}

/// reqwest is built with `rustls-no-provider`: a crypto provider must be
/// installed before the first client is built, plain-http clients included.
/// Installs ring once unless something else already installed a provider.
pub fn install_crypto_provider() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if rustls::crypto::CryptoProvider::get_default().is_none() {
            // Losing a race with another installer is fine: one provider is set either way.
            let _ = rustls::crypto::ring::default_provider().install_default();
        }
    });
}
