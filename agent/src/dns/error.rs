//! What can go wrong publishing names, with the provider and the config
//! field an operator has to look at.

use std::time::Duration;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Bad input or missing rights: retrying without a config change will
    /// not help (the loop still retries, slowly: rights can be granted).
    Config { field: &'static str },
    /// The network, a timeout, a 5xx: retried with capped backoff.
    Transient,
    /// The provider asked us to slow down (Route 53 `Throttling`,
    /// Cloudflare 429); `after` is its Retry-After when it gave one.
    RateLimited { after: Option<Duration> },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.render())]
pub struct DnsError {
    pub provider: &'static str,
    pub fault: Fault,
    pub message: String,
}

impl DnsError {
    pub fn config(provider: &'static str, field: &'static str, message: impl Into<String>) -> Self {
        DnsError {
            provider,
            fault: Fault::Config { field },
            message: message.into(),
        }
    }

    pub fn transient(provider: &'static str, message: impl Into<String>) -> Self {
        DnsError {
            provider,
            fault: Fault::Transient,
            message: message.into(),
        }
    }

    pub fn rate_limited(
        provider: &'static str,
        after: Option<Duration>,
        message: impl Into<String>,
    ) -> Self {
        DnsError {
            provider,
            fault: Fault::RateLimited { after },
            message: message.into(),
        }
    }

    fn render(&self) -> String {
        match &self.fault {
            Fault::Config { field } => format!("{} ({field}): {}", self.provider, self.message),
            _ => format!("{}: {}", self.provider, self.message),
        }
    }
}
