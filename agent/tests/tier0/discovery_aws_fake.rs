//! The AWS client's retry, error and paging behaviour against a scripted
//! HTTP fake that replays answers recorded from moto and the AWS API
//! reference: the sequences moto cannot produce on demand (503, throttling,
//! access denied, pagination, nothing listening).

use crate::support;

use std::time::Duration;

use muster::cloud::aws::{AwsClient, AwsError, AwsOptions, Credentials};
use muster::discovery::Lifecycle;
use muster::discovery::aws_asg::list_group;
use muster::discovery::error::DiscoveryError;
use muster::retry::Backoff;
use support::fake_http::{FakeServer, Request, Response};

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/aws/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn client(endpoint: &url::Url, total: Duration) -> AwsClient {
    let mut opts = AwsOptions::new("us-east-1");
    opts.endpoint = Some(endpoint.clone());
    opts.backoff = Backoff {
        initial: Duration::from_millis(10),
        max_delay: Duration::from_millis(50),
        total,
    };
    opts.request_timeout = Duration::from_secs(5);
    AwsClient::new(
        opts,
        Credentials::new("AKIDMUSTERTEST", "fake-secret", Some("fake-session".into())),
    )
    .expect("client")
}

fn action(r: &Request) -> &str {
    r.body
        .split('&')
        .find_map(|kv| kv.strip_prefix("Action="))
        .unwrap_or("")
}

/// The recorded moto answers for a group of three.
fn recorded(r: &Request) -> Response {
    match action(r) {
        "DescribeAutoScalingGroups" => Response::xml(fixture("moto_describe_asg_3.xml")),
        "DescribeInstances" => Response::xml(fixture("moto_describe_instances_3.xml")),
        other => Response::new(400, "text/plain", format!("unexpected action {other}")),
    }
}

#[tokio::test]
async fn two_503s_then_the_real_answer_are_retried() {
    let fake = FakeServer::start(|n, r| {
        if n < 2 {
            Response::new(
                503,
                "text/html",
                "<html><body>Service Unavailable</body></html>",
            )
        } else {
            recorded(r)
        }
    })
    .await;
    let view = list_group(&client(&fake.base, Duration::from_secs(10)), "muster-cp")
        .await
        .expect("retried");
    assert_eq!(view.peers.len(), 3);
    assert!(
        view.peers
            .iter()
            .all(|p| p.lifecycle == Lifecycle::InService)
    );

    let requests = fake.requests();
    let actions: Vec<&str> = requests.iter().map(action).collect();
    assert_eq!(
        actions,
        [
            "DescribeAutoScalingGroups",
            "DescribeAutoScalingGroups",
            "DescribeAutoScalingGroups",
            "DescribeInstances"
        ]
    );
    for r in &requests {
        assert_eq!(r.method, "POST");
        assert_eq!(
            r.header("content-type"),
            Some("application/x-www-form-urlencoded; charset=utf-8")
        );
        assert_eq!(r.header("x-amz-security-token"), Some("fake-session"));
        let auth = r.header("authorization").expect("signed");
        assert!(
            auth.starts_with("AWS4-HMAC-SHA256 Credential=AKIDMUSTERTEST/"),
            "{auth}"
        );
        assert!(!auth.contains("fake-secret"));
    }
    assert!(
        requests[0]
            .body
            .contains("Version=2011-01-01&AutoScalingGroupNames.member.1=muster-cp")
    );
    let ec2 = &requests[3].body;
    // The group's instances by its tag, in one call.
    assert!(
        ec2.contains(
            "Version=2016-11-15&Filter.1.Name=tag%3Aaws%3Aautoscaling%3AgroupName\
             &Filter.1.Value.1=muster-cp&MaxResults=1000"
        ),
        "{ec2}"
    );
}

