//! The GCE mover's cloud part (`vip::gce::take`) against the stateful
//! Compute fake (`support/fake_compute.rs`), which enforces fingerprints
//! (412), add-or-remove-only updates, operations that finish later, ranges
//! in use elsewhere and stopped instances keeping their ranges. The local
//! /32 (netlink) is covered by the tier-1 group scenario.

use crate::support;

use std::net::Ipv4Addr;
use std::time::Duration;

use muster::cloud::gce::alias::InstanceRef;
use muster::cloud::gce::{GceClient, GceError};
use muster::vip::gce::{locate, take};
use support::fake_compute::{FakeCompute, PROJECT, ZONE};
use support::fake_http::FakeServer;

const VIP: Ipv4Addr = Ipv4Addr::new(10, 128, 0, 100);

fn ip(n: u8) -> Ipv4Addr {
    Ipv4Addr::new(10, 128, 0, n)
}

fn client(server: &FakeServer) -> GceClient {
    support::fake_compute::gce_client(server)
}

fn own(name: &str) -> InstanceRef {
    InstanceRef {
        project: PROJECT.into(),
        zone: ZONE.into(),
        name: name.into(),
    }
}

fn fake() -> FakeCompute {
    let f = FakeCompute::new(&[("cp-a", ip(2)), ("cp-b", ip(3)), ("cp-c", ip(4))]);
    f.with(|s| s.op_delay = Duration::from_millis(150));
    f
}

/// Every PATCH the fake accepted or refused, by instance name.
fn patches(f: &FakeCompute) -> Vec<String> {
    f.with(|s| {
        s.calls
            .iter()
            .filter(|(m, _)| m == "PATCH")
            .map(|(_, p)| p.split('/').nth_back(1).unwrap_or_default().to_string())
            .collect()
    })
}

#[tokio::test]
async fn the_vip_comes_off_a_stopped_holder_in_another_zone_then_onto_us() {
    let f = fake();
    f.with(|s| {
        s.page_size = 2; // four instances: two pages
        let old = s.add("cp-old", "us-central1-b", ip(9), true);
        s.instance(&old.name).aliases = vec![
            (format!("{VIP}/32"), None),
            ("10.4.1.0/24".into(), Some("pods".into())),
        ];
        s.stop("cp-old");
        s.metadata_for = Some("cp-a".into());
    });
    let server = f.serve().await;
    let c = client(&server);
    let me = locate(&c).await.expect("metadata");
    assert_eq!(me, own("cp-a"));
    let evicted = take(&c, &me, ip(2), VIP).await.expect("moved");
    assert_eq!(evicted, 1);
    assert_eq!(f.alias_holders(VIP), ["cp-a"]);
    // The stopped holder keeps its other range.
    let kept = f.with(|s| s.instance("cp-old").aliases.clone());
    assert_eq!(
        kept,
        [("10.4.1.0/24".to_string(), Some("pods".to_string()))]
    );
    assert_eq!(patches(&f), ["cp-old", "cp-a"], "evict first, then take");
    let polls = f.with(|s| {
        s.calls
            .iter()
            .filter(|(_, p)| p.contains("/operations/"))
            .count()
    });
    assert!(polls >= 2, "each operation is waited for ({polls} polls)");
    let pages = f.with(|s| {
        s.calls
            .iter()
            .filter(|(_, p)| p.ends_with("/aggregated/instances"))
            .count()
    });
    assert_eq!(pages, 2, "every page of the aggregated list is read");

    // Taking it again changes nothing.
    f.with(|s| s.calls.clear());
    assert_eq!(take(&c, &me, ip(2), VIP).await.expect("idempotent"), 0);
    assert!(patches(&f).is_empty());
}

#[tokio::test]
async fn a_changed_fingerprint_is_read_again() {
    let f = fake();
    f.with(|s| s.race_fingerprint_of = Some("cp-b".into()));
    let server = f.serve().await;
    let c = client(&server);
    take(&c, &own("cp-b"), ip(3), VIP).await.expect("moved");
    assert_eq!(f.alias_holders(VIP), ["cp-b"]);
    assert_eq!(patches(&f), ["cp-b", "cp-b"], "412, then the redo");
}

#[tokio::test]
async fn a_holder_that_reappears_is_evicted_again() {
    let f = fake();
    f.with(|s| {
        s.instance("cp-c").aliases = vec![(format!("{VIP}/32"), None)];
        s.readd_after_eviction = Some((format!("{VIP}/32"), "cp-c".into()));
    });
    let server = f.serve().await;
    let c = client(&server);
    let evicted = take(&c, &own("cp-a"), ip(2), VIP).await.expect("moved");
    assert_eq!(evicted, 2);
    assert_eq!(f.alias_holders(VIP), ["cp-a"]);
    // evict, take (fails in the operation: in use), evict again, take.
    assert_eq!(patches(&f), ["cp-c", "cp-a", "cp-c", "cp-a"]);
}

#[tokio::test]
async fn missing_permission_is_named_with_the_roles_needed() {
    let f = fake();
    f.with(|s| {
        s.refuse_updates = Some((
            403,
            "forbidden",
            "Required 'compute.instances.updateNetworkInterface' permission for 'projects/muster-test/zones/us-central1-a/instances/cp-a'".into(),
        ))
    });
    let server = f.serve().await;
    let c = client(&server);
    let e = take(&c, &own("cp-a"), ip(2), VIP)
        .await
        .expect_err("forbidden");
    assert!(matches!(e, GceError::Api { status: 403, .. }), "{e:?}");
    let text = e.to_string();
    assert!(
        text.contains("instances.updateNetworkInterface")
            && text.contains("roles/compute.instanceAdmin.v1"),
        "{text}"
    );
    assert_eq!(patches(&f).len(), 1, "a refusal is not retried");
    assert!(f.alias_holders(VIP).is_empty());
}
