//! AWS Auto Scaling discovery against moto, the AWS API emulator: a real
//! VPC, subnet, launch template and group, created through Muster's own
//! light client, then listed with `discovery::aws_asg::list_group`.
//! Loopback only. Fails (never skips) when moto is not installed.

use crate::support;

use std::collections::HashSet;
use std::net::Ipv4Addr;

use muster::cloud::aws::{AUTOSCALING, AwsClient, AwsError, Credentials};
use muster::discovery::Lifecycle;
use muster::discovery::aws_asg::{Freshness, KnownInstances, list_group, list_group_with};
use muster::discovery::error::DiscoveryError;
use muster::discovery::group::GroupView;
use support::moto::{self, Moto, create_group, params};

const REGION: &str = "us-east-1";
const VPC: &str = "10.0.0.0/16";
const SUBNET: &str = "10.0.1.0/24";

fn client(moto: &Moto, credentials: Credentials) -> AwsClient {
    moto::quick_client(moto, REGION, credentials)
}

fn test_credentials() -> Credentials {
    Credentials::new(moto::KEY, moto::SECRET_KEY, None)
}

async fn autoscaling(aws: &AwsClient, action: &str, pairs: &[(&str, &str)]) {
    aws.query(&AUTOSCALING, action, &params(pairs))
        .await
        .unwrap_or_else(|e| panic!("{action}: {e}"));
}

fn assert_all_in_service(view: &GroupView, n: usize) {
    assert_eq!(view.peers.len(), n, "{view:#?}");
    let ids: HashSet<&str> = view.peers.iter().map(|p| p.id.as_str()).collect();
    let ips: HashSet<Ipv4Addr> = view.peers.iter().map(|p| p.address).collect();
    assert_eq!(
        (ids.len(), ips.len()),
        (n, n),
        "ids and addresses are distinct: {view:#?}"
    );
    for p in &view.peers {
        assert!(p.id.starts_with("i-"), "{p:?}");
        let [a, b, c, _] = p.address.octets();
        assert_eq!((a, b, c), (10, 0, 1), "address from the subnet: {p:?}");
        assert!(
            p.launched_at_ms.is_some_and(|ms| ms > 1_600_000_000_000),
            "{p:?}"
        );
        assert_eq!(p.lifecycle, Lifecycle::InService, "{p:?}");
    }
}

#[tokio::test]
async fn a_group_of_three_then_five() {
    let moto = Moto::start();
    let aws = client(&moto, test_credentials());
    create_group(&aws, "muster-cp", 3, VPC, SUBNET).await;

    let view = list_group(&aws, "muster-cp").await.expect("list 3");
    assert_eq!(view.desired_capacity, 3);
    assert_all_in_service(&view, 3);

    autoscaling(
        &aws,
        "SetDesiredCapacity",
        &[
            ("AutoScalingGroupName", "muster-cp"),
            ("DesiredCapacity", "5"),
        ],
    )
    .await;
    let bigger = list_group(&aws, "muster-cp").await.expect("list 5");
    assert_eq!(bigger.desired_capacity, 5);
    assert_all_in_service(&bigger, 5);
    for p in &view.peers {
        assert!(
            bigger.peers.contains(p),
            "the first three are unchanged: {p:?}"
        );
    }
}

#[tokio::test]
async fn terminated_unhealthy_and_standby_members() {
    let moto = Moto::start();
    let aws = client(&moto, test_credentials());
    create_group(&aws, "muster-cp", 4, VPC, SUBNET).await;
    let before = list_group(&aws, "muster-cp").await.expect("list");
    assert_all_in_service(&before, 4);
    let ids: Vec<&str> = before.peers.iter().map(|p| p.id.as_str()).collect();

    // Scale in by terminating one member: it is gone from the group.
    autoscaling(
        &aws,
        "TerminateInstanceInAutoScalingGroup",
        &[
            ("InstanceId", ids[0]),
            ("ShouldDecrementDesiredCapacity", "true"),
        ],
    )
    .await;
    autoscaling(
        &aws,
        "SetInstanceHealth",
        &[("InstanceId", ids[1]), ("HealthStatus", "Unhealthy")],
    )
    .await;
    autoscaling(
        &aws,
        "EnterStandby",
        &[
            ("AutoScalingGroupName", "muster-cp"),
            ("InstanceIds.member.1", ids[2]),
            ("ShouldDecrementDesiredCapacity", "true"),
        ],
    )
    .await;

    let after = list_group(&aws, "muster-cp").await.expect("list");
    assert_eq!(after.desired_capacity, 2, "{after:#?}");
    let state = |id: &str| after.peers.iter().find(|p| p.id == id).map(|p| p.lifecycle);
    assert_eq!(state(ids[0]), None, "terminated: gone from the group");
    assert_eq!(state(ids[1]), Some(Lifecycle::Leaving), "unhealthy");
    assert_eq!(state(ids[2]), Some(Lifecycle::Leaving), "standby");
    assert_eq!(state(ids[3]), Some(Lifecycle::InService));
}

#[tokio::test]
async fn an_unknown_group_is_named_in_the_error() {
    let moto = Moto::start();
    let aws = client(&moto, test_credentials());
    let err = list_group(&aws, "no-such-group")
        .await
        .expect_err("unknown group");
    assert!(
        matches!(err, DiscoveryError::GroupNotFound { .. }),
        "{err:?}"
    );
    let text = err.to_string();
    assert!(
        text.contains("\"no-such-group\"") && text.contains("region us-east-1"),
        "{text}"
    );
}

