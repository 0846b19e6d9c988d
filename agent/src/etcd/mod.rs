//! etcd — form, join, restart and heal the cluster's etcd.

pub mod flags;
pub mod membership;
