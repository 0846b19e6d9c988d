//! The `muster lab` commands. Side effects live here: files in the lab
//! directory, the namespace, dnsmasq, the fake cloud and the QEMU processes.
//! Every command reads `lab.json` afresh, so commands can run from
//! different shells (or tests) one after another.

use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use ring::rand::SecureRandom as _;

use super::progress::{self, Assembly, NodeView};
use super::spec::{
    self, Accel, BootMode, LabPaths, LabState, METADATA_ADDR, Power, STATUS_PORT, node_name,
};
use super::{LabError, cloud, dhcp, net, vm};
use crate::state::{Status, now_secs};

/// Where labs live unless `--root` says otherwise.
pub const DEFAULT_ROOT: &str = "/var/lib/muster-lab";

/// Which lab, and the `muster` binary that runs its fake cloud.
#[derive(Debug, Clone)]
pub struct Lab {
    pub root: PathBuf,
    pub name: String,
    pub muster_bin: PathBuf,
}

/// `lab up` settings.
#[derive(Debug, Clone)]
pub struct UpArgs {
    pub control_plane: u32,
    pub workers: u32,
    pub memory_mb: u32,
    pub cpus: u32,
    pub image: PathBuf,
    pub accel: Option<Accel>,
    /// Boot over the network from this PXE set (`build/image/pxe`) instead
    /// of from disks.
    pub pxe: Option<PathBuf>,
    /// Wait for assembly this long; `None` returns once the VMs are booting.
    pub wait: Option<Duration>,
    /// Extra kernel command-line arguments for disk boots (see
    /// [`LabState::kernel_args`]).
    pub kernel_args: Vec<String>,
}

/// The files of a PXE set that the lab serves.
const PXE_FILES: [&str; 4] = ["vmlinuz", "initrd", "muster-usr.cpio", "muster.ipxe"];

impl Lab {
    pub(super) fn paths(&self) -> LabPaths {
        LabPaths::new(&self.root, &self.name)
    }

