//! The lab's AWS Query API: the calls the agent makes, answered from the
//! world in AWS's XML shapes (those of `tests/fixtures/aws/`, recorded from
//! the API reference and moto).
//!
//! - Auto Scaling `DescribeAutoScalingGroups` (`AutoScalingGroupNames.member.N`):
//!   the one group, its members `InService`/`Healthy` (`Terminating:Wait`
//!   while `lab upgrade` replaces them).
//! - Auto Scaling `DescribeLifecycleHooks`: the group's one termination
//!   hook; `CompleteLifecycleAction` for a member in `Terminating:Wait`
//!   (the server records it: [`completed_instance`]).
//! - EC2 `DescribeInstances` (`InstanceId.N`; filters `instance-id`,
//!   `instance-state-name`, `private-ip-address`, `tag-key`, `tag:KEY`, exact
//!   values only): every instance the lab launched, terminated ones included.
//!
//! Everything fits one page: `MaxRecords`/`MaxResults`/`NextToken` are ignored.
//! The action picks the service (both share one endpoint here); `Version` must
//! be that service's. **Authentication is checked, signatures are not**: a
//! request must carry a SigV4 `Authorization` header whose credential is the
//! lab's access key id, which is what tells a misconfigured agent from a
//! working one; verifying the signature itself would only re-test the
//! `aws-sigv4` crate. Unknown actions get `InvalidAction` (HTTP 400).

use std::collections::BTreeMap;

use axum::http::{HeaderMap, StatusCode, header};

use super::{
    ACCOUNT_ID, IMAGE_ID, INSTANCE_TYPE, LabCloud, LabInstance, REPLACE_HOOK,
    REPLACE_HOOK_TIMEOUT_SECS, Reply,
};
use crate::cloud::aws::{AUTOSCALING, EC2};

const AUTOSCALING_NS: &str = "http://autoscaling.amazonaws.com/doc/2011-01-01/";
const EC2_NS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";
/// The lab's single subnet and VPC, named in EC2 answers.
const SUBNET_ID: &str = "subnet-0000000000muster";
const VPC_ID: &str = "vpc-0000000000muster";

/// The two error shapes: Query services (`<ErrorResponse>`) and EC2 (`<Response><Errors>`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Shape {
    Query,
    Ec2,
}

struct Call<'a> {
    shape: Shape,
    request_id: &'a str,
}

impl Call<'_> {
    fn error(&self, status: StatusCode, code: &str, message: &str) -> Reply {
        let (code, message, id) = (esc(code), esc(message), esc(self.request_id));
        let body = match self.shape {
            Shape::Query => format!(
                "<ErrorResponse xmlns=\"{AUTOSCALING_NS}\"><Error><Type>Sender</Type>\
                 <Code>{code}</Code><Message>{message}</Message></Error>\
                 <RequestId>{id}</RequestId></ErrorResponse>"
            ),
            Shape::Ec2 => format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
                 <Code>{code}</Code><Message>{message}</Message></Error></Errors>\
                 <RequestID>{id}</RequestID></Response>"
            ),
        };
        Reply::new(status, "text/xml", body)
    }
}

/// Answers one `POST /` (pure). `request_id` goes into the answer.
pub fn handle(world: &LabCloud, headers: &HeaderMap, body: &[u8], request_id: &str) -> Reply {
    let params = form(body);
    let (action, version) = (param(&params, "Action"), param(&params, "Version"));
    let shape = if version == EC2.api_version {
        Shape::Ec2
    } else {
        Shape::Query
    };
    let call = Call { shape, request_id };
    if let Err(reply) = authenticate(world, headers, &call) {
        return reply;
    }
    match (action, version) {
        ("DescribeAutoScalingGroups", v) if v == AUTOSCALING.api_version => {
            describe_auto_scaling_groups(world, &params, &call)
        }
        ("DescribeInstances", v) if v == EC2.api_version => {
            describe_instances(world, &params, &call)
        }
        ("DescribeLifecycleHooks", v) if v == AUTOSCALING.api_version => {
            describe_lifecycle_hooks(world, &params, &call)
        }
        ("CompleteLifecycleAction", v) if v == AUTOSCALING.api_version => {
            complete_lifecycle_action(world, &params, &call)
        }
        _ => {
            let message = match shape {
                Shape::Ec2 => format!("The action {action} is not valid for this web service."),
                Shape::Query => format!("Could not find operation {action} for version {version}"),
            };
            call.error(StatusCode::BAD_REQUEST, "InvalidAction", &message)
        }
    }
}

/// The instance a `CompleteLifecycleAction` request names, for the server
/// to record once [`handle`] accepted it (pure).
pub fn completed_instance(body: &[u8]) -> Option<String> {
    let params = form(body);
    let id = param(&params, "InstanceId");
    (param(&params, "Action") == "CompleteLifecycleAction" && !id.is_empty())
        .then(|| id.to_string())
}

