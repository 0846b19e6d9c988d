//! The cluster-wide objects the control plane needs once (kubeadm's
//! `bootstraptoken` and `clusterinfo` phases): the bootstrap-token Secret,
//! the RBAC that lets kubelets TLS-bootstrap and renew their client
//! certificates, and `cluster-info`. Pure: typed objects from inputs;
//! `apply` writes them with server-side apply.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::api::rbac::v1::{
    ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use ring::digest;

use super::token::BootstrapToken;

/// The group bootstrap tokens put their bearers in (kubeadm's name, so
/// its docs and tools apply).
pub const BOOTSTRAPPERS_GROUP: &str = "system:bootstrappers:kubeadm:default-node-token";
/// The group of every node once it has its client certificate.
pub const NODES_GROUP: &str = "system:nodes";
/// Label on everything the agent applies.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "muster");

/// What the objects are made from.
#[derive(Debug, Clone)]
pub struct ObjectInputs<'a> {
    /// The API endpoint nodes join through (the VIP).
    pub server: &'a str,
    /// The Kubernetes CA certificate, PEM.
    pub ca_pem: &'a str,
    pub token: &'a BootstrapToken,
}

/// Everything applied, by kind.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ClusterObjects {
    pub secrets: Vec<Secret>,
    pub config_maps: Vec<ConfigMap>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
}

impl ClusterObjects {
    /// SHA-256 over the objects' JSON: equal fingerprints, nothing to
    /// apply. (serde_json keeps field order; maps are BTreeMaps.)
    pub fn fingerprint(&self) -> String {
        let json = serde_json::json!([
            self.secrets,
            self.config_maps,
            self.roles,
            self.role_bindings,
            self.cluster_role_bindings,
        ]);
        let hash = digest::digest(&digest::SHA256, json.to_string().as_bytes());
        hash.as_ref().iter().map(|b| format!("{b:02x}")).collect()
    }

    /// `kind namespace/name` of every object, for logs.
    pub fn names(&self) -> Vec<String> {
        fn name(kind: &str, m: &ObjectMeta) -> String {
            match &m.namespace {
                Some(ns) => format!("{kind} {ns}/{}", m.name.as_deref().unwrap_or("")),
                None => format!("{kind} {}", m.name.as_deref().unwrap_or("")),
            }
        }
        let mut out = Vec::new();
        out.extend(self.secrets.iter().map(|o| name("Secret", &o.metadata)));
        out.extend(
            self.config_maps
                .iter()
                .map(|o| name("ConfigMap", &o.metadata)),
        );
        out.extend(self.roles.iter().map(|o| name("Role", &o.metadata)));
        out.extend(
            self.role_bindings
                .iter()
                .map(|o| name("RoleBinding", &o.metadata)),
        );
        out.extend(
            self.cluster_role_bindings
                .iter()
                .map(|o| name("ClusterRoleBinding", &o.metadata)),
        );
        out
    }
}

fn meta(name: &str, namespace: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.into()),
        namespace: namespace.map(str::to_string),
        labels: Some(BTreeMap::from([(
            MANAGED_BY.0.to_string(),
            MANAGED_BY.1.to_string(),
        )])),
        ..ObjectMeta::default()
    }
}

fn group(name: &str) -> Subject {
    Subject {
        api_group: Some("rbac.authorization.k8s.io".into()),
        kind: "Group".into(),
        name: name.into(),
        namespace: None,
    }
}

fn cluster_role_binding(name: &str, role: &str, subject: &str) -> ClusterRoleBinding {
    ClusterRoleBinding {
        metadata: meta(name, None),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![group(subject)]),
    }
}