    pub fn load(&self) -> Result<LabState, LabError> {
        let path = self.paths().state();
        let text = std::fs::read_to_string(&path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => LabError::Usage(format!(
                "no lab named {:?} under {} (start one with `muster lab up`)",
                self.name,
                self.root.display()
            )),
            _ => LabError::Io {
                path: path.clone(),
                source: e,
            },
        })?;
        serde_json::from_str(&text).map_err(|e| LabError::State {
            path,
            message: e.to_string(),
        })
    }

    /// Writes `lab.json`, then the files derived from it (the cloud's view,
    /// the DHCP leases), each atomically, all 0600: the user data in the
    /// cloud's view holds the cluster secret.
    pub(super) fn save(&self, lab: &LabState) -> Result<(), LabError> {
        let p = self.paths();
        let state = serde_json::to_string_pretty(lab).map_err(|e| LabError::State {
            path: p.state(),
            message: e.to_string(),
        })?;
        let cloud =
            serde_json::to_string_pretty(&spec::cloud_view(lab)).map_err(|e| LabError::State {
                path: p.cloud(),
                message: e.to_string(),
            })?;
        write_private(&p.state(), &state)?;
        write_private(&p.cloud(), &cloud)?;
        write_private(&p.dnsmasq_hosts(), &dhcp::dnsmasq_hosts(lab))?;
        if lab.boot == BootMode::Pxe {
            // What `muster.config=` points at (the iPXE script's default:
            // config.yaml beside the boot files), and the site script the
            // DHCP server hands out, which says where the files are.
            write_private(&p.pxe_dir().join("config.yaml"), &spec::user_data(lab))?;
            write_private(&p.pxe_dir().join("boot.ipxe"), &dhcp::ipxe_site_script(lab))?;
        }
        Ok(())
    }

    /// `muster lab up`: creates the lab and boots its VMs.
    pub fn up(&self, args: &UpArgs) -> Result<LabState, LabError> {
        spec::check_name(&self.name).map_err(LabError::Usage)?;
        if ![1, 3, 5].contains(&args.control_plane) {
            return Err(LabError::Usage(format!(
                "--nodes {}: the control plane (with its etcd) needs 1, 3 or 5 nodes",
                args.control_plane
            )));
        }
        check_tools()?;
        let paths = self.paths();
        if paths.state().exists() || net::exists(&format!("muster-lab-{}", self.name)) {
            return Err(LabError::Usage(format!(
                "lab {:?} already exists; `{} down` removes it",
                self.name,
                self.command()
            )));
        }
        let boot = match &args.pxe {
            Some(_) if !args.kernel_args.is_empty() => {
                return Err(LabError::Usage(
                    "--kernel-arg applies to disk boots (systemd-stub reads it); a PXE set's \
                     kernel command line is in its muster.ipxe"
                        .into(),
                ));
            }
            Some(dir) => {
                if let Some(missing) = PXE_FILES.iter().find(|f| !dir.join(f).is_file()) {
                    return Err(LabError::Usage(format!(
                        "PXE set {}: no {missing}; build it with `bash image/build.sh`",
                        dir.display()
                    )));
                }
                BootMode::Pxe
            }
            None => {
                if !args.image.is_file() {
                    return Err(LabError::Usage(format!(
                        "image {}: not found; build it with `bash image/build.sh` or pass --image",
                        args.image.display()
                    )));
                }
                BootMode::Disk
            }
        };
        std::fs::create_dir_all(&paths.dir).map_err(LabError::io(&paths.dir))?;
        std::fs::set_permissions(&paths.dir, std::fs::Permissions::from_mode(0o700))
            .map_err(LabError::io(&paths.dir))?;
        match &args.pxe {
            Some(dir) => {
                std::fs::create_dir_all(paths.pxe_dir()).map_err(LabError::io(paths.pxe_dir()))?;
                for f in PXE_FILES {
                    std::fs::copy(dir.join(f), paths.pxe_dir().join(f))
                        .map_err(LabError::io(paths.pxe_dir().join(f)))?;
                }
            }
            None => {
                std::fs::copy(&args.image, paths.image()).map_err(LabError::io(paths.image()))?;
            }
        }

        let mut lab = LabState {
            name: self.name.clone(),
            subnet: spec::free_subnet(&self.subnets_in_use()).ok_or_else(|| {
                LabError::Usage("every 10.77.X.0/24 is taken by another lab".into())
            })?,
            image: paths.image(),
            accel: args.accel.unwrap_or_else(vm::detect_accel),
            memory_mb: args.memory_mb,
            cpus: args.cpus,
            control_plane: args.control_plane,
            workers: args.workers,
            secret: new_secret()?,
            created_at: now_secs(),
            boot,
            kernel_args: args.kernel_args.clone(),
            nodes: Vec::new(),
        };
        for i in 0..args.control_plane + args.workers {
            lab.add_node(u64::from(i)).map_err(LabError::Usage)?;
        }
        self.save(&lab)?;
        write_private(&paths.dnsmasq_conf(), &dhcp::dnsmasq_conf(&lab, &paths))?;
        let admin = crate::kubernetes::admin_kubeconfig(
            &lab.name,
            lab.secret.as_bytes(),
            &format!("https://{}:6443", lab.vip()),
        )
        .map_err(|e| LabError::Usage(format!("the lab's admin kubeconfig: {e}")))?;
        write_private(&paths.admin_conf(), &admin)?;
        println!(
            "lab {}: {} control-plane + {} worker VM(s), {} MB each, accel {}, network {}.0/24 in namespace {}",
            lab.name,
            args.control_plane,
            args.workers,
            lab.memory_mb,
            lab.accel,
            lab.gateway().to_string().trim_end_matches(".1"),
            lab.netns()
        );

        net::create(&lab)?;
        self.start_dnsmasq(&lab)?;
        self.start_cloud(&lab)?;
        for n in lab.nodes.clone() {
            self.boot(&lab, n.index, true)?;
        }
        self.print_access(&lab);
        if let Some(limit) = args.wait {
            self.wait(limit)?;
        }
        Ok(lab)
    }

    fn subnets_in_use(&self) -> Vec<u8> {
        let Ok(entries) = std::fs::read_dir(&self.root) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| std::fs::read_to_string(e.path().join("lab.json")).ok())
            .filter_map(|t| serde_json::from_str::<LabState>(&t).ok())
            .map(|l| l.subnet)
            .collect()
    }

    fn start_dnsmasq(&self, lab: &LabState) -> Result<(), LabError> {
        let p = self.paths();
        net::run(
            net::in_netns(&lab.netns(), "dnsmasq")
                .arg(format!("--conf-file={}", p.dnsmasq_conf().display()))
                .arg(format!("--pid-file={}", p.dnsmasq_pid().display()))
                .arg(format!(
                    "--log-facility={}",
                    p.dir.join("dnsmasq.log").display()
                )),
            "start dnsmasq (DHCP for the VMs)",
        )?;
        Ok(())
    }

    /// The fake cloud: `muster lab serve` inside the namespace, detached.
    fn start_cloud(&self, lab: &LabState) -> Result<(), LabError> {
        let p = self.paths();
        let log = std::fs::File::create(p.server_log()).map_err(LabError::io(p.server_log()))?;
        let err = log.try_clone().map_err(LabError::io(p.server_log()))?;
        let mut cmd = net::in_netns(&lab.netns(), &self.muster_bin.display().to_string());
        cmd.args(["lab", "serve", "--world"])
            .arg(p.cloud())
            .arg("--listen")
            .arg(SocketAddr::from((METADATA_ADDR, 80)).to_string());
        if lab.boot == BootMode::Pxe {
            // iPXE and the PXE nodes fetch from the gateway, as from a boot server.
            cmd.arg("--listen")
                .arg(SocketAddr::from((lab.gateway(), 80)).to_string())
                .arg("--pxe-dir")
                .arg(p.pxe_dir());
        }
        cmd.stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .process_group(0);
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            what: "start the fake cloud".into(),
            command: format!("{cmd:?}"),
            source,
        })?;
        write_private(&p.server_pid(), &child.id().to_string())?;
        // It binds at once; give it a moment and check it did not die.
        std::thread::sleep(Duration::from_millis(300));
        if !pid_alive(child.id() as i32, "lab") {
            let log = std::fs::read_to_string(p.server_log()).unwrap_or_default();
            return Err(LabError::Usage(format!(
                "the fake cloud exited at once: {}",
                log.trim()
            )));
        }
        Ok(())
    }

    /// Creates (first boot) or reuses node `index`'s disk and starts QEMU.
    fn boot(&self, lab: &LabState, index: u32, fresh: bool) -> Result<(), LabError> {
        let p = self.paths();
        let dir = p.node_dir(index);
        std::fs::create_dir_all(&dir).map_err(LabError::io(&dir))?;
        if lab.boot == BootMode::Disk && (fresh || !p.disk(index).exists()) {
            net::run(
                Command::new("qemu-img")
                    .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
                    .arg(&lab.image)
                    .arg(p.disk(index))
                    .arg(vm::DISK_SIZE),
                "create a node disk",
            )?;
            std::fs::copy(vm::OVMF_VARS, p.efi_vars(index))
                .map_err(LabError::io(p.efi_vars(index)))?;
        }
        net::add_tap(lab, index)?;
        let mut cmd = net::in_netns(&lab.netns(), "qemu-system-x86_64");
        cmd.args(vm::qemu_args(lab, &p, index));
        net::run(&mut cmd, &format!("boot {}", node_name(index)))?;
        Ok(())
    }

    /// This lab's command as it can be run from any shell: the binary's
    /// full path (it is rarely on PATH) and the lab's name and root.
    pub fn command(&self) -> String {
        let mut cmd = format!("{} lab --name {}", self.muster_bin.display(), self.name);
        if self.root != Path::new(DEFAULT_ROOT) {
            cmd.push_str(&format!(" --root {}", self.root.display()));
        }
        cmd
    }

    fn print_access(&self, lab: &LabState) {
        let p = self.paths();
        println!(
            "consoles: tail -f {}/node-N/serial.log   (agent logs are on the console)",
            p.dir.display()
        );
        println!(
            "status:   {0} status   or, inside the lab network: nsenter --net=/run/netns/{1} curl http://{2}:{3}/status",
            self.command(),
            lab.netns(),
            lab.node_ip(1),
            STATUS_PORT
        );
        println!(
            "API VIP:  https://{}:6443 (the status endpoint answers on the VIP too, port {STATUS_PORT})",
            lab.vip()
        );
        println!(
            "kubectl:  {} kubectl -- get namespaces   (kubeconfig {}, usable inside the lab network)",
            self.command(),
            p.admin_conf().display()
        );
    }

    /// Each node as the host sees it now; the nodes are asked at once.
    pub fn views(&self, lab: &LabState) -> Vec<NodeView> {
        let p = self.paths();
        std::thread::scope(|scope| {
            let asked: Vec<_> = lab
                .nodes
                .iter()
                .map(|n| scope.spawn(|| self.view(lab, &p, n)))
                .collect();
            asked.into_iter().filter_map(|h| h.join().ok()).collect()
        })
    }

    fn view(&self, lab: &LabState, p: &LabPaths, n: &spec::NodeState) -> NodeView {
        let running = read_pid(&p.qemu_pid(n.index))
            .is_some_and(|pid| pid_alive(pid, &format!("muster-lab-{}-", lab.name)));
        let ip = lab.node_ip(n.index);
        let status = if n.power == Power::On && running {
            fetch_status(lab, ip)
        } else {
            Err("powered off".into())
        };
        let console = if status.is_err() && n.power == Power::On {
            last_console_line(&p.serial_log(n.index))
        } else {
            None
        };
        NodeView {
            index: n.index,
            ip,
            power: n.power,
            running,
            status,
            console,
        }
    }

    /// Views plus the cluster-wide tally, with the VIP asked directly.
    pub fn assess(&self, lab: &LabState) -> (Vec<NodeView>, Assembly) {
        let views = self.views(lab);
        let mut a = progress::assess(&views);
        a.vip_answers_from = fetch_status(lab, lab.vip())
            .ok()
            .and_then(|s| s.instance_id);
        if a.kubernetes {
            a.api_ready = net::api_ready(
                &lab.netns(),
                &self.paths().admin_conf(),
                Duration::from_secs(3),
            );
        }
        (views, a)
    }

    /// `muster lab status`.
    pub fn status(&self) -> Result<String, LabError> {
        let lab = self.load()?;
        let (views, a) = self.assess(&lab);
        Ok(progress::render(&lab, &views, &a, Some(now_secs())))
    }

    /// Polls until the cluster has assembled and the VIP has settled on one
    /// holder (several assessments in a row agree), printing each change.
    pub fn wait(&self, limit: Duration) -> Result<(), LabError> {
        let started = Instant::now();
        let mut last: Vec<String> = Vec::new();
        let mut settling = progress::Settling::default();
        println!("[{:>5}] {}", "time", progress::header());
        loop {
            let lab = self.load()?;
            let (views, a) = self.assess(&lab);
            let now = now_secs();
            // Ages tick every second: a line is printed again only when
            // something else in it changed.
            let lines = |now: Option<u64>| {
                let mut l = progress::node_lines(&lab, &views, now);
                l.push(progress::cluster_line(&lab, &views, &a, now));
                l
            };
            let (shown, compared) = (lines(Some(now)), lines(None));
            for (i, line) in shown.iter().enumerate() {
                if last.get(i) != compared.get(i) {
                    println!("[{:>4.0}s] {line}", started.elapsed().as_secs_f64());
                }
            }
            last = compared;
            let assembled = a.assembled(&lab, &views);
            if settling.record(assembled, a.vip_answers_from.as_deref()) {
                let holder = a
                    .vip_holder(&views)
                    .map(|(v, since)| {
                        format!(
                            " ({}, holding for {} s)",
                            node_name(v.index),
                            now.saturating_sub(since)
                        )
                    })
                    .unwrap_or_default();
                println!(
                    "lab {}: assembled in {:.0} s; the VIP {} answers from {}{holder}",
                    lab.name,
                    started.elapsed().as_secs_f64(),
                    lab.vip(),
                    a.vip_answers_from.as_deref().unwrap_or("-")
                );
                return Ok(());
            }
            if started.elapsed() >= limit {
                return Err(LabError::Timeout {
                    name: lab.name.clone(),
                    secs: limit.as_secs(),
                    why: progress::stuck(&lab, &views, &a),
                });
            }
            std::thread::sleep(Duration::from_secs(2));
        }
    }

    /// `muster lab failover`: powers the VIP holder off hard (a dead machine)
    /// and measures until the VIP answers from another node; then waits
    /// for the VIP to settle there. Gives up after `limit` with what it saw.
    pub fn failover(&self, limit: Duration) -> Result<FailoverReport, LabError> {
        let started = Instant::now();
        let lab = self.load()?;
        let fail = |why: String| LabError::Failover {
            name: lab.name.clone(),
            why,
        };
        // 1. Who holds the VIP: the same node, several probes in a row.
        let (from, from_node, takeovers_before, killed_node_takeovers) =
            self.settled_holder(&lab, started, limit).ok_or_else(|| {
                let (views, a) = self.assess(&lab);
                fail(format!(
                    "the VIP {} did not settle on one node within {} s: {}",
                    lab.vip(),
                    limit.as_secs(),
                    progress::stuck(&lab, &views, &a)
                ))
            })?;
        println!(
            "the VIP {} answers from {from} ({}); powering {} off hard",
            lab.vip(),
            node_name(from_node),
            node_name(from_node)
        );
        // 2. Kill it, then probe the VIP every 100 ms.
        let killed = Instant::now();
        self.kill(&node_name(from_node))?;
        let answered_after = loop {
            let probe = fetch_status_within(&lab, lab.vip(), Duration::from_secs(1));
            if let Ok(Some(id)) = probe.map(|s| s.instance_id)
                && id != from
            {
                break killed.elapsed();
            }
            if started.elapsed() >= limit {
                let (views, a) = self.assess(&lab);
                return Err(fail(format!(
                    "{} s after powering {} off, no other node answers for the VIP {}: {}",
                    killed.elapsed().as_secs(),
                    node_name(from_node),
                    lab.vip(),
                    progress::stuck(&lab, &views, &a)
                )));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        // 3. The API through the VIP again, when the cluster runs Kubernetes.
        let api_after = if self.assess(&lab).1.kubernetes {
            let admin = self.paths().admin_conf();
            loop {
                if net::api_ready(&lab.netns(), &admin, Duration::from_secs(2)) {
                    break Some(killed.elapsed());
                }
                if started.elapsed() >= limit {
                    return Err(fail(format!(
                        "the VIP moved after {:.1} s, but the Kubernetes API did not answer through it within {} s",
                        answered_after.as_secs_f64(),
                        limit.as_secs()
                    )));
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        } else {
            None
        };
        // 4. The new holder, settled.
        let lab = self.load()?;
        let (to, to_node, takeovers_after, _) = self
            .settled_holder(&lab, started, limit)
            .ok_or_else(|| {
                fail(format!(
                    "the VIP answered from another node after {:.1} s but did not settle within {} s",
                    answered_after.as_secs_f64(),
                    limit.as_secs()
                ))
            })?;
        // Takeovers the cluster's agents report, the dead node's included.
        let changes = (takeovers_after + killed_node_takeovers).saturating_sub(takeovers_before);
        let report = FailoverReport {
            from,
            from_node: node_name(from_node),
            to,
            to_node: node_name(to_node),
            answered_after,
            api_after,
            holder_changes: changes,
        };
        println!(
            "the VIP {} answers from {} ({}) {:.1} s after {} lost power; holder changes during the failover: {}",
            lab.vip(),
            report.to,
            report.to_node,
            report.answered_after.as_secs_f64(),
            report.from_node,
            report.holder_changes
        );
        if let Some(api) = report.api_after {
            println!(
                "the Kubernetes API answers through the VIP again {:.1} s after {} lost power",
                api.as_secs_f64(),
                report.from_node
            );
        }
        Ok(report)
    }

    /// The instance the VIP answers from once it has done so for
    /// [`progress::SETTLED_AFTER`] probes in a row (1 s apart), with its
    /// node, the takeovers all live agents report, and the holder's own.
    fn settled_holder(
        &self,
        lab: &LabState,
        started: Instant,
        limit: Duration,
    ) -> Option<(String, u32, u32, u32)> {
        let mut settling = progress::Settling::default();
        loop {
            let (views, a) = self.assess(lab);
            let id = a.vip_answers_from.clone();
            if settling.record(id.is_some(), id.as_deref())
                && let Some((v, _)) = a.vip_holder(&views)
            {
                let own = v
                    .status
                    .as_ref()
                    .ok()
                    .and_then(|s| s.vip.as_ref())
                    .map_or(0, |vip| vip.takeovers);
                return Some((id?, v.index, a.vip_takeovers, own));
            }
            if started.elapsed() >= limit {
                return None;
            }
            std::thread::sleep(Duration::from_secs(1));
        }
    }

    /// `muster lab kubectl ARGS`: kubectl inside the lab network with the
    /// lab's admin kubeconfig. kubectl comes from `MUSTER_KUBECTL`, the
    /// test tools (`ci/install-deps.sh`) or PATH.
    pub fn kubectl(&self, args: &[String]) -> Result<(), LabError> {
        let lab = self.load()?;
        let kubectl = std::env::var("MUSTER_KUBECTL")
            .ok()
            .or_else(|| {
                let tools = "/opt/muster-test/kubectl/usr/bin/kubectl";
                Path::new(tools).is_file().then(|| tools.to_string())
            })
            .unwrap_or_else(|| "kubectl".into());
        let mut cmd = net::in_netns(&lab.netns(), &kubectl);
        cmd.arg(format!(
            "--kubeconfig={}",
            self.paths().admin_conf().display()
        ))
        .args(args);
        let status = cmd.status().map_err(|source| LabError::Spawn {
            what: "run kubectl".into(),
            command: format!("{cmd:?}"),
            source,
        })?;
        if status.success() {
            Ok(())
        } else {
            Err(LabError::Usage(format!("kubectl exited with {status}")))
        }
    }

    /// `muster lab kill NODE`: hard power-off; the machine is gone (out of
    /// the group, as an Auto Scaling group drops an instance that died).
    pub fn kill(&self, node: &str) -> Result<(), LabError> {
        self.power_off(&[node.to_string()], Power::Gone)
    }

    /// `muster lab stop [NODE...]`: hard power-off (a power cut), disk and
    /// group membership kept. No names: every node.
    pub fn stop(&self, nodes: &[String]) -> Result<(), LabError> {
        self.power_off(nodes, Power::Off)
    }

    fn power_off(&self, names: &[String], to: Power) -> Result<(), LabError> {
        let mut lab = self.load()?;
        let targets = self.select(&lab, names, |n| n.power == Power::On)?;
        let p = self.paths();
        for index in &targets {
            if let Some(pid) = read_pid(&p.qemu_pid(*index))
                && pid_alive(pid, &format!("muster-lab-{}-", lab.name))
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                );
                wait_gone(pid);
            }
            if let Some(n) = lab.nodes.iter_mut().find(|n| n.index == *index) {
                n.power = to;
            }
            println!(
                "{}: powered off{}",
                node_name(*index),
                if to == Power::Gone { " (gone)" } else { "" }
            );
        }
        self.save(&lab)
    }

    /// Sets the CPU priority of node `name`'s VM (`cpu::set_nice`); a VM
    /// that is not running has none to set.
    pub(super) fn set_nice(&self, name: &str, nice: i32) -> Result<(), LabError> {
        let lab = self.load()?;
        let Some(node) = lab.node(name) else {
            return Err(LabError::Usage(format!("no {name} in the lab")));
        };
        let pid = read_pid(&self.paths().qemu_pid(node.index))
            .filter(|pid| pid_alive(*pid, &format!("muster-lab-{}-", lab.name)));
        match pid {
            Some(pid) => {
                super::cpu::set_nice(pid, nice).map_err(LabError::io(format!("/proc/{pid}")))
            }
            None => Ok(()),
        }
    }

    /// `muster lab start [NODE...]`: powers stopped nodes on with their disks.
    pub fn start(&self, nodes: &[String]) -> Result<(), LabError> {
        let mut lab = self.load()?;
        let targets = self.select(&lab, nodes, |n| n.power == Power::Off)?;
        for index in &targets {
            if let Some(n) = lab.nodes.iter_mut().find(|n| n.index == *index) {
                n.power = Power::On;
            }
        }
        self.save(&lab)?;
        for index in targets {
            self.boot(&lab, index, false)?;
            println!("{}: powered on", node_name(index));
        }
        Ok(())
    }

    /// `muster lab add`: launches `count` new machines into the group (a
    /// replacement, or growth); they are workers or replace dead members
    /// as the agents decide.
    pub fn add(&self, count: u32) -> Result<Vec<String>, LabError> {
        let mut lab = self.load()?;
        let after = now_secs().saturating_sub(lab.created_at);
        let mut added = Vec::new();
        for _ in 0..count {
            let n = lab.add_node(after).map_err(LabError::Usage)?;
            added.push(n.index);
        }
        self.save(&lab)?;
        // dnsmasq rereads its hosts file on SIGHUP.
        if let Some(pid) = read_pid(&self.paths().dnsmasq_pid()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGHUP,
            );
        }
        for index in &added {
            self.boot(&lab, *index, true)?;
            println!("{}: launched at {}", node_name(*index), lab.node_ip(*index));
        }
        Ok(added.into_iter().map(node_name).collect())
    }

    /// `muster lab down`: removes every VM, the namespace (bridge and taps
    /// with it), dnsmasq, the fake cloud and the lab directory. Safe to
    /// run twice.
    pub fn down(&self) -> Result<(), LabError> {
        let p = self.paths();
        let marker = format!("muster-lab-{}-", self.name);
        if let Ok(entries) = std::fs::read_dir(&p.dir) {
            for e in entries.flatten() {
                if let Some(pid) = read_pid(&e.path().join("qemu.pid"))
                    && pid_alive(pid, &marker)
                {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    wait_gone(pid);
                }
            }
        }
        for (pidfile, needle) in [(p.server_pid(), "lab"), (p.dnsmasq_pid(), "dnsmasq")] {
            if let Some(pid) = read_pid(&pidfile)
                && pid_alive(pid, needle)
            {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGTERM,
                );
                wait_gone(pid);
            }
        }
        net::delete(&format!("muster-lab-{}", self.name))?;
        if p.dir.exists() {
            std::fs::remove_dir_all(&p.dir).map_err(LabError::io(&p.dir))?;
            println!("lab {}: removed", self.name);
        } else {
            println!("lab {}: nothing to remove", self.name);
        }
        Ok(())
    }

    /// Node indexes named (`node-3`), or all nodes passing `filter`.
    fn select(
        &self,
        lab: &LabState,
        names: &[String],
        filter: impl Fn(&spec::NodeState) -> bool,
    ) -> Result<Vec<u32>, LabError> {
        if names.is_empty() {
            return Ok(lab
                .nodes
                .iter()
                .filter(|n| filter(n))
                .map(|n| n.index)
                .collect());
        }
        names
            .iter()
            .map(|name| {
                let n = lab.node(name).ok_or_else(|| {
                    LabError::Usage(format!(
                        "lab {} has no node {name:?} (nodes: {})",
                        lab.name,
                        lab.nodes
                            .iter()
                            .map(|n| node_name(n.index))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))
                })?;
                if filter(n) {
                    Ok(n.index)
                } else {
                    Err(LabError::Usage(
                        format!("{name} is {:?}", n.power).to_lowercase(),
                    ))
                }
            })
            .collect()
    }
}