/// A Query API request's form parameters.
fn form(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The value of parameter `name` ("" when absent).
fn param<'p>(params: &'p [(String, String)], name: &str) -> &'p str {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map_or("", |(_, v)| v.as_str())
}

fn describe_lifecycle_hooks(
    world: &LabCloud,
    params: &[(String, String)],
    call: &Call<'_>,
) -> Reply {
    let group = param(params, "AutoScalingGroupName");
    if group != world.group_name {
        return call.error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!("Group {group} not found"),
        );
    }
    let body = format!(
        "<DescribeLifecycleHooksResponse xmlns=\"{AUTOSCALING_NS}\"><DescribeLifecycleHooksResult>\
         <LifecycleHooks><member><LifecycleHookName>{REPLACE_HOOK}</LifecycleHookName>\
         <AutoScalingGroupName>{}</AutoScalingGroupName>\
         <LifecycleTransition>{}</LifecycleTransition><HeartbeatTimeout>{REPLACE_HOOK_TIMEOUT_SECS}</HeartbeatTimeout>\
         <GlobalTimeout>90000</GlobalTimeout><DefaultResult>CONTINUE</DefaultResult></member>\
         </LifecycleHooks></DescribeLifecycleHooksResult><ResponseMetadata><RequestId>{}</RequestId>\
         </ResponseMetadata></DescribeLifecycleHooksResponse>",
        esc(&world.group_name),
        crate::cloud::aws::autoscaling::TERMINATING,
        esc(call.request_id)
    );
    Reply::new(StatusCode::OK, "text/xml", body)
}

/// Accepted for a member held in `Terminating:Wait` by the lab's hook;
/// AWS's `ValidationError` otherwise (wrong group, hook or instance).
fn complete_lifecycle_action(
    world: &LabCloud,
    params: &[(String, String)],
    call: &Call<'_>,
) -> Reply {
    let param = |name: &str| param(params, name);
    let id = param("InstanceId");
    let waiting = world.members().any(|i| i.instance_id == id && i.leaving);
    if param("AutoScalingGroupName") != world.group_name
        || param("LifecycleHookName") != REPLACE_HOOK
        || !waiting
    {
        return call.error(
            StatusCode::BAD_REQUEST,
            "ValidationError",
            &format!("No active Lifecycle Action found with instance ID {id}"),
        );
    }
    let body = format!(
        "<CompleteLifecycleActionResponse xmlns=\"{AUTOSCALING_NS}\"><CompleteLifecycleActionResult/>\
         <ResponseMetadata><RequestId>{}</RequestId></ResponseMetadata></CompleteLifecycleActionResponse>",
        esc(call.request_id)
    );
    Reply::new(StatusCode::OK, "text/xml", body)
}

/// The answer when the server has no world to read (the agents retry it).
pub fn internal_error(request_id: &str, message: &str) -> Reply {
    let call = Call {
        shape: Shape::Query,
        request_id,
    };
    call.error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "InternalFailure",
        message,
    )
}

/// A SigV4 `Authorization` header naming the lab's access key (see the module doc).
fn authenticate(world: &LabCloud, headers: &HeaderMap, call: &Call<'_>) -> Result<(), Reply> {
    let Some(auth) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(call.error(
            StatusCode::FORBIDDEN,
            "MissingAuthenticationToken",
            "Request is missing Authentication Token",
        ));
    };
    let key = auth
        .strip_prefix("AWS4-HMAC-SHA256 ")
        .and_then(|rest| rest.trim_start().strip_prefix("Credential="))
        .and_then(|cred| cred.split('/').next());
    if key == Some(world.access_key_id.as_str()) {
        return Ok(());
    }
    Err(match call.shape {
        Shape::Ec2 => call.error(
            StatusCode::UNAUTHORIZED,
            "AuthFailure",
            "AWS was not able to validate the provided access credentials",
        ),
        Shape::Query => call.error(
            StatusCode::FORBIDDEN,
            "InvalidClientTokenId",
            "The security token included in the request is invalid.",
        ),
    })
}

/// Values of the numbered list `prefix.1`, `prefix.2`, … in index order.
fn numbered<'p>(params: &'p [(String, String)], prefix: &str) -> Vec<&'p str> {
    let mut found: BTreeMap<u32, &str> = BTreeMap::new();
    for (k, v) in params {
        if let Some(n) = k
            .strip_prefix(prefix)
            .and_then(|r| r.strip_prefix('.'))
            .and_then(|n| n.parse().ok())
        {
            found.insert(n, v);
        }
    }
    found.into_values().collect()
}

