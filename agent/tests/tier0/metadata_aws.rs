//! AWS IMDS against the fake server: the token dance, retries, and the errors
//! an operator sees when things go wrong.

use crate::support::fake_metadata;
use crate::support::golden;

use std::time::{Duration, Instant};

use fake_metadata::{FakeServer, Imds, Reply, Step, TOKEN_PATH};
use golden::{assert_golden, hermetic, read_fixture_text};
use muster::metadata::{self, MetadataError, ProviderKind};

const INSTANCE_ID: &str = "/latest/meta-data/instance-id";

/// A fake IMDS serving the doc fixture, with the given token rules.
async fn imds(mode: Imds) -> FakeServer {
    let server = FakeServer::start().await;
    server
        .imds(mode)
        .routes_from_json(&read_fixture_text("aws/imds.json"));
    server
}

async fn fetch(
    server_url: url::Url,
    allow_imdsv1: bool,
) -> Result<metadata::InstanceFacts, MetadataError> {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut opts = hermetic(dir.path(), Some(server_url));
    opts.allow_imdsv1 = allow_imdsv1;
    metadata::identify(Some(ProviderKind::Aws), &opts).await
}

#[tokio::test]
async fn happy_path_puts_the_token_once_and_sends_it_everywhere() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    let facts = fetch(server.url(), false).await.expect("identifies");
    assert_golden("aws/expected.json", &facts);
    assert_eq!(server.count("PUT", TOKEN_PATH), 1, "exactly one token PUT");
    let put = server
        .seen()
        .into_iter()
        .find(|s| s.method == "PUT")
        .expect("a PUT");
    assert_eq!(
        put.header("x-aws-ec2-metadata-token-ttl-seconds"),
        Some("21600")
    );
    for get in server.seen().iter().filter(|s| s.method == "GET") {
        assert_eq!(
            get.header("x-aws-ec2-metadata-token"),
            Some("token-1"),
            "{}",
            get.target
        );
    }
    // The identity document is only a fallback; placement paths answered.
    assert_eq!(
        server.count("GET", "/latest/dynamic/instance-identity/document"),
        0
    );
}

#[tokio::test]
async fn a_503_then_200_is_retried() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.script(
        "GET",
        INSTANCE_ID,
        vec![
            Step::Reply(Reply::status(503)),
            Step::Reply(Reply::status(503)),
            Step::Pass,
        ],
    );
    let facts = fetch(server.url(), false)
        .await
        .expect("identifies after retries");
    assert_eq!(facts.instance_id, "i-1234567890abcdef0");
    assert_eq!(server.count("GET", INSTANCE_ID), 3);
    assert_eq!(server.count("PUT", TOKEN_PATH), 1);
}

#[tokio::test]
async fn a_dropped_connection_then_success_is_retried() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.script("PUT", TOKEN_PATH, vec![Step::Drop, Step::Pass]);
    server.script("GET", INSTANCE_ID, vec![Step::Drop, Step::Pass]);
    let facts = fetch(server.url(), false).await.expect("identifies");
    assert_eq!(facts.instance_id, "i-1234567890abcdef0");
    assert_eq!(
        server.count("PUT", TOKEN_PATH),
        2,
        "the dropped PUT was retried once"
    );
    assert_eq!(server.count("GET", INSTANCE_ID), 2);
}

#[tokio::test]
async fn a_slow_answer_within_the_request_timeout_is_fine() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.script(
        "GET",
        INSTANCE_ID,
        vec![Step::Delay(
            Duration::from_millis(100),
            Reply::ok("i-1234567890abcdef0"),
        )],
    );
    let facts = fetch(server.url(), false).await.expect("identifies");
    assert_eq!(facts.instance_id, "i-1234567890abcdef0");
    assert_eq!(server.count("GET", INSTANCE_ID), 1);
}

#[tokio::test]
async fn an_expired_token_is_refreshed_and_the_get_retried_once() {
    // Each token works for 3 GETs; the fixture needs 11, so several refreshes.
    let server = imds(Imds::V2Only {
        token_max_uses: Some(3),
    })
    .await;
    let facts = fetch(server.url(), false).await.expect("identifies");
    assert_golden("aws/expected.json", &facts);
    let puts = server.count("PUT", TOKEN_PATH);
    let gets = server.seen().iter().filter(|s| s.method == "GET").count();
    let unauthorized = puts - 1;
    assert!(puts >= 4, "token refreshed after 401s, got {puts} PUTs");
    assert_eq!(
        gets,
        11 + unauthorized,
        "each 401 costs exactly one repeated GET"
    );
}

