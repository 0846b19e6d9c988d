//! The agent daemon: runs the boot pipeline of DESIGN.md phase by phase.
//!
//! Today it runs `identify` and `configure`, then logs the plan it would
//! follow for the later phases (which land with their own modules) and stops
//! in phase `planned`. Nothing is written to the state directory before the
//! merged config is valid (S6).

use std::path::{Path, PathBuf};

use tracing::{info, info_span, Instrument};

use crate::config::{self, Config, ConfigErrors, Layer};
use crate::metadata::{self, InstanceFacts, MetadataError, ProviderKind};
use crate::plan::Plan;
use crate::state::{Phase, StateDir, StateError, Status};

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
}

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("identify: {0}")]
    Metadata(#[from] MetadataError),
    #[error("configure: invalid cluster config:\n{0}")]
    Config(#[from] ConfigErrors),
    #[error("configure: {path}: cannot read: {source}")]
    ReadConfig { path: PathBuf, source: std::io::Error },
    #[error("configure: no cluster config: the {provider} metadata has no user data and no --config was given")]
    NoConfig { provider: ProviderKind },
    #[error(transparent)]
    State(#[from] StateError),
}

/// Runs the pipeline as far as it is built.
pub async fn run(args: AgentArgs) -> Result<(), AgentError> {
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

    let config = info_span!("configure").in_scope(|| configure(&args, &facts))?;
    info!(cluster = %config.cluster.name, "cluster config is valid");

    // From here on the state directory may be written.
    let plan = Plan::build(&facts, &config);
    for step in &plan.steps {
        info!(phase = %step.phase, "plan: {}", step.action);
    }
    let mut status = Status::new(Phase::Planned);
    status.provider = Some(facts.provider);
    status.instance_id = Some(facts.instance_id.clone());
    status.hostname = facts.hostname.clone();
    status.cluster = Some(config.cluster.name.clone());
    status.role = None;
    status.message = Some(plan.summary());
    args.state_dir.write_status(&status)?;
    info!(state_dir = %args.state_dir.root().display(), "plan recorded; later phases are not built yet, stopping");
    Ok(())
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
        return Err(AgentError::NoConfig { provider: facts.provider });
    }
    Ok(config::load(defaults, user_data, &args.metadata.cmdline)?)
}

fn read_layer(path: &Path) -> Result<Layer, AgentError> {
    let text = std::fs::read_to_string(path)
        .map_err(|source| AgentError::ReadConfig { path: path.to_path_buf(), source })?;
    Ok(Layer { origin: path.display().to_string(), text })
}

fn read_optional_layer(path: &Path) -> Result<Option<Layer>, AgentError> {
    match read_layer(path) {
        Ok(layer) => Ok(Some(layer)),
        Err(AgentError::ReadConfig { source, .. }) if source.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// `muster status` in text form.
pub fn render_status_text(status: &Status) -> String {
    let dash = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
    let mut out = String::new();
    out.push_str(&format!("phase:       {}\n", status.phase));
    out.push_str(&format!(
        "provider:    {}\n",
        status.provider.map(|p| p.to_string()).unwrap_or_else(|| "-".into())
    ));
    out.push_str(&format!("instance:    {}\n", dash(&status.instance_id)));
    out.push_str(&format!("hostname:    {}\n", dash(&status.hostname)));
    out.push_str(&format!("cluster:     {}\n", dash(&status.cluster)));
    out.push_str(&format!("role:        {}\n", dash(&status.role)));
    out.push_str(&format!("message:     {}\n", dash(&status.message)));
    out.push_str(&format!("agent pid:   {}\n", status.pid));
    out
}