#[tokio::test]
async fn throttling_is_retried() {
    let throttled = "<ErrorResponse><Error><Type>Sender</Type><Code>Throttling</Code>\
                     <Message>Rate exceeded</Message></Error><RequestId>t-1</RequestId></ErrorResponse>";
    let fake = FakeServer::start(move |n, r| {
        if n == 0 {
            Response::new(400, "text/xml", throttled)
        } else {
            recorded(r)
        }
    })
    .await;
    let view = list_group(&client(&fake.base, Duration::from_secs(10)), "muster-cp")
        .await
        .expect("retried");
    assert_eq!(view.peers.len(), 3);
    assert_eq!(fake.requests().len(), 3);
}

#[tokio::test]
async fn access_denied_fails_at_once_and_names_the_permission() {
    let denied = "<ErrorResponse><Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
                  arn:aws:sts::123456789012:assumed-role/muster-node/i-0abc is not authorized to perform: \
                  autoscaling:DescribeAutoScalingGroups</Message></Error><RequestId>d-1</RequestId></ErrorResponse>";
    let fake = FakeServer::start(move |_, _| Response::new(403, "text/xml", denied)).await;
    let err = list_group(&client(&fake.base, Duration::from_secs(10)), "muster-cp")
        .await
        .expect_err("denied");
    assert_eq!(fake.requests().len(), 1, "permanent errors are not retried");
    let DiscoveryError::Aws(AwsError::Api(api)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(
        (api.code.as_str(), api.request_id.as_deref()),
        ("AccessDenied", Some("d-1"))
    );
    let text = err.to_string();
    assert!(text.contains("is not authorized"), "{text}");
    assert!(
        text.contains("needs the IAM permission autoscaling:DescribeAutoScalingGroups"),
        "{text}"
    );
}

#[tokio::test]
async fn pages_are_followed() {
    let asg = fixture("moto_describe_asg_3.xml");
    let ec2 = fixture("moto_describe_instances_3.xml");
    // Page 1 of the groups is empty with a token; page 1 of the instances
    // holds the first reservation's first two instances.
    let empty_page = asg.replace(
        &asg[asg.find("<AutoScalingGroups>").expect("list")
            ..asg.find("</DescribeAutoScalingGroupsResult>").expect("end")],
        "<AutoScalingGroups/><NextToken>asg-page-2</NextToken>",
    );
    let items: Vec<usize> = ec2
        .match_indices("<item><architecture>")
        .map(|(i, _)| i)
        .collect();
    let end = ec2.find("</instancesSet>").expect("set end");
    let ec2_page1 = format!("{}{}", &ec2[..items[2]], &ec2[end..]).replace(
        "</reservationSet>",
        "</reservationSet><nextToken>ec2-page-2</nextToken>",
    );
    let ec2_page2 = format!("{}{}", &ec2[..items[0]], &ec2[items[2]..]);
    let fake = FakeServer::start(move |_, r| {
        let token = r
            .body
            .split('&')
            .find_map(|kv| kv.strip_prefix("NextToken="));
        match (action(r), token) {
            ("DescribeAutoScalingGroups", None) => Response::xml(empty_page.clone()),
            ("DescribeAutoScalingGroups", Some("asg-page-2")) => Response::xml(asg.clone()),
            ("DescribeInstances", None) => Response::xml(ec2_page1.clone()),
            ("DescribeInstances", Some("ec2-page-2")) => Response::xml(ec2_page2.clone()),
            _ => Response::new(400, "text/plain", "unexpected"),
        }
    })
    .await;
    let view = list_group(&client(&fake.base, Duration::from_secs(10)), "muster-cp")
        .await
        .expect("paged");
    assert_eq!(view.peers.len(), 3);
    assert!(
        view.peers
            .iter()
            .all(|p| p.lifecycle == Lifecycle::InService),
        "{view:#?}"
    );
    assert_eq!(fake.requests().len(), 4);
}

#[tokio::test]
async fn nothing_listening_gives_up_within_the_budget() {
    // Bind and drop: a port that refuses connections.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port();
    let endpoint = url::Url::parse(&format!("http://127.0.0.1:{port}/")).expect("url");
    let start = std::time::Instant::now();
    let err = list_group(&client(&endpoint, Duration::from_millis(300)), "muster-cp")
        .await
        .expect_err("refused");
    assert!(start.elapsed() < Duration::from_secs(5));
    let DiscoveryError::Aws(AwsError::Unreachable {
        attempts, cause, ..
    }) = &err
    else {
        panic!("{err:?}")
    };
    assert!(*attempts > 1, "transient: retried");
    assert_eq!(cause, "connection refused");
}

#[tokio::test]
async fn a_proxy_error_page_is_reported_with_its_status() {
    let fake = FakeServer::start(|_, _| {
        Response::new(502, "text/html", "<html><h1>502 Bad Gateway</h1></html>")
    })
    .await;
    let err = list_group(&client(&fake.base, Duration::from_millis(200)), "muster-cp")
        .await
        .expect_err("502");
    let text = err.to_string();
    assert!(
        matches!(err, DiscoveryError::Aws(AwsError::Http { status: 502, .. })),
        "{err:?}"
    );
    assert!(
        text.contains("HTTP 502") && text.contains("502 Bad Gateway") && text.contains("attempts"),
        "{text}"
    );
}

/// `cloud.endpoint` of the config carries the agent's AWS calls: discovery
/// built from the config (credentials from a fake IMDS, as on an instance)
/// lists the group through the configured endpoint. The environment
/// variable, which wins over the config, must be unset for this test.
#[tokio::test]
async fn the_configs_cloud_endpoint_carries_discovery_calls() {
    use muster::cloud::aws::AWS_ENDPOINT_ENV;
    use muster::config::{CloudGroup, DiscoveryMethod};
    use muster::discovery::source::PeerSource;
    use muster::metadata::{self, InstanceFacts, ProviderKind};
    use support::fake_metadata::{self, Imds, Reply};

    assert!(
        std::env::var_os(AWS_ENDPOINT_ENV).is_none(),
        "unset {AWS_ENDPOINT_ENV} to run this test: it would win over the config"
    );
    let aws = FakeServer::start(|_, r| recorded(r)).await;
    let imds = fake_metadata::FakeServer::start().await;
    imds.imds(Imds::V2Only {
        token_max_uses: None,
    })
    .route(
        "GET",
        "/latest/meta-data/iam/security-credentials/",
        Reply::ok("muster-node"),
    )
    .route(
        "GET",
        "/latest/meta-data/iam/security-credentials/muster-node",
        Reply::ok(
            std::fs::read(format!(
                "{}/tests/fixtures/aws/doc_imds_role_credentials.json",
                env!("CARGO_MANIFEST_DIR")
            ))
            .expect("fixture"),
        ),
    );
    let imds_opts = metadata::Options {
        endpoint: Some(imds.url()),
        ..metadata::Options::default()
    };
    let facts = InstanceFacts {
        provider: ProviderKind::Aws,
        instance_id: "i-0aaaaaaaaaaaaaaa1".into(),
        hostname: None,
        private_ipv4: None,
        public_ipv4: None,
        region: Some("us-east-1".into()),
        zone: None,
        group: Some("muster-cp".into()),
        tags: Default::default(),
        user_data: None,
    };
    let group = CloudGroup::default();
    let source = PeerSource::from_config(
        DiscoveryMethod::CloudGroup(group),
        Some(&aws.base),
        &facts,
        &imds_opts,
    )
    .await
    .expect("source");
    let peers = source
        .list()
        .await
        .expect("listed through the configured endpoint");
    assert_eq!(peers.len(), 3);
    let requests = aws.requests();
    let actions: Vec<&str> = requests.iter().map(action).collect();
    assert_eq!(
        actions,
        ["DescribeAutoScalingGroups", "DescribeInstances"],
        "every call went to the configured endpoint"
    );
    // Keys in the environment would win over the instance role.
    if std::env::var_os("AWS_ACCESS_KEY_ID").is_none() {
        assert!(
            requests.iter().all(|r| r
                .header("authorization")
                .is_some_and(|a| a.contains("Credential=ASIAIOSFODNN7EXAMPLE/"))),
            "signed with the instance role's key"
        );
    }
}
