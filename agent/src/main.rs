//! `muster` — the node agent and its operator commands.
//!
//! Exit codes: 0 success; 1 runtime failure; 2 usage error (clap);
//! 3 invalid config; 4 metadata unavailable.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use url::Url;

use muster::agent::{self, AgentArgs, AgentError, Timing};
use muster::config;
use muster::image::ImagePaths;
use muster::kubernetes::KubeOptions;
use muster::kubernetes::paths::KubePaths;
use muster::logging::{self, LogFormat};
use muster::metadata::{self, ProviderKind};
use muster::service::SupervisorKind;
use muster::state::{self, StateDir};
use muster::status_endpoint::{self, ListenAddr};

#[derive(Parser)]
#[command(
    name = "muster",
    version,
    about = "Muster node agent: boots a machine into a self-assembling Kubernetes cluster",
    long_about = "Muster node agent.\n\nOn a node, systemd runs `muster agent`: it reads the cloud metadata, merges the \
                  cluster config (image defaults < user data < kernel command line) and assembles the cluster. \
                  The other commands help operators check configs and see what the agent sees."
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check cluster configs and print their JSON Schema.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Print what the metadata provider says about this machine.
    Metadata(MetadataArgs),
    /// Run the node agent (what systemd starts on boot).
    Agent(Box<AgentCli>),
    /// Show what the local agent is doing.
    Status(StatusArgs),
    /// Print the admin kubeconfig (API through the VIP) of this
    /// control-plane node. Root only: it holds cluster-admin credentials.
    Kubeconfig(KubeconfigArgs),
    /// Print the cluster config of a worker-only group (the join
    /// credential: bootstrap token and CA pin, no secret). Root only.
    JoinCredential(KubeconfigArgs),
    /// A local QEMU cluster of the node image that assembles itself.
    #[cfg(feature = "lab")]
    Lab(muster::lab::cli::LabCli),
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Validate config files; prints FILE:LINE:COL: field: message for each problem.
    Validate {
        /// Config files (plain Muster YAML or #cloud-config with a `muster:` key).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Print the config's JSON Schema.
    Schema,
}

#[derive(Clone, Copy, ValueEnum)]
enum DataFormat {
    Json,
    Yaml,
}

#[derive(Clone, Copy, ValueEnum)]
enum StatusFormat {
    Text,
    Json,
}

/// Where to find the facts; shared by `metadata` and `agent`.
#[derive(Args, Clone)]
struct SourceArgs {
    /// Use this provider instead of detecting one.
    #[arg(long, value_enum)]
    provider: Option<ProviderKind>,
    /// Base URL of the metadata service (aws, gce, azure), for tests and proxies.
    #[arg(long)]
    endpoint: Option<Url>,
    /// Facts file for `--provider file`.
    #[arg(long)]
    metadata_file: Option<PathBuf>,
    /// Config drive / NoCloud seed directory (openstack, nocloud).
    #[arg(long)]
    seed_dir: Option<PathBuf>,
    /// AWS: allow falling back to IMDSv1 when IMDSv2 is refused.
    #[arg(long)]
    allow_imdsv1: bool,
    /// Kernel command line to read instead of /proc/cmdline (for tests).
    #[arg(long, default_value = muster::cmdline::PROC_CMDLINE)]
    cmdline_file: PathBuf,
}

#[derive(Args)]
struct MetadataArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// Output format.
    #[arg(long, value_enum, default_value_t = DataFormat::Json)]
    output: DataFormat,
    /// Print user data as it is, secrets included (default: secrets redacted).
    #[arg(long)]
    show_secrets: bool,
}