/// The bootstrap token as Kubernetes stores it
/// (`staging/src/k8s.io/cluster-bootstrap/token/api/types.go`): no
/// `expiration`, so it never expires.
pub fn bootstrap_token_secret(token: &BootstrapToken) -> Secret {
    let data = [
        ("token-id", token.id()),
        ("token-secret", token.secret()),
        ("usage-bootstrap-authentication", "true"),
        ("usage-bootstrap-signing", "true"),
        ("auth-extra-groups", BOOTSTRAPPERS_GROUP),
        (
            "description",
            "Derived from the cluster secret by every Muster control-plane node.",
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
    .collect();
    Secret {
        metadata: meta(
            &format!("bootstrap-token-{}", token.id()),
            Some("kube-system"),
        ),
        type_: Some("bootstrap.kubernetes.io/token".into()),
        data: Some(data),
        ..Secret::default()
    }
}

/// kubeadm's `cluster-info` kubeconfig: the CA and the endpoint, no user.
/// The bootstrapsigner controller adds `jws-kubeconfig-<token id>`
/// signatures, so a joiner holding the token can check it.
pub fn cluster_info_kubeconfig(server: &str, ca_pem: &str) -> String {
    use base64::Engine as _;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    certificate-authority-data: {ca}\n    server: {server}\n  name: \"\"\ncontexts: null\ncurrent-context: \"\"\npreferences: {{}}\nusers: null\n"
    )
}

pub fn render(i: &ObjectInputs<'_>) -> ClusterObjects {
    let cluster_info = ConfigMap {
        metadata: meta("cluster-info", Some("kube-public")),
        data: Some(BTreeMap::from([(
            "kubeconfig".to_string(),
            cluster_info_kubeconfig(i.server, i.ca_pem),
        )])),
        ..ConfigMap::default()
    };
    // Anonymous requests are refused (--anonymous-auth=false), so token
    // holders, not anonymous, may read cluster-info.
    let reader = Role {
        metadata: meta("muster:bootstrap-signer-clusterinfo", Some("kube-public")),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["configmaps".into()]),
            resource_names: Some(vec!["cluster-info".into()]),
            verbs: vec!["get".into()],
            ..PolicyRule::default()
        }]),
    };
    let reader_binding = RoleBinding {
        metadata: meta("muster:bootstrap-signer-clusterinfo", Some("kube-public")),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "Role".into(),
            name: "muster:bootstrap-signer-clusterinfo".into(),
        },
        subjects: Some(vec![group(BOOTSTRAPPERS_GROUP)]),
    };
    ClusterObjects {
        secrets: vec![bootstrap_token_secret(i.token)],
        config_maps: vec![cluster_info],
        roles: vec![reader],
        role_bindings: vec![reader_binding],
        cluster_role_bindings: vec![
            // Token holders may post CSRs ...
            cluster_role_binding(
                "muster:kubelet-bootstrap",
                "system:node-bootstrapper",
                BOOTSTRAPPERS_GROUP,
            ),
            // ... which the csrapprover approves for new node clients ...
            cluster_role_binding(
                "muster:node-autoapprove-bootstrap",
                "system:certificates.k8s.io:certificatesigningrequests:nodeclient",
                BOOTSTRAPPERS_GROUP,
            ),
            // ... and for nodes renewing their own client certificate.
            cluster_role_binding(
                "muster:node-autoapprove-certificate-rotation",
                "system:certificates.k8s.io:certificatesigningrequests:selfnodeclient",
                NODES_GROUP,
            ),
            // kube-proxy runs on every node with the node's own identity.
            cluster_role_binding("muster:node-proxier", "system:node-proxier", NODES_GROUP),
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn objects() -> ClusterObjects {
        let token = BootstrapToken::parse("abcdef.0123456789abcdef").expect("token");
        render(&ObjectInputs {
            server: "https://10.0.0.100:6443",
            ca_pem: "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
            token: &token,
        })
    }

    #[test]
    fn the_token_secret_has_the_fields_kubernetes_reads_and_no_expiry() {
        let o = objects();
        let s = &o.secrets[0];
        assert_eq!(s.metadata.name.as_deref(), Some("bootstrap-token-abcdef"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("kube-system"));
        assert_eq!(s.type_.as_deref(), Some("bootstrap.kubernetes.io/token"));
        let data = s.data.as_ref().expect("data");
        let get = |k: &str| {
            data.get(k)
                .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        };
        assert_eq!(get("token-id").as_deref(), Some("abcdef"));
        assert_eq!(get("token-secret").as_deref(), Some("0123456789abcdef"));
        assert_eq!(
            get("usage-bootstrap-authentication").as_deref(),
            Some("true")
        );
        assert_eq!(get("usage-bootstrap-signing").as_deref(), Some("true"));
        assert_eq!(
            get("auth-extra-groups").as_deref(),
            Some(BOOTSTRAPPERS_GROUP)
        );
        assert_eq!(get("expiration"), None);
        // apiVersion and kind travel with the object (server-side apply needs them).
        let json = serde_json::to_value(s).expect("json");
        assert_eq!(
            (json["apiVersion"].as_str(), json["kind"].as_str()),
            (Some("v1"), Some("Secret"))
        );
    }

    #[test]
    fn cluster_info_points_at_the_endpoint_and_the_fingerprint_is_stable() {
        let o = objects();
        let kubeconfig = &o.config_maps[0].data.as_ref().expect("data")["kubeconfig"];
        assert!(
            kubeconfig.contains("server: https://10.0.0.100:6443"),
            "{kubeconfig}"
        );
        assert_eq!(o.fingerprint(), objects().fingerprint());
        assert_eq!(o.fingerprint().len(), 64);
        assert_eq!(o.names().len(), 8);
    }
}
