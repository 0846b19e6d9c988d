//! Where the tests find real Kubernetes: the v1.28.7 server binaries
//! (`ci/kubernetes-bins.sh` builds or downloads them) and Debian 13's
//! kubectl (`ci/install-deps.sh`). `MUSTER_KUBERNETES_BIN` and
//! `MUSTER_KUBECTL` override.

use std::path::{Path, PathBuf};
use std::process::Output;

use super::netns::Host;

pub fn kube_bin() -> PathBuf {
    let dir = PathBuf::from(
        std::env::var("MUSTER_KUBERNETES_BIN")
            .unwrap_or_else(|_| "/opt/muster-test/kubernetes/bin".into()),
    );
    for b in [
        "kube-apiserver",
        "kube-controller-manager",
        "kube-scheduler",
    ] {
        assert!(
            dir.join(b).is_file(),
            "{b} not found in {} (set MUSTER_KUBERNETES_BIN): run `bash ci/install-deps.sh`",
            dir.display()
        );
    }
    dir
}

pub fn kubectl_bin() -> PathBuf {
    let path = PathBuf::from(
        std::env::var("MUSTER_KUBECTL")
            .unwrap_or_else(|_| "/opt/muster-test/kubectl/usr/bin/kubectl".into()),
    );
    assert!(
        path.is_file(),
        "kubectl not found at {} (set MUSTER_KUBECTL): run `bash ci/install-deps.sh`",
        path.display()
    );
    path
}

/// `kubectl --kubeconfig KUBECONFIG ARGS` inside `host`'s namespace, with a
/// short request timeout (a dead endpoint must not stall a polling loop).
pub fn kubectl(host: &Host, kubeconfig: &Path, args: &[&str]) -> Output {
    let mut cmd = host.command(kubectl_bin());
    cmd.arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--request-timeout=3s")
        .args(args);
    cmd.output().expect("run kubectl")
}

/// [`kubectl`] with `input` on its standard input (`apply -f -`).
pub fn kubectl_stdin(host: &Host, kubeconfig: &Path, args: &[&str], input: &str) -> Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = host
        .command(kubectl_bin())
        .arg(format!("--kubeconfig={}", kubeconfig.display()))
        .arg("--request-timeout=3s")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    child
        .stdin
        .take()
        .expect("kubectl stdin")
        .write_all(input.as_bytes())
        .expect("write kubectl stdin");
    child.wait_with_output().expect("kubectl output")
}

/// kubectl's stdout when it succeeded.
pub fn kubectl_ok(host: &Host, kubeconfig: &Path, args: &[&str]) -> Option<String> {
    let out = kubectl(host, kubeconfig, args);
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// The HTTP status of `GET url` from inside `host`, trusting only the CA
/// in `ca_pem` and presenting no credentials at all (an anonymous caller).
pub fn anonymous_get_status(host: &Host, url: &str, ca_pem: &str) -> u16 {
    let (url, ca_pem) = (url.to_string(), ca_pem.to_string());
    host.in_netns(move || {
        muster::http::install_crypto_provider();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            let ca = reqwest::Certificate::from_pem(ca_pem.as_bytes()).expect("CA PEM");
            let client = reqwest::Client::builder()
                .tls_certs_only([ca])
                .timeout(std::time::Duration::from_secs(5))
                .build()
                .expect("client");
            client
                .get(&url)
                .send()
                .await
                .unwrap_or_else(|e| panic!("GET {url}: {e}"))
                .status()
                .as_u16()
        })
    })
}