/// `muster lab serve`: the fake cloud (and, for network boots, the PXE
/// files under `/pxe/`) on every `listen` address, until killed.
pub fn serve(
    world: PathBuf,
    listen: &[SocketAddr],
    pxe_dir: Option<PathBuf>,
) -> Result<(), LabError> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(LabError::io(&world))?;
    rt.block_on(async {
        let tokens = cloud::Tokens::random()
            .map_err(|_| LabError::Usage("no system randomness for the IMDS token key".into()))?;
        // Completed lifecycle actions are recorded beside the world file
        // (`lab upgrade` waits for them).
        let completions = world.parent().map(|d| {
            LabPaths {
                dir: d.to_path_buf(),
            }
            .completions()
        });
        let mut app = cloud::router_recording(cloud::world_file(world.clone()), tokens, completions);
        if let Some(dir) = pxe_dir {
            app = super::pxe::router(dir).merge(app);
        }
        let mut servers = Vec::new();
        for addr in listen {
            let listener = tokio::net::TcpListener::bind(addr)
                .await
                .map_err(|source| LabError::Io {
                    path: PathBuf::from(addr.to_string()),
                    source,
                })?;
            tracing::info!(%addr, world = %world.display(), "lab cloud: IMDSv2 and the Auto Scaling group API");
            let service = app.clone().into_make_service_with_connect_info::<SocketAddr>();
            servers.push(tokio::spawn(async move { axum::serve(listener, service).await }));
        }
        for s in servers {
            s.await
                .map_err(|e| LabError::Usage(format!("lab cloud task: {e}")))?
                .map_err(LabError::io(&world))?;
        }
        Ok(())
    })
}

