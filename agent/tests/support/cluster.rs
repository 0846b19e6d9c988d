//! A tier-1 cluster: hosts of a [`Net`] each running the real `muster agent`
//! binary (child-process supervisor, real etcd from Debian 13), sharing one
//! config with a static peer list of every host slot.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Output;
use std::time::Duration;

use nix::sys::signal::Signal;
use serde_json::Value;

pub use super::etcd_bin::{etcd_bin, etcdctl_bin};
use super::http_get::{self, Answer};
use super::netns::{Host, Net, Proc, wait_until};

pub const SECRET: &str = "tier1-test-secret-0123456789abcdef0123";

/// The agents' status endpoint port (`--status-listen` default).
pub const STATUS_PORT: u16 = 9743;

pub struct Node {
    pub host: Host,
    pub agent: Option<Proc>,
}

pub struct Cluster {
    pub net: Net,
    pub nodes: Vec<Node>,
    config: PathBuf,
    /// Extra `muster agent` flags.
    pub agent_flags: Vec<String>,
    /// Extra environment for the agents.
    pub agent_env: Vec<(String, String)>,
    /// Kubernetes binaries for the agents (`--kubernetes-bin`); `None`:
    /// none, the cluster is etcd only.
    pub kubernetes_bin: Option<PathBuf>,
}

impl Cluster {
    /// A Net with `slots` host addresses in the static peer list and an
    /// etcd of `control_plane` members (stacked).
    pub fn new(hint: &str, slots: u8, control_plane: u8) -> Cluster {
        Cluster::with_discovery(hint, control_plane, |net| {
            let base = net.subnet();
            let prefix = base.trim_end_matches("0/24");
            let peers: Vec<String> = (0..slots)
                .map(|i| format!("\"{prefix}{}\"", 11 + i))
                .collect();
            format!("discovery:\n  static:\n    peers: [{}]\n", peers.join(", "))
        })
    }

    /// A cluster whose `discovery:` section (YAML) is made from its Net.
    pub fn with_discovery(
        hint: &str,
        control_plane: u8,
        discovery: impl FnOnce(&Net) -> String,
    ) -> Cluster {
        let net = Net::new(hint);
        let dir = std::env::temp_dir().join(format!("{}-config", net.name()));
        std::fs::create_dir_all(&dir).expect("config dir");
        let config = dir.join("cluster.yaml");
        std::fs::write(
            &config,
            format!(
                "cluster:\n  name: {hint}\n  secret: \"{SECRET}\"\n\
                 topology:\n  controlPlane:\n    count: {control_plane}\n{}",
                discovery(&net)
            ),
        )
        .expect("write config");
        Cluster {
            net,
            nodes: Vec::new(),
            config,
            agent_flags: vec![
                "--tick-ms=250".into(),
                "--replace-after-secs=3".into(),
                "--etcd-heartbeat-ms=100".into(),
                "--etcd-election-ms=1000".into(),
            ],
            agent_env: vec![("RUST_LOG".into(), muster::logging::DEFAULT_FILTER.into())],
            kubernetes_bin: None,
        }
    }

    /// Adds a section (YAML) to the shared config, for agents started later.
    pub fn append_config(&self, yaml: &str) {
        let mut text = std::fs::read_to_string(&self.config).expect("read config");
        text.push_str(yaml);
        std::fs::write(&self.config, text).expect("write config");
    }

    /// Rewrites the shared config, for agents started later (a new group).
    pub fn rewrite_config(&self, change: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(&self.config).expect("read config");
        std::fs::write(&self.config, change(text)).expect("write config");
    }

    /// Adds the next host (its address is the next static slot).
    pub fn add_host(&mut self) -> usize {
        self.add_host_with_facts(|host, i| {
            format!(
                "instance_id: i-{:02}\nhostname: h{}\nprivate_ipv4: {}\n",
                i + 1,
                i + 1,
                host.ip()
            )
        })
    }

