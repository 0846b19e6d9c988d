//! Where the Kubernetes files live: kubeadm's layout under one root
//! (`/etc/kubernetes` on a node; a test host's own directory in tier 1).

use std::path::{Path, PathBuf};

/// The default root on a node.
pub const DEFAULT_DIR: &str = "/etc/kubernetes";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubePaths {
    root: PathBuf,
}

impl KubePaths {
    pub fn new(root: impl Into<PathBuf>) -> KubePaths {
        KubePaths { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn pki(&self) -> PathBuf {
        self.root.join("pki")
    }

    /// `pki/<stem>.crt` and `pki/<stem>.key`.
    pub fn leaf(&self, stem: &str) -> (PathBuf, PathBuf) {
        let pki = self.pki();
        (
            pki.join(format!("{stem}.crt")),
            pki.join(format!("{stem}.key")),
        )
    }

    /// The Kubernetes CA certificate (every node) and key (control plane).
    pub fn ca(&self) -> (PathBuf, PathBuf) {
        self.leaf("ca")
    }

    pub fn front_proxy_ca(&self) -> (PathBuf, PathBuf) {
        self.leaf("front-proxy-ca")
    }

    /// The service-account signing key and its public half.
    pub fn sa_key(&self) -> PathBuf {
        self.pki().join("sa.key")
    }

    pub fn sa_pub(&self) -> PathBuf {
        self.pki().join("sa.pub")
    }

    /// etcd's CA certificate (no key: the apiserver only checks etcd).
    pub fn etcd_ca(&self) -> PathBuf {
        self.pki().join("etcd").join("ca.crt")
    }

    /// The apiserver's certificate followed by the CA: what it serves.
    pub fn apiserver_chain(&self) -> PathBuf {
        self.pki().join("apiserver-chain.crt")
    }

    /// The config snippet a worker-only group needs (0600).
    pub fn join_credential(&self) -> PathBuf {
        self.root.join("join-credential.yaml")
    }

    /// The kubelet's own kubeconfig (its node identity, after TLS bootstrap).
    pub fn kubelet_conf(&self) -> PathBuf {
        self.root().join("kubelet.conf")
    }

    pub fn admin_conf(&self) -> PathBuf {
        self.root.join("admin.conf")
    }

    pub fn controller_manager_conf(&self) -> PathBuf {
        self.root.join("controller-manager.conf")
    }

    pub fn scheduler_conf(&self) -> PathBuf {
        self.root.join("scheduler.conf")
    }
}
