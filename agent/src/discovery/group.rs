//! What a cloud group source reports: the size the group is asked to have
//! and the members it has now. The two differ while the group scales or
//! replaces machines; role assignment needs both.

use serde::{Deserialize, Serialize};

use super::Peer;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupView {
    /// AWS `DesiredCapacity`, GCE `targetSize`.
    pub desired_capacity: u32,
    /// Every member the group lists, leaving ones included, sorted by id.
    /// A member without an address yet has `0.0.0.0` and is `Pending`.
    pub peers: Vec<Peer>,
}
