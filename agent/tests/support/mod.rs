//! Helpers shared by the tier-0 and tier-1 test binaries. Each binary uses a
//! different subset, so unused items are expected.
#![allow(dead_code)]

pub mod arp_observer;
pub mod asg_lab;
pub mod bind;
pub mod cluster;
pub mod dns;
pub mod etcd_bin;
pub mod etcd_direct;
pub mod etcd_history;
pub mod fake_cloud_dns;
pub mod fake_cloudflare;
pub mod fake_compute;
pub mod fake_http;
pub mod fake_metadata;
pub mod gce_group;
pub mod golden;
pub mod http_get;
pub mod kubernetes;
pub mod moto;
pub mod netns;
pub mod nspawn;
pub mod pki_fixtures;
pub mod rng;
pub mod slow_disk;
pub mod vip_lab;