#[derive(Args)]
struct AgentCli {
    #[command(flatten)]
    source: SourceArgs,
    /// Cluster config to use instead of the instance's user data.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Image defaults (the lowest config layer); skipped if the file does not exist.
    #[arg(long, default_value = agent::DEFAULT_DEFAULTS_FILE)]
    defaults: PathBuf,
    /// Where the agent keeps its state.
    #[arg(long, default_value = state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Log the plan and stop (no certificates, no etcd).
    #[arg(long)]
    plan_only: bool,
    /// What runs etcd: systemd units (the image) or child processes.
    #[arg(long, value_enum, default_value_t = SupervisorKind::Systemd)]
    supervisor: SupervisorKind,
    /// The etcd binary.
    #[arg(long, env = "MUSTER_ETCD_BIN", default_value = "/usr/bin/etcd")]
    etcd_bin: PathBuf,
    /// Replace an etcd member unreachable this many seconds (quorum permitting).
    #[arg(long, default_value_t = 60)]
    replace_after_secs: u64,
    /// Milliseconds between two rounds of the agent loop.
    #[arg(long, default_value_t = 500)]
    tick_ms: u64,
    /// Where the Kubernetes binaries are (kube-apiserver, ...).
    #[arg(long, env = "MUSTER_KUBERNETES_BIN", default_value = "/usr/bin")]
    kubernetes_bin: PathBuf,
    /// Where the Kubernetes files go (kubeadm's layout: pki/, *.conf).
    #[arg(long, default_value = muster::kubernetes::paths::DEFAULT_DIR)]
    kubernetes_dir: PathBuf,
    /// etcd heartbeat interval and election timeout, in milliseconds
    /// (default: `topology.etcd.timing` of the config, else 100 and 1000).
    #[arg(long)]
    etcd_heartbeat_ms: Option<u32>,
    #[arg(long)]
    etcd_election_ms: Option<u32>,
    /// Serve GET /status (JSON), /metrics (Prometheus) and /healthz over
    /// plain HTTP on IP:PORT; `off` disables. Never shows a secret.
    #[arg(long, default_value = status_endpoint::DEFAULT_LISTEN)]
    status_listen: ListenAddr,
}

#[derive(Args)]
struct KubeconfigArgs {
    /// Where the agent keeps the Kubernetes files.
    #[arg(long, default_value = muster::kubernetes::paths::DEFAULT_DIR)]
    kubernetes_dir: PathBuf,
}

/// Prints a file the agent keeps for root on control-plane nodes.
fn print_root_file(command: &str, path: &std::path::Path, why: &str) -> ExitCode {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("muster {command}: root only ({why})");
        return ExitCode::FAILURE;
    }
    match std::fs::read_to_string(path) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            eprintln!(
                "muster {command}: {}: not found; only control-plane nodes hold it, once the Kubernetes phase has run (see `muster status`)",
                path.display()
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("muster {command}: {}: {e}", path.display());
            ExitCode::FAILURE
        }
    }
}

#[derive(Args)]
struct StatusArgs {
    /// The agent's state directory.
    #[arg(long, default_value = state::DEFAULT_STATE_DIR)]
    state_dir: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value_t = StatusFormat::Text)]
    output: StatusFormat,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    match cli.command {
        Command::Config(ConfigCommand::Validate { files }) => config_validate(&files),
        Command::Config(ConfigCommand::Schema) => {
            println!("{}", config::schema_json());
            ExitCode::SUCCESS
        }
        Command::Metadata(args) => run_async(metadata_command(args)),
        Command::Agent(args) => run_async(agent_command(*args)),
        Command::Status(args) => status_command(args),
        Command::Kubeconfig(args) => print_root_file(
            "kubeconfig",
            &KubePaths::new(args.kubernetes_dir).admin_conf(),
            "it grants cluster-admin",
        ),
        Command::JoinCredential(args) => print_root_file(
            "join-credential",
            &KubePaths::new(args.kubernetes_dir).join_credential(),
            "it lets a machine join as a node",
        ),
        #[cfg(feature = "lab")]
        Command::Lab(cli) => match muster::lab::cli::run(cli) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(1)
            }
        },
    }
}

