//! AWS credentials: from the environment, given explicitly, or parsed from
//! the instance role's IMDS document. The secret key and session token never
//! appear in `Debug` output or in error messages (S5).

use std::fmt;

use serde::Deserialize;

use super::AwsError;
use crate::cloud::timestamp::parse_rfc3339_ms;

/// An access key pair, with the session token and expiry of temporary
/// (instance-role) credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
    expires_at_ms: Option<u64>,
}

impl Credentials {
    pub fn new(
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
        session_token: Option<String>,
    ) -> Self {
        Credentials {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: session_token.filter(|t| !t.is_empty()),
            expires_at_ms: None,
        }
    }

    /// The same credentials, valid until `expires_at_ms` (Unix epoch ms).
    pub fn with_expiry(mut self, expires_at_ms: u64) -> Self {
        self.expires_at_ms = Some(expires_at_ms);
        self
    }

    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and, for temporary
    /// credentials, `AWS_SESSION_TOKEN`.
    pub fn from_env() -> Result<Self, AwsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// [`Credentials::from_env`] over any variable lookup (tests pass a map).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, AwsError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());
        match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(id), Some(secret)) => Ok(Credentials::new(
                id.trim(),
                secret.trim(),
                get("AWS_SESSION_TOKEN"),
            )),
            (None, None) => Err(AwsError::Credentials {
                what: "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set".into(),
            }),
            (None, Some(_)) => Err(AwsError::Credentials {
                what: "AWS_SECRET_ACCESS_KEY is set but AWS_ACCESS_KEY_ID is not".into(),
            }),
            (Some(_), None) => Err(AwsError::Credentials {
                what: "AWS_ACCESS_KEY_ID is set but AWS_SECRET_ACCESS_KEY is not".into(),
            }),
        }
    }

    /// The key id is not a secret (CloudTrail logs it); useful in messages.
    pub fn access_key_id(&self) -> &str {
        &self.access_key_id
    }

    pub fn expires_at_ms(&self) -> Option<u64> {
        self.expires_at_ms
    }

    /// True when the credentials expire within `margin_ms` of `now_ms`; AWS
    /// advises refreshing instance-role credentials 5 minutes ahead.
    pub fn expires_within(&self, now_ms: u64, margin_ms: u64) -> bool {
        self.expires_at_ms
            .is_some_and(|at| at <= now_ms.saturating_add(margin_ms))
    }

    pub(crate) fn to_sdk(&self) -> aws_credential_types::Credentials {
        aws_credential_types::Credentials::new(
            &self.access_key_id,
            &self.secret_access_key,
            self.session_token.clone(),
            None,
            "muster",
        )
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .field("expires_at_ms", &self.expires_at_ms)
            .finish()
    }
}

/// The body of IMDS `meta-data/iam/security-credentials/ROLE`.
/// Every field is optional here so that a wrong or missing field is reported
/// by name, never by echoing its value.
#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ImdsRoleCredentials {
    code: Option<String>,
    access_key_id: Option<String>,
    secret_access_key: Option<String>,
    token: Option<String>,
    expiration: Option<String>,
}

/// Parses the instance role's credentials document from IMDS (pure; the
/// caller fetches it with an IMDSv2 token).
pub fn parse_imds_role_credentials(json: &str) -> Result<Credentials, AwsError> {
    let bad = |what: String| AwsError::Credentials {
        what: format!("instance-role credentials from IMDS: {what}"),
    };
    let doc: ImdsRoleCredentials = serde_json::from_str(json).map_err(|e| {
        // The position only: serde's message could quote part of the secret.
        bad(format!(
            "not the expected JSON object (line {}, column {})",
            e.line(),
            e.column()
        ))
    })?;
    match doc.code.as_deref() {
        Some("Success") => {}
        Some(code) => {
            return Err(bad(format!(
                "IMDS reports Code={code:?} instead of \"Success\""
            )));
        }
        None => return Err(bad("no Code field".into())),
    }
    let field = |v: Option<String>, name: &str| {
        v.filter(|s| !s.is_empty())
            .ok_or_else(|| bad(format!("no {name}")))
    };
    let id = field(doc.access_key_id, "AccessKeyId")?;
    let secret = field(doc.secret_access_key, "SecretAccessKey")?;
    let token = field(doc.token, "Token")?;
    let expiration = field(doc.expiration, "Expiration")?;
    let expires_at_ms =
        parse_rfc3339_ms(&expiration).map_err(|e| bad(format!("Expiration: {e}")))?;
    Ok(Credentials::new(id, secret, Some(token)).with_expiry(expires_at_ms))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const DOC: &str = include_str!("../../../tests/fixtures/aws/doc_imds_role_credentials.json");

    #[test]
    fn parses_the_documented_imds_answer() {
        let c = parse_imds_role_credentials(DOC).expect("doc sample parses");
        assert_eq!(c.access_key_id(), "ASIAIOSFODNN7EXAMPLE");
        assert_eq!(c.session_token.as_deref(), Some("token"));
        // date -u -d 2017-05-17T15:09:54Z +%s => 1495033794
        assert_eq!(c.expires_at_ms(), Some(1_495_033_794_000));
        assert!(c.expires_within(1_495_033_794_000 - 60_000, 300_000));
        assert!(!c.expires_within(1_495_033_794_000 - 600_000, 300_000));
    }

    #[test]
    fn imds_failures_are_named_without_echoing_secrets() {
        let failed = DOC.replace("\"Success\"", "\"AssumeRoleUnauthorizedAccess\"");
        let e = parse_imds_role_credentials(&failed)
            .expect_err("not Success")
            .to_string();
        assert!(e.contains("AssumeRoleUnauthorizedAccess"), "{e}");

        let no_token = DOC.replace("\"Token\"", "\"Tokn\"");
        let e = parse_imds_role_credentials(&no_token)
            .expect_err("no token")
            .to_string();
        assert!(e.contains("no Token"), "{e}");

        let wrong_type = DOC.replace(
            "\"wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\"",
            "[\"wJalrXUtnFEMI\"]",
        );
        let e = parse_imds_role_credentials(&wrong_type)
            .expect_err("wrong type")
            .to_string();
        assert!(!e.contains("wJalr"), "the secret leaked into: {e}");

        let e = parse_imds_role_credentials("<html>")
            .expect_err("not json")
            .to_string();
        assert!(e.contains("line 1"), "{e}");
    }

    #[test]
    fn env_lookup_and_redaction() {
        let env: HashMap<&str, &str> = [
            ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
            (
                "AWS_SECRET_ACCESS_KEY",
                "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
            ),
            ("AWS_SESSION_TOKEN", "session-secret"),
        ]
        .into();
        let c = Credentials::from_lookup(|k| env.get(k).map(|v| v.to_string())).expect("complete");
        let shown = format!("{c:?}");
        assert!(shown.contains("AKIDEXAMPLE"));
        assert!(
            !shown.contains("wJalr") && !shown.contains("session-secret"),
            "{shown}"
        );

        let e =
            Credentials::from_lookup(|k| (k == "AWS_ACCESS_KEY_ID").then(|| "AKID".to_string()))
                .expect_err("no secret")
                .to_string();
        assert!(e.contains("AWS_SECRET_ACCESS_KEY is not"), "{e}");
        assert!(Credentials::from_lookup(|_| None).is_err());
    }
}
