//! The lab's instance metadata service, IMDSv2 only (like an instance
//! launched with `HttpTokens=required`).
//!
//! `PUT /latest/api/token` with `X-aws-ec2-metadata-token-ttl-seconds`
//! (1–21600) gives a token bound to the caller's address; every GET needs it
//! in `X-aws-ec2-metadata-token`, else 401 (so IMDSv1 is refused). The
//! instance is the running one whose private address is the TCP peer; an
//! unknown peer gets 404 for everything. Answers have the real IMDS shapes:
//! plain-text values, newline-separated listings (`dir/` for directories),
//! JSON for the identity document and role credentials, and IMDS's HTML
//! error pages.
//!
//! Tokens are stateless: the expiry plus an HMAC of (peer, expiry) under a
//! key made at start, so nothing grows per request and a restarted server
//! simply answers 401, which the agent handles by asking for a new token.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::{HeaderMap, Method, StatusCode};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;

use super::{ACCOUNT_ID, IMAGE_ID, INSTANCE_TYPE, LabCloud, LabInstance, Reply, rfc3339};
use crate::metadata::aws::{TOKEN_HEADER, TOKEN_TTL_HEADER};

/// Where tokens are issued.
pub const TOKEN_PATH: &str = "/latest/api/token";
/// The longest token life IMDS grants, in seconds.
pub const MAX_TOKEN_TTL: u64 = 21_600;
/// How long the role credentials claim to last (AWS: about 6 hours).
const CREDENTIALS_LIFE: Duration = Duration::from_secs(6 * 3600);
/// The secret half of the role credentials. The Query API never checks a
/// signature, so it is not a secret; it only has to be there.
pub const SECRET_ACCESS_KEY: &str = "muster-lab-secret-key-signatures-are-not-checked";

/// One IMDS request as the handler needs it.
#[derive(Debug, Clone, Copy)]
pub struct ImdsRequest<'a> {
    pub method: &'a Method,
    /// The URI path, e.g. `/latest/meta-data/instance-id`.
    pub path: &'a str,
    pub headers: &'a HeaderMap,
    /// The TCP peer: which VM is asking.
    pub peer: IpAddr,
}

/// Issues and checks session tokens.
pub struct Tokens {
    key: hmac::Key,
}

impl std::fmt::Debug for Tokens {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokens").finish_non_exhaustive()
    }
}

const MAC_LEN: usize = 32;

impl Tokens {
    /// Tokens under a fresh random key.
    pub fn random() -> Result<Tokens, ring::error::Unspecified> {
        let rng = ring::rand::SystemRandom::new();
        Ok(Tokens {
            key: hmac::Key::generate(hmac::HMAC_SHA256, &rng)?,
        })
    }

