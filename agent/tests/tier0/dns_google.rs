//! Tier 0: the google provider against a fake Cloud DNS v1 on loopback
//! that follows the published contract (support/fake_cloud_dns.rs): the
//! project from the metadata server, the zone found by DNS name, paging,
//! atomic changes with exact deletions, a steady state with no change,
//! another owner's record left alone, a replaced node, a token without
//! rights refused with nothing written.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use muster::cloud::gce::{AccessToken, GceClient, GceOptions};
use muster::dns::google::GoogleProvider;
use muster::dns::records;
use muster::dns::{Fault, Provider, reconcile};
use muster::retry::Backoff;

use crate::support::dns as dns_support;
use crate::support::fake_cloud_dns::FakeCloudDns;

const ZONE: &str = "example.com";
const TOKEN: &str = "ya29.muster-test";

fn provider(fake: &FakeCloudDns, token: &str) -> Provider {
    let opts = GceOptions {
        metadata_base: fake.server.base.clone(),
        static_token: Some(AccessToken::new(token)),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            total: Duration::from_millis(200),
        },
        ..GceOptions::default()
    };
    let client = GceClient::new(opts).expect("client");
    let api = fake.server.base.join("dns/v1/").expect("url");
    Provider::Google(GoogleProvider::new(client, api, None, None))
}

#[tokio::test]
async fn google_publishes_in_one_change_and_respects_other_owners() {
    let fake = FakeCloudDns::start("example.com.", TOKEN, 10).await;
    fake.seed("node-0.nodes.example.com.", "A", 60, &["192.0.2.9"]);
    fake.seed(
        "a-node-0.nodes.example.com.",
        "TXT",
        300,
        &["\"heritage=external-dns,external-dns/owner=other\""],
    );
    let dns = provider(&fake, TOKEN);
    let names = dns_support::names(ZONE);
    let vip: BTreeSet<IpAddr> = ["10.0.0.100".parse().expect("ip")].into();
    let (wanted, scope) = records::render(&names, &vip, &dns_support::nodes(0..30));

    let first = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("publish");
    assert_eq!(first.changes.len(), 60, "{:?}", first.conflicts);
    dns_support::assert_only_node0_conflict(&first, ZONE);
    {
        let st = fake.state.lock().expect("lock");
        assert_eq!(st.changes, 1, "one atomic change");
        let txt = st
            .rrsets
            .iter()
            .find(|r| r["name"] == "a-api.example.com.")
            .expect("ownership record");
        assert_eq!(
            txt["rrdatas"][0],
            "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\""
        );
        assert_eq!(txt["ttl"], 300);
    }

    // Steady state over 7 pages: no change.
    let calls = fake.server.requests().len();
    let again = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("steady");
    let steady_calls = fake.server.requests().len() - calls;
    println!(
        "figures: google steady-state reconcile of 63 record sets in pages of 10: {steady_calls} API calls, no write"
    );
    assert_eq!(steady_calls, 7, "the cached zone and 7 pages");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(fake.state.lock().expect("lock").changes, 1);

    // node-7 replaced by node-30; the API moves to two addresses (a
    // replace: the exact old set deleted, the new one added).
    let replaced = dns_support::node7_replaced(30);
    let two: BTreeSet<IpAddr> = [
        "10.0.0.101".parse().expect("ip"),
        "10.0.0.102".parse().expect("ip"),
    ]
    .into();
    let (wanted2, scope2) = records::render(&names, &two, &replaced);
    let swap = reconcile(&dns, ZONE, &wanted2, &names.owner, &scope2)
        .await
        .expect("replace");
    assert_eq!(swap.changes.len(), 5, "{:?}", swap.changes);
    {
        let st = fake.state.lock().expect("lock");
        assert_eq!(st.changes, 2);
        assert!(
            !st.rrsets
                .iter()
                .any(|r| r["name"].as_str().is_some_and(|n| n.contains("node-7.")))
        );
        let api = st
            .rrsets
            .iter()
            .find(|r| r["name"] == "api.example.com.")
            .expect("api");
        assert_eq!(
            api["rrdatas"],
            serde_json::json!(["10.0.0.101", "10.0.0.102"])
        );
        assert!(st.rrsets.iter().any(|r| r["name"] == "node-0.nodes.example.com." && r["rrdatas"][0] == "192.0.2.9"));
    }

    // A token without rights: a config error naming the block; no change.
    let e = reconcile(
        &provider(&fake, "ya29.wrong"),
        ZONE,
        &wanted,
        &names.owner,
        &scope,
    )
    .await
    .expect_err("refused");
    assert!(
        matches!(
            e.fault,
            Fault::Config {
                field: "dns.google"
            }
        ),
        "{e:?}"
    );
    assert_eq!(fake.state.lock().expect("lock").changes, 2);

    // No managed zone for the name.
    let e = reconcile(&dns, "elsewhere.org", &[], "prod", &scope)
        .await
        .expect_err("unknown zone");
    assert!(
        matches!(e.fault, Fault::Config { field: "dns.zone" }),
        "{e:?}"
    );
}