fn describe_auto_scaling_groups(
    world: &LabCloud,
    params: &[(String, String)],
    call: &Call<'_>,
) -> Reply {
    let names = numbered(params, "AutoScalingGroupNames.member");
    let listed = names.is_empty() || names.contains(&world.group_name.as_str());
    let groups = if listed {
        group_xml(world)
    } else {
        String::new()
    };
    let body = format!(
        "<DescribeAutoScalingGroupsResponse xmlns=\"{AUTOSCALING_NS}\">\
         <DescribeAutoScalingGroupsResult><AutoScalingGroups>{groups}</AutoScalingGroups>\
         </DescribeAutoScalingGroupsResult><ResponseMetadata><RequestId>{}</RequestId>\
         </ResponseMetadata></DescribeAutoScalingGroupsResponse>",
        esc(call.request_id)
    );
    Reply::new(StatusCode::OK, "text/xml", body)
}

fn group_xml(world: &LabCloud) -> String {
    let name = esc(&world.group_name);
    let zone = esc(&world.zone);
    let members: Vec<&LabInstance> = world.members().collect();
    let desired = world.desired();
    let max = desired.max(u32::try_from(members.len()).unwrap_or(u32::MAX));
    let created = world
        .instances
        .first()
        .map_or("1970-01-01T00:00:00.000Z", |i| i.launch_time.as_str());
    let instances: String = members
        .iter()
        .map(|i| {
            format!(
                "<member><InstanceId>{}</InstanceId><InstanceType>{INSTANCE_TYPE}</InstanceType>\
                 <AvailabilityZone>{zone}</AvailabilityZone><LifecycleState>{}</LifecycleState>\
                 <HealthStatus>Healthy</HealthStatus><ProtectedFromScaleIn>false</ProtectedFromScaleIn></member>",
                esc(&i.instance_id),
                if i.leaving { "Terminating:Wait" } else { "InService" }
            )
        })
        .collect();
    format!(
        "<member><AutoScalingGroupName>{name}</AutoScalingGroupName>\
         <AutoScalingGroupARN>arn:aws:autoscaling:{region}:{ACCOUNT_ID}:autoScalingGroup:\
         00000000-0000-4000-8000-000000000000:autoScalingGroupName/{name}</AutoScalingGroupARN>\
         <MinSize>0</MinSize><MaxSize>{max}</MaxSize><DesiredCapacity>{desired}</DesiredCapacity>\
         <DefaultCooldown>300</DefaultCooldown><AvailabilityZones><member>{zone}</member></AvailabilityZones>\
         <LoadBalancerNames/><TargetGroupARNs/><HealthCheckType>EC2</HealthCheckType>\
         <HealthCheckGracePeriod>300</HealthCheckGracePeriod><Instances>{instances}</Instances>\
         <CreatedTime>{created}</CreatedTime><SuspendedProcesses/><VPCZoneIdentifier>{SUBNET_ID}</VPCZoneIdentifier>\
         <EnabledMetrics/><Tags/><TerminationPolicies><member>Default</member></TerminationPolicies>\
         <NewInstancesProtectedFromScaleIn>false</NewInstancesProtectedFromScaleIn></member>",
        region = esc(&world.region),
        created = esc(created),
    )
}

/// One `Filter.N`: a name and the values any of which may match.
struct Filter<'p> {
    name: &'p str,
    values: Vec<&'p str>,
}

fn filters<'p>(params: &'p [(String, String)]) -> Vec<Filter<'p>> {
    let mut by_index: BTreeMap<u32, Filter<'p>> = BTreeMap::new();
    for (k, _) in params {
        let Some(n) = k
            .strip_prefix("Filter.")
            .and_then(|r| r.split_once('.'))
            .and_then(|(n, _)| n.parse::<u32>().ok())
        else {
            continue;
        };
        by_index.entry(n).or_insert_with(|| Filter {
            name: params
                .iter()
                .find(|(k, _)| *k == format!("Filter.{n}.Name"))
                .map_or("", |(_, v)| v.as_str()),
            values: numbered(params, &format!("Filter.{n}.Value")),
        });
    }
    by_index.into_values().collect()
}

/// Whether `instance` passes `filter`; `None` for a filter EC2 would refuse.
fn matches(world: &LabCloud, instance: &LabInstance, filter: &Filter<'_>) -> Option<bool> {
    let any = |value: &str| filter.values.contains(&value);
    let tags = world.tags(instance);
    Some(match filter.name {
        "instance-id" => any(&instance.instance_id),
        "instance-state-name" => any(instance.state.ec2().0),
        "private-ip-address" => {
            instance.state != super::InstanceState::Terminated
                && any(&instance.private_ipv4.to_string())
        }
        "tag-key" => tags.iter().any(|(k, _)| any(k)),
        name => {
            let key = name.strip_prefix("tag:")?;
            tags.iter().any(|(k, v)| k == key && any(v))
        }
    })
}

