//! The lab's private network: a namespace holding a bridge (the VMs' L2
//! segment, with the gateway and the metadata address on it) and one tap
//! per VM. The host's own namespace is never touched; deleting the
//! namespace removes the bridge and every tap with it.
//!
//! Plumbing goes through `ip` (iproute2), one command per step, so a
//! failure names the exact command an operator can rerun by hand.

use std::net::Ipv4Addr;
use std::os::fd::AsFd;
use std::process::Command;
use std::time::Duration;

use super::LabError;
use super::spec::{LabState, METADATA_ADDR, tap_name};

pub const BRIDGE: &str = "br0";

/// Runs a command, turning a non-zero exit into an error with its stderr.
pub fn run(cmd: &mut Command, what: &str) -> Result<String, LabError> {
    let rendered = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|source| LabError::Spawn {
        what: what.to_string(),
        command: rendered.clone(),
        source,
    })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(LabError::Command {
            what: what.to_string(),
            command: rendered,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

fn ip(ns: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("ip");
    cmd.arg("-n").arg(ns).args(args);
    cmd
}

pub fn netns_path(ns: &str) -> String {
    format!("/run/netns/{ns}")
}

pub fn exists(ns: &str) -> bool {
    std::path::Path::new(&netns_path(ns)).exists()
}

/// Creates the namespace and the bridge; fails if the namespace exists.
pub fn create(lab: &LabState) -> Result<(), LabError> {
    let ns = lab.netns();
    let gw = format!("{}/24", lab.gateway());
    let md = format!("{METADATA_ADDR}/32");
    run(
        Command::new("ip").args(["netns", "add", &ns]),
        "create the lab namespace",
    )?;
    let steps: [(&str, Vec<&str>); 5] = [
        ("bring up lo", vec!["link", "set", "lo", "up"]),
        // No STP and no forwarding delay: a VM's port forwards at once.
        (
            "create the lab bridge",
            vec![
                "link",
                "add",
                BRIDGE,
                "type",
                "bridge",
                "forward_delay",
                "0",
                "stp_state",
                "0",
            ],
        ),
        (
            "address the gateway",
            vec!["addr", "add", &gw, "dev", BRIDGE],
        ),
        (
            "address the metadata service",
            vec!["addr", "add", &md, "dev", BRIDGE],
        ),
        ("bring up the bridge", vec!["link", "set", BRIDGE, "up"]),
    ];
    for (what, args) in steps {
        run(&mut ip(&ns, &args), what)?;
    }
    Ok(())
}

/// Adds node `index`'s tap to the bridge (idempotent).
pub fn add_tap(lab: &LabState, index: u32) -> Result<(), LabError> {
    let ns = lab.netns();
    let tap = tap_name(index);
    if !run(&mut ip(&ns, &["-o", "link", "show"]), "list links")?
        .split_whitespace()
        .any(|w| w.trim_end_matches(':') == tap)
    {
        run(
            &mut ip(&ns, &["tuntap", "add", "dev", &tap, "mode", "tap"]),
            "create a VM tap",
        )?;
    }
    run(
        &mut ip(&ns, &["link", "set", &tap, "master", BRIDGE, "up"]),
        "attach the tap to the bridge",
    )?;
    Ok(())
}

/// Deletes the namespace (bridge and taps go with it); absent is fine.
pub fn delete(ns: &str) -> Result<(), LabError> {
    if !exists(ns) {
        return Ok(());
    }
    run(
        Command::new("ip").args(["netns", "del", ns]),
        "delete the lab namespace",
    )?;
    Ok(())
}

/// A command that runs inside the lab namespace.
pub fn in_netns(ns: &str, program: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg(format!("--net={}", netns_path(ns)))
        .arg("--")
        .arg(program);
    cmd
}

/// Runs `work` on a fresh thread inside namespace `ns`, with a
/// single-threaded async runtime, so the calling process stays in its own.
pub fn run_in_netns<T, F>(ns: &str, work: impl FnOnce() -> F + Send + 'static) -> Result<T, String>
where
    T: Send + 'static,
    F: Future<Output = Result<T, String>>,
{
    let ns_path = netns_path(ns);
    std::thread::spawn(move || -> Result<T, String> {
        let file = std::fs::File::open(&ns_path).map_err(|e| format!("{ns_path}: {e}"))?;
        nix::sched::setns(file.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| format!("enter {ns_path}: {e}"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("runtime: {e}"))?;
        crate::http::install_crypto_provider();
        rt.block_on(work())
    })
    .join()
    .map_err(|_| "the request thread panicked".to_string())?
}

/// GETs `http://addr:port/path` from inside the lab namespace and returns
/// the body of a 200 answer.
pub fn http_get(
    ns: &str,
    addr: Ipv4Addr,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<String, String> {
    let url = format!("http://{addr}:{port}{path}");
    run_in_netns(ns, move || async move {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .no_proxy()
            .build()
            .map_err(|e| format!("client: {e}"))?;
        let resp = client
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("{url}: {e}"))?;
        let status = resp.status();
        let body = resp.text().await.map_err(|e| format!("{url}: {e}"))?;
        if status.is_success() {
            Ok(body)
        } else {
            Err(format!("{url}: HTTP {status}"))
        }
    })
}

/// Whether the Kubernetes API serves a read that goes through etcd's
/// quorum (one namespace, listed), asked from inside the lab namespace
/// with the kubeconfig at `kubeconfig`.
pub fn api_reads(ns: &str, kubeconfig: &std::path::Path, timeout: Duration) -> bool {
    api_check(ns, kubeconfig, timeout, move |client| async move {
        lists_a_namespace(client, timeout).await
    })
}

/// Whether the Kubernetes API serves, asked from inside the lab namespace
/// with the kubeconfig at `kubeconfig`: `/readyz` without its two etcd
/// checks answers `ok`, and a read through etcd's quorum (one namespace,
/// listed) answers within `timeout`. The apiserver's own etcd checks give
/// etcd a fixed 2 s, which under TCG fails now and then on every apiserver
/// at once while reads still succeed (the agents' VIP check leaves them
/// out for the same reason, `kubernetes/health.rs`); the quorum read still
/// proves that etcd serves.
pub fn api_ready(ns: &str, kubeconfig: &std::path::Path, timeout: Duration) -> bool {
    api_check(ns, kubeconfig, timeout, move |client| async move {
        let ready = crate::kubernetes::client::ready_at(
            &client,
            crate::kubernetes::health::READYZ_WITHOUT_ETCD,
            timeout,
        );
        ready.await && lists_a_namespace(client, timeout).await
    })
}

/// One namespace listed through etcd's quorum within `timeout`.
async fn lists_a_namespace(client: kube::Client, timeout: Duration) -> bool {
    let namespaces: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client);
    let one = kube::api::ListParams::default().limit(1);
    matches!(
        tokio::time::timeout(timeout, namespaces.list(&one)).await,
        Ok(Ok(_))
    )
}

/// Runs `check` with a client of the kubeconfig at `kubeconfig`, inside
/// the lab namespace; false when there is no client.
fn api_check<F, Fut>(ns: &str, kubeconfig: &std::path::Path, timeout: Duration, check: F) -> bool
where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: Future<Output = bool>,
{
    let path = kubeconfig.to_path_buf();
    run_in_netns(ns, move || async move {
        let client = crate::kubernetes::client::from_kubeconfig(&path, timeout)
            .await
            .map_err(|e| e.to_string())?;
        Ok(check(client).await)
    })
    .unwrap_or(false)
}
