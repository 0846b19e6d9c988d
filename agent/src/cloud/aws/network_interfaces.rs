//! EC2 network interfaces: DescribeNetworkInterfaces, and moving a
//! secondary private IP with AssignPrivateIpAddresses (AllowReassignment)
//! and UnassignPrivateIpAddresses: the cloud half of `apiEndpoint.mode: aws`.

use std::net::Ipv4Addr;

use super::{AwsClient, AwsError, EC2, xml};

/// The parts of a network interface the VIP mover needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NetworkInterface {
    pub id: String,
    pub subnet_id: Option<String>,
    /// The instance it is attached to, and at which device index.
    pub instance_id: Option<String>,
    pub device_index: Option<u32>,
    /// Primary first, as EC2 lists them.
    pub private_ips: Vec<Ipv4Addr>,
}

impl NetworkInterface {
    pub fn holds(&self, ip: Ipv4Addr) -> bool {
        self.private_ips.contains(&ip)
    }
}

/// Parses a DescribeNetworkInterfaces answer (pure): the interfaces and
/// the next page's token.
pub fn parse_describe_network_interfaces(
    text: &str,
) -> Result<(Vec<NetworkInterface>, Option<String>), String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "DescribeNetworkInterfacesResponse")?;
    let mut out = Vec::new();
    if let Some(set) = xml::child(root, "networkInterfaceSet") {
        for item in xml::children(set, "item") {
            out.push(parse_interface(item)?);
        }
    }
    Ok((out, xml::text(root, "nextToken").map(str::to_string)))
}

fn parse_interface(item: roxmltree::Node<'_, '_>) -> Result<NetworkInterface, String> {
    let id = xml::required(item, "networkInterfaceId")?.to_string();
    let attachment = xml::child(item, "attachment");
    let device_index = match attachment.and_then(|a| xml::text(a, "deviceIndex")) {
        None => None,
        Some(t) => Some(
            t.parse()
                .map_err(|_| format!("interface {id}: <deviceIndex> {t:?} is not a number"))?,
        ),
    };
    let mut private_ips = Vec::new();
    if let Some(set) = xml::child(item, "privateIpAddressesSet") {
        for a in xml::children(set, "item") {
            let text = xml::required(a, "privateIpAddress")?;
            private_ips.push(text.parse().map_err(|_| {
                format!("interface {id}: <privateIpAddress> {text:?} is not an IPv4 address")
            })?);
        }
    }
    Ok(NetworkInterface {
        subnet_id: xml::text(item, "subnetId").map(str::to_string),
        instance_id: attachment
            .and_then(|a| xml::text(a, "instanceId"))
            .map(str::to_string),
        device_index,
        private_ips,
        id,
    })
}

/// The interfaces that match one filter (`attachment.instance-id`,
/// `subnet-id`, ...), all pages.
pub async fn describe_network_interfaces(
    client: &AwsClient,
    filter: &str,
    value: &str,
) -> Result<Vec<NetworkInterface>, AwsError> {
    const MAX_PAGES: usize = 100;
    let action = "DescribeNetworkInterfaces";
    let mut all = Vec::new();
    let mut token: Option<String> = None;
    for _ in 0..MAX_PAGES {
        let mut params = vec![
            ("Filter.1.Name".to_string(), filter.to_string()),
            ("Filter.1.Value.1".to_string(), value.to_string()),
        ];
        if let Some(t) = &token {
            params.push(("NextToken".to_string(), t.clone()));
        }
        let text = client.query(&EC2, action, &params).await?;
        let (page, next) =
            parse_describe_network_interfaces(&text).map_err(|cause| AwsError::Parse {
                service: EC2.endpoint_prefix,
                action: action.into(),
                endpoint: client.endpoint(&EC2).to_string(),
                cause,
            })?;
        all.extend(page);
        match next {
            Some(next) if Some(&next) != token.as_ref() => token = Some(next),
            _ => break,
        }
    }
    Ok(all)
}

/// Puts `ip` on interface `eni` as a secondary private IP, taking it from
/// whichever interface of the subnet had it (AllowReassignment).
pub async fn assign_private_ip(
    client: &AwsClient,
    eni: &str,
    ip: Ipv4Addr,
) -> Result<(), AwsError> {
    private_ip_call(
        client,
        "AssignPrivateIpAddresses",
        eni,
        ip,
        &[("AllowReassignment", "true")],
    )
    .await
}

/// Takes `ip` off interface `eni`.
pub async fn unassign_private_ip(
    client: &AwsClient,
    eni: &str,
    ip: Ipv4Addr,
) -> Result<(), AwsError> {
    private_ip_call(client, "UnassignPrivateIpAddresses", eni, ip, &[]).await
}

async fn private_ip_call(
    client: &AwsClient,
    action: &str,
    eni: &str,
    ip: Ipv4Addr,
    extra: &[(&str, &str)],
) -> Result<(), AwsError> {
    let mut params = vec![
        ("NetworkInterfaceId".to_string(), eni.to_string()),
        ("PrivateIpAddress.1".to_string(), ip.to_string()),
    ];
    params.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    client.query(&EC2, action, &params).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::test_fixture("aws", name)
    }

    #[test]
    fn api_reference_sample() {
        let (enis, next) =
            parse_describe_network_interfaces(&fixture("doc_describe_network_interfaces.xml"))
                .expect("parses");
        assert_eq!(next, None);
        assert_eq!(enis.len(), 1);
        let e = &enis[0];
        assert_eq!(e.id, "eni-e5aa89a3");
        assert_eq!(e.subnet_id.as_deref(), Some("subnet-b61f49f0"));
        assert_eq!(e.instance_id.as_deref(), Some("i-1234567890abcdef0"));
        assert_eq!(e.device_index, Some(1));
        // Only the addresses of privateIpAddressesSet, not the public one.
        assert_eq!(e.private_ips, vec![Ipv4Addr::new(10, 0, 1, 17)]);
        assert!(e.holds(Ipv4Addr::new(10, 0, 1, 17)));
        assert!(!e.holds(Ipv4Addr::new(203, 0, 113, 12)));
    }

    #[test]
    fn moto_answer() {
        let (enis, _) =
            parse_describe_network_interfaces(&fixture("moto_describe_network_interfaces.xml"))
                .expect("parses");
        assert_eq!(enis.len(), 1);
        assert_eq!(enis[0].device_index, Some(0));
        assert!(
            enis[0]
                .instance_id
                .as_deref()
                .is_some_and(|i| i.starts_with("i-"))
        );
        assert_eq!(enis[0].private_ips.len(), 2, "primary + the VIP");
    }

    #[test]
    fn broken_answers_say_what_is_wrong() {
        let bad_ip = r#"<DescribeNetworkInterfacesResponse><networkInterfaceSet><item>
            <networkInterfaceId>eni-1</networkInterfaceId>
            <privateIpAddressesSet><item><privateIpAddress>10.0.0.300</privateIpAddress></item></privateIpAddressesSet>
            </item></networkInterfaceSet></DescribeNetworkInterfacesResponse>"#;
        let e = parse_describe_network_interfaces(bad_ip).unwrap_err();
        assert!(e.contains("eni-1") && e.contains("10.0.0.300"), "{e}");
        let no_id = "<DescribeNetworkInterfacesResponse><networkInterfaceSet><item/></networkInterfaceSet></DescribeNetworkInterfacesResponse>";
        assert!(
            parse_describe_network_interfaces(no_id)
                .unwrap_err()
                .contains("networkInterfaceId")
        );
        assert!(parse_describe_network_interfaces("<Other/>").is_err());
    }
}
