//! Connections to etcd members kept from one round to the next.
//!
//! A member's agent asks its own member and every member's health each
//! round (status, member list, a linearizable read). Connecting anew each
//! time cost four TLS handshakes per round on both ends: on three TCG VMs
//! that was 189 connections in the first 150 s of one agent, and with them
//! about 15 % of an emulated core for the agent and a good part of etcd's
//! 25-34 % (docs/benchmarks.md, "CPU per part"). A kept connection is
//! dropped after any failed call, so the next round connects afresh: a
//! restarted or replaced member, or a peer that went away, is met the way
//! a fresh connection would meet it.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use super::futures_join_all;
use crate::etcd::client::{self, Etcd, EtcdError, EtcdTls};
use crate::formation::FoundMember;

pub struct Pool {
    tls: EtcdTls,
    /// Each call's deadline on a kept connection.
    timeout: Duration,
    kept: HashMap<String, Etcd>,
}

impl Pool {
    pub fn new(tls: EtcdTls, timeout: Duration) -> Pool {
        Pool {
            tls,
            timeout,
            kept: HashMap::new(),
        }
    }

    /// The local member's client URL.
    pub fn local_endpoint() -> String {
        client::client_url(Ipv4Addr::LOCALHOST)
    }

    /// A connection to `endpoint`: the kept one, or a new one that is kept.
    pub async fn connection(&mut self, endpoint: &str) -> Result<Etcd, EtcdError> {
        if let Some(etcd) = self.kept.get(endpoint) {
            return Ok(etcd.clone());
        }
        let etcd = Etcd::connect(vec![endpoint.to_string()], &self.tls, self.timeout).await?;
        self.kept.insert(endpoint.to_string(), etcd.clone());
        Ok(etcd)
    }

    /// Passes `result` through; an error drops the kept connection to
    /// `endpoint`, so the next use connects afresh.
    pub fn checked<T>(
        &mut self,
        endpoint: &str,
        result: Result<T, EtcdError>,
    ) -> Result<T, EtcdError> {
        if result.is_err() {
            self.kept.remove(endpoint);
        }
        result
    }

    /// For each learner that does not serve (`health` false), whether its
    /// etcd answers on its peer URL (`client::peer_answers`); false for the
    /// rest. Fresh connections: only while a learner catches up.
    pub async fn learners_answering(&self, members: &[FoundMember], health: &[bool]) -> Vec<bool> {
        let asks = members.iter().zip(health).map(|(m, healthy)| {
            let peer_url = (m.is_learner && !healthy)
                .then(|| m.peer_urls.first().cloned())
                .flatten();
            let (tls, timeout) = (self.tls.clone(), self.timeout);
            async move {
                match peer_url {
                    Some(url) => client::peer_answers(&url, &tls, timeout).await,
                    None => false,
                }
            }
        });
        futures_join_all(asks).await
    }

    /// Each member's health (`client::member_serves`), checked at once over the
    /// kept connections; members without an address are unhealthy.
    /// Connections to endpoints that are no longer members are dropped.
    pub async fn health(&mut self, members: &[FoundMember]) -> Vec<bool> {
        let endpoints: Vec<Option<String>> = members
            .iter()
            .map(|m| m.address().map(client::client_url))
            .collect();
        let checks = members
            .iter()
            .zip(&endpoints)
            .enumerate()
            .map(|(i, (m, e))| {
                let kept = e.as_ref().and_then(|e| self.kept.get(e).cloned());
                let (endpoint, tls, timeout, learner) =
                    (e.clone(), self.tls.clone(), self.timeout, m.is_learner);
                async move {
                    let Some(endpoint) = endpoint else {
                        return (i, false, None);
                    };
                    let etcd = match kept {
                        Some(etcd) => etcd,
                        None => match Etcd::connect(vec![endpoint], &tls, timeout).await {
                            Ok(etcd) => etcd,
                            Err(_) => return (i, false, None),
                        },
                    };
                    let mut etcd = etcd;
                    let healthy = client::member_serves(&mut etcd, learner).await;
                    (i, healthy, healthy.then_some(etcd))
                }
            });
        let mut health = vec![false; members.len()];
        for (i, healthy, etcd) in futures_join_all(checks).await {
            health[i] = healthy;
            if let Some(endpoint) = &endpoints[i] {
                match etcd {
                    Some(etcd) => {
                        self.kept.insert(endpoint.clone(), etcd);
                    }
                    None => {
                        self.kept.remove(endpoint);
                    }
                }
            }
        }
        let local = Pool::local_endpoint();
        self.kept
            .retain(|e, _| *e == local || endpoints.iter().flatten().any(|m| m == e));
        health
    }
}