    /// Adds a host whose metadata facts (YAML) are made from the host and
    /// its index.
    pub fn add_host_with_facts(&mut self, facts: impl FnOnce(&Host, usize) -> String) -> usize {
        let i = self.nodes.len();
        let host = self.net.add_host(&format!("h{}", i + 1));
        std::fs::write(host.dir().join("facts.yaml"), facts(&host, i)).expect("facts");
        self.nodes.push(Node { host, agent: None });
        i
    }

    pub fn start_agent(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let dir = node.host.dir().to_path_buf();
        let mut args: Vec<String> = vec![
            "agent".into(),
            "--provider=file".into(),
            format!("--metadata-file={}", dir.join("facts.yaml").display()),
            format!("--config={}", self.config.display()),
            format!("--state-dir={}", dir.join("state").display()),
            "--defaults=/nonexistent".into(),
            "--cmdline-file=/dev/null".into(),
            "--supervisor=child".into(),
            format!("--etcd-bin={}", etcd_bin().display()),
            "--log-format=json".into(),
            format!(
                "--kubernetes-bin={}",
                self.kubernetes_bin
                    .as_deref()
                    .unwrap_or(std::path::Path::new("/nonexistent/kubernetes"))
                    .display()
            ),
            format!(
                "--kubernetes-dir={}",
                Self::kubernetes_dir_of(&dir).display()
            ),
        ];
        args.extend(self.agent_flags.iter().cloned());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = self
            .agent_env
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        node.agent = Some(
            node.host
                .spawn(env!("CARGO_BIN_EXE_muster"), &args, &env, "agent.log"),
        );
    }

    /// The nodes among `alive` whose eth0 carries `vip` right now.
    pub fn vip_holders(&self, vip: std::net::Ipv4Addr, alive: &[usize]) -> Vec<usize> {
        alive
            .iter()
            .copied()
            .filter(|&i| carries_vip(&self.nodes[i].host, vip))
            .collect()
    }

    /// Where node `i`'s agent writes its Kubernetes files.
    pub fn kubernetes_dir(&self, i: usize) -> PathBuf {
        Self::kubernetes_dir_of(self.nodes[i].host.dir())
    }

    fn kubernetes_dir_of(host_dir: &std::path::Path) -> PathBuf {
        host_dir.join("kubernetes")
    }

    /// Power cut: every process of the host dies; its disk stays.
    pub fn power_off(&mut self, i: usize) {
        self.nodes[i].host.kill_all();
        if let Some(mut agent) = self.nodes[i].agent.take() {
            agent.wait_timeout(Duration::from_secs(5));
        }
    }

    /// The machine is gone for good: processes, namespace and link.
    pub fn destroy(&mut self, i: usize) {
        self.nodes[i].agent.take();
        self.net.remove_host(&self.nodes[i].host);
    }

    pub fn kill_agent(&mut self, i: usize, signal: Signal) {
        if let Some(agent) = self.nodes[i].agent.as_mut() {
            agent.kill(signal);
            agent.wait_timeout(Duration::from_secs(5));
        }
    }

    /// `muster status --output json` of node `i`, via the real CLI.
    pub fn status(&self, i: usize) -> Option<Value> {
        let dir = self.nodes[i].host.dir().join("state");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster"))
            .args(["status", "--output", "json", "--state-dir"])
            .arg(&dir)
            .output()
            .ok()?;
        serde_json::from_slice(&out.stdout).ok()
    }

    /// `GET path` on node `to`'s status endpoint, sent from inside node
    /// `from`'s namespace, as a lab on the same network would.
    pub fn status_get(&self, from: usize, to: usize, path: &str) -> std::io::Result<Answer> {
        let addr = std::net::SocketAddr::from((self.nodes[to].host.ip(), STATUS_PORT));
        let path = path.to_string();
        self.nodes[from]
            .host
            .in_netns(move || http_get::get(addr, &path))
    }

    /// etcdctl inside host `i` against its own member, with the agent's
    /// client certificate.
    pub fn etcdctl(&self, i: usize, args: &[&str]) -> Output {
        self.etcdctl_command(i)
            .arg("--command-timeout=5s")
            .args(args)
            .output()
            .expect("run etcdctl")
    }

