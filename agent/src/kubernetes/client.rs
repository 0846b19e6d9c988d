//! Talking to the API: a `kube` client from a kubeconfig file, server-side
//! apply of typed objects, readiness, and the leader leases.

use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, Patch, PatchParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Field manager of everything the agent applies.
pub const FIELD_MANAGER: &str = "muster";

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("kubeconfig {path}: {message}")]
    Kubeconfig { path: String, message: String },
    #[error("{what}: {source}")]
    Api {
        what: String,
        #[source]
        source: kube::Error,
    },
    #[error("{what}: no answer within {timeout:?}")]
    Timeout { what: String, timeout: Duration },
}

/// A client for the API server a kubeconfig file names, with `timeout`
/// on every request.
pub async fn from_kubeconfig(path: &Path, timeout: Duration) -> Result<Client, ClientError> {
    crate::http::install_crypto_provider();
    let bad = |message: String| ClientError::Kubeconfig {
        path: path.display().to_string(),
        message,
    };
    let text = tokio::fs::read_to_string(path)
        .await
        .map_err(|e| bad(e.to_string()))?;
    let kubeconfig = Kubeconfig::from_yaml(&text).map_err(|e| bad(e.to_string()))?;
    let mut config =
        kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| bad(e.to_string()))?;
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    Client::try_from(config).map_err(|e| bad(e.to_string()))
}

/// `GET /readyz` answered `ok`.
pub async fn ready(client: &Client, timeout: Duration) -> bool {
    ready_at(client, "/readyz", timeout).await
}

/// `GET path` (a readiness endpoint, with its query) answered `ok`.
pub async fn ready_at(client: &Client, path: &str, timeout: Duration) -> bool {
    let request = match http::Request::get(path).body(Vec::new()) {
        Ok(r) => r,
        Err(_) => return false,
    };
    matches!(
        tokio::time::timeout(timeout, client.request_text(request)).await,
        Ok(Ok(body)) if body.trim() == "ok"
    )
}

/// Server-side apply of a namespaced object, forcing ownership of the
/// fields it sets (the agent is their one writer).
pub async fn apply_namespaced<K>(client: &Client, obj: &K) -> Result<(), ClientError>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + Debug
        + Serialize
        + DeserializeOwned,
{
    let meta = obj.meta();
    let (ns, name) = (
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    );
    let api: Api<K> = Api::namespaced(client.clone(), &ns);
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|source| ClientError::Api {
        what: format!("apply {} {ns}/{name}", K::kind(&())),
        source,
    })
}

/// Server-side apply of a cluster-scoped object.
pub async fn apply_cluster<K>(client: &Client, obj: &K) -> Result<(), ClientError>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Serialize + DeserializeOwned,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    let api: Api<K> = Api::all(client.clone());
    api.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(obj),
    )
    .await
    .map(|_| ())
    .map_err(|source| ClientError::Api {
        what: format!("apply {} {name}", K::kind(&())),
        source,
    })
}

/// Who holds the leader lease `kube-system/<name>` (the controller-manager
/// and scheduler elect theirs there): the node part of the holder
/// identity, which the components write as `<hostname>_<uuid>`.
pub async fn lease_holder(client: &Client, name: &str) -> Result<Option<String>, ClientError> {
    let api: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    let lease = api.get_opt(name).await.map_err(|source| ClientError::Api {
        what: format!("get Lease kube-system/{name}"),
        source,
    })?;
    Ok(lease
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .map(|id| match id.split_once('_') {
            Some((node, _)) => node.to_string(),
            None => id,
        }))
}
