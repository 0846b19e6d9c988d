//! The kubelet and kube-proxy configs the agent renders, read by the real
//! v1.28.7 binaries: both decode their config file strictly first and say
//! so when a field is unknown ("strict decoding error"), then validate it.
//! Each is run so that it stops right after that (the kubelet at the
//! missing client CA file, kube-proxy in `--cleanup` mode, inside a test
//! namespace), and its output shows whether the config was accepted. A
//! config with an unknown field proves the check can fail.

use std::path::Path;
use std::time::Duration;

use muster::kubernetes::kubelet::{self, CgroupDriver, KubeletSpec};
use muster::kubernetes::proxy::{self, ProxySpec};

use crate::support::kubernetes::kube_bin;
use crate::support::netns::{Host, Net};

/// Runs `program args` in `host` for at most `limit`; stdout + stderr.
fn run_briefly(host: &Host, program: &Path, args: &[String], limit: Duration) -> String {
    let mut cmd = host.command("timeout");
    cmd.arg(format!("{}s", limit.as_secs()))
        .arg(program)
        .args(args);
    let out = cmd.output().expect("run");
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

fn kubelet_spec(dir: &Path) -> KubeletSpec {
    KubeletSpec {
        node_name: "node-4".into(),
        node_ip: "10.77.0.14".parse().expect("ip"),
        // Missing on purpose: the kubelet stops there, after the config.
        client_ca_file: dir.join("missing-ca.crt"),
        service_cidr: "10.96.0.0/12".parse().expect("cidr"),
        cluster_domain: "cluster.local".into(),
        cgroup_driver: CgroupDriver::Systemd,
        labels: vec![("tier".into(), "web".into())],
        taints: vec![muster::config::Taint::parse("dedicated=gpu:NoSchedule").expect("taint")],
        config_file: dir.join("kubelet.yaml"),
        bootstrap_kubeconfig: dir.join("bootstrap-kubelet.conf"),
        kubeconfig: dir.join("kubelet.conf"),
        root_dir: dir.join("kubelet"),
        resolv_conf: "/run/systemd/resolve/resolv.conf".into(),
    }
}

/// The kubelet's verdict on `yaml`: the strict-decoding complaint, if any,
/// and whether it got past decoding and validation.
fn kubelet_reads(host: &Host, spec: &KubeletSpec, yaml: &str) -> (bool, bool, String) {
    std::fs::write(&spec.config_file, yaml).expect("write config");
    let out = run_briefly(
        host,
        &kube_bin().join("kubelet"),
        &kubelet::flags(spec),
        Duration::from_secs(20),
    );
    let strict_failed = out.contains("strict decoding");
    let past_validation = out.contains("unable to load client CA file");
    (strict_failed, past_validation, out)
}

#[test]
fn the_real_kubelet_and_kube_proxy_accept_the_rendered_configs_strictly() {
    let net = Net::new("kcfg");
    let host = net.add_host("node");
    let dir = host.dir().to_path_buf();

    let spec = kubelet_spec(&dir);
    let (strict_failed, past, out) = kubelet_reads(&host, &spec, &kubelet::config(&spec));
    assert!(!strict_failed && past, "kubelet refused its config:\n{out}");
    // The check can fail: an unknown field is reported.
    let bad = kubelet::config(&spec) + "podsPerCores: 3\n";
    let (strict_failed, _, out) = kubelet_reads(&host, &spec, &bad);
    assert!(strict_failed, "an unknown field went unnoticed:\n{out}");

    let proxy_spec = ProxySpec {
        node_name: "node-4".into(),
        node_ip: host.ip(),
        cluster_cidr: "10.244.0.0/16".parse().expect("cidr"),
        kubeconfig: dir.join("kube-proxy.conf"),
        config_file: dir.join("kube-proxy.yaml"),
    };
    let proxy_reads = |yaml: &str| {
        std::fs::write(&proxy_spec.config_file, yaml).expect("write config");
        let mut args = proxy::flags(&proxy_spec);
        args.push("--cleanup".into());
        run_briefly(
            &host,
            &kube_bin().join("kube-proxy"),
            &args,
            Duration::from_secs(20),
        )
    };
    let out = proxy_reads(&proxy::config(&proxy_spec));
    assert!(
        !out.contains("strict decoding") && !out.contains("invalid configuration"),
        "kube-proxy refused its config:\n{out}"
    );
    let out = proxy_reads(&(proxy::config(&proxy_spec) + "conntrackMax: 3\n"));
    assert!(
        out.contains("strict decoding"),
        "an unknown field went unnoticed:\n{out}"
    );
}
