//! Tier 0: the Cloud Storage backup store against a fake of the JSON API on
//! loopback (no GCS emulator ships with the SDKs; this one follows the
//! published contract of objects.insert with `uploadType=media`,
//! objects.list with `prefix` and `pageToken`, objects.get with
//! `alt=media`, objects.delete, and a bearer token on every call).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use muster::backup::plan::SnapshotName;
use muster::backup::store::Store;
use muster::cloud::gce::{AccessToken, GceClient, GceOptions};
use muster::retry::Backoff;

use crate::support::fake_http::{FakeServer, Request, Response};

const TOKEN: &str = "ya29.muster-backup-test";
const BUCKET: &str = "muster-backups";

/// Objects by name; pages of two, so the client must follow tokens.
fn fake_gcs(objects: Arc<Mutex<BTreeMap<String, String>>>) -> impl Fn(usize, &Request) -> Response {
    move |_, r| {
        if r.header("authorization") != Some(&format!("Bearer {TOKEN}")) {
            return Response::new(
                401,
                "application/json",
                r#"{"error": {"code": 401, "message": "Invalid Credentials", "errors": [{"reason": "authError"}]}}"#,
            );
        }
        let path = r.target.split('?').next().unwrap_or_default();
        let mut objects = objects.lock().expect("objects");
        let upload = format!("/upload/storage/v1/b/{BUCKET}/o");
        let list = format!("/storage/v1/b/{BUCKET}/o");
        if r.method == "POST" && path == upload && r.query("uploadType").as_deref() == Some("media")
        {
            let name = r.query("name").unwrap_or_default();
            objects.insert(name.clone(), r.body.clone());
            return Response::json(format!(
                r#"{{"kind": "storage#object", "name": "{name}", "bucket": "{BUCKET}", "size": "{}"}}"#,
                r.body.len()
            ));
        }
        if r.method == "GET" && path == list {
            let prefix = r.query("prefix").unwrap_or_default();
            let after = r.query("pageToken").unwrap_or_default();
            let page: Vec<(&String, &String)> = objects
                .iter()
                .filter(|(n, _)| n.starts_with(&prefix) && n.as_str() > after.as_str())
                .take(2)
                .collect();
            let items: Vec<String> = page
                .iter()
                .map(|(n, b)| format!(r#"{{"name": "{n}", "size": "{}"}}"#, b.len()))
                .collect();
            let more = objects
                .keys()
                .filter(|n| n.starts_with(&prefix))
                .any(|n| page.last().is_some_and(|(last, _)| n > *last));
            let token = match (more, page.last()) {
                (true, Some((last, _))) => format!(r#", "nextPageToken": "{last}""#),
                _ => String::new(),
            };
            return Response::json(format!(
                r#"{{"kind": "storage#objects", "items": [{}]{token}}}"#,
                items.join(",")
            ));
        }
        let Some(escaped) = path.strip_prefix(&format!("{list}/")) else {
            return Response::new(
                404,
                "application/json",
                r#"{"error": {"code": 404, "message": "Not Found"}}"#,
            );
        };
        let name: String = url::form_urlencoded::parse(format!("n={escaped}").as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        match r.method.as_str() {
            "GET" if r.query("alt").as_deref() == Some("media") => match objects.get(&name) {
                Some(body) => Response::new(200, "application/octet-stream", body.clone()),
                None => Response::new(
                    404,
                    "application/json",
                    r#"{"error": {"code": 404, "message": "No such object"}}"#,
                ),
            },
            "DELETE" => match objects.remove(&name) {
                Some(_) => Response::new(204, "application/json", ""),
                None => Response::new(
                    404,
                    "application/json",
                    r#"{"error": {"code": 404, "message": "No such object"}}"#,
                ),
            },
            _ => Response::new(
                400,
                "application/json",
                r#"{"error": {"code": 400, "message": "unexpected call"}}"#,
            ),
        }
    }
}

fn store(fake: &FakeServer, token: &str) -> Store {
    let opts = GceOptions {
        api_base: fake.base.clone(),
        metadata_base: fake.base.clone(),
        static_token: Some(AccessToken::new(token)),
        backoff: Backoff {
            initial: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            total: Duration::from_millis(200),
        },
        ..GceOptions::default()
    };
    let client = GceClient::new(opts).expect("client");
    Store::gcs(BUCKET.into(), "etcd/eu".into(), "prod", client)
}

fn name(taken_at: u64, revision: i64) -> SnapshotName {
    SnapshotName {
        taken_at,
        revision,
        cluster: "prod".into(),
    }
}

#[tokio::test]
async fn snapshots_go_to_cloud_storage_list_across_pages_come_back_and_are_deleted() {
    let objects = Arc::new(Mutex::new(BTreeMap::new()));
    // Another cluster's snapshot under the same prefix is never listed.
    objects.lock().expect("objects").insert(
        "etcd/eu/stage/stage-20261206T013000Z-r1.db".to_string(),
        "other".to_string(),
    );
    let fake = FakeServer::start(fake_gcs(Arc::clone(&objects))).await;
    let store = store(&fake, TOKEN);
    assert_eq!(store.place(), "gs://muster-backups/etcd/eu/prod");
    let names: Vec<SnapshotName> = (0..5)
        .map(|k| name(1_796_520_600 + k * 60, 10 + k as i64))
        .collect();
    for (k, n) in names.iter().enumerate() {
        store
            .put(&n.file_name(), bytes::Bytes::from(format!("snapshot {k}")))
            .await
            .expect("upload");
    }
    assert!(
        objects
            .lock()
            .expect("objects")
            .contains_key("etcd/eu/prod/prod-20261206T013000Z-r10.db"),
        "objects are named {{prefix}}/{{cluster}}/{{file}}"
    );
    let mut listed = store.list().await.expect("list");
    listed.sort();
    assert_eq!(listed, names, "five snapshots over three pages");
    let body = store.get(&names[3].file_name()).await.expect("download");
    assert_eq!(body, b"snapshot 3");
    for old in muster::backup::plan::prune(&listed, 2) {
        store.delete(&old.file_name()).await.expect("delete");
    }
    assert_eq!(store.list().await.expect("list"), names[3..].to_vec());
    assert!(
        store
            .get(&names[0].file_name())
            .await
            .is_err_and(|e| e.contains("404"))
    );

    // A token the API refuses is an error that names the call, not an empty list.
    let wrong = self::store(&fake, "ya29.expired");
    let err = wrong.list().await.expect_err("refused");
    assert!(
        err.contains("storage.objects.list") && err.contains("401"),
        "{err}"
    );
}
