//! Why peers could not be discovered. Cloud failures keep the client's own
//! error (service, call, endpoint, the provider's code and message); a group
//! that does not exist gets its own variant because the fix is different
//! (a wrong name or region in the config, or a role that cannot see it).

use crate::cloud::aws::AwsError;
use crate::cloud::gce::GceError;

#[derive(Debug, thiserror::Error)]
pub enum DiscoveryError {
    /// The named group does not exist where we looked.
    #[error(
        "{kind} {name:?} not found in {location}: check the group name in the config \
         (and that the machine's credentials may see it)"
    )]
    GroupNotFound {
        /// "aws autoscaling group" or "gce managed instance group".
        kind: &'static str,
        name: String,
        /// The AWS region, or the GCE project and zone/region.
        location: String,
    },

    #[error("discovery: {0}")]
    Aws(#[from] AwsError),

    #[error("discovery: {0}")]
    Gce(#[from] GceError),
}
