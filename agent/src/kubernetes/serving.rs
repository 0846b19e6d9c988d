//! Kubelet serving certificates: every kubelet asks for one
//! (`serverTLSBootstrap`), and the control-plane agents approve the
//! requests they can vouch for; the controller-manager then signs them
//! with the cluster CA, so `kubectl logs`/`exec` (the apiserver dialling a
//! kubelet) are checked against a real name.
//!
//! Why this is safe: Kubernetes' own approver refuses these requests on
//! purpose (a node could otherwise claim any name or address). The agent
//! approves only what the requester may hold (the documented rules of
//! kubelet TLS bootstrapping): the requester is `system:node:<name>` in
//! `system:nodes`; the subject is exactly that; only server usages; DNS
//! names no other than the node's own name; every IP address one the node
//! reports as its own *and* one of a machine of the cluster's group (so a
//! node cannot claim the VIP, another node's address, or the apiserver's).
//! Anything else is left pending for a person (`kubectl certificate
//! approve`), never denied, so a rule too strict costs nothing but logs.
//!
//! `judge` is pure and tested; `approve_pending` applies it.

use std::collections::BTreeSet;
use std::net::IpAddr;

use k8s_openapi::api::certificates::v1::CertificateSigningRequest;
use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams, Patch, PatchParams};
use tracing::{debug, info};

use super::certs::{NODE_USER_PREFIX, NODES_GROUP};

/// The signer of kubelet serving certificates.
pub const SIGNER: &str = "kubernetes.io/kubelet-serving";

/// What the agent does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Approve,
    /// Not the agent's to approve: left pending, with why.
    Leave(String),
    /// Already decided, or not a kubelet serving request.
    NotMine,
}

/// What the request says, parsed from the CSR object and its PEM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub signer: String,
    pub username: String,
    pub groups: Vec<String>,
    pub usages: Vec<String>,
    pub decided: bool,
    pub subject_cn: Option<String>,
    pub subject_o: Vec<String>,
    pub dns: Vec<String>,
    pub ips: Vec<IpAddr>,
    /// Other SANs (email, URI): never approved.
    pub other_sans: usize,
}

/// The rules above. `node_addresses`: what the named node reports as its
/// addresses; `group_addresses`: the cluster's machines' addresses.
pub fn judge(
    r: &Request,
    node_addresses: &BTreeSet<IpAddr>,
    group_addresses: &BTreeSet<IpAddr>,
) -> Verdict {
    if r.decided || r.signer != SIGNER {
        return Verdict::NotMine;
    }
    let Some(node) = r.username.strip_prefix(NODE_USER_PREFIX) else {
        return Verdict::Leave(format!("requested by {}, not a node", r.username));
    };
    if !r.groups.iter().any(|g| g == NODES_GROUP) {
        return Verdict::Leave("requester is not in system:nodes".into());
    }
    if r.subject_cn.as_deref() != Some(r.username.as_str())
        || r.subject_o != [NODES_GROUP.to_string()]
    {
        return Verdict::Leave("the subject is not the requesting node".into());
    }
    let allowed = ["digital signature", "key encipherment", "server auth"];
    if !r.usages.iter().all(|u| allowed.contains(&u.as_str()))
        || !r.usages.iter().any(|u| u == "server auth")
    {
        return Verdict::Leave(format!("usages {:?} are not a server's", r.usages));
    }
    if r.other_sans > 0 {
        return Verdict::Leave("email or URI names requested".into());
    }
    if let Some(d) = r.dns.iter().find(|d| d.as_str() != node) {
        return Verdict::Leave(format!("DNS name {d} is not the node's name {node}"));
    }
    if r.ips.is_empty() {
        return Verdict::Leave("no IP address requested".into());
    }
    if let Some(ip) = r
        .ips
        .iter()
        .find(|ip| !node_addresses.contains(ip) || !group_addresses.contains(ip))
    {
        return Verdict::Leave(format!(
            "{ip} is not an address of node {node} in the cluster's group"
        ));
    }
    Verdict::Approve
}

/// Reads a CSR object into a [`Request`]; `None` when its PEM does not
/// parse (left alone).
pub fn parse(csr: &CertificateSigningRequest) -> Option<Request> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;
    let spec = &csr.spec;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&spec.request.0).ok()?;
    let (_, req) =
        x509_parser::certification_request::X509CertificationRequest::from_der(&pem.contents)
            .ok()?;
    let subject = &req.certification_request_info.subject;
    let subject_cn = subject
        .iter_common_name()
        .next()
        .and_then(|a| a.as_str().ok())
        .map(str::to_string);
    let subject_o = subject
        .iter_organization()
        .filter_map(|a| a.as_str().ok())
        .map(str::to_string)
        .collect();
    let (mut dns, mut ips, mut other_sans) = (Vec::new(), Vec::new(), 0);
    for ext in req.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                match name {
                    GeneralName::DNSName(d) => dns.push(d.to_string()),
                    GeneralName::IPAddress(b) => match b.len() {
                        4 => ips.push(IpAddr::from(<[u8; 4]>::try_from(*b).ok()?)),
                        16 => ips.push(IpAddr::from(<[u8; 16]>::try_from(*b).ok()?)),
                        _ => other_sans += 1,
                    },
                    _ => other_sans += 1,
                }
            }
        }
    }
    let decided = csr
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| !c.is_empty());
    Some(Request {
        signer: spec.signer_name.clone(),
        username: spec.username.clone().unwrap_or_default(),
        groups: spec.groups.clone().unwrap_or_default(),
        usages: spec.usages.clone().unwrap_or_default(),
        decided,
        subject_cn,
        subject_o,
        dns,
        ips,
        other_sans,
    })
}

