//! The etcd command line for one member — pure, so the exact flags Muster
//! starts etcd with are tested without running it.

use std::net::Ipv4Addr;
use std::path::PathBuf;

use crate::formation::{CLIENT_PORT, InitialMember, PEER_PORT};

/// Whether the member starts a new cluster or joins an existing one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterState {
    New,
    Existing,
}

/// TLS files from the node's PKI directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    pub ca: PathBuf,
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    pub peer_cert: PathBuf,
    pub peer_key: PathBuf,
}

/// Everything needed to start one member.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberConfig {
    pub name: String,
    pub ip: Ipv4Addr,
    pub data_dir: PathBuf,
    pub tls: TlsFiles,
    /// `None` for a restart: etcd reads membership from its data directory
    /// and ignores the initial-cluster flags.
    pub bootstrap: Option<Bootstrap>,
    pub heartbeat_ms: u32,
    pub election_ms: u32,
}

/// Initial-cluster flags for a member's first start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bootstrap {
    pub initial: Vec<InitialMember>,
    pub state: ClusterState,
    pub token: String,
}

impl MemberConfig {
    /// The arguments for the `etcd` binary.
    pub fn args(&self) -> Vec<String> {
        let ip = self.ip;
        let mut args = vec![
            format!("--name={}", self.name),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--listen-peer-urls=https://{ip}:{PEER_PORT}"),
            format!("--initial-advertise-peer-urls=https://{ip}:{PEER_PORT}"),
            // Loopback too, so the local agent reaches its member even when
            // the node's link is down.
            format!(
                "--listen-client-urls=https://{ip}:{CLIENT_PORT},https://127.0.0.1:{CLIENT_PORT}"
            ),
            format!("--advertise-client-urls=https://{ip}:{CLIENT_PORT}"),
            "--client-cert-auth=true".into(),
            format!("--trusted-ca-file={}", self.tls.ca.display()),
            format!("--cert-file={}", self.tls.server_cert.display()),
            format!("--key-file={}", self.tls.server_key.display()),
            "--peer-client-cert-auth=true".into(),
            format!("--peer-trusted-ca-file={}", self.tls.ca.display()),
            format!("--peer-cert-file={}", self.tls.peer_cert.display()),
            format!("--peer-key-file={}", self.tls.peer_key.display()),
            format!("--heartbeat-interval={}", self.heartbeat_ms),
            format!("--election-timeout={}", self.election_ms),
            // Off, so that a replacement can be added (as a learner) while a
            // voter is down: etcd 3.5's check refuses any add, learners
            // included, unless every voter is connected, which forces
            // remove-before-add and turns a temporary outage into a
            // permanent shrink (fault campaign seed 0xc0de0006). etcd 3.6
            // relaxed the same check to "quorum stays connected". The
            // agent holds the rules itself, tested exhaustively: it adds
            // only learners (no quorum effect), promotes only healthy ones
            // while it has quorum, removes only under S3
            // (`membership::plan`); etcd still refuses to promote a
            // learner that has not caught up (not behind this flag).
            "--strict-reconfig-check=false".into(),
            "--logger=zap".into(),
            "--log-outputs=stderr".into(),
        ];
        if let Some(b) = &self.bootstrap {
            let initial: Vec<String> = b
                .initial
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_url))
                .collect();
            args.push(format!("--initial-cluster={}", initial.join(",")));
            args.push(format!(
                "--initial-cluster-state={}",
                match b.state {
                    ClusterState::New => "new",
                    ClusterState::Existing => "existing",
                }
            ));
            args.push(format!("--initial-cluster-token={}", b.token));
        } else {
            // A restart must never bootstrap. Without a write-ahead log and
            // without this flag, etcd would form a new cluster of one from
            // its name and peer URL (S1); with it, it fails instead.
            args.push("--initial-cluster-state=existing".into());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(bootstrap: Option<Bootstrap>) -> MemberConfig {
        MemberConfig {
            name: "i-1".into(),
            ip: Ipv4Addr::new(10, 0, 0, 1),
            data_dir: "/var/lib/muster/etcd".into(),
            tls: TlsFiles {
                ca: "/p/ca.crt".into(),
                server_cert: "/p/server.crt".into(),
                server_key: "/p/server.key".into(),
                peer_cert: "/p/peer.crt".into(),
                peer_key: "/p/peer.key".into(),
            },
            bootstrap,
            heartbeat_ms: 100,
            election_ms: 1000,
        }
    }

    #[test]
    fn a_new_cluster_gets_initial_cluster_flags_and_mtls_everywhere() {
        let args = config(Some(Bootstrap {
            initial: vec![
                InitialMember {
                    name: "i-1".into(),
                    peer_url: "https://10.0.0.1:2380".into(),
                },
                InitialMember {
                    name: "i-2".into(),
                    peer_url: "https://10.0.0.2:2380".into(),
                },
            ],
            state: ClusterState::New,
            token: "muster-x-1".into(),
        }))
        .args();
        for want in [
            "--initial-cluster=i-1=https://10.0.0.1:2380,i-2=https://10.0.0.2:2380",
            "--initial-cluster-state=new",
            "--initial-cluster-token=muster-x-1",
            "--client-cert-auth=true",
            "--peer-client-cert-auth=true",
            "--listen-client-urls=https://10.0.0.1:2379,https://127.0.0.1:2379",
        ] {
            assert!(args.iter().any(|a| a == want), "missing {want} in {args:?}");
        }
        assert!(
            args.iter()
                .all(|a| !a.starts_with("http://") && !a.contains("=http://")),
            "no plain-text URL"
        );
    }

    #[test]
    fn a_restart_names_no_cluster_and_can_never_bootstrap_one() {
        let args = config(None).args();
        let initial: Vec<&String> = args
            .iter()
            .filter(|a| a.starts_with("--initial-cluster"))
            .collect();
        assert_eq!(initial, ["--initial-cluster-state=existing"], "{args:?}");
    }
}