    /// The etcdctl command of [`Cluster::etcdctl`], for callers that need
    /// its stdin or their own timeout.
    pub fn etcdctl_command(&self, i: usize) -> std::process::Command {
        let pki = self.nodes[i].host.dir().join("state/pki");
        let host = &self.nodes[i].host;
        let mut cmd = host.command(etcdctl_bin());
        cmd.arg(format!("--endpoints=https://{}:2379", host.ip()))
            .arg(format!("--cacert={}", pki.join("ca.crt").display()))
            .arg(format!("--cert={}", pki.join("client.crt").display()))
            .arg(format!("--key={}", pki.join("client.key").display()))
            .arg("--dial-timeout=2s");
        cmd
    }

    /// Puts `n` keys `PREFIXkeyNNN` through node `i`'s member (quorum
    /// writes); panics on the first refused one.
    pub fn put_keys(&self, i: usize, prefix: &str, n: usize) {
        for k in 0..n {
            let out = self.etcdctl(
                i,
                &["put", &format!("{prefix}key{k:03}"), &format!("value{k}")],
            );
            assert!(
                out.status.success(),
                "put {prefix}key{k:03}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// The keys under `prefix`, read through node `i`'s member.
    pub fn keys(&self, i: usize, prefix: &str) -> BTreeSet<String> {
        let out = self.etcdctl(i, &["get", "--prefix", prefix, "--keys-only"]);
        assert!(
            out.status.success(),
            "get {prefix}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    /// (cluster id, voting healthy members, learners, members listed) as
    /// node `i`'s status reports them.
    pub fn etcd_view(&self, i: usize) -> Option<EtcdView> {
        let s = self.status(i)?;
        let etcd = s.get("etcd")?;
        let members = etcd.get("members")?.as_array()?;
        let voting = members
            .iter()
            .filter(|m| m["healthy"] == Value::Bool(true) && m["is_learner"] == Value::Bool(false))
            .count();
        let learners = members
            .iter()
            .filter(|m| m["is_learner"] == Value::Bool(true))
            .count();
        Some(EtcdView {
            cluster_id: etcd["cluster_id"].as_str()?.to_string(),
            healthy_voters: voting,
            learners,
            listed: members.len(),
        })
    }

    /// Waits until every listed node reports the same cluster with exactly
    /// `members` healthy voting members, no learner and nothing else listed
    /// (no dead member left, not over size). Returns the cluster id.
    pub fn wait_for_cluster(&self, nodes: &[usize], members: usize, timeout: Duration) -> String {
        let mut id = String::new();
        let waited = wait_until(
            "one etcd cluster with all members healthy",
            timeout,
            Duration::from_millis(200),
            || {
                let views: Vec<_> = nodes.iter().map(|&i| self.etcd_view(i)).collect();
                match views.first() {
                    Some(Some(first)) => {
                        let ok = views.iter().all(|v| {
                            v.as_ref().is_some_and(|v| {
                                v.cluster_id == first.cluster_id
                                    && v.healthy_voters == members
                                    && v.learners == 0
                                    && v.listed == members
                            })
                        });
                        if ok {
                            id = first.cluster_id.clone();
                        }
                        ok
                    }
                    _ => false,
                }
            },
        );
        if let Err(e) = waited {
            let views: Vec<_> = nodes.iter().map(|&i| self.status(i)).collect();
            panic!("{e}; statuses: {views:#?}");
        }
        id
    }
}

/// One node's report of its etcd cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdView {
    pub cluster_id: String,
    pub healthy_voters: usize,
    pub learners: usize,
    pub listed: usize,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Some(dir) = self.config.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// Whether `host`'s eth0 carries `vip` right now.
pub fn carries_vip(host: &Host, vip: std::net::Ipv4Addr) -> bool {
    host.ip_cmd(&["-4", "addr", "show", "dev", "eth0"])
        .contains(&format!("inet {vip}/32"))
}
