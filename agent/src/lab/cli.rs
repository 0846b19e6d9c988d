//! `muster lab ...`: the command-line surface of the lab.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};

use super::LabError;
use super::ops::{self, Lab, UpArgs};
use super::spec::Accel;

#[derive(Args)]
pub struct LabCli {
    /// Which lab (several can run side by side).
    #[arg(long, default_value = "lab", global = true)]
    name: String,
    /// Where labs keep their state.
    #[arg(long, env = "MUSTER_LAB_ROOT", default_value = ops::DEFAULT_ROOT, global = true)]
    root: PathBuf,
    #[command(subcommand)]
    command: LabCommand,
}

#[derive(Clone, Copy, ValueEnum)]
enum AccelArg {
    Kvm,
    Tcg,
}

#[derive(Subcommand)]
enum LabCommand {
    /// Boot a new lab and watch it assemble.
    Up {
        /// Control-plane VMs (with stacked etcd): 1, 3 or 5.
        #[arg(long, default_value_t = 3)]
        nodes: u32,
        /// Worker VMs besides.
        #[arg(long, default_value_t = 0)]
        workers: u32,
        /// Memory per VM, in MiB (etcd, the Kubernetes control plane and
        /// a kubelet need about 1.5 GiB together).
        #[arg(long, default_value_t = 2048)]
        memory: u32,
        /// vCPUs per VM.
        #[arg(long, default_value_t = 1)]
        cpus: u32,
        /// The node image (qcow2) from `bash image/build.sh`.
        #[arg(long, env = "MUSTER_IMAGE", default_value = "build/image/muster.qcow2")]
        image: PathBuf,
        /// Force an accelerator (default: kvm when the CPU has vmx/svm, else tcg).
        #[arg(long, value_enum)]
        accel: Option<AccelArg>,
        /// Give up waiting after this many seconds (default 2700 under TCG, 300 under KVM).
        #[arg(long)]
        timeout: Option<u64>,
        /// Return once the VMs boot, without waiting for the cluster.
        #[arg(long)]
        no_wait: bool,
        /// Boot the VMs over the network from this PXE set (diskless, like
        /// bare metal) instead of from the image. Give them 2048 MiB.
        #[arg(long)]
        pxe: Option<PathBuf>,
        /// An extra kernel command-line argument for every VM (repeatable),
        /// e.g. `systemd.log_level=debug`; appended after the image's own,
        /// so it wins. Disk boots only.
        #[arg(long = "kernel-arg", value_name = "ARG")]
        kernel_args: Vec<String>,
    },
    /// Show every node and whether the cluster has assembled.
    Status,
    /// Wait until the cluster has assembled.
    Wait {
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
    },
    /// Power the VIP holder off hard and measure until the VIP answers
    /// from another node (then wait for it to settle there).
    Failover {
        #[arg(long, default_value_t = 300)]
        timeout: u64,
    },
    /// Power a node off hard; its machine is gone (out of the group).
    Kill { node: String },
    /// Power nodes off hard, keeping their disks (all nodes if none named).
    Stop { nodes: Vec<String> },
    /// Power stopped nodes on again with their disks (all if none named).
    Start { nodes: Vec<String> },
    /// Launch more machines into the group (e.g. a replacement).
    Add {
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// Replace every machine with one of a new image, one at a time,
    /// control planes first: each leaves through the group's termination
    /// hook (drained, etcd handed on), then its replacement joins; reports
    /// each step's API gap.
    Upgrade {
        /// The new node image (qcow2).
        #[arg(long)]
        image: PathBuf,
        /// How long each replacement may take to assemble, in seconds.
        #[arg(long, default_value_t = 1800)]
        timeout: u64,
        /// The nice value (0-19) a replacement's VM runs at until its step
        /// has assembled, so that it does not take the serving VMs' share
        /// of the host's cores (real machines bring their own); 0: none.
        #[arg(long, default_value_t = 10)]
        replacement_nice: i32,
        /// Seconds of API reads before the first step: the lab's figure
        /// at rest, which the steps compare against; 0 skips it.
        #[arg(long, default_value_t = 60)]
        baseline: u64,
    },
    /// Run kubectl against the lab's API (inside the lab network, with
    /// the lab's admin kubeconfig): `muster lab kubectl -- get nodes`.
    Kubectl {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Remove every VM, tap, bridge, namespace and file of the lab.
    Down,
    /// Run the lab's fake cloud (started by `up` inside the lab network).
    #[command(hide = true)]
    Serve {
        #[arg(long)]
        world: PathBuf,
        #[arg(long, required = true)]
        listen: Vec<SocketAddr>,
        #[arg(long)]
        pxe_dir: Option<PathBuf>,
    },
}

/// Runs a lab command; the binary maps the error to its exit code.
pub fn run(cli: LabCli) -> Result<(), LabError> {
    let lab = Lab {
        root: cli.root,
        name: cli.name,
        muster_bin: std::env::current_exe().map_err(LabError::io("/proc/self/exe"))?,
    };
    match cli.command {
        LabCommand::Up {
            nodes,
            workers,
            memory,
            cpus,
            image,
            accel,
            timeout,
            no_wait,
            pxe,
            kernel_args,
        } => {
            let accel = accel.map(|a| match a {
                AccelArg::Kvm => Accel::Kvm,
                AccelArg::Tcg => Accel::Tcg,
            });
            let chosen = accel.unwrap_or_else(super::vm::detect_accel);
            let default_wait = match chosen {
                Accel::Kvm => 300,
                // A demo beside a release build assembled in 1683 s.
                Accel::Tcg => 2700,
            };
            lab.up(&UpArgs {
                control_plane: nodes,
                workers,
                memory_mb: memory,
                cpus,
                image,
                accel: Some(chosen),
                pxe,
                wait: (!no_wait).then(|| Duration::from_secs(timeout.unwrap_or(default_wait))),
                kernel_args,
            })?;
        }
        LabCommand::Status => print!("{}", lab.status()?),
        LabCommand::Wait { timeout } => lab.wait(Duration::from_secs(timeout))?,
        LabCommand::Failover { timeout } => {
            lab.failover(Duration::from_secs(timeout))?;
        }
        LabCommand::Kill { node } => lab.kill(&node)?,
        LabCommand::Stop { nodes } => lab.stop(&nodes)?,
        LabCommand::Start { nodes } => lab.start(&nodes)?,
        LabCommand::Add { count } => {
            lab.add(count)?;
        }
        LabCommand::Upgrade {
            image,
            timeout,
            replacement_nice,
            baseline,
        } => {
            let options = super::upgrade::UpgradeOptions {
                limit: Duration::from_secs(timeout),
                replacement_nice,
                baseline: Duration::from_secs(baseline),
            };
            lab.upgrade(&image, &options)?;
        }
        LabCommand::Kubectl { args } => lab.kubectl(&args)?,
        LabCommand::Down => lab.down()?,
        LabCommand::Serve {
            world,
            listen,
            pxe_dir,
        } => ops::serve(world, &listen, pxe_dir)?,
    }
    Ok(())
}
