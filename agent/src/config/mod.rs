//! configure — the cluster config.
//!
//! Users paste a small YAML (or JSON) document into launch-template user
//! data, optionally inside a `#cloud-config` under a `muster:` key. Three
//! layers are merged, later ones winning per key (mappings merge deeply,
//! sequences are replaced whole):
//!
//! 1. image defaults ([`DEFAULTS_PATH`]),
//! 2. user data,
//! 3. kernel command line `muster.KEY=VALUE` (KEY a dotted camelCase path,
//!    e.g. `muster.apiEndpoint.vip=10.0.0.100`; VALUE a YAML scalar).
//!
//! Every value remembers its layer, line and column, so errors found after
//! merging are reported like a compiler's, all at once:
//! `user-data.yaml:7:12: topology.etcd.count: must be 1, 3, 5 or 7: ...`.
//! Loading is pure (texts in, config or errors out): nothing on disk
//! changes before a config is valid (invariant S6). Secrets are a
//! [`Secret`] type that never prints itself, and [`redact_user_data`] masks
//! them in raw text (invariant S5).
//!
//! Layout: `tree` (located YAML), `load` (layers, cloud-config),
//! `overrides` (kernel command line), `merge`, `de` (serde over the tree),
//! `decode` (error recovery), `validate` (semantic checks), `types`,
//! `forms` (string-or-mapping values), `secret`, `locate`, `error`,
//! `schema`.

mod de;
mod decode;
mod error;
mod forms;
mod load;
mod locate;
mod merge;
mod overrides;
mod schema;
mod secret;
mod tree;
mod types;
pub mod userdata;
mod validate;

pub use error::{ConfigError, ConfigErrors};
pub use load::{DEFAULTS_PATH, Layer, load, validate_text};
pub use overrides::NON_CONFIG_CMDLINE_KEYS;
pub use schema::schema_json;
pub use secret::{REDACTED, Secret, redact_user_data};
pub use types::*;
pub use validate::{MIN_SECRET_CHARS, etcd_count_problem};
