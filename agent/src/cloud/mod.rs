//! Clients for the cloud provider APIs the agent calls after boot (discovery
//! now; the VIP mover and DNS later). Kept light on purpose: signing and a
//! handful of calls over reqwest, not the providers' SDKs.
//!
//! - [`aws`]: SigV4 Query API client (autoscaling, EC2).
//! - [`gce`]: Compute Engine REST client with a metadata-server token.
//!
//! As everywhere in the agent, fetching is kept apart from pure `parse_*`
//! functions that the tests drive with recorded answers
//! (`tests/fixtures/aws/`, `tests/fixtures/gce/`).

pub mod aws;
pub mod gce;
pub mod http;
pub mod timestamp;
