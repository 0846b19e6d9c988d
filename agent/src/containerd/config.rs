//! containerd's config for Kubernetes nodes (config version 2, containerd
//! 1.7), rendered (pure): the CRI plugin's sandbox image is the one the
//! image ships and the agent imports (nothing is pulled), runc uses the
//! systemd cgroup driver like the kubelet (a mismatch restarts sandboxes
//! in a loop), and CNI plugins are Debian's, in `/usr/lib/cni`.

use crate::kubernetes::kubelet::CgroupDriver;

/// The config file containerd reads.
pub const CONFIG_FILE: &str = "/etc/containerd/config.toml";
/// The sandbox image the node ships and pins (`image/pause/`). Its tag is
/// the one kubeadm 1.28 expects.
pub const SANDBOX_IMAGE: &str = "registry.k8s.io/pause:3.9";
/// The containerd namespace the CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// The config. `cni_bin_dir` and `cni_conf_dir` where the plugins and the
/// pod network's conflist are.
pub fn render(cgroup: CgroupDriver, cni_bin_dir: &str, cni_conf_dir: &str) -> String {
    let systemd = cgroup == CgroupDriver::Systemd;
    format!(
        r#"# Written by the Muster agent (containerd/config.rs); it is rewritten when it differs.
version = 2

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{SANDBOX_IMAGE}"

  [plugins."io.containerd.grpc.v1.cri".containerd]
    default_runtime_name = "runc"

    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"

      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = {systemd}

  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "{cni_bin_dir}"
    conf_dir = "{cni_conf_dir}"
"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cgroup_driver_and_the_sandbox_image_are_set() {
        let c = render(CgroupDriver::Systemd, "/usr/lib/cni", "/etc/cni/net.d");
        assert!(c.contains("SystemdCgroup = true"), "{c}");
        assert!(c.contains("sandbox_image = \"registry.k8s.io/pause:3.9\""));
        assert!(c.contains("bin_dir = \"/usr/lib/cni\""));
        assert!(render(CgroupDriver::Cgroupfs, "/b", "/c").contains("SystemdCgroup = false"));
    }
}
