//! S3 objects, as the etcd backups need them: put, get, delete, and list
//! under a prefix (ListObjectsV2). Addressing is pure ([`object_url`]);
//! the listing's parse is pure and tested on the answer from the S3 API
//! reference.

use url::Url;

use super::{AwsClient, AwsError, S3, xml};

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

/// One page of a ListObjectsV2 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<Object>,
    /// Set when the listing goes on (`IsTruncated`).
    pub next: Option<String>,
}

/// Unreserved characters (RFC 3986) go as they are; S3 wants the rest
/// escaped (`/` is kept only between a key's segments).
fn keeps(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~')
}

fn escape(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if keeps(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The URL of `key` in `bucket` (`key` empty: the bucket, for listings).
/// Path-style (`{endpoint}/{bucket}/{key}`) against an endpoint override
/// (moto, MinIO) and for bucket names with dots (virtual hosts would break
/// TLS); virtual-hosted (`https://{bucket}.s3.{region}.amazonaws.com/{key}`)
/// otherwise, as AWS recommends.
pub fn object_url(
    endpoint: Option<&Url>,
    region: &str,
    bucket: &str,
    key: &str,
) -> Result<Url, String> {
    let path: Vec<String> = key.split('/').map(escape).collect();
    let path = path.join("/");
    let text = match endpoint {
        Some(base) => format!(
            "{}/{}/{path}",
            base.as_str().trim_end_matches('/'),
            escape(bucket)
        ),
        None if bucket.contains('.') => {
            format!(
                "https://s3.{region}.amazonaws.com/{}/{path}",
                escape(bucket)
            )
        }
        None => format!(
            "https://{}.s3.{region}.amazonaws.com/{path}",
            escape(bucket)
        ),
    };
    Url::parse(&text).map_err(|e| format!("{text}: {e}"))
}

/// Parses a ListObjectsV2 answer (`<ListBucketResult>`).
pub fn parse_list(text: &str) -> Result<ListPage, String> {
    let doc = xml::parse(text)?;
    let root = xml::root(&doc, "ListBucketResult")?;
    let mut objects = Vec::new();
    for node in xml::children(root, "Contents") {
        let key = xml::required(node, "Key")?.to_string();
        let size = xml::required(node, "Size")?
            .parse()
            .map_err(|_| format!("object {key}: Size is not a number"))?;
        objects.push(Object { key, size });
    }
    let truncated = xml::text(root, "IsTruncated") == Some("true");
    let next = xml::text(root, "NextContinuationToken")
        .filter(|_| truncated)
        .map(str::to_string);
    if truncated && next.is_none() {
        return Err("IsTruncated without NextContinuationToken".into());
    }
    Ok(ListPage { objects, next })
}

impl AwsClient {
    fn s3_url(&self, region: &str, bucket: &str, key: &str) -> Result<Url, AwsError> {
        object_url(self.opts.endpoint.as_ref(), region, bucket, key)
            .map_err(|what| AwsError::Config { what })
    }

    /// Puts `body` at `key` (a single PUT: S3 takes up to 5 GiB).
    pub async fn put_object(
        &self,
        region: &str,
        bucket: &str,
        key: &str,
        body: bytes::Bytes,
    ) -> Result<(), AwsError> {
        let url = self.s3_url(region, bucket, key)?;
        self.object_in(region, "PutObject", "PUT", url, body)
            .await
            .map(|_| ())
    }

    pub async fn get_object(
        &self,
        region: &str,
        bucket: &str,
        key: &str,
    ) -> Result<Vec<u8>, AwsError> {
        let url = self.s3_url(region, bucket, key)?;
        self.object_in(region, "GetObject", "GET", url, bytes::Bytes::new())
            .await
    }

    pub async fn delete_object(
        &self,
        region: &str,
        bucket: &str,
        key: &str,
    ) -> Result<(), AwsError> {
        let url = self.s3_url(region, bucket, key)?;
        self.object_in(region, "DeleteObject", "DELETE", url, bytes::Bytes::new())
            .await
            .map(|_| ())
    }

    /// Every object under `prefix`, following continuation tokens.
    pub async fn list_objects(
        &self,
        region: &str,
        bucket: &str,
        prefix: &str,
    ) -> Result<Vec<Object>, AwsError> {
        let mut objects = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = self.s3_url(region, bucket, "")?;
            {
                let mut q = url.query_pairs_mut();
                q.append_pair("list-type", "2")
                    .append_pair("prefix", prefix);
                if let Some(t) = &token {
                    q.append_pair("continuation-token", t);
                }
            }
            let body = self
                .object_in(
                    region,
                    "ListObjectsV2",
                    "GET",
                    url.clone(),
                    bytes::Bytes::new(),
                )
                .await?;
            let text = String::from_utf8_lossy(&body);
            let page = parse_list(&text).map_err(|cause| AwsError::Parse {
                service: S3.endpoint_prefix,
                action: "ListObjectsV2".into(),
                endpoint: url.to_string(),
                cause,
            })?;
            objects.extend(page.objects);
            match page.next {
                Some(next) => token = Some(next),
                None => return Ok(objects),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_virtual_hosted_on_aws_and_path_style_on_an_override() {
        let url = |endpoint: Option<&str>, bucket: &str, key: &str| {
            let endpoint = endpoint.map(|e| Url::parse(e).expect("url"));
            object_url(endpoint.as_ref(), "eu-west-1", bucket, key)
                .expect("url")
                .to_string()
        };
        assert_eq!(
            url(None, "backups", "prod/prod-1.db"),
            "https://backups.s3.eu-west-1.amazonaws.com/prod/prod-1.db"
        );
        assert_eq!(
            url(None, "my.backups", "a b/c+d.db"),
            "https://s3.eu-west-1.amazonaws.com/my.backups/a%20b/c%2Bd.db"
        );
        assert_eq!(
            url(Some("http://10.0.0.1:5000/"), "backups", "prod/x.db"),
            "http://10.0.0.1:5000/backups/prod/x.db"
        );
        assert_eq!(
            url(Some("http://10.0.0.1:5000"), "backups", ""),
            "http://10.0.0.1:5000/backups/"
        );
    }

    /// The example answer of the S3 API reference (ListObjectsV2), with a
    /// continuation token added as a truncated page carries it.
    #[test]
    fn a_listing_parses_with_its_continuation_token() {
        let text = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Name>bucket</Name>
  <Prefix/>
  <KeyCount>2</KeyCount>
  <MaxKeys>1000</MaxKeys>
  <IsTruncated>true</IsTruncated>
  <NextContinuationToken>1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=</NextContinuationToken>
  <Contents>
    <Key>my-image.jpg</Key>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>"fba9dede5f27731c9771645a39863328"</ETag>
    <Size>434234</Size>
    <StorageClass>STANDARD</StorageClass>
  </Contents>
  <Contents>
    <Key>my-third-image.jpg</Key>
    <LastModified>2009-10-12T17:50:30.000Z</LastModified>
    <ETag>"1b2cf535f27731c974343645a3985328"</ETag>
    <Size>64994</Size>
    <StorageClass>STANDARD_IA</StorageClass>
  </Contents>
</ListBucketResult>"#;
        let page = parse_list(text).expect("parses");
        assert_eq!(
            page.objects,
            vec![
                Object {
                    key: "my-image.jpg".into(),
                    size: 434_234
                },
                Object {
                    key: "my-third-image.jpg".into(),
                    size: 64_994
                },
            ]
        );
        assert_eq!(
            page.next.as_deref(),
            Some("1ueGcxLPRx1Tr/XYExHnhbYLgveDs2J/wm36Hy4vbOwM=")
        );
        let last = text.replace("<IsTruncated>true", "<IsTruncated>false");
        assert_eq!(parse_list(&last).expect("parses").next, None);
        let broken = text.replace("<Size>64994</Size>", "<Size>big</Size>");
        assert!(parse_list(&broken).is_err_and(|e| e.contains("my-third-image.jpg")));
        assert!(parse_list("<Error><Code>NoSuchBucket</Code></Error>").is_err());
    }
}
