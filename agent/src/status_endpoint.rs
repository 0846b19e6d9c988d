//! The agent's local status endpoint (DESIGN step 11), plain HTTP:
//!
//! * `GET /status`  — the status as JSON, the same document as
//!   `muster status --output json`;
//! * `GET /metrics` — the same status for Prometheus ([`crate::metrics`]);
//! * `GET /healthz` — `200 ok` while the agent runs.
//!
//! Everything is served from the live [`StatusBoard`], which never holds a
//! secret (S5). The endpoint starts before identify, so a lab or an operator
//! polling a booting node sees its phase from the first seconds on.

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::str::FromStr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;

use crate::state::StatusBoard;

/// Where `muster agent` listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "0.0.0.0:9743";

/// `--status-listen`: an `IP:PORT`, or `off`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenAddr(pub Option<SocketAddr>);

impl FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(ListenAddr(None));
        }
        s.parse()
            .map(|a| ListenAddr(Some(a)))
            .map_err(|e| format!("`{s}`: {e}; expected IP:PORT such as {DEFAULT_LISTEN}, or `off`"))
    }
}

impl fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(addr) => write!(f, "{addr}"),
            None => f.write_str("off"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StatusEndpointError {
    #[error(
        "status endpoint: cannot listen on {addr}: {source} (choose another with --status-listen, or `off`)"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("status endpoint on {addr}: {source}")]
    Serve {
        addr: String,
        source: std::io::Error,
    },
}

/// Binds the listening socket.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener, StatusEndpointError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| StatusEndpointError::Bind { addr, source })
}

/// The routes, over `board`.
pub fn router(board: StatusBoard) -> Router {
    Router::new()
        .route("/status", get(status))
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .with_state(board)
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    board: StatusBoard,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), StatusEndpointError> {
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    axum::serve(listener, router(board))
        .with_graceful_shutdown(shutdown)
        .await
        .map_err(|source| StatusEndpointError::Serve { addr, source })
}

async fn status(State(board): State<StatusBoard>) -> Response {
    match serde_json::to_string_pretty(&board.get()) {
        Ok(mut body) => {
            body.push('\n');
            ([(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot render the status: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(board): State<StatusBoard>) -> Response {
    let body = crate::metrics::render(&board.get(), crate::calls::snapshot());
    ([(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)], body).into_response()
}

async fn healthz() -> &'static str {
    "ok"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            DEFAULT_LISTEN.parse::<ListenAddr>(),
            Ok(ListenAddr(Some(
                "0.0.0.0:9743".parse().expect("socket address")
            )))
        );
        assert_eq!("off".parse::<ListenAddr>(), Ok(ListenAddr(None)));
        assert_eq!(
            "[::1]:0".parse::<ListenAddr>().map(|a| a.to_string()),
            Ok("[::1]:0".into())
        );
        let err = "localhost:9743"
            .parse::<ListenAddr>()
            .expect_err("no names");
        assert!(err.contains("IP:PORT"), "{err}");
    }
}
