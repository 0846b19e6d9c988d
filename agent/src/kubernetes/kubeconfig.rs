//! Kubeconfig files, rendered from typed inputs (pure). One cluster, one
//! user, one context named after the cluster: the shape kubeadm writes.

use std::path::PathBuf;

use base64::Engine as _;
use serde::Serialize;

use crate::pki::KeyPem;

/// How the user proves who it is.
#[derive(Clone)]
pub enum Credential {
    /// Certificate and key files, re-read by client-go when they change
    /// (the components' kubeconfigs: renewal is a file swap).
    Files { cert: PathBuf, key: PathBuf },
    /// Certificate and key inside the file (a kubeconfig to hand out).
    Embedded { cert_pem: String, key_pem: KeyPem },
    /// A bearer token (a bootstrap token for kubelet TLS bootstrap).
    Token(String),
}

/// S5: no key or token in debug output.
impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Credential::Files { cert, key } => f
                .debug_struct("Files")
                .field("cert", cert)
                .field("key", key)
                .finish(),
            Credential::Embedded { .. } => f.write_str("Embedded(<redacted>)"),
            Credential::Token(_) => f.write_str("Token(<redacted>)"),
        }
    }
}

/// What one kubeconfig says.
#[derive(Debug, Clone)]
pub struct KubeconfigSpec<'a> {
    pub cluster: &'a str,
    /// `https://HOST:PORT`.
    pub server: &'a str,
    /// The Kubernetes CA certificate, PEM.
    pub ca_pem: &'a str,
    pub user: &'a str,
    pub credential: Credential,
}

#[derive(Serialize)]
struct File<'a> {
    #[serde(rename = "apiVersion")]
    api_version: &'static str,
    kind: &'static str,
    clusters: [Named<'a, ClusterEntry<'a>>; 1],
    users: [Named<'a, User>; 1],
    contexts: [Named<'a, ContextEntry<'a>>; 1],
    #[serde(rename = "current-context")]
    current_context: &'a str,
}

#[derive(Serialize)]
struct Named<'a, T> {
    name: &'a str,
    #[serde(flatten)]
    value: T,
}

#[derive(Serialize)]
struct ClusterEntry<'a> {
    cluster: ClusterFields<'a>,
}

#[derive(Serialize)]
struct ClusterFields<'a> {
    server: &'a str,
    #[serde(rename = "certificate-authority-data")]
    certificate_authority_data: String,
}

#[derive(Serialize)]
struct User {
    user: UserFields,
}

#[derive(Serialize, Default)]
struct UserFields {
    #[serde(rename = "client-certificate", skip_serializing_if = "Option::is_none")]
    client_certificate: Option<String>,
    #[serde(rename = "client-key", skip_serializing_if = "Option::is_none")]
    client_key: Option<String>,
    #[serde(
        rename = "client-certificate-data",
        skip_serializing_if = "Option::is_none"
    )]
    client_certificate_data: Option<String>,
    #[serde(rename = "client-key-data", skip_serializing_if = "Option::is_none")]
    client_key_data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    token: Option<String>,
}

#[derive(Serialize)]
struct ContextEntry<'a> {
    context: ContextFields<'a>,
}

#[derive(Serialize)]
struct ContextFields<'a> {
    cluster: &'a str,
    user: &'a str,
}

/// The kubeconfig as YAML. Holds a private key or token unless the
/// credential is files: write it 0600.
pub fn render(spec: &KubeconfigSpec<'_>) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    let user = match &spec.credential {
        Credential::Files { cert, key } => UserFields {
            client_certificate: Some(cert.display().to_string()),
            client_key: Some(key.display().to_string()),
            ..UserFields::default()
        },
        Credential::Embedded { cert_pem, key_pem } => UserFields {
            client_certificate_data: Some(b64(cert_pem)),
            client_key_data: Some(b64(key_pem.expose())),
            ..UserFields::default()
        },
        Credential::Token(t) => UserFields {
            token: Some(t.clone()),
            ..UserFields::default()
        },
    };
    let context = format!("{}@{}", spec.user, spec.cluster);
    let file = File {
        api_version: "v1",
        kind: "Config",
        clusters: [Named {
            name: spec.cluster,
            value: ClusterEntry {
                cluster: ClusterFields {
                    server: spec.server,
                    certificate_authority_data: b64(spec.ca_pem),
                },
            },
        }],
        users: [Named {
            name: spec.user,
            value: User { user },
        }],
        contexts: [Named {
            name: &context,
            value: ContextEntry {
                context: ContextFields {
                    cluster: spec.cluster,
                    user: spec.user,
                },
            },
        }],
        current_context: &context,
    };
    // Plain strings and sequences: serialising cannot fail.
    serde_saphyr::to_string(&file).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kube_reads_what_is_rendered() {
        let yaml = render(&KubeconfigSpec {
            cluster: "prod",
            server: "https://10.0.0.100:6443",
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            user: "kubernetes-admin",
            credential: Credential::Files {
                cert: "/etc/kubernetes/pki/admin.crt".into(),
                key: "/etc/kubernetes/pki/admin.key".into(),
            },
        });
        let parsed = kube::config::Kubeconfig::from_yaml(&yaml).expect("kube parses it");
        assert_eq!(
            parsed.current_context.as_deref(),
            Some("kubernetes-admin@prod")
        );
        let cluster = parsed.clusters[0].cluster.as_ref().expect("cluster");
        assert_eq!(cluster.server.as_deref(), Some("https://10.0.0.100:6443"));
        let user = parsed.auth_infos[0].auth_info.as_ref().expect("user");
        assert_eq!(
            user.client_key.as_deref(),
            Some("/etc/kubernetes/pki/admin.key")
        );
    }

    #[test]
    fn tokens_and_keys_never_show_in_debug() {
        let c = Credential::Token("abcdef.0123456789abcdef".into());
        assert!(!format!("{c:?}").contains("abcdef"));
    }
}
