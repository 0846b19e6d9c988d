//! EC2: DescribeInstances.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::{AwsClient, AwsError, EC2, xml};
use crate::cloud::timestamp::parse_rfc3339_ms;

/// The parts of an instance Muster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ec2Instance {
    pub instance_id: String,
    /// `pending`, `running`, `shutting-down`, `terminated`, `stopping`, `stopped`.
    pub state: String,
    /// The primary private address; absent until the instance has a network interface.
    pub private_ip: Option<Ipv4Addr>,
    /// `launchTime` in ms since the Unix epoch (it changes on stop/start).
    pub launched_at_ms: Option<u64>,
    pub availability_zone: Option<String>,
    pub tags: BTreeMap<String, String>,
}

/// One page of DescribeInstances.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstancesPage {
    pub instances: Vec<Ec2Instance>,
    pub next_token: Option<String>,
}

/// Parses a DescribeInstances answer (pure).
pub fn parse_describe_instances(text: &str) -> Result<InstancesPage, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "DescribeInstancesResponse")?;
    let mut instances = Vec::new();
    if let Some(reservations) = xml::child(root, "reservationSet") {
        for reservation in xml::children(reservations, "item") {
            let Some(set) = xml::child(reservation, "instancesSet") else {
                continue;
            };
            for item in xml::children(set, "item") {
                instances.push(parse_instance(item)?);
            }
        }
    }
    let next_token = xml::text(root, "nextToken").map(str::to_string);
    Ok(InstancesPage {
        instances,
        next_token,
    })
}

fn parse_instance(item: roxmltree::Node<'_, '_>) -> Result<Ec2Instance, String> {
    let id = xml::required(item, "instanceId")?.to_string();
    let state = xml::path(item, &["instanceState", "name"])
        .and_then(|n| n.text())
        .map(str::trim)
        .ok_or_else(|| format!("instance {id}: no <instanceState><name>"))?
        .to_string();
    let private_ip = match xml::text(item, "privateIpAddress") {
        None => None,
        Some(ip) => Some(ip.parse::<Ipv4Addr>().map_err(|_| {
            format!("instance {id}: <privateIpAddress> {ip:?} is not an IPv4 address")
        })?),
    };
    let launched_at_ms = match xml::text(item, "launchTime") {
        None => None,
        Some(t) => {
            Some(parse_rfc3339_ms(t).map_err(|e| format!("instance {id}: <launchTime>: {e}"))?)
        }
    };
    let availability_zone = xml::child(item, "placement")
        .and_then(|p| xml::text(p, "availabilityZone"))
        .map(str::to_string);
    let mut tags = BTreeMap::new();
    if let Some(set) = xml::child(item, "tagSet") {
        for tag in xml::children(set, "item") {
            if let Some(key) = xml::text(tag, "key") {
                tags.insert(
                    key.to_string(),
                    xml::text(tag, "value").unwrap_or("").to_string(),
                );
            }
        }
    }
    Ok(Ec2Instance {
        instance_id: id,
        state,
        private_ip,
        launched_at_ms,
        availability_zone,
        tags,
    })
}

/// Instance ids per request: well under the API's limits on filter values.
const IDS_PER_CALL: usize = 100;
const MAX_PAGES: usize = 100;

/// Describes the given instances. Unknown ids are left out instead of
/// failing the call: a just-launched instance may not be visible to EC2 yet
/// (eventual consistency), and `InstanceId.N` would fail the whole request
/// with `InvalidInstanceID.NotFound`; the `instance-id` filter does not.
pub async fn describe_instances(
    client: &AwsClient,
    ids: &[String],
) -> Result<Vec<Ec2Instance>, AwsError> {
    let mut all = Vec::new();
    for chunk in ids.chunks(IDS_PER_CALL) {
        let mut filter = vec![("Filter.1.Name".to_string(), "instance-id".to_string())];
        filter.extend(
            chunk
                .iter()
                .enumerate()
                .map(|(i, id)| (format!("Filter.1.Value.{}", i + 1), id.clone())),
        );
        all.extend(describe_pages(client, filter).await?);
    }
    Ok(all)
}