fn run_async(fut: impl std::future::Future<Output = ExitCode>) -> ExitCode {
    match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(fut),
        Err(e) => {
            eprintln!("muster: cannot start the async runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

fn config_validate(files: &[PathBuf]) -> ExitCode {
    let mut bad = 0;
    for file in files {
        let origin = file.display().to_string();
        let text = match std::fs::read_to_string(file) {
            Ok(t) => t,
            Err(e) => {
                eprintln!("{origin}: cannot read: {e}");
                bad += 1;
                continue;
            }
        };
        match config::validate_text(&origin, &text) {
            Ok(_) => println!("{origin}: ok"),
            Err(errors) => {
                eprintln!("{errors}");
                bad += 1;
            }
        }
    }
    if bad == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    }
}

fn metadata_options(source: &SourceArgs) -> Result<metadata::Options, String> {
    let cmdline = muster::cmdline::KernelCmdline::read(&source.cmdline_file).map_err(|e| {
        format!(
            "{}: cannot read kernel command line: {e}",
            source.cmdline_file.display()
        )
    })?;
    let mut opts = metadata::Options {
        endpoint: source.endpoint.clone(),
        allow_imdsv1: source.allow_imdsv1,
        metadata_file: source.metadata_file.clone(),
        cmdline,
        ..metadata::Options::default()
    };
    if source.seed_dir.is_some() {
        opts.seed_dir = source.seed_dir.clone();
    }
    Ok(opts)
}

async fn metadata_command(args: MetadataArgs) -> ExitCode {
    let opts = match metadata_options(&args.source) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut facts = match metadata::identify(args.source.provider, &opts).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::from(4);
        }
    };
    if !args.show_secrets {
        facts.user_data = facts.user_data.map(|u| config::redact_user_data(&u));
    }
    let rendered = match args.output {
        DataFormat::Json => serde_json::to_string_pretty(&facts).map_err(|e| e.to_string()),
        DataFormat::Yaml => serde_saphyr::to_string(&facts).map_err(|e| e.to_string()),
    };
    match rendered {
        Ok(text) => {
            println!("{}", text.trim_end());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("muster: cannot render the facts: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn agent_command(args: AgentCli) -> ExitCode {
    let metadata = match metadata_options(&args.source) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::FAILURE;
        }
    };
    let agent_args = AgentArgs {
        provider: args.source.provider,
        metadata,
        config_file: args.config,
        defaults_file: args.defaults,
        state_dir: StateDir::new(args.state_dir),
        plan_only: args.plan_only,
        supervisor: args.supervisor,
        etcd_bin: args.etcd_bin,
        timing: Timing {
            tick: std::time::Duration::from_millis(args.tick_ms),
            replace_after: std::time::Duration::from_secs(args.replace_after_secs),
            heartbeat_ms: args.etcd_heartbeat_ms,
            election_ms: args.etcd_election_ms,
        },
        status_listen: args.status_listen.0,
        kubernetes: KubeOptions {
            bin_dir: args.kubernetes_bin,
            paths: KubePaths::new(args.kubernetes_dir),
        },
        image_paths: ImagePaths {
            cmdline: args.source.cmdline_file.clone(),
            ..ImagePaths::default()
        },
    };
    match agent::run(agent_args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e}");
            ExitCode::from(match e {
                // A config the image cannot serve: restarting cannot fix it.
                AgentError::Config(_) | AgentError::Kubernetes(_) => 3,
                AgentError::Metadata(_) => 4,
                _ => 1,
            })
        }
    }
}

fn status_command(args: StatusArgs) -> ExitCode {
    let status = match StateDir::new(&args.state_dir).read_status() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("muster: {e}");
            return ExitCode::FAILURE;
        }
    };
    match args.output {
        StatusFormat::Json => match serde_json::to_string_pretty(&status) {
            Ok(t) => println!("{t}"),
            Err(e) => {
                eprintln!("muster: {e}");
                return ExitCode::FAILURE;
            }
        },
        StatusFormat::Text => print!(
            "{}",
            agent::render_status_text(
                &status,
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs()),
            )
        ),
    }
    ExitCode::SUCCESS
}
