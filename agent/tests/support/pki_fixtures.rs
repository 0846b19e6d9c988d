//! Shared fixtures of the pki_* integration tests.
#![allow(dead_code)] // each test crate uses a different subset

use std::net::IpAddr;

use muster::pki::{ClusterCa, NodeIdentity};

/// 44 characters, like `openssl rand -base64 32`.
pub const SECRET: &[u8] = b"q8Yk3vJ0m2ZsX7wLp9RtB4nH6cF1aE5dG0iK2jM3oP4=";
pub const OTHER_SECRET: &[u8] = b"Zz8Yk3vJ0m2ZsX7wLp9RtB4nH6cF1aE5dG0iK2jM3oP=";

pub fn ca() -> ClusterCa {
    ClusterCa::derive("prod", SECRET).expect("derive CA")
}

pub fn other_ca() -> ClusterCa {
    ClusterCa::derive("prod", OTHER_SECRET).expect("derive other CA")
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().expect("test IP")
}

pub fn node() -> NodeIdentity {
    NodeIdentity::new("node-1", [ip("10.0.0.7"), ip("fd00::7")])
}
