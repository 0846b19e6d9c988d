//! GCE managed instance group discovery against an HTTP fake playing both
//! the metadata server and the Compute API (no GCE emulator exists). The
//! answers are the recorded fixtures in `tests/fixtures/gce/`.

use crate::support;

use std::net::Ipv4Addr;

use muster::cloud::gce::compute::{MigLocation, MigRef};
use muster::cloud::gce::{GceClient, GceError};
use muster::discovery::Lifecycle;
use muster::discovery::error::DiscoveryError;
use muster::discovery::gce_mig::list_group;
use support::fake_http::{FakeServer, Request, Response};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/gce/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

const TOKEN: &str = "/computeMetadata/v1/instance/service-accounts/default/token";
const IGM: &str =
    "/compute/v1/projects/example-project/zones/us-central1-a/instanceGroupManagers/muster-cp";

fn mig() -> MigRef {
    MigRef {
        project: "example-project".into(),
        location: MigLocation::Zone("us-central1-a".into()),
        name: "muster-cp".into(),
    }
}

fn client(server: &FakeServer) -> GceClient {
    support::fake_compute::gce_client(server)
}

const AGGREGATED: &str = "/compute/v1/projects/example-project/aggregated/instances";

/// `instances.get` of `name` as recorded (`instance.json`), the others in
/// the same shape with their own name, id and address; `None`: no such
/// instance.
fn instance(name: &str) -> Option<String> {
    let (id, ip) = match name {
        "muster-cp-9j4g" => return Some(fixture("instance.json")),
        "muster-cp-c63g" => ("4462422841867240255", "10.128.0.3"),
        "muster-cp-f1hm" => ("6309299611401323327", "10.128.0.5"),
        _ => return None,
    };
    Some(
        fixture("instance.json")
            .replace("muster-cp-9j4g", name)
            .replace("1974815549671473983", id)
            .replace("10.128.0.2", ip),
    )
}

/// A healthy fake: the token, the group, two pages of members, instances.
fn answer(r: &Request) -> Response {
    let path = r.target.split('?').next().unwrap_or_default();
    match (r.method.as_str(), path) {
        ("GET", TOKEN) => Response::json(fixture("doc_token.json")),
        ("GET", IGM) => Response::json(fixture("instance_group_manager.json")),
        ("POST", p) if p == format!("{IGM}/listManagedInstances") => {
            if r.target.contains("pageToken=CkQI2r3_page2") {
                // A member the group has only begun to create: no status, no instance yet.
                Response::json(
                    r#"{"managedInstances": [{"instance": "https://www.googleapis.com/compute/v1/projects/example-project/zones/us-central1-a/instances/muster-cp-zz00", "currentAction": "CREATING"}]}"#,
                )
            } else {
                Response::json(fixture("list_managed_instances.json"))
            }
        }
        ("GET", AGGREGATED) => {
            // The three that exist, in one list (the provisioning one is
            // not there yet: it is fetched by itself).
            let instances: Vec<serde_json::Value> =
                ["muster-cp-9j4g", "muster-cp-c63g", "muster-cp-f1hm"]
                    .into_iter()
                    .filter_map(instance)
                    .map(|text| serde_json::from_str(&text).expect("fixture JSON"))
                    .collect();
            Response::json(
                serde_json::json!({"items": {
                    "zones/us-central1-a": {"instances": instances},
                    "zones/us-east1-b": {"warning": {"code": "NO_RESULTS_ON_PAGE"}},
                }})
                .to_string(),
            )
        }
        ("GET", p) if p.contains("/instances/muster-cp-") => {
            match instance(p.rsplit('/').next().unwrap_or_default()) {
                Some(text) => Response::json(text),
                None => Response::new(404, "application/json", fixture("error_not_found.json")),
            }
        }
        _ => Response::new(404, "application/json", fixture("error_not_found.json")),
    }
}

