//! EC2 Auto Scaling: DescribeAutoScalingGroups, and the termination
//! lifecycle hooks a leaving instance completes (DescribeLifecycleHooks,
//! CompleteLifecycleAction).

use super::{AUTOSCALING, AwsClient, AwsError, xml};

/// An instance as its Auto Scaling group sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsgInstance {
    pub instance_id: String,
    /// `Pending`, `Pending:Wait`, `InService`, `Terminating`, `Standby`, …
    pub lifecycle_state: String,
    /// `Healthy` or `Unhealthy`; the API reference's own sample omits it, so
    /// a missing value reads as `Healthy`.
    pub health_status: String,
    pub availability_zone: Option<String>,
}

/// The parts of a group Muster needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AutoScalingGroup {
    pub name: String,
    pub desired_capacity: u32,
    pub min_size: u32,
    pub max_size: u32,
    pub instances: Vec<AsgInstance>,
}

/// One page of DescribeAutoScalingGroups.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupsPage {
    pub groups: Vec<AutoScalingGroup>,
    /// More pages follow when set.
    pub next_token: Option<String>,
}

/// Parses a DescribeAutoScalingGroups answer (pure).
pub fn parse_describe_auto_scaling_groups(text: &str) -> Result<GroupsPage, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "DescribeAutoScalingGroupsResponse")?;
    let result = xml::child(root, "DescribeAutoScalingGroupsResult")
        .ok_or("no <DescribeAutoScalingGroupsResult> in the answer")?;
    let mut groups = Vec::new();
    if let Some(list) = xml::child(result, "AutoScalingGroups") {
        for member in xml::children(list, "member") {
            groups.push(parse_group(member)?);
        }
    }
    let next_token = xml::text(result, "NextToken").map(str::to_string);
    Ok(GroupsPage { groups, next_token })
}

fn parse_group(member: roxmltree::Node<'_, '_>) -> Result<AutoScalingGroup, String> {
    let name = xml::required(member, "AutoScalingGroupName")?.to_string();
    let number = |field: &str| -> Result<u32, String> {
        let value = xml::required(member, field).map_err(|e| format!("group {name}: {e}"))?;
        value
            .parse()
            .map_err(|_| format!("group {name}: <{field}> is {value:?}, not a count"))
    };
    let mut instances = Vec::new();
    if let Some(list) = xml::child(member, "Instances") {
        for i in xml::children(list, "member") {
            let id = xml::required(i, "InstanceId").map_err(|e| format!("group {name}: {e}"))?;
            instances.push(AsgInstance {
                instance_id: id.to_string(),
                lifecycle_state: xml::required(i, "LifecycleState")
                    .map_err(|e| format!("group {name}, instance {id}: {e}"))?
                    .to_string(),
                health_status: xml::text(i, "HealthStatus")
                    .unwrap_or("Healthy")
                    .to_string(),
                availability_zone: xml::text(i, "AvailabilityZone").map(str::to_string),
            });
        }
    }
    Ok(AutoScalingGroup {
        desired_capacity: number("DesiredCapacity")?,
        min_size: number("MinSize")?,
        max_size: number("MaxSize")?,
        instances,
        name,
    })
}

/// Most pages we follow before deciding the API is looping.
const MAX_PAGES: usize = 100;

/// The group called `name`, or `None` when it does not exist (AWS answers
/// an unknown name with an empty list, not an error).
pub async fn describe_auto_scaling_group(
    client: &AwsClient,
    name: &str,
) -> Result<Option<AutoScalingGroup>, AwsError> {
    let action = "DescribeAutoScalingGroups";
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = vec![(
            "AutoScalingGroupNames.member.1".to_string(),
            name.to_string(),
        )];
        if let Some(t) = &token {
            params.push(("NextToken".to_string(), t.clone()));
        }
        let text = client.query(&AUTOSCALING, action, &params).await?;
        let page = parse_describe_auto_scaling_groups(&text).map_err(|cause| AwsError::Parse {
            service: AUTOSCALING.endpoint_prefix,
            action: action.into(),
            endpoint: client.endpoint(&AUTOSCALING).to_string(),
            cause,
        })?;
        if let Some(group) = page.groups.into_iter().find(|g| g.name == name) {
            return Ok(Some(group));
        }
        match page.next_token {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => return Ok(None),
        }
    }
    Err(AwsError::Parse {
        service: AUTOSCALING.endpoint_prefix,
        action: action.into(),
        endpoint: client.endpoint(&AUTOSCALING).to_string(),
        cause: format!("still paging after {MAX_PAGES} pages"),
    })
}

/// The transition of a hook that holds terminating instances.
pub const TERMINATING: &str = "autoscaling:EC2_INSTANCE_TERMINATING";

/// A lifecycle hook of a group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleHook {
    pub name: String,
    pub transition: String,
    pub heartbeat_timeout_s: Option<u32>,
}

/// Parses a DescribeLifecycleHooks answer (pure).
pub fn parse_describe_lifecycle_hooks(text: &str) -> Result<Vec<LifecycleHook>, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "DescribeLifecycleHooksResponse")?;
    let result = xml::child(root, "DescribeLifecycleHooksResult")
        .ok_or("no <DescribeLifecycleHooksResult> in the answer")?;
    let Some(list) = xml::child(result, "LifecycleHooks") else {
        return Ok(Vec::new());
    };
    xml::children(list, "member")
        .map(|m| {
            Ok(LifecycleHook {
                name: xml::required(m, "LifecycleHookName")?.to_string(),
                transition: xml::required(m, "LifecycleTransition")?.to_string(),
                heartbeat_timeout_s: xml::text(m, "HeartbeatTimeout").and_then(|t| t.parse().ok()),
            })
        })
        .collect()
}

