//! A blocking HTTP/1.1 GET over a plain `TcpStream`: small enough to run on
//! a thread inside a network namespace (tier 1) or beside a spawned agent
//! (tier 0) without a runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One answer: status code, `Content-Type`, body.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `METHOD path` to `addr`, `Connection: close`, read to the end.
pub fn request(
    method: &str,
    addr: SocketAddr,
    path: &str,
    timeout: Duration,
) -> std::io::Result<Answer> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let bad = |what: &str| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{what}: {text:?}"))
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| bad("no header end"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let header = |name: &str| {
        head.lines().skip(1).find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some_and(|t| t.contains("chunked")) {
        return Err(bad("chunked answers are not handled here"));
    }
    Ok(Answer {
        status,
        content_type: header("content-type").unwrap_or_default(),
        body: body.to_string(),
    })
}

/// `GET path` from `addr`.
pub fn get(addr: SocketAddr, path: &str) -> std::io::Result<Answer> {
    request("GET", addr, path, Duration::from_secs(5))
}
