//! Cloud Storage objects through the JSON API, as the etcd backups need
//! them: upload (`uploadType=media`), list under a prefix, download
//! (`alt=media`), delete. The instance's service-account token (the
//! client's). URLs and the listing's parse are pure.

use reqwest::Method;
use url::Url;

use super::{GceClient, GceError};

/// The JSON API's root (`cloud.endpoint` or a test's fake replace it).
pub const DEFAULT_BASE: &str = "https://storage.googleapis.com/";

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub name: String,
    pub size: u64,
}

/// Object names go into one path segment: every `/` and anything outside
/// RFC 3986's unreserved set is escaped.
fn escape(name: &str) -> String {
    url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20")
}

/// `storage/v1/b/{bucket}/o/{object}` (object empty: the list call).
pub fn object_url(base: &Url, bucket: &str, object: &str) -> Result<Url, String> {
    let path = if object.is_empty() {
        format!("storage/v1/b/{}/o", escape(bucket))
    } else {
        format!("storage/v1/b/{}/o/{}", escape(bucket), escape(object))
    };
    base.join(&path).map_err(|e| format!("{base}{path}: {e}"))
}

/// `upload/storage/v1/b/{bucket}/o?uploadType=media&name={object}`.
pub fn upload_url(base: &Url, bucket: &str, object: &str) -> Result<Url, String> {
    let path = format!("upload/storage/v1/b/{}/o", escape(bucket));
    let mut url = base.join(&path).map_err(|e| format!("{base}{path}: {e}"))?;
    url.query_pairs_mut()
        .append_pair("uploadType", "media")
        .append_pair("name", object);
    Ok(url)
}

/// Parses one page of `objects.list`: its objects and the next page's token.
pub fn parse_list(text: &str) -> Result<(Vec<Object>, Option<String>), String> {
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Page {
        #[serde(default)]
        items: Vec<Item>,
        next_page_token: Option<String>,
    }
    #[derive(serde::Deserialize)]
    struct Item {
        name: String,
        /// A decimal string, as the API sends 64-bit numbers.
        size: String,
    }
    let page: Page = serde_json::from_str(text).map_err(|e| format!("objects.list: {e}"))?;
    let objects = page
        .items
        .into_iter()
        .map(|i| {
            let size = i
                .size
                .parse()
                .map_err(|_| format!("object {}: size {:?} is not a number", i.name, i.size))?;
            Ok(Object { name: i.name, size })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok((objects, page.next_page_token))
}

fn config_error(what: String) -> GceError {
    GceError::Config { what }
}

/// Uploads `body` as `object`.
pub async fn put(
    client: &GceClient,
    bucket: &str,
    object: &str,
    body: bytes::Bytes,
) -> Result<(), GceError> {
    let url = upload_url(client.api_base(), bucket, object).map_err(config_error)?;
    client
        .call_bytes(
            Method::POST,
            "storage.objects.insert",
            &url,
            Some((body, "application/octet-stream")),
        )
        .await
        .map(|_| ())
}

pub async fn get(client: &GceClient, bucket: &str, object: &str) -> Result<Vec<u8>, GceError> {
    let mut url = object_url(client.api_base(), bucket, object).map_err(config_error)?;
    url.query_pairs_mut().append_pair("alt", "media");
    client
        .call_bytes(Method::GET, "storage.objects.get", &url, None)
        .await
}

pub async fn delete(client: &GceClient, bucket: &str, object: &str) -> Result<(), GceError> {
    let url = object_url(client.api_base(), bucket, object).map_err(config_error)?;
    client
        .call_bytes(Method::DELETE, "storage.objects.delete", &url, None)
        .await
        .map(|_| ())
}

/// Every object whose name starts with `prefix`.
pub async fn list(client: &GceClient, bucket: &str, prefix: &str) -> Result<Vec<Object>, GceError> {
    let mut base = object_url(client.api_base(), bucket, "").map_err(config_error)?;
    base.query_pairs_mut().append_pair("prefix", prefix);
    super::all_pages(
        client,
        Method::GET,
        "storage.objects.list",
        &base,
        parse_list,
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_are_one_escaped_segment() {
        let base = Url::parse(DEFAULT_BASE).expect("url");
        assert_eq!(
            object_url(&base, "backups", "prod/prod-1.db")
                .expect("url")
                .as_str(),
            "https://storage.googleapis.com/storage/v1/b/backups/o/prod%2Fprod-1.db"
        );
        assert_eq!(
            upload_url(&base, "backups", "prod/a b.db")
                .expect("url")
                .as_str(),
            "https://storage.googleapis.com/upload/storage/v1/b/backups/o?uploadType=media&name=prod%2Fa+b.db"
        );
        let fake = Url::parse("http://127.0.0.1:9000/").expect("url");
        assert_eq!(
            object_url(&fake, "b", "").expect("url").as_str(),
            "http://127.0.0.1:9000/storage/v1/b/b/o"
        );
    }

    /// The shape of `objects.list` in the Cloud Storage JSON API reference
    /// (`cloud.google.com/storage/docs/json_api/v1/objects/list`): `items`
    /// of object resources with `size` as a decimal string, and
    /// `nextPageToken` while more pages follow.
    #[test]
    fn a_listing_parses_with_its_page_token() {
        let text = r#"{
          "kind": "storage#objects",
          "nextPageToken": "CgRwcm9k",
          "items": [
            {"kind": "storage#object", "name": "prod/prod-20261206T013000Z-r42.db",
             "bucket": "backups", "size": "13824032", "contentType": "application/octet-stream"},
            {"kind": "storage#object", "name": "prod/notes.txt", "bucket": "backups", "size": "5"}
          ]
        }"#;
        let (objects, next) = parse_list(text).expect("parses");
        assert_eq!(objects.len(), 2);
        assert_eq!(objects[0].size, 13_824_032);
        assert_eq!(next.as_deref(), Some("CgRwcm9k"));
        assert_eq!(
            parse_list(r#"{"kind": "storage#objects"}"#).expect("an empty bucket"),
            (vec![], None)
        );
        assert!(parse_list(r#"{"items": [{"name": "x", "size": "big"}]}"#).is_err());
    }
}