/// Approves every pending kubelet serving request the rules allow.
/// Returns how many were approved.
pub async fn approve_pending(
    client: &kube::Client,
    group_addresses: &BTreeSet<IpAddr>,
) -> Result<usize, kube::Error> {
    let csrs: Api<CertificateSigningRequest> = Api::all(client.clone());
    let nodes: Api<Node> = Api::all(client.clone());
    let mut approved = 0;
    for csr in csrs.list(&ListParams::default()).await?.items {
        let Some(name) = csr.metadata.name.clone() else {
            continue;
        };
        let Some(req) = parse(&csr) else { continue };
        if req.decided || req.signer != SIGNER {
            continue;
        }
        let node_name = req
            .username
            .trim_start_matches(NODE_USER_PREFIX)
            .to_string();
        let node_addresses: BTreeSet<IpAddr> = match nodes.get_opt(&node_name).await? {
            Some(n) => n
                .status
                .and_then(|s| s.addresses)
                .unwrap_or_default()
                .iter()
                .filter_map(|a| a.address.parse().ok())
                .collect(),
            None => BTreeSet::new(),
        };
        match judge(&req, &node_addresses, group_addresses) {
            Verdict::Approve => {
                let patch = serde_json::json!({"status": {"conditions": [{
                    "type": "Approved",
                    "status": "True",
                    "reason": "MusterNodeServingCert",
                    "message": "the requesting node's own name and group addresses (muster agent)"
                }]}});
                csrs.patch_approval(&name, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
                info!(csr = %name, node = %node_name, "approved a kubelet serving certificate");
                approved += 1;
            }
            Verdict::Leave(why) => {
                debug!(csr = %name, "kubelet serving request left pending: {why}")
            }
            Verdict::NotMine => {}
        }
    }
    Ok(approved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    fn req() -> Request {
        Request {
            signer: SIGNER.into(),
            username: "system:node:node-4".into(),
            groups: vec!["system:nodes".into(), "system:authenticated".into()],
            usages: vec!["digital signature".into(), "server auth".into()],
            decided: false,
            subject_cn: Some("system:node:node-4".into()),
            subject_o: vec!["system:nodes".into()],
            dns: vec!["node-4".into()],
            ips: vec![ip("10.77.0.14")],
            other_sans: 0,
        }
    }

    fn set(ips: &[&str]) -> BTreeSet<IpAddr> {
        ips.iter().map(|s| ip(s)).collect()
    }

    #[test]
    fn a_node_gets_its_own_name_and_address() {
        let node = set(&["10.77.0.14"]);
        let group = set(&["10.77.0.11", "10.77.0.14"]);
        assert_eq!(judge(&req(), &node, &group), Verdict::Approve);
    }

    #[test]
    fn everything_else_is_left_pending_with_a_reason() {
        let node = set(&["10.77.0.14", "10.77.0.100"]);
        let group = set(&["10.77.0.11", "10.77.0.14"]);
        let cases: Vec<(Request, &str)> = vec![
            (
                Request {
                    username: "alice".into(),
                    ..req()
                },
                "not a node",
            ),
            (
                Request {
                    groups: vec![],
                    ..req()
                },
                "system:nodes",
            ),
            (
                Request {
                    subject_cn: Some("system:node:node-1".into()),
                    ..req()
                },
                "subject",
            ),
            (
                Request {
                    usages: vec!["client auth".into()],
                    ..req()
                },
                "usages",
            ),
            (
                Request {
                    dns: vec!["node-1".into()],
                    ..req()
                },
                "DNS name node-1",
            ),
            // The VIP: reported by the node, but no machine of the group.
            (
                Request {
                    ips: vec![ip("10.77.0.100")],
                    ..req()
                },
                "10.77.0.100",
            ),
            // Another machine's address.
            (
                Request {
                    ips: vec![ip("10.77.0.11")],
                    ..req()
                },
                "10.77.0.11",
            ),
            (
                Request {
                    other_sans: 1,
                    ..req()
                },
                "email or URI",
            ),
            (
                Request {
                    ips: vec![],
                    ..req()
                },
                "no IP",
            ),
        ];
        for (r, why) in cases {
            match judge(&r, &node, &group) {
                Verdict::Leave(reason) => assert!(reason.contains(why), "{reason} vs {why}"),
                other => panic!("{r:?}: {other:?}"),
            }
        }
        let decided = Request {
            decided: true,
            ..req()
        };
        assert_eq!(judge(&decided, &node, &group), Verdict::NotMine);
        let other_signer = Request {
            signer: "kubernetes.io/kube-apiserver-client".into(),
            ..req()
        };
        assert_eq!(judge(&other_signer, &node, &group), Verdict::NotMine);
    }
}