/// The hooks of `group` that hold terminating instances.
pub async fn termination_hooks(
    client: &AwsClient,
    group: &str,
) -> Result<Vec<LifecycleHook>, AwsError> {
    let action = "DescribeLifecycleHooks";
    let params = vec![("AutoScalingGroupName".to_string(), group.to_string())];
    let text = client.query(&AUTOSCALING, action, &params).await?;
    let hooks = parse_describe_lifecycle_hooks(&text).map_err(|cause| AwsError::Parse {
        service: AUTOSCALING.endpoint_prefix,
        action: action.into(),
        endpoint: client.endpoint(&AUTOSCALING).to_string(),
        cause,
    })?;
    Ok(hooks
        .into_iter()
        .filter(|h| h.transition == TERMINATING)
        .collect())
}

/// Lets the group go on with `instance_id`'s termination (`CONTINUE`).
pub async fn complete_lifecycle_action(
    client: &AwsClient,
    group: &str,
    hook: &str,
    instance_id: &str,
) -> Result<(), AwsError> {
    let params = vec![
        ("AutoScalingGroupName".to_string(), group.to_string()),
        ("LifecycleHookName".to_string(), hook.to_string()),
        ("InstanceId".to_string(), instance_id.to_string()),
        ("LifecycleActionResult".to_string(), "CONTINUE".to_string()),
    ];
    client
        .query(&AUTOSCALING, "CompleteLifecycleAction", &params)
        .await
        .map(|_| ())
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
            parse_describe_auto_scaling_groups(&fixture("doc_describe_asg.xml")).expect("parses");
        assert_eq!(page.next_token, None);
        let g = &page.groups[0];
        assert_eq!(
            (g.name.as_str(), g.desired_capacity, g.min_size, g.max_size),
            ("my-asg", 2, 2, 10)
        );
        assert_eq!(
            g.instances,
            vec![AsgInstance {
                instance_id: "i-12345678".into(),
                lifecycle_state: "InService".into(),
                health_status: "Healthy".into(),
                availability_zone: Some("us-east-1c".into()),
            }]
        );
    }

    #[test]
    fn moto_recording() {
        let page = parse_describe_auto_scaling_groups(&fixture("moto_describe_asg_3.xml"))
            .expect("parses");
        let g = &page.groups[0];
        assert_eq!((g.name.as_str(), g.desired_capacity), ("muster-cp", 3));
        let ids: Vec<&str> = g.instances.iter().map(|i| i.instance_id.as_str()).collect();
        assert_eq!(
            ids,
            [
                "i-693a27b9bd24ac175",
                "i-8afabd04521fa4420",
                "i-20b9c2c89ffb85711"
            ]
        );
        assert!(
            g.instances
                .iter()
                .all(|i| i.lifecycle_state == "InService" && i.health_status == "Healthy")
        );

        let empty = parse_describe_auto_scaling_groups(&fixture("moto_describe_asg_unknown.xml"))
            .expect("parses");
        assert!(empty.groups.is_empty());
    }

    #[test]
    fn next_token_and_broken_answers() {
        let paged = fixture("moto_describe_asg_3.xml").replace(
            "</AutoScalingGroups>",
            "</AutoScalingGroups><NextToken>tok-2</NextToken>",
        );
        assert_eq!(
            parse_describe_auto_scaling_groups(&paged)
                .expect("parses")
                .next_token
                .as_deref(),
            Some("tok-2")
        );

        let bad = fixture("moto_describe_asg_3.xml")
            .replace("<DesiredCapacity>3<", "<DesiredCapacity>three<");
        let e = parse_describe_auto_scaling_groups(&bad).expect_err("not a count");
        assert!(
            e.contains("group muster-cp: <DesiredCapacity> is \"three\""),
            "{e}"
        );

        let e = parse_describe_auto_scaling_groups(&fixture("moto_error_validation.xml"))
            .expect_err("error doc");
        assert!(
            e.contains("expected <DescribeAutoScalingGroupsResponse>, got <ErrorResponse>"),
            "{e}"
        );
        assert!(parse_describe_auto_scaling_groups("<DescribeAutoScalingGroupsResponse>").is_err());
    }

    #[test]
    fn lifecycle_hooks_parse_from_the_api_reference_sample() {
        let hooks = parse_describe_lifecycle_hooks(&fixture("doc_describe_lifecycle_hooks.xml"))
            .expect("parses");
        assert_eq!(
            hooks,
            vec![
                LifecycleHook {
                    name: "my-launch-hook".into(),
                    transition: "autoscaling:EC2_INSTANCE_LAUNCHING".into(),
                    heartbeat_timeout_s: Some(3600),
                },
                LifecycleHook {
                    name: "my-termination-hook".into(),
                    transition: TERMINATING.into(),
                    heartbeat_timeout_s: Some(600),
                },
            ]
        );
        let none = "<DescribeLifecycleHooksResponse><DescribeLifecycleHooksResult><LifecycleHooks/></DescribeLifecycleHooksResult></DescribeLifecycleHooksResponse>";
        assert_eq!(parse_describe_lifecycle_hooks(none), Ok(vec![]));
        assert!(parse_describe_lifecycle_hooks("<ErrorResponse/>").is_err());
    }
}
