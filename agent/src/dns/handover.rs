//! The hand-over to ExternalDNS: once the API answers, the publisher
//! installs the DNSEndpoint CRD (`externaldns.k8s.io/v1alpha1`) if nobody
//! has, and applies DNSEndpoint objects that describe exactly the records
//! it wrote, one per ExternalDNS resource label (`crd/kube-system/muster-api`,
//! `crd/kube-system/muster-nodes`). An ExternalDNS run with `--source=crd`
//! and the same `--txt-owner-id` then finds nothing to change.
//!
//! ExternalDNS writes `status.observedGeneration` on the objects it has
//! processed: when every object's status has caught up with its generation,
//! ExternalDNS owns the zone and the agent stops writing DNS itself (it
//! keeps the objects current). If ExternalDNS stops observing, the agent
//! writes again: both compute the same records, so there is no fight.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use serde_json::{Value, json};

use super::plan::Wanted;
use super::records::ENDPOINT_NAMESPACE;
use crate::kubernetes::client::{self, ClientError, FIELD_MANAGER};

pub const CRD_NAME: &str = "dnsendpoints.externaldns.k8s.io";
const TIMEOUT: Duration = Duration::from_secs(15);

/// How far the hand-over has come.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HandOver {
    /// The objects are applied; no ExternalDNS has observed them yet.
    Described,
    /// ExternalDNS has observed every object's current generation.
    Adopted,
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("externaldns.k8s.io", "v1alpha1", "DNSEndpoint"),
        "dnsendpoints",
    )
}

/// A structural schema for the fields ExternalDNS's crd source reads
/// (`spec.endpoints[]`: dnsName, recordType, targets, recordTTL,
/// setIdentifier, labels, providerSpecific; `status.observedGeneration`),
/// served as v1alpha1 with a status subresource like ExternalDNS's own.
/// ExternalDNS's chart may later replace it with its fuller schema.
pub fn crd() -> Value {
    let endpoint = json!({
        "type": "object",
        "required": ["dnsName", "recordType"],
        "properties": {
            "dnsName": {"type": "string"},
            "recordType": {"type": "string"},
            "targets": {"type": "array", "items": {"type": "string"}},
            "recordTTL": {"type": "integer", "format": "int64"},
            "setIdentifier": {"type": "string"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "providerSpecific": {"type": "array", "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}}
            }}
        }
    });
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": CRD_NAME,
            "annotations": {"api-approved.kubernetes.io": "https://github.com/kubernetes-sigs/external-dns/pull/2007"},
            "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}
        },
        "spec": {
            "group": "externaldns.k8s.io",
            "names": {"kind": "DNSEndpoint", "listKind": "DNSEndpointList", "plural": "dnsendpoints", "singular": "dnsendpoint"},
            "scope": "Namespaced",
            "versions": [{
                "name": "v1alpha1", "served": true, "storage": true,
                "subresources": {"status": {}},
                "schema": {"openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "apiVersion": {"type": "string"},
                        "kind": {"type": "string"},
                        "metadata": {"type": "object"},
                        "spec": {"type": "object", "properties": {"endpoints": {"type": "array", "items": endpoint}}},
                        "status": {"type": "object", "properties": {"observedGeneration": {"type": "integer", "format": "int64"}}}
                    }
                }}
            }]
        }
    })
}

/// The DNSEndpoint objects describing `wanted`, by object name. Pure.
/// No `labels` on the endpoints: ExternalDNS would serialize them into
/// the ownership TXT, which the agent wrote without.
pub fn endpoint_objects(wanted: &[Wanted]) -> BTreeMap<String, Value> {
    let mut by_object: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    for w in wanted {
        let Some(object) = w.resource.rsplit('/').next() else {
            continue;
        };
        by_object
            .entry(object.to_string())
            .or_default()
            .push(json!({
                "dnsName": w.name,
                "recordType": w.kind().as_str(),
                "targets": w.targets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                "recordTTL": w.ttl,
            }));
    }
    by_object
        .into_iter()
        .map(|(name, endpoints)| {
            let obj = json!({
                "apiVersion": "externaldns.k8s.io/v1alpha1",
                "kind": "DNSEndpoint",
                "metadata": {
                    "name": name,
                    "namespace": ENDPOINT_NAMESPACE,
                    "labels": {"app.kubernetes.io/managed-by": FIELD_MANAGER}
                },
                "spec": {"endpoints": endpoints}
            });
            (name, obj)
        })
        .collect()
}