/// Describes the instances tagged as launched by Auto Scaling group
/// `group_name`: one call for up to 1000 instances, where
/// [`describe_instances`] by id needs one per 100 (issue 18: 500 booting
/// machines made 3 000 DescribeInstances calls by id, 150 s of EC2's
/// refill rate). The answer may hold instances that have left the group
/// (terminated ones stay visible for a while) and may lack just-launched
/// ones (tags are eventually consistent): callers match it against the
/// group's member list.
pub async fn describe_group_instances(
    client: &AwsClient,
    group_name: &str,
) -> Result<Vec<Ec2Instance>, AwsError> {
    let filter = vec![
        (
            "Filter.1.Name".to_string(),
            format!("tag:{}", crate::metadata::aws::GROUP_TAG),
        ),
        ("Filter.1.Value.1".to_string(), group_name.to_string()),
        ("MaxResults".to_string(), "1000".to_string()),
    ];
    describe_pages(client, filter).await
}

/// Every page of one DescribeInstances query.
async fn describe_pages(
    client: &AwsClient,
    params: Vec<(String, String)>,
) -> Result<Vec<Ec2Instance>, AwsError> {
    let action = "DescribeInstances";
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    let mut pages = 0;
    loop {
        let mut params = params.clone();
        if let Some(t) = &token {
            params.push(("NextToken".to_string(), t.clone()));
        }
        let text = client.query(&EC2, action, &params).await?;
        let page = parse_describe_instances(&text).map_err(|cause| AwsError::Parse {
            service: EC2.endpoint_prefix,
            action: action.into(),
            endpoint: client.endpoint(&EC2).to_string(),
            cause,
        })?;
        all.extend(page.instances);
        pages += 1;
        match page.next_token {
            Some(next) if Some(&next) != token.as_ref() && pages < MAX_PAGES => token = Some(next),
            _ => break,
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::test_fixture("aws", name)
    }

    #[test]
    fn api_reference_sample() {
        let page =
            parse_describe_instances(&fixture("doc_describe_instances.xml")).expect("parses");
        assert_eq!(page.next_token, None);
        let i = &page.instances[0];
        assert_eq!(i.instance_id, "i-1234567890abcdef0");
        assert_eq!(i.state, "running");
        assert_eq!(i.private_ip, Some(Ipv4Addr::new(192, 168, 1, 88)));
        // date -u -d 2018-05-08T16:46:19Z +%s => 1525797979
        assert_eq!(i.launched_at_ms, Some(1_525_797_979_000));
        assert_eq!(i.availability_zone.as_deref(), Some("eu-west-1c"));
        assert_eq!(i.tags.get("Name").map(String::as_str), Some("Server_1"));
    }

    #[test]
    fn moto_recording() {
        let page =
            parse_describe_instances(&fixture("moto_describe_instances_3.xml")).expect("parses");
        let got: Vec<(&str, Option<Ipv4Addr>)> = page
            .instances
            .iter()
            .map(|i| (i.instance_id.as_str(), i.private_ip))
            .collect();
        assert_eq!(
            got,
            [
                ("i-693a27b9bd24ac175", Some(Ipv4Addr::new(10, 0, 1, 4))),
                ("i-8afabd04521fa4420", Some(Ipv4Addr::new(10, 0, 1, 5))),
                ("i-20b9c2c89ffb85711", Some(Ipv4Addr::new(10, 0, 1, 6))),
            ]
        );
        // moto gives all instances of one scaling action the same launch time.
        assert!(
            page.instances
                .iter()
                .all(|i| i.launched_at_ms == page.instances[0].launched_at_ms)
        );
        assert_eq!(
            page.instances[0]
                .tags
                .get("aws:autoscaling:groupName")
                .map(String::as_str),
            Some("muster-cp")
        );
    }

    #[test]
    fn missing_ip_is_none_and_bad_values_are_named() {
        let ec2 = fixture("moto_describe_instances_3.xml");
        let pending = ec2.replace(
            "<privateIpAddress>10.0.1.4</privateIpAddress></item>",
            "</item>",
        );
        let page = parse_describe_instances(&pending).expect("parses");
        assert_eq!(
            page.instances[0].private_ip, None,
            "only the instance's own address counts"
        );

        let bad = ec2.replacen("<launchTime>2026", "<launchTime>yesterday", 1);
        let e = parse_describe_instances(&bad).expect_err("bad time");
        assert!(
            e.contains("instance i-693a27b9bd24ac175: <launchTime>"),
            "{e}"
        );

        let paged = ec2.replace(
            "</reservationSet>",
            "</reservationSet><nextToken>n2</nextToken>",
        );
        assert_eq!(
            parse_describe_instances(&paged)
                .expect("parses")
                .next_token
                .as_deref(),
            Some("n2")
        );
        assert!(parse_describe_instances(&fixture("doc_error_ec2.xml")).is_err());
    }
}