#[tokio::test]
async fn wrong_credentials_fail_at_once_with_a_clear_error() {
    // With INITIAL_NO_AUTH_ACTION_COUNT=0 moto checks keys against its IAM, as AWS does.
    let moto = Moto::start_with_env(&[("INITIAL_NO_AUTH_ACTION_COUNT", "0")]);
    let aws = client(&moto, Credentials::new("AKIDWRONG", "wrong-secret", None));
    let err = list_group(&aws, "muster-cp").await.expect_err("refused");
    let DiscoveryError::Aws(AwsError::Api(api)) = &err else {
        panic!("expected an AWS API error, got {err:?}");
    };
    assert_eq!(
        (api.code.as_str(), api.status, api.attempts),
        ("InvalidClientTokenId", 403, 1),
        "not retried"
    );
    let text = err.to_string();
    assert!(
        text.contains("aws autoscaling DescribeAutoScalingGroups at http://127.0.0.1:"),
        "{text}"
    );
    assert!(text.contains("check the credentials"), "{text}");
    assert!(!text.contains("wrong-secret"), "{text}");
}

#[test]
fn moto_is_stopped_even_when_a_test_panics() {
    let payload = std::thread::spawn(|| {
        let moto = Moto::start();
        let port = moto.endpoint.port().expect("port");
        std::panic::panic_any(port);
    })
    .join()
    .expect_err("the thread panics");
    let port = *payload.downcast::<u16>().expect("the port");
    assert!(
        std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
        "moto still answers on {port}"
    );
}

/// Many agents listing at once meet AWS's throttling (`moto_throttled.py`
/// answers over-budget reads at once with EC2's `RequestLimitExceeded`,
/// 503, and Auto Scaling's `Throttling`, 400): every listing still
/// succeeds, through the production retry policy (jittered, capped
/// backoff), and the same group comes back to every caller.
#[tokio::test]
async fn listings_over_the_throttling_budget_are_retried_until_they_succeed() {
    const CALLERS: usize = 30;
    let moto = Moto::start_throttled(&moto::Throttling {
        // EC2's budget below what Auto Scaling's lets through, so both throttle.
        bucket: 2.0,
        refill: 2.0,
        autoscaling: Some((4.0, 4.0)),
        // No cache: every answered read is moto's own.
        cache_ttl: std::time::Duration::ZERO,
    });
    // The setup's writes are not throttled; its one listing may be.
    let aws = {
        let mut opts = muster::cloud::aws::AwsOptions::new(REGION);
        opts.endpoint = Some(moto.endpoint.clone());
        AwsClient::new(opts, test_credentials()).expect("aws client")
    };
    create_group(&aws, "muster-cp", 3, VPC, SUBNET).await;
    let expected = list_group(&aws, "muster-cp").await.expect("first listing");
    assert_all_in_service(&expected, 3);

    let listings = (0..CALLERS).map(|_| list_group(&aws, "muster-cp"));
    let started = std::time::Instant::now();
    let views = futures_util::future::join_all(listings).await;
    let took = started.elapsed();
    for (i, view) in views.into_iter().enumerate() {
        let view = view.unwrap_or_else(|e| panic!("listing {i} failed: {e}"));
        assert_eq!(view.peers, expected.peers, "listing {i}");
    }

    let outcomes = moto.front_outcomes();
    let throttled = (
        outcomes.count(Some("autoscaling"), Some("throttled")),
        outcomes.count(Some("ec2"), Some("throttled")),
    );
    let answered = (
        outcomes.count(Some("autoscaling"), Some("answered")),
        outcomes.count(Some("ec2"), Some("answered")),
    );
    eprintln!(
        "{CALLERS} listings in {took:?}: throttled (autoscaling, ec2) {throttled:?}, answered {answered:?}"
    );
    assert!(
        throttled.0 > 0 && throttled.1 > 0,
        "the budgets (4 + 4/s, 2 + 2/s) are below {CALLERS} listings at once, so both services throttle: {throttled:?}"
    );
    assert!(
        answered.0 > CALLERS && answered.1 > CALLERS,
        "every listing got both answers in the end: {answered:?}"
    );
}

/// What a listing costs in API calls, counted by the front: a group of 120
/// (more than one DescribeInstances call's worth of ids) is listed in one
/// Auto Scaling and one EC2 call (by the group's tag), and a worker's
/// next listing, once every member is settled, in the Auto Scaling call
/// alone.
#[tokio::test]
async fn a_large_group_is_listed_in_two_calls_and_a_workers_next_listing_in_one() {
    const MEMBERS: u32 = 120;
    let moto = Moto::start_throttled(&moto::Throttling::aws());
    let aws = client(&moto, test_credentials());
    create_group(&aws, "muster-big", MEMBERS, VPC, SUBNET).await;
    let calls = |moto: &Moto| {
        let o = moto.front_outcomes();
        (
            o.count(Some("autoscaling"), None),
            o.count(Some("ec2"), None),
        )
    };

    let before = calls(&moto);
    let mut known = KnownInstances::default();
    let full = list_group_with(&aws, "muster-big", &mut known, Freshness::Full)
        .await
        .expect("full listing");
    assert_all_in_service(&full, MEMBERS as usize);
    let after_full = calls(&moto);
    assert_eq!(
        (after_full.0 - before.0, after_full.1 - before.1),
        (1, 1),
        "one DescribeAutoScalingGroups and one DescribeInstances"
    );

    let again = list_group_with(&aws, "muster-big", &mut known, Freshness::KnownAddresses)
        .await
        .expect("worker listing");
    assert_eq!(again, full, "the same view from what was known");
    let after_worker = calls(&moto);
    assert_eq!(
        (after_worker.0 - after_full.0, after_worker.1 - after_full.1),
        (1, 0),
        "a worker's listing at rest asks EC2 nothing"
    );
}