fn describe_instances(world: &LabCloud, params: &[(String, String)], call: &Call<'_>) -> Reply {
    let ids = numbered(params, "InstanceId");
    if let Some(missing) = ids
        .iter()
        .find(|id| !world.instances.iter().any(|i| i.instance_id == **id))
    {
        return call.error(
            StatusCode::BAD_REQUEST,
            "InvalidInstanceID.NotFound",
            &format!("The instance ID '{missing}' does not exist"),
        );
    }
    let filters = filters(params);
    let mut items = String::new();
    for instance in &world.instances {
        if !ids.is_empty() && !ids.contains(&instance.instance_id.as_str()) {
            continue;
        }
        let mut keep = true;
        for filter in &filters {
            match matches(world, instance, filter) {
                Some(ok) => keep &= ok,
                None => {
                    return call.error(
                        StatusCode::BAD_REQUEST,
                        "InvalidParameterValue",
                        &format!("The filter '{}' is invalid", filter.name),
                    );
                }
            }
        }
        if keep {
            items.push_str(&reservation_xml(world, instance));
        }
    }
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DescribeInstancesResponse xmlns=\"{EC2_NS}\">\
         <requestId>{}</requestId><reservationSet>{items}</reservationSet></DescribeInstancesResponse>",
        esc(call.request_id)
    );
    Reply::new(StatusCode::OK, "text/xml", body)
}

/// One reservation holding one instance, as an ASG launch makes it.
fn reservation_xml(world: &LabCloud, i: &LabInstance) -> String {
    let id = esc(&i.instance_id);
    let (state, code) = i.state.ec2();
    let live = i.state != super::InstanceState::Terminated;
    // A terminated instance has lost its address and interface, as in EC2.
    let (dns, ip, nic) = if live {
        let ip = i.private_ipv4;
        (
            esc(&i.hostname),
            format!("<privateIpAddress>{ip}</privateIpAddress>"),
            format!(
                "<item><networkInterfaceId>eni-{suffix}</networkInterfaceId><subnetId>{SUBNET_ID}</subnetId>\
                 <vpcId>{VPC_ID}</vpcId><description>Primary network interface</description>\
                 <ownerId>{ACCOUNT_ID}</ownerId><status>in-use</status><macAddress>{mac}</macAddress>\
                 <privateIpAddress>{ip}</privateIpAddress><sourceDestCheck>true</sourceDestCheck>\
                 <attachment><deviceIndex>0</deviceIndex><status>attached</status></attachment>\
                 <privateIpAddressesSet><item><privateIpAddress>{ip}</privateIpAddress>\
                 <primary>true</primary></item></privateIpAddressesSet></item>",
                suffix = esc(i.instance_id.trim_start_matches("i-")),
                mac = esc(&i.mac),
            ),
        )
    } else {
        (String::new(), String::new(), String::new())
    };
    let tags: String = world
        .tags(i)
        .iter()
        .map(|(k, v)| {
            format!(
                "<item><key>{}</key><value>{}</value></item>",
                esc(k),
                esc(v)
            )
        })
        .collect();
    format!(
        "<item><reservationId>r-{suffix}</reservationId><ownerId>{ACCOUNT_ID}</ownerId><groupSet/>\
         <instancesSet><item><instanceId>{id}</instanceId><imageId>{IMAGE_ID}</imageId>\
         <instanceState><code>{code}</code><name>{state}</name></instanceState>\
         <privateDnsName>{dns}</privateDnsName><reason/><amiLaunchIndex>0</amiLaunchIndex>\
         <productCodes/><instanceType>{INSTANCE_TYPE}</instanceType><launchTime>{launch}</launchTime>\
         <placement><availabilityZone>{zone}</availabilityZone><groupName/><tenancy>default</tenancy></placement>\
         <monitoring><state>disabled</state></monitoring><subnetId>{SUBNET_ID}</subnetId><vpcId>{VPC_ID}</vpcId>\
         {ip}<sourceDestCheck>true</sourceDestCheck><groupSet/><architecture>x86_64</architecture>\
         <rootDeviceType>ebs</rootDeviceType><rootDeviceName>/dev/xvda</rootDeviceName>\
         <virtualizationType>hvm</virtualizationType><tagSet>{tags}</tagSet><hypervisor>kvm</hypervisor>\
         <networkInterfaceSet>{nic}</networkInterfaceSet></item></instancesSet></item>",
        suffix = esc(i.instance_id.trim_start_matches("i-")),
        launch = esc(&i.launch_time),
        zone = esc(&world.zone),
    )
}

/// Escapes text for an XML element.
fn esc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}