#[tokio::test]
async fn lists_the_group_with_a_metadata_token() {
    let fake = FakeServer::start(|_, r| answer(r)).await;
    let view = list_group(&client(&fake), &mig()).await.expect("listed");
    assert_eq!(view.desired_capacity, 3);
    let got: Vec<(&str, Ipv4Addr, Lifecycle)> = view
        .peers
        .iter()
        .map(|p| (p.id.as_str(), p.address, p.lifecycle))
        .collect();
    assert_eq!(
        got,
        [
            (
                "1974815549671473983",
                Ipv4Addr::new(10, 128, 0, 2),
                Lifecycle::InService
            ),
            (
                "4462422841867240255",
                Ipv4Addr::new(10, 128, 0, 3),
                Lifecycle::Leaving
            ),
            (
                "6309299611401323327",
                Ipv4Addr::new(10, 128, 0, 5),
                Lifecycle::Leaving
            ),
            ("muster-cp-dck1", Ipv4Addr::UNSPECIFIED, Lifecycle::Pending),
            ("muster-cp-zz00", Ipv4Addr::UNSPECIFIED, Lifecycle::Pending),
        ]
    );

    let requests = fake.requests();
    let token_requests: Vec<&Request> = requests.iter().filter(|r| r.target == TOKEN).collect();
    assert_eq!(token_requests.len(), 1, "the token is cached");
    assert_eq!(token_requests[0].header("metadata-flavor"), Some("Google"));
    for r in requests.iter().filter(|r| r.target != TOKEN) {
        assert_eq!(
            r.header("authorization"),
            Some("Bearer YOUR_ACCESS_TOKEN"),
            "{r:?}"
        );
    }
    for r in requests.iter().filter(|r| r.method == "POST") {
        let lengths: Vec<_> = r
            .headers
            .iter()
            .filter(|(k, _)| k == "content-length")
            .collect();
        assert_eq!(lengths.len(), 1, "{r:?}");
        assert_eq!(lengths[0].1, "0");
    }
    assert!(
        requests.iter().any(|r| r
            .target
            .ends_with("listManagedInstances?pageToken=CkQI2r3_page2")),
        "paged"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.target.ends_with("muster-cp-dck1")),
        "provisioning: not in the list, fetched (404 is fine)"
    );
    let listed: Vec<&Request> = requests
        .iter()
        .filter(|r| r.target.starts_with(AGGREGATED))
        .collect();
    assert_eq!(listed.len(), 1, "one list for the group's instances");
    assert!(
        listed[0]
            .target
            .contains("filter=name+eq+%22muster-cp-.%2B%22"),
        "{}",
        listed[0].target
    );
    for name in ["muster-cp-9j4g", "muster-cp-c63g", "muster-cp-f1hm"] {
        assert!(
            !requests.iter().any(|r| r.target.ends_with(name)),
            "{name} came with the list: not fetched by itself"
        );
    }
    assert!(
        !requests
            .iter()
            .any(|r| r.target.ends_with("muster-cp-zz00")),
        "not created yet: not fetched"
    );
}

/// Without the permission to list instances, every member is fetched by
/// itself (`compute.instances.get`), and the view is the same.
#[tokio::test]
async fn without_list_permission_each_member_is_fetched() {
    let forbidden = r#"{"error":{"code":403,"message":"Required 'compute.instances.list' permission for 'projects/example-project'","errors":[{"reason":"forbidden"}]}}"#;
    let fake = FakeServer::start(move |_, r| {
        if r.target.starts_with(AGGREGATED) {
            Response::new(403, "application/json", forbidden)
        } else {
            answer(r)
        }
    })
    .await;
    let view = list_group(&client(&fake), &mig()).await.expect("listed");
    let healthy = FakeServer::start(|_, r| answer(r)).await;
    let expected = list_group(&client(&healthy), &mig()).await.expect("listed");
    assert_eq!(view, expected);
    let requests = fake.requests();
    for name in ["muster-cp-9j4g", "muster-cp-c63g", "muster-cp-f1hm"] {
        assert!(
            requests.iter().any(|r| r.target.ends_with(name)),
            "{name} fetched by itself"
        );
    }
}