#[tokio::test]
async fn a_token_rejected_right_after_refresh_is_an_error_not_a_loop() {
    let server = imds(Imds::V2Only {
        token_max_uses: Some(0),
    })
    .await;
    let e = fetch(server.url(), false)
        .await
        .expect_err("never authorised");
    assert!(matches!(e, MetadataError::Http { .. }), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");
    assert_eq!(
        server.count("PUT", TOKEN_PATH),
        2,
        "initial token plus one refresh"
    );
    assert_eq!(server.count("GET", INSTANCE_ID), 2);
}

#[tokio::test]
async fn imdsv1_is_refused_unless_allowed() {
    let server = imds(Imds::V1Only).await;
    let e = fetch(server.url(), false)
        .await
        .expect_err("v1 not allowed");
    assert!(matches!(e, MetadataError::Imdsv2Refused { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains("IMDSv2 was refused (HTTP 403 Forbidden)"),
        "{msg}"
    );
    assert!(msg.contains("IMDSv1 is disabled"), "{msg}");
    assert!(
        msg.contains(&format!("{}latest/api/token", server.url())),
        "{msg}"
    );
    assert_eq!(
        server.count("GET", INSTANCE_ID),
        0,
        "no IMDSv1 request was made"
    );

    let facts = fetch(server.url(), true).await.expect("v1 allowed");
    assert_golden("aws/expected.json", &facts);
    let gets: Vec<_> = server
        .seen()
        .into_iter()
        .filter(|s| s.method == "GET")
        .collect();
    assert!(
        gets.iter()
            .all(|g| g.header("x-aws-ec2-metadata-token").is_none())
    );
}

#[tokio::test]
async fn imdsv2_is_preferred_when_both_work() {
    let server = imds(Imds::Both).await;
    fetch(server.url(), true).await.expect("identifies");
    assert_eq!(server.count("PUT", TOKEN_PATH), 1);
    assert!(
        server
            .seen()
            .iter()
            .filter(|s| s.method == "GET")
            .all(|g| g.header("x-aws-ec2-metadata-token").is_some())
    );
}

#[tokio::test]
async fn optional_paths_that_404_are_absent() {
    let server = FakeServer::start().await;
    server.imds(Imds::V2Only {
        token_max_uses: None,
    });
    server.route("GET", INSTANCE_ID, Reply::ok("i-0abc"));
    server.route("GET", "/latest/meta-data/local-ipv4", Reply::ok("10.0.0.9"));
    server.route(
        "GET",
        "/latest/meta-data/placement/region",
        Reply::ok("eu-central-1"),
    );
    server.route(
        "GET",
        "/latest/meta-data/placement/availability-zone",
        Reply::ok("eu-central-1a"),
    );
    let facts = fetch(server.url(), false).await.expect("identifies");
    assert_eq!(facts.instance_id, "i-0abc");
    assert!(facts.public_ipv4.is_none() && facts.hostname.is_none());
    assert!(
        facts.tags.is_empty() && facts.group.is_none(),
        "tags not enabled → empty"
    );
    assert!(facts.user_data.is_none());
}

#[tokio::test]
async fn a_403_is_permanent_and_not_retried() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.route("GET", INSTANCE_ID, Reply::status(403));
    let e = fetch(server.url(), false).await.expect_err("forbidden");
    assert_eq!(server.count("GET", INSTANCE_ID), 1);
    assert_eq!(
        e.to_string(),
        format!(
            "aws metadata at {}latest/meta-data/instance-id: HTTP 403 Forbidden",
            server.url()
        )
    );
}

#[tokio::test]
async fn endpoint_down_gives_a_clear_error_within_the_budget() {
    let url = fake_metadata::closed_port_url().await;
    let start = Instant::now();
    let e = fetch(url.clone(), false)
        .await
        .expect_err("nothing listens");
    let took = start.elapsed();
    let msg = e.to_string();
    let prefix = format!("aws metadata at {url}latest/api/token: no answer after ");
    assert!(msg.starts_with(&prefix), "{msg}");
    assert!(msg.ends_with("(connection refused)"), "{msg}");
    match e {
        MetadataError::Unreachable {
            attempts, elapsed, ..
        } => {
            assert!(attempts >= 3, "retried: {attempts}");
            assert!(
                elapsed < golden::FAST.total + Duration::from_millis(200),
                "{elapsed:?}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(took < Duration::from_secs(3), "bounded: {took:?}");
}

#[tokio::test]
async fn a_blackholed_endpoint_times_out_per_request() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.script("PUT", TOKEN_PATH, vec![Step::Hang]);
    let start = Instant::now();
    let e = fetch(server.url(), false).await.expect_err("never answers");
    assert!(e.to_string().ends_with("(timed out after 0.3s)"), "{e}");
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
}

#[tokio::test]
async fn gzip_user_data_is_refused_clearly() {
    let server = imds(Imds::V2Only {
        token_max_uses: None,
    })
    .await;
    server.route(
        "GET",
        "/latest/user-data",
        Reply::ok(vec![0x1f, 0x8b, 8, 0, 0]),
    );
    let e = fetch(server.url(), false).await.expect_err("gzip");
    assert!(e.to_string().contains("gzip-compressed"), "{e}");
}
