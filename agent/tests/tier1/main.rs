//! Tier 1: real etcd, systemd (nspawn), bird2 and moto, with hosts as network
//! namespaces on this machine. Needs root. One binary for the tier (see
//! tier0/main.rs for why); nextest runs these tests one at a time
//! (.config/nextest.toml).

#[path = "../support/mod.rs"]
mod support;

mod agent_vip;
mod aws_group;
mod backup;
mod containerd;
mod discovery_aws_moto;
mod discovery_srv;
mod dns_agents;
mod dns_handover;
mod dns_rfc2136;
mod dns_route53;
mod drain;
mod etcd;
mod fault_campaign;
mod gce_group;
mod heal;
mod kubernetes;
mod lifecycle;
mod netns_smoke;
mod node_configs;
mod pki_etcd;
mod systemd_supervisor;
mod vip;
mod vip_aws;
mod vip_bgp;
