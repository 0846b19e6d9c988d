//! Serves a lab's PXE set over HTTP at `/pxe/NAME`: the iPXE script, the
//! kernel, the initrd, the root image and the config the nodes fetch. Plain
//! file names only: nothing outside the directory can be asked for.

use std::net::SocketAddr;
use std::path::PathBuf;

use axum::Router;
use axum::extract::{ConnectInfo, Path, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

pub fn router(dir: PathBuf) -> Router {
    Router::new()
        .route("/pxe/{name}", get(file))
        .with_state(dir)
}

/// A name made of letters, digits, `.`, `-`, `_`, not starting with `.`.
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
}

async fn file(
    State(dir): State<PathBuf>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(name): Path<String>,
) -> Response {
    if !plain_name(&name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    match tokio::fs::read(dir.join(&name)).await {
        Ok(bytes) => {
            tracing::info!(%peer, file = %name, bytes = bytes.len(), "pxe: served");
            ([(header::CONTENT_TYPE, "application/octet-stream")], bytes).into_response()
        }
        Err(_) => {
            tracing::info!(%peer, file = %name, "pxe: not found");
            StatusCode::NOT_FOUND.into_response()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::plain_name;

    #[test]
    fn only_plain_names_are_served() {
        assert!(plain_name("muster-usr.cpio"));
        assert!(plain_name("config.yaml"));
        for bad in ["", ".hidden", "../lab.json", "a/b", "%2e%2e", "x y"] {
            assert!(!plain_name(bad), "{bad:?}");
        }
    }
}
