//! Talking to a test cluster's etcd straight from the test (etcd-client),
//! with an agent's client certificate: for writers and bulk loads that
//! would take a process per key through etcdctl.

use std::time::Duration;

use etcd_client::{Certificate, ConnectOptions, Identity, TlsOptions};

use super::netns::Host;

/// The agent's client certificate, kept outside any host (hosts are
/// destroyed as they are replaced).
pub struct ClientTls {
    ca: String,
    cert: String,
    key: String,
}

impl ClientTls {
    pub fn read(host: &Host) -> ClientTls {
        let pki = host.dir().join("state/pki");
        let read = |f: &str| std::fs::read_to_string(pki.join(f)).expect("pki file");
        ClientTls {
            ca: read("ca.crt"),
            cert: read("client.crt"),
            key: read("client.key"),
        }
    }

    pub fn options(&self) -> ConnectOptions {
        ConnectOptions::new()
            .with_timeout(Duration::from_secs(2))
            .with_connect_timeout(Duration::from_secs(1))
            .with_tls(
                TlsOptions::new()
                    .ca_certificate(Certificate::from_pem(&self.ca))
                    .identity(Identity::from_pem(&self.cert, &self.key)),
            )
    }
}

/// Puts `n` keys `{prefix}key{NNNNN}` with `value_bytes`-byte values through
/// `endpoint`, from inside `host`'s namespace, 16 at a time.
pub fn put_many(host: &Host, endpoint: &str, prefix: &str, n: usize, value_bytes: usize) {
    let tls = ClientTls::read(host);
    let value = "v".repeat(value_bytes);
    host.block_on(async || {
        let client = etcd_client::Client::connect([endpoint], Some(tls.options()))
            .await
            .expect("connect");
        let keys: Vec<String> = (0..n).map(|k| format!("{prefix}key{k:05}")).collect();
        for chunk in keys.chunks(16) {
            let puts = chunk.iter().map(|key| {
                let mut kv = client.kv_client();
                let value = value.clone();
                async move { kv.put(key.as_str(), value, None).await }
            });
            for put in futures_util::future::join_all(puts).await {
                put.expect("put");
            }
        }
    })
}
