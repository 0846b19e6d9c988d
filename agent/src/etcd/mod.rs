//! etcd — form, join, restart and heal the cluster's etcd.

pub mod client;
pub mod flags;
pub mod membership;
pub mod pacing;
pub mod runner;