#[tokio::test]
async fn an_unknown_group_is_named() {
    let fake = FakeServer::start(|_, r| {
        if r.target == TOKEN {
            answer(r)
        } else {
            Response::new(404, "application/json", fixture("error_not_found.json"))
        }
    })
    .await;
    let err = list_group(&client(&fake), &mig()).await.expect_err("404");
    assert!(
        matches!(err, DiscoveryError::GroupNotFound { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains(
            "projects/example-project/zones/us-central1-a/instanceGroupManagers/muster-cp"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn a_503_and_an_expired_token_are_retried() {
    let fake = FakeServer::start(|n, r| match n {
        // Token, then a 503 for the group, then a 401 that forces a new token.
        1 => Response::new(503, "text/html", "unavailable"),
        2 => Response::new(401, "application/json", r#"{"error":{"code":401,"message":"Invalid Credentials","errors":[{"reason":"authError"}]}}"#),
        _ => answer(r),
    })
    .await;
    let view = list_group(&client(&fake), &mig()).await.expect("retried");
    assert_eq!(view.peers.len(), 5);
    let tokens = fake.requests().iter().filter(|r| r.target == TOKEN).count();
    assert_eq!(tokens, 2, "the refused token was replaced");
}

#[tokio::test]
async fn missing_permission_fails_at_once_with_a_hint() {
    let forbidden = r#"{"error":{"code":403,"message":"Required 'compute.instanceGroupManagers.get' permission for 'projects/example-project/zones/us-central1-a/instanceGroupManagers/muster-cp'","errors":[{"message":"Required permission","domain":"global","reason":"forbidden"}]}}"#;
    let fake = FakeServer::start(move |_, r| {
        if r.target == TOKEN {
            answer(r)
        } else {
            Response::new(403, "application/json", forbidden)
        }
    })
    .await;
    let err = list_group(&client(&fake), &mig()).await.expect_err("403");
    assert_eq!(fake.requests().len(), 2, "token + one API call, no retries");
    let DiscoveryError::Gce(GceError::Api {
        status: 403,
        reason,
        ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert_eq!(reason.as_deref(), Some("forbidden"));
    let text = err.to_string();
    assert!(
        text.contains("Required 'compute.instanceGroupManagers.get' permission")
            && text.contains("roles/compute.viewer"),
        "{text}"
    );
    assert!(!text.contains("YOUR_ACCESS_TOKEN"), "{text}");
}

#[tokio::test]
async fn no_service_account_is_a_token_error() {
    let fake = FakeServer::start(|_, _| Response::new(404, "text/html", "Not Found")).await;
    let err = list_group(&client(&fake), &mig())
        .await
        .expect_err("no token");
    let text = err.to_string();
    assert!(
        matches!(err, DiscoveryError::Gce(GceError::Token { .. })),
        "{err:?}"
    );
    assert!(
        text.contains("metadata server") && text.contains("service account"),
        "{text}"
    );
}

/// The agent's source for `discovery.cloudGroup` on GCE: the project id and
/// the instance's `created-by` from the metadata server, then the group
/// through the Compute API at `cloud.endpoint`.
#[tokio::test]
async fn the_agent_source_finds_its_own_group_from_the_metadata() {
    use muster::config::{CloudGroup, DiscoveryMethod};
    use muster::discovery::source::PeerSource;
    use muster::metadata::{self, InstanceFacts, ProviderKind};
    let fake = FakeServer::start(|_, r| match r.target.as_str() {
        "/computeMetadata/v1/project/project-id" => {
            Response::new(200, "application/text", "example-project")
        }
        "/computeMetadata/v1/instance/attributes/created-by" => Response::new(
            200,
            "application/text",
            "projects/123456789/zones/us-central1-a/instanceGroupManagers/muster-cp",
        ),
        _ => answer(r),
    })
    .await;
    let imds = metadata::Options {
        endpoint: Some(fake.base.clone()),
        ..metadata::Options::default()
    };
    let facts = InstanceFacts {
        provider: ProviderKind::Gce,
        instance_id: "1974815549671473983".into(),
        hostname: None,
        private_ipv4: None,
        public_ipv4: None,
        region: Some("us-central1".into()),
        zone: Some("us-central1-a".into()),
        group: Some("muster-cp".into()),
        tags: Default::default(),
        user_data: None,
    };
    let api = fake.base.join("compute/v1/").expect("url");
    let source = PeerSource::from_config(
        DiscoveryMethod::CloudGroup(CloudGroup::default()),
        Some(&api),
        &facts,
        &imds,
    )
    .await
    .expect("source");
    let peers = source.list().await.expect("listed");
    assert_eq!(peers.len(), 5, "{peers:?}");
    assert_eq!(peers[0].address, Ipv4Addr::new(10, 128, 0, 2));
    let asked: Vec<String> = fake.requests().iter().map(|r| r.target.clone()).collect();
    assert!(asked.iter().any(|t| t == IGM), "{asked:?}");

    // An instance outside any group is told so.
    let lonely = FakeServer::start(|_, r| match r.target.as_str() {
        "/computeMetadata/v1/project/project-id" => {
            Response::new(200, "application/text", "example-project")
        }
        _ => Response::new(404, "text/html", "Not Found"),
    })
    .await;
    let imds = metadata::Options {
        endpoint: Some(lonely.base.clone()),
        ..metadata::Options::default()
    };
    let e = PeerSource::from_config(
        DiscoveryMethod::CloudGroup(CloudGroup::default()),
        Some(&api),
        &facts,
        &imds,
    )
    .await
    .err()
    .expect("no group");
    assert!(
        e.to_string().contains("in no managed instance group"),
        "{e}"
    );
}