fn api_error(what: String) -> impl FnOnce(kube::Error) -> ClientError {
    move |source| ClientError::Api { what, source }
}

/// Installs the CRD when missing, applies the objects for `wanted` (and
/// empties any of ours no longer wanted), and says whether ExternalDNS has
/// adopted them.
pub async fn describe(
    kubeconfig: &Path,
    wanted: &[Wanted],
    objects_known: &[&str],
) -> Result<HandOver, ClientError> {
    let client: Client = client::from_kubeconfig(kubeconfig, TIMEOUT).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    if crds
        .get_opt(CRD_NAME)
        .await
        .map_err(api_error(format!(
            "get CustomResourceDefinition {CRD_NAME}"
        )))?
        .is_none()
    {
        let crd: CustomResourceDefinition =
            serde_json::from_value(crd()).map_err(|e| ClientError::Kubeconfig {
                path: CRD_NAME.into(),
                message: format!("the built-in CRD does not parse: {e}"),
            })?;
        crds.create(&PostParams::default(), &crd)
            .await
            .map_err(api_error(format!(
                "create CustomResourceDefinition {CRD_NAME}"
            )))?;
        tracing::info!("dns: installed the DNSEndpoint CRD for ExternalDNS");
    }
    let api: Api<DynamicObject> = Api::namespaced_with(client, ENDPOINT_NAMESPACE, &resource());
    let mut objects = endpoint_objects(wanted);
    for name in objects_known {
        objects.entry(name.to_string()).or_insert_with(|| {
            json!({
                "apiVersion": "externaldns.k8s.io/v1alpha1",
                "kind": "DNSEndpoint",
                "metadata": {"name": name, "namespace": ENDPOINT_NAMESPACE},
                "spec": {"endpoints": []}
            })
        });
    }
    let mut adopted = true;
    for (name, obj) in &objects {
        let applied = api
            .patch(
                name,
                &PatchParams::apply(FIELD_MANAGER).force(),
                &Patch::Apply(obj),
            )
            .await
            .map_err(api_error(format!(
                "apply DNSEndpoint {ENDPOINT_NAMESPACE}/{name}"
            )))?;
        let generation = applied.metadata.generation.unwrap_or(0);
        let observed = applied
            .data
            .pointer("/status/observedGeneration")
            .and_then(Value::as_i64)
            .unwrap_or(0);
        adopted &= generation > 0 && observed >= generation;
    }
    Ok(if adopted {
        HandOver::Adopted
    } else {
        HandOver::Described
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn objects_describe_exactly_the_published_records() {
        let w = |name: &str, ip: &str, object: &str| Wanted {
            name: name.into(),
            targets: [ip.parse().expect("ip")].into(),
            ttl: 60,
            resource: format!("crd/kube-system/{object}"),
        };
        let objects = endpoint_objects(&[
            w("api.example.test", "10.0.0.100", "muster-api"),
            w("h1.nodes.example.test", "10.0.0.1", "muster-nodes"),
            w("h2.nodes.example.test", "10.0.0.2", "muster-nodes"),
        ]);
        assert_eq!(
            objects.keys().collect::<Vec<_>>(),
            ["muster-api", "muster-nodes"]
        );
        assert_eq!(
            objects["muster-api"]["spec"],
            json!({"endpoints": [{"dnsName": "api.example.test", "recordType": "A", "targets": ["10.0.0.100"], "recordTTL": 60}]})
        );
        assert_eq!(
            objects["muster-nodes"]["spec"]["endpoints"]
                .as_array()
                .map(Vec::len),
            Some(2)
        );
        assert_eq!(
            objects["muster-nodes"]["metadata"]["namespace"],
            "kube-system"
        );
        // The CRD parses as the typed object the API takes.
        let crd: CustomResourceDefinition = serde_json::from_value(crd()).expect("crd");
        assert_eq!(crd.spec.names.plural, "dnsendpoints");
    }
}