    /// Tokens under a given key (tests).
    pub fn from_secret(secret: &[u8]) -> Tokens {
        Tokens {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A token for `peer`, valid for `ttl` seconds from `now`.
    pub fn issue(&self, peer: IpAddr, ttl: u64, now: SystemTime) -> String {
        let expiry = unix_secs(now).saturating_add(ttl);
        let tag = hmac::sign(&self.key, &message(peer, expiry));
        let mut raw = expiry.to_be_bytes().to_vec();
        raw.extend_from_slice(tag.as_ref());
        URL_SAFE_NO_PAD.encode(raw)
    }

    /// True when `token` was issued to `peer` and has not expired at `now`.
    pub fn verify(&self, token: &str, peer: IpAddr, now: SystemTime) -> bool {
        let Ok(raw) = URL_SAFE_NO_PAD.decode(token.trim()) else {
            return false;
        };
        let Some((expiry, tag)) = raw.split_first_chunk::<8>() else {
            return false;
        };
        let expiry = u64::from_be_bytes(*expiry);
        tag.len() == MAC_LEN
            && unix_secs(now) < expiry
            && hmac::verify(&self.key, &message(peer, expiry), tag).is_ok()
    }
}

fn message(peer: IpAddr, expiry: u64) -> Vec<u8> {
    format!("{}|{expiry}", peer.to_canonical()).into_bytes()
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// Answers one IMDS request (pure but for the clock passed in).
pub fn handle(world: &LabCloud, tokens: &Tokens, req: &ImdsRequest<'_>, now: SystemTime) -> Reply {
    if req.path == TOKEN_PATH {
        return if req.method == Method::PUT {
            put_token(tokens, req, now)
        } else {
            error(StatusCode::METHOD_NOT_ALLOWED)
        };
    }
    if req.method != Method::GET {
        return error(StatusCode::METHOD_NOT_ALLOWED);
    }
    let token = req.headers.get(TOKEN_HEADER).and_then(|v| v.to_str().ok());
    if !token.is_some_and(|t| tokens.verify(t, req.peer, now)) {
        return error(StatusCode::UNAUTHORIZED);
    }
    let Some(instance) = world.instance_at(req.peer) else {
        return error(StatusCode::NOT_FOUND);
    };
    let Some(rest) = req.path.strip_prefix("/latest") else {
        return if req.path == "/" {
            text("latest")
        } else {
            error(StatusCode::NOT_FOUND)
        };
    };
    let path = rest.trim_start_matches('/');
    let paths = instance_paths(world, instance, now);
    match paths.get(path) {
        Some(value) if path == "user-data" => {
            Reply::new(StatusCode::OK, "application/octet-stream", value.clone())
                .with_header("server", "EC2ws")
        }
        Some(value) => text(value),
        None => match listing(&paths, path) {
            Some(list) => text(&list),
            None => error(StatusCode::NOT_FOUND),
        },
    }
}

fn put_token(tokens: &Tokens, req: &ImdsRequest<'_>, now: SystemTime) -> Reply {
    // IMDS refuses token requests that went through a proxy.
    if req.headers.contains_key("x-forwarded-for") {
        return error(StatusCode::FORBIDDEN);
    }
    let ttl = req
        .headers
        .get(TOKEN_TTL_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|ttl| (1..=MAX_TOKEN_TTL).contains(ttl));
    match ttl {
        Some(ttl) => text(&tokens.issue(req.peer, ttl, now))
            .with_header("x-aws-ec2-metadata-token-ttl-seconds", ttl.to_string()),
        None => error(StatusCode::BAD_REQUEST),
    }
}

/// Every leaf IMDS serves to `instance`, keyed by its path under `latest/`
/// (the layout of `tests/fixtures/metadata/aws/imds.json`). Listings are
/// derived from these keys.
pub fn instance_paths(
    world: &LabCloud,
    instance: &LabInstance,
    now: SystemTime,
) -> BTreeMap<String, String> {
    let mut p = BTreeMap::new();
    let mut put = |path: String, value: String| {
        p.insert(path, value);
    };
    let md = "meta-data";
    put(format!("{md}/ami-id"), IMAGE_ID.into());
    put(format!("{md}/hostname"), instance.hostname.clone());
    put(format!("{md}/instance-id"), instance.instance_id.clone());
    put(format!("{md}/instance-type"), INSTANCE_TYPE.into());
    put(format!("{md}/local-hostname"), instance.hostname.clone());
    put(
        format!("{md}/local-ipv4"),
        instance.private_ipv4.to_string(),
    );
    put(format!("{md}/mac"), instance.mac.clone());
    put(
        format!("{md}/placement/availability-zone"),
        world.zone.clone(),
    );
    put(format!("{md}/placement/region"), world.region.clone());
    for (key, value) in world.tags(instance) {
        put(format!("{md}/tags/instance/{key}"), value);
    }
    if let Some(role) = world.role_name.as_deref().filter(|r| !r.is_empty()) {
        put(format!("{md}/iam/info"), iam_info(role, now));
        put(
            format!("{md}/iam/security-credentials/{role}"),
            role_credentials(world, instance, now),
        );
    }
    put(
        "dynamic/instance-identity/document".into(),
        identity_document(world, instance),
    );
    if !world.user_data.is_empty() {
        put("user-data".into(), world.user_data.clone());
    }
    p
}

/// The listing of directory `dir` (`""` is `latest/` itself): its entries,
/// sub-directories with a trailing `/` as IMDS writes them (except at the
/// top). `None` when nothing lives under it.
fn listing(paths: &BTreeMap<String, String>, dir: &str) -> Option<String> {
    let dir = dir.trim_end_matches('/');
    let prefix = if dir.is_empty() {
        String::new()
    } else {
        format!("{dir}/")
    };
    let entries: BTreeSet<String> = paths
        .keys()
        .filter_map(|key| key.strip_prefix(&prefix))
        .map(|rest| match rest.split_once('/') {
            Some((sub, _)) if !dir.is_empty() => format!("{sub}/"),
            Some((sub, _)) => sub.to_string(),
            None => rest.to_string(),
        })
        .collect();
    (!entries.is_empty()).then(|| entries.into_iter().collect::<Vec<_>>().join("\n"))
}

/// `iam/security-credentials/ROLE`, in the documented layout
/// (`tests/fixtures/aws/doc_imds_role_credentials.json`).
fn role_credentials(world: &LabCloud, instance: &LabInstance, now: SystemTime) -> String {
    format!(
        "{{\n  \"Code\" : \"Success\",\n  \"LastUpdated\" : \"{}\",\n  \"Type\" : \"AWS-HMAC\",\n  \
         \"AccessKeyId\" : {},\n  \"SecretAccessKey\" : \"{SECRET_ACCESS_KEY}\",\n  \
         \"Token\" : {},\n  \"Expiration\" : \"{}\"\n}}",
        seconds(now),
        json(&world.access_key_id),
        json(&format!("muster-lab-session-{}", instance.instance_id)),
        seconds(now + CREDENTIALS_LIFE),
    )
}

fn iam_info(role: &str, now: SystemTime) -> String {
    let doc = serde_json::json!({
        "Code": "Success",
        "LastUpdated": seconds(now),
        "InstanceProfileArn": format!("arn:aws:iam::{ACCOUNT_ID}:instance-profile/{role}"),
        "InstanceProfileId": "AIPAMUSTERLABPROFILE",
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// `dynamic/instance-identity/document` (unsigned: the lab has no key AWS
/// would vouch for, so `pkcs7` and `signature` are not served).
fn identity_document(world: &LabCloud, instance: &LabInstance) -> String {
    let doc = serde_json::json!({
        "accountId": ACCOUNT_ID,
        "architecture": "x86_64",
        "availabilityZone": world.zone,
        "billingProducts": null,
        "devpayProductCodes": null,
        "marketplaceProductCodes": null,
        "imageId": IMAGE_ID,
        "instanceId": instance.instance_id,
        "instanceType": INSTANCE_TYPE,
        "kernelId": null,
        "pendingTime": instance.launch_time,
        "privateIp": instance.private_ipv4.to_string(),
        "ramdiskId": null,
        "region": world.region,
        "version": "2017-09-30",
    });
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// RFC 3339 to the second, as IMDS writes credential times.
fn seconds(t: SystemTime) -> String {
    let with_ms = rfc3339(t);
    format!("{}Z", &with_ms[..19])
}

fn json(s: &str) -> String {
    serde_json::Value::from(s).to_string()
}

fn text(body: &str) -> Reply {
    Reply::new(StatusCode::OK, "text/plain", body).with_header("server", "EC2ws")
}

/// IMDS's HTML error page for `status`.
pub fn error(status: StatusCode) -> Reply {
    let title = format!(
        "{} - {}",
        status.as_u16(),
        status.canonical_reason().unwrap_or("Error")
    );
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"iso-8859-1\"?>\n\
         <!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0 Transitional//EN\"\n\
         \t\"http://www.w3.org/TR/xhtml1/DTD/xhtml1-transitional.dtd\">\n\
         <html xmlns=\"http://www.w3.org/1999/xhtml\" xml:lang=\"en\" lang=\"en\">\n \
         <head>\n  <title>{title}</title>\n </head>\n <body>\n  <h1>{title}</h1>\n </body>\n</html>\n"
    );
    Reply::new(status, "text/html", body).with_header("server", "EC2ws")
}
