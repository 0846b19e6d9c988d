//! Tier 0: the cloudflare provider against a fake API v4 on loopback that follows
//! Cloudflare's published contract (support/fake_cloudflare.rs): records in
//! ExternalDNS's format (quoted TXT, TTL 1 for ownership, not proxied),
//! paging, a steady state with no writes, another owner's record left
//! alone, a replaced node, a wrong token refused with nothing written, and
//! a 429 reported as rate limiting with its Retry-After.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use muster::dns::cloudflare::CloudflareProvider;
use muster::dns::records;
use muster::dns::{Fault, Provider, reconcile};

use crate::support::dns as dns_support;
use crate::support::fake_cloudflare::FakeCloudflare;

const ZONE: &str = "example.com";
const TOKEN: &str = "cf-test-token-0123456789";

fn provider(fake: &FakeCloudflare, token: &str) -> Provider {
    Provider::Cloudflare(
        CloudflareProvider::new(token.into(), fake.server.base.clone()).expect("provider"),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cloudflare_publishes_pages_and_respects_other_owners() {
    // Pages of 10 records: 30 nodes need several.
    let fake = FakeCloudflare::start(ZONE, TOKEN, 10).await;
    fake.seed("A", "node-0.nodes.example.com", "192.0.2.9");
    fake.seed(
        "TXT",
        "a-node-0.nodes.example.com",
        "\"heritage=external-dns,external-dns/owner=other\"",
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
        let txt = st
            .records
            .iter()
            .find(|r| r["name"] == "a-api.example.com")
            .expect("ownership record");
        assert_eq!(
            txt["content"],
            "\"heritage=external-dns,external-dns/owner=prod,external-dns/resource=crd/kube-system/muster-api\""
        );
        assert_eq!(txt["ttl"], 1);
        let a = st
            .records
            .iter()
            .find(|r| r["name"] == "api.example.com")
            .expect("api");
        assert_eq!(
            (
                a["content"].as_str(),
                a["ttl"].as_u64(),
                a["proxied"].as_bool()
            ),
            (Some("10.0.0.100"), Some(60), Some(false))
        );
        assert_eq!(st.records.len(), 62);
    }

    // Steady state: the whole zone is read (7 pages), nothing written.
    let writes = fake.state.lock().expect("lock").writes;
    let calls = fake.server.requests().len();
    let again = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect("steady");
    let steady_calls = fake.server.requests().len() - calls;
    println!(
        "figures: cloudflare steady-state reconcile of 62 records in pages of 10: {steady_calls} API calls, no write"
    );
    assert_eq!(steady_calls, 7, "the cached zone id and 7 pages");
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    assert_eq!(fake.state.lock().expect("lock").writes, writes);

    // node-7 replaced by node-30.
    let replaced = dns_support::node7_replaced(30);
    let (wanted2, scope2) = records::render(&names, &vip, &replaced);
    let swap = reconcile(&dns, ZONE, &wanted2, &names.owner, &scope2)
        .await
        .expect("replace");
    assert_eq!(swap.changes.len(), 4, "{:?}", swap.changes);
    {
        let st = fake.state.lock().expect("lock");
        assert!(
            !st.records
                .iter()
                .any(|r| r["name"].as_str().is_some_and(|n| n.contains("node-7.")))
        );
        assert!(
            st.records
                .iter()
                .any(|r| r["name"] == "node-30.nodes.example.com")
        );
        assert!(
            st.records
                .iter()
                .any(|r| r["name"] == "node-0.nodes.example.com" && r["content"] == "192.0.2.9")
        );
    }

    // A token without rights: a config error naming the field, no write.
    let writes = fake.state.lock().expect("lock").writes;
    let e = reconcile(
        &provider(&fake, "wrong-token"),
        ZONE,
        &wanted,
        &names.owner,
        &scope,
    )
    .await
    .expect_err("a wrong token must be refused");
    assert!(
        matches!(
            e.fault,
            Fault::Config {
                field: "dns.cloudflare.apiToken"
            }
        ),
        "{e:?}"
    );
    assert!(
        e.to_string().contains("Authentication error (code 10000)"),
        "{e}"
    );
    assert_eq!(fake.state.lock().expect("lock").writes, writes);

    // Throttled: rate limited, with Cloudflare's Retry-After.
    fake.state.lock().expect("lock").throttle_next = Some(7);
    let e = reconcile(&dns, ZONE, &wanted, &names.owner, &scope)
        .await
        .expect_err("429");
    assert_eq!(
        e.fault,
        Fault::RateLimited {
            after: Some(Duration::from_secs(7))
        },
        "{e}"
    );

    // An unknown zone.
    let e = reconcile(&dns, "elsewhere.org", &[], "prod", &scope)
        .await
        .expect_err("unknown zone");
    assert!(
        matches!(e.fault, Fault::Config { field: "dns.zone" }),
        "{e:?}"
    );
}