/// What `lab failover` measured.
#[derive(Debug, Clone)]
pub struct FailoverReport {
    /// Instance and node that held the VIP before.
    pub from: String,
    pub from_node: String,
    /// Instance and node that hold it after.
    pub to: String,
    pub to_node: String,
    /// From the power-off until the VIP answered from another node.
    pub answered_after: Duration,
    /// From the power-off until the Kubernetes API answered `/readyz`
    /// through the VIP (`None`: the cluster runs no Kubernetes).
    pub api_after: Option<Duration>,
    /// Holder changes the agents report from just before the power-off
    /// until the VIP settled: 1 when it moved once and stayed.
    pub holder_changes: u32,
}

fn fetch_status(lab: &LabState, ip: Ipv4Addr) -> Result<Status, String> {
    fetch_status_within(lab, ip, Duration::from_secs(2))
}

fn fetch_status_within(lab: &LabState, ip: Ipv4Addr, timeout: Duration) -> Result<Status, String> {
    let body = net::http_get(&lab.netns(), ip, STATUS_PORT, "/status", timeout)?;
    serde_json::from_str(&body).map_err(|e| format!("{ip}: /status: {e}"))
}

fn check_tools() -> Result<(), LabError> {
    let mut missing = Vec::new();
    for tool in ["qemu-system-x86_64", "qemu-img", "dnsmasq", "ip", "nsenter"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(tool).is_file()));
        if !found {
            missing.push(tool.to_string());
        }
    }
    for file in [vm::OVMF_CODE, vm::OVMF_VARS] {
        if !Path::new(file).is_file() {
            missing.push(format!("{file} (ovmf)"));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::Missing(missing.join(", ")))
    }
}

