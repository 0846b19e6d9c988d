//! The agent daemon: runs the boot pipeline of docs/design.md phase by phase.
//!
//! identify → configure → (plan logged) → pki → discover / assign roles /
//! etcd → API VIP → Kubernetes (control plane, kubelet, kube-proxy, the
//! `bridge` pod network), DNS names, then the steady-state loop. The
//! Cilium/Istio mesh is not built yet; the plan says so. Nothing is
//! written to the state directory before the merged config is valid (S6).

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::{Instrument, info, info_span, warn};

use crate::backup;
use crate::config::{self, Config, ConfigErrors, Layer};
use crate::discovery::source::{PeerSource, SourceError};
use crate::etcd::client::{EtcdError, EtcdTls, client_url};
use crate::etcd::flags::TlsFiles;
use crate::etcd::runner::{Runner, RunnerConfig};
use crate::image::{self, ImagePaths};
use crate::kubernetes::{self, KubeInputs, KubeOptions, ServeHealth};
use crate::metadata::{self, InstanceFacts, MetadataError, ProviderKind};
use crate::pki::{self, CertKind, ClusterCa, NodeIdentity, PkiError};
use crate::plan::{self, Plan};
use crate::service::systemd::SystemdSupervisor;
use crate::service::{ServiceError, Supervisor, SupervisorKind, child::ChildSupervisor};
use crate::state::{Phase, StateDir, StateError, Status, StatusBoard};
use crate::status_endpoint;
use crate::vip::{self, EtcdAccess, VipError};

/// The image's defaults file, the lowest config layer.
pub const DEFAULT_DEFAULTS_FILE: &str = "/usr/lib/muster/defaults.yaml";

/// Everything `muster agent` needs, already resolved from flags.
#[derive(Debug)]
pub struct AgentArgs {
    pub provider: Option<ProviderKind>,
    pub metadata: metadata::Options,
    /// Overrides the instance's user data (static setups, tests).
    pub config_file: Option<PathBuf>,
    pub defaults_file: PathBuf,
    pub state_dir: StateDir,
    /// Stop after logging the plan (no pki, no etcd).
    pub plan_only: bool,
    pub supervisor: SupervisorKind,
    pub etcd_bin: PathBuf,
    pub timing: Timing,
    /// Where the status endpoint listens; `None`: no endpoint.
    pub status_listen: Option<SocketAddr>,
    /// Where the image facts are read from.
    pub image_paths: ImagePaths,
    /// Where the Kubernetes binaries are and its files go.
    pub kubernetes: KubeOptions,
}

/// Timers of the etcd loop; the defaults suit production, tests shorten them.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub tick: Duration,
    pub replace_after: Duration,
    /// etcd's raft timers in ms; `None`: the config's `topology.etcd.timing`.
    pub heartbeat_ms: Option<u32>,
    pub election_ms: Option<u32>,
}

