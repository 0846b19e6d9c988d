//! Logging: `tracing` to stderr, as text (journald adds its own timestamps
//! and prefixes, so the text format leaves out time) or as JSON lines.

use tracing_subscriber::EnvFilter;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// The default filter. kube's client logs every failed request at error
/// level itself ("failed with error client error (Connect)"); the agent
/// and the lab report what a failure means where it matters (a
/// readiness probe of a starting apiserver fails by design), so its own
/// lines are off unless `RUST_LOG` asks for them.
pub const DEFAULT_FILTER: &str = "info,kube_client=off";

/// Installs the global subscriber. `RUST_LOG` overrides the default
/// ([`DEFAULT_FILTER`]). Safe to call once per process; later calls are
/// ignored.
pub fn init(format: LogFormat) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        // Colour only for a person at a terminal, never into journald or files.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false);
    let result = match format {
        LogFormat::Text => builder.without_time().try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .try_init(),
    };
    // A second init (tests) is not an error worth failing for.
    let _ = result;
}