/// 30 random bytes as base64: 40 characters, above the config's minimum.
fn new_secret() -> Result<String, LabError> {
    let mut bytes = [0u8; 30];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| LabError::Usage("no randomness for the cluster secret".into()))?;
    Ok(base64::engine::general_purpose::STANDARD.encode(bytes))
}

fn write_private(path: &Path, text: &str) -> Result<(), LabError> {
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(LabError::io(&tmp))?;
    f.write_all(text.as_bytes()).map_err(LabError::io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(LabError::io(path))
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Alive and ours: its command line mentions `needle` (a pid file can
/// outlive its process, and the pid be reused by something else).
fn pid_alive(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| s.contains(") Z "))
            .unwrap_or(true)
}

/// Waits (up to 5 s) until `pid` has exited. A zombie counts as exited: a
/// daemonized QEMU is reparented to PID 1, which may not reap it promptly.
fn wait_gone(pid: i32) {
    let deadline = Instant::now() + Duration::from_secs(5);
    let running = || {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| !s.contains(") Z "))
            .unwrap_or(false)
    };
    while running() && Instant::now() < deadline {
        // Reap it if it is our child; ignore errors if it is not.
        let _ = nix::sys::wait::waitpid(
            nix::unistd::Pid::from_raw(pid),
            Some(nix::sys::wait::WaitPidFlag::WNOHANG),
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last line on a serial console, without terminal escapes; `None`
/// while nothing was printed.
fn last_console_line(path: &Path) -> Option<String> {
    use std::io::{Read as _, Seek as _, SeekFrom};
    let mut f = std::fs::File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    f.seek(SeekFrom::Start(len.saturating_sub(4096))).ok()?;
    let mut tail = Vec::new();
    f.read_to_end(&mut tail).ok()?;
    let text = String::from_utf8_lossy(&tail);
    text.split(['\n', '\r'])
        .map(strip_escapes)
        .rfind(|l| !l.trim().is_empty())
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) and control characters.
fn strip_escapes(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if c.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
        } else if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_string()
}