impl Default for Timing {
    fn default() -> Self {
        Timing {
            tick: Duration::from_millis(500),
            replace_after: Duration::from_secs(60),
            heartbeat_ms: None,
            election_ms: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("identify: {0}")]
    Metadata(#[from] MetadataError),
    #[error("configure: invalid cluster config:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error("configure: {path}: cannot read: {source}")]
    ReadConfig {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "configure: no cluster config: the {provider} metadata has no user data and no --config was given"
    )]
    NoConfig { provider: ProviderKind },
    #[error(transparent)]
    State(#[from] StateError),
    #[error("identify: the {provider} metadata gives no private IPv4 address; etcd needs one")]
    NoAddress { provider: ProviderKind },
    #[error("pki: {0}")]
    Pki(#[from] PkiError),
    #[error("etcd: {0}")]
    Etcd(#[from] EtcdError),
    #[error(transparent)]
    Discovery(#[from] SourceError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    #[error("api endpoint: {0}")]
    Vip(#[from] VipError),
    #[error(transparent)]
    Kubernetes(#[from] kubernetes::SetupError),
    #[error(transparent)]
    Backup(#[from] Box<crate::backup::BackupError>),
}

/// Runs the pipeline as far as it is built. The status endpoint answers
/// from the start (before identify); a failure is reported there, and in
/// `status.json` once that may be written, before it is returned.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
    let board = StatusBoard::new(Status::new(Phase::Starting));
    let _endpoint = start_status_endpoint(args.status_listen, &board).await;
    if args.supervisor == SupervisorKind::Systemd {
        tokio::spawn(crate::service::boot_state::report_boot_finished());
        tokio::spawn(crate::service::footprint::report_footprint(board.clone()));
    }
    let result = pipeline(&args, &board).await;
    if let Err(e) = &result {
        report(&board, |s| {
            s.phase = Phase::Failed;
            s.message = Some(e.to_string());
        });
    }
    result
}

async fn pipeline(args: &AgentArgs, board: &StatusBoard) -> Result<(), AgentError> {
    let image = report_image(&args.image_paths, board);
    report(board, |s| {
        s.phase = Phase::Identify;
        s.message = Some("asking the metadata provider about this machine".into());
    });
    let facts = metadata::identify(args.provider, &args.metadata)
        .instrument(info_span!("identify"))
        .await?;
    info!(
        provider = %facts.provider,
        instance_id = %facts.instance_id,
        hostname = facts.hostname.as_deref().unwrap_or("-"),
        private_ipv4 = ?facts.private_ipv4,
        group = facts.group.as_deref().unwrap_or("-"),
        "identified this machine"
    );
    // On the image, the machine takes its name from the metadata (it boots
    // as `localhost`); Kubernetes components name themselves after it.
    if args.supervisor == SupervisorKind::Systemd
        && let Some(name) = crate::service::hostname::from_metadata(facts.hostname.as_deref())
    {
        crate::service::hostname::ensure(&name).await;
    }
    report(board, |s| {
        s.phase = Phase::Configure;
        s.provider = Some(facts.provider);
        s.instance_id = Some(facts.instance_id.clone());
        s.hostname = facts.hostname.clone();
        s.message = Some("merging and validating the cluster config".into());
    });

    let config = info_span!("configure").in_scope(|| configure(args, &facts))?;
    // The Kubernetes the config asks for must be the one the node carries.
    let kube_version = kubernetes::check(
        &config,
        &args.kubernetes,
        image.kubernetes_version.as_deref(),
    )
    .await?;
    info!(cluster = %config.cluster.name, kubernetes = ?kube_version.map(|v| v.to_string()), "cluster config is valid");

    // From here on the state directory may be written.
    let plan = Plan::build(&facts, &config, kube_version);
    for step in &plan.steps {
        let built = if step.built {
            ""
        } else {
            " (not built yet: skipped)"
        };
        info!(phase = %step.phase, "plan: {}{built}", step.action);
    }
    report(board, |s| {
        s.phase = Phase::Planned;
        s.cluster = Some(config.cluster.name.clone());
        s.message = Some(plan.summary());
    });
    board.persist_to(args.state_dir.clone())?;
    if args.plan_only {
        info!(state_dir = %args.state_dir.root().display(), "plan recorded; --plan-only, stopping");
        return Ok(());
    }
    if config.cluster.join.is_some() {
        return join_as_worker(args, board, &facts, &config, kube_version).await;
    }
    report(board, |s| {
        s.phase = Phase::Pki;
        s.message = Some("issuing this node's certificates".into());
    });

    let ip = facts.private_ipv4.ok_or(AgentError::NoAddress {
        provider: facts.provider,
    })?;
    let pki_dir = args.state_dir.root().join("pki");
    let hostname = facts
        .hostname
        .clone()
        .unwrap_or_else(|| facts.instance_id.clone());
    let node_pki = info_span!("pki").in_scope(|| -> Result<_, AgentError> {
        let ca = ClusterCa::derive(
            &config.cluster.name,
            config.cluster.secret.expose().as_bytes(),
        )?;
        let node = NodeIdentity::new(
            hostname.clone(),
            [IpAddr::V4(ip), IpAddr::V4(std::net::Ipv4Addr::LOCALHOST)],
        );
        let node_pki = pki::ensure_node_certs(&pki_dir, &ca, &node)?;
        info!(dir = %pki_dir.display(), ca = %ca.spki_sha256(), "node certificates ready");
        Ok(node_pki)
    })?;
    let tls = EtcdTls::from_pki(&node_pki)?;
    let tls_files = {
        let (server_cert, server_key) = pki::cert_paths(&pki_dir, CertKind::EtcdServer);
        let (peer_cert, peer_key) = pki::cert_paths(&pki_dir, CertKind::EtcdPeer);
        TlsFiles {
            ca: node_pki.ca_path.clone(),
            server_cert,
            server_key,
            peer_cert,
            peer_key,
        }
    };
    let supervisor = match args.supervisor {
        SupervisorKind::Child => {
            Supervisor::Child(ChildSupervisor::new(args.state_dir.root().join("services")))
        }
        SupervisorKind::Systemd => Supervisor::Systemd(SystemdSupervisor::connect(None).await?),
    };
    report(board, |s| {
        s.phase = Phase::Discover;
        s.message = Some("finding this node's peers".into());
    });
    let api_endpoint = config.cloud.endpoint_url();
    let source = PeerSource::from_config(
        config.discovery.method(),
        api_endpoint.as_ref(),
        &facts,
        &args.metadata,
    )
    .await?;

    // One shutdown signal, shared: the VIP must be released before exit.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    let first_view = source.list().await.ok();
    let peer_urls = peer_client_urls(first_view.as_deref().unwrap_or_default(), ip);
    let kube_phase = match kube_version {
        Some(version) => Some((
            kubernetes::prepare(KubeInputs {
                config: &config,
                node_name: hostname.to_ascii_lowercase(),
                ip,
                version,
                opts: &args.kubernetes,
                supervisor: supervisor.clone(),
                state_dir: args.state_dir.root(),
                etcd_tls: tls.clone(),
                etcd_peers: peer_urls.clone(),
            })?,
            version,
        )),
        None => None,
    };

    let backup = backup::setup(
        &config,
        &facts,
        &args.metadata,
        api_endpoint.as_ref(),
        &args.etcd_bin,
    )
    .await
    .map_err(Box::new)?;
    let etcd_timing = config.topology.etcd.timing.millis();
    let mut runner = Runner::new(
        RunnerConfig {
            cluster_name: config.cluster.name.clone(),
            topology: plan::topology(&config),
            ip,
            state: args.state_dir.clone(),
            supervisor,
            etcd_bin: args.etcd_bin.clone(),
            tls_files,
            tls: tls.clone(),
            replace_after: args.timing.replace_after,
            heartbeat_ms: args.timing.heartbeat_ms.unwrap_or(etcd_timing.0),
            election_ms: args.timing.election_ms.unwrap_or(etcd_timing.1),
            tick: args.timing.tick,
            status: board.clone(),
            restore: backup.as_ref().and_then(|b| b.restore_setup()),
        },
        source,
    );
    if let Some(view) = first_view {
        runner.take_view(view);
    }
    let health = ServeHealth::for_node(
        &config,
        kube_version.is_some(),
        &args.kubernetes.paths,
        EtcdAccess::mtls(vec![client_url(ip)], &node_pki).map_err(VipError::from)?,
    );
    let vip_task = vip::setup::start(
        vip::setup::VipInputs {
            config: &config,
            facts: &facts,
            ip,
            node_pki: &node_pki,
            peer_endpoints: peer_urls,
            imds: &args.metadata,
            board,
            leaving: runner.leaving(),
        },
        health,
        stopped(stop_rx.clone()),
    )
    .await?;
    if let Some(task) = &vip_task {
        runner.wait_for_vip_release(task.role.clone());
    }
    let backup_inputs = backup::phase::BackupInputs {
        cluster: config.cluster.name.clone(),
        ip,
        tls: tls.clone(),
        topology: plan::topology(&config),
        roles: runner.roles(),
        board: board.clone(),
        work_dir: args.state_dir.root().join("backup"),
    };
    backup::phase::start(backup.as_ref(), backup_inputs, stopped(stop_rx.clone()));
    if let Some((kube, version)) = kube_phase {
        let (drained_tx, drained_rx) = tokio::sync::watch::channel(false);
        runner.wait_for_drain(drained_rx);
        let phase = kubernetes::run(
            kube,
            version,
            runner.roles(),
            runner.views(),
            drained_tx,
            board.clone(),
            stopped(stop_rx.clone()),
        );
        tokio::spawn(phase.instrument(info_span!("kubernetes")));
    }
    let dns_task = crate::dns::phase::start(
        &config,
        crate::dns::phase::DnsInputs {
            provider: crate::dns::ProviderContext {
                region: facts.region.clone(),
                imds: args.metadata.clone(),
                cloud_endpoint: api_endpoint.clone(),
                gce_metadata: None,
            },
            hostname: hostname.to_ascii_lowercase(),
            ip: IpAddr::V4(ip),
            kubeconfig: kube_version.map(|_| {
                kubernetes::control_plane::ControlPlane::agent_kubeconfig(&args.kubernetes.paths)
            }),
            etcd: vip::EtcdAccess::mtls(Vec::new(), &node_pki).map_err(VipError::from)?,
            roles: runner.roles(),
            views: runner.views(),
            board: board.clone(),
        },
        stopped(stop_rx.clone()),
    );
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop_tx.send(true);
    });
    runner
        .run(stopped(stop_rx))
        .instrument(info_span!("etcd"))
        .await;
    if let Some(task) = dns_task {
        // Waits for this node's own record to be removed (bounded).
        let _ = task.await;
    }
    if let Some(task) = vip_task {
        // Waits for the address to be removed and the lease revoked.
        match task.handle.await {
            Ok(Err(e)) => tracing::warn!("api endpoint: {e}"),
            Err(e) => tracing::warn!("api endpoint task: {e}"),
            Ok(Ok(())) => {}
        }
    }
    Ok(())
}

/// A worker of a worker-only group (`cluster.join`): no pki, etcd or VIP
/// of its own, only the Kubernetes node part.
async fn join_as_worker(
    args: &AgentArgs,
    board: &StatusBoard,
    facts: &InstanceFacts,
    config: &Config,
    kube_version: Option<kubernetes::version::KubeVersion>,
) -> Result<(), AgentError> {
    let ip = facts.private_ipv4.ok_or(AgentError::NoAddress {
        provider: facts.provider,
    })?;
    let version = kube_version.ok_or(kubernetes::SetupError::JoinWithoutKubernetes {
        path: args.kubernetes.bin_dir.join("kubelet"),
    })?;
    let supervisor = match args.supervisor {
        SupervisorKind::Child => {
            Supervisor::Child(ChildSupervisor::new(args.state_dir.root().join("services")))
        }
        SupervisorKind::Systemd => Supervisor::Systemd(SystemdSupervisor::connect(None).await?),
    };
    report(board, |s| {
        s.phase = Phase::Kubernetes;
        s.role = Some(crate::roles::Role::Worker.to_string());
        s.message = Some(
            "a worker of a worker-only group: joining Kubernetes with the join credential".into(),
        );
    });
    let hostname = facts
        .hostname
        .clone()
        .unwrap_or_else(|| facts.instance_id.clone());
    kubernetes::join_as_worker(
        config,
        hostname.to_ascii_lowercase(),
        ip,
        version,
        &args.kubernetes,
        supervisor,
        args.state_dir.root(),
        board.clone(),
        shutdown_signal(),
    )
    .instrument(info_span!("kubernetes"))
    .await;
    Ok(())
}

/// The etcd client URLs of the other listed peers, for the VIP manager to
/// fall back on; empty if the list could not be read yet.
fn peer_client_urls(peers: &[crate::discovery::Peer], ip: std::net::Ipv4Addr) -> Vec<String> {
    peers
        .iter()
        .filter(|p| p.address != ip && !p.address.is_unspecified())
        .map(|p| client_url(p.address))
        .collect()
}

/// Changes the live status; a status file that cannot be written is logged,
/// not fatal (the endpoint still serves the change).
fn report(board: &StatusBoard, change: impl FnOnce(&mut Status)) {
    if let Err(e) = board.update(change) {
        warn!("cannot write status: {e}");
    }
}

/// Reads the image facts and logs them in one line (see
/// [`image::ImageFacts::summary`]); sources that exist but cannot be used
/// are logged as warnings.
fn report_image(paths: &ImagePaths, board: &StatusBoard) -> image::ImageFacts {
    let read = image::read(paths);
    for problem in &read.problems {
        warn!("{problem}");
    }
    info!("{}", read.facts.summary());
    let facts = read.facts.clone();
    report(board, |s| s.image = Some(read.facts));
    facts
}

/// A spawned task that ends when this guard is dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts the status endpoint when `listen` is set. Not being able to
/// listen (the port is taken) is logged and the agent goes on: the cluster
/// matters more than its dashboard.
async fn start_status_endpoint(
    listen: Option<SocketAddr>,
    board: &StatusBoard,
) -> Option<AbortOnDrop> {
    let listener = match status_endpoint::bind(listen?).await {
        Ok(l) => l,
        Err(e) => {
            warn!("{e}; going on without it");
            return None;
        }
    };
    let addr = listener
        .local_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "?".into());
    info!(%addr, "status endpoint listening: GET /status, /metrics, /healthz");
    let board = board.clone();
    let serve = async move {
        if let Err(e) = status_endpoint::serve(listener, board, std::future::pending()).await {
            warn!("{e}");
        }
    };
    Some(AbortOnDrop(tokio::spawn(
        serve.instrument(info_span!("status-endpoint")),
    )))
}

/// Resolves on SIGTERM (systemd stop) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => std::future::pending().await,
    }
}

/// Merges image defaults < user data (or `--config`) < kernel command line.
fn configure(args: &AgentArgs, facts: &InstanceFacts) -> Result<Config, AgentError> {
    let defaults = read_optional_layer(&args.defaults_file)?;
    let user_data = match &args.config_file {
        Some(path) => Some(read_layer(path)?),
        None => facts.user_data.as_ref().map(|text| Layer {
            origin: format!("{} user data", facts.provider),
            text: text.clone(),
        }),
    };
    if user_data.is_none() && defaults.is_none() {
        return Err(AgentError::NoConfig {
            provider: facts.provider,
        });
    }
    Ok(config::load(defaults, user_data, &args.metadata.cmdline)?)
}

fn read_layer(path: &Path) -> Result<Layer, AgentError> {
    let text = std::fs::read_to_string(path).map_err(|source| AgentError::ReadConfig {
        path: path.to_path_buf(),
        source,
    })?;
    Ok(Layer {
        origin: path.display().to_string(),
        text,
    })
}

fn read_optional_layer(path: &Path) -> Result<Option<Layer>, AgentError> {
    match read_layer(path) {
        Ok(layer) => Ok(Some(layer)),
        Err(AgentError::ReadConfig { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// `muster status` in text form; `now_unix` dates the VIP role.
pub fn render_status_text(status: &Status, now_unix: u64) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = String::new();
    out.push_str(&format!("phase:       {}\n", status.phase));
    out.push_str(&format!(
        "provider:    {}\n",
        status
            .provider
            .map(|p| p.to_string())
            .unwrap_or_else(|| "-".into())
    ));
    out.push_str(&format!("instance:    {}\n", dash(&status.instance_id)));
    out.push_str(&format!("hostname:    {}\n", dash(&status.hostname)));
    out.push_str(&format!("cluster:     {}\n", dash(&status.cluster)));
    out.push_str(&format!("role:        {}\n", dash(&status.role)));
    out.push_str(&format!("message:     {}\n", dash(&status.message)));
    if let Some(etcd) = &status.etcd {
        out.push_str(&format!(
            "etcd:        cluster {} member {} leader {}\n",
            etcd.cluster_id, etcd.member_id, etcd.leader_id
        ));
        for m in &etcd.members {
            out.push_str(&format!(
                "  {:<16} {:<22} {:<28} {}{}\n",
                m.id,
                m.name,
                m.peer_url,
                if m.healthy { "healthy" } else { "UNHEALTHY" },
                if m.is_learner { " (learner)" } else { "" }
            ));
        }
    }
    if let Some(vip) = &status.vip {
        let held = now_unix.saturating_sub(vip.since);
        out.push_str(&format!(
            "vip:         {} ({}): {} for {held} s, taken {} time(s)",
            vip.address, vip.mode, vip.role, vip.takeovers
        ));
        if let Some(p) = &vip.priority {
            out.push_str(&format!("; {p} priority"));
        }
        if let Some(r) = &vip.renewals {
            out.push_str(&format!(
                "; renewals p50 {} ms, p99 {} ms, max {} ms",
                r.p50_ms, r.p99_ms, r.max_ms
            ));
        }
        out.push('\n');
    }
    if let Some(k) = &status.kubernetes {
        let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "kubernetes:  {} {}; apiserver {}; leaders: controller-manager {}, scheduler {}; objects {}\n",
            k.version,
            k.components.join(", "),
            if k.apiserver_ready { "ready" } else { "not ready" },
            dash(&k.controller_manager_leader),
            dash(&k.scheduler_leader),
            if k.objects.is_some() { "applied" } else { "not applied yet" },
        ));
        if let Some(m) = &k.message {
            out.push_str(&format!("             {m}\n"));
        }
        if let Some(n) = &k.node {
            out.push_str(&format!(
                "node:        {} {}; pod range {}; {} route(s){}\n",
                if n.name.is_empty() { "-" } else { &n.name },
                match (n.registered, n.ready) {
                    (_, true) => "Ready",
                    (true, false) => "registered, not Ready",
                    _ => "not registered",
                },
                n.pod_cidr.as_deref().unwrap_or("-"),
                n.routes,
                n.message
                    .as_deref()
                    .map(|m| format!("; {m}"))
                    .unwrap_or_default(),
            ));
        }
    }
    if let Some(dns) = &status.dns {
        out.push_str(&format!("dns:         {} ({})", dns.state, dns.provider));
        if let Some(m) = &dns.message {
            out.push_str(&format!(": {m}"));
        }
        if !dns.records.is_empty() {
            out.push_str(&format!("; {} record(s)", dns.records.len()));
        }
        out.push('\n');
        if let Some(h) = &dns.handover {
            out.push_str(&format!("  handover: {h}\n"));
        }
        for c in &dns.conflicts {
            out.push_str(&format!("  conflict: {c}\n"));
        }
    }
    if let Some(image) = &status.image {
        out.push_str(&format!("image:       {}\n", image.summary()));
    }
    if !status.memory_mib.is_empty() {
        let parts: Vec<String> = status
            .memory_mib
            .iter()
            .map(|(part, mib)| format!("{part} {mib}"))
            .collect();
        out.push_str(&format!("memory MiB:  {}\n", parts.join(", ")));
    }
    if !status.cpu_ms.is_empty() {
        let parts: Vec<String> = status
            .cpu_ms
            .iter()
            .map(|(part, ms)| format!("{part} {:.1}", *ms as f64 / 1000.0))
            .collect();
        out.push_str(&format!("CPU s:       {}\n", parts.join(", ")));
    }
    out.push_str(&format!("agent pid:   {}\n", status.pid));
    out
}
