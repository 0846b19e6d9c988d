//! Reading the Query API's XML. Lookups go by *direct child* and local name:
//! EC2 repeats names at several depths (`privateIpAddress` on the instance and
//! inside each network interface), so a descendant search would pick the
//! wrong one. Namespaces are ignored (moto and AWS spell them differently).
//! roxmltree rejects DTDs, so entity-expansion tricks cannot blow up memory.

use roxmltree::{Document, Node};

/// Parses a document, describing where it is broken.
pub(crate) fn parse(text: &str) -> Result<Document<'_>, String> {
    Document::parse(text).map_err(|e| format!("not well-formed XML: {e}"))
}

/// The direct child element called `name`.
pub(crate) fn child<'a, 'i>(node: Node<'a, 'i>, name: &str) -> Option<Node<'a, 'i>> {
    node.children()
        .find(|n| n.is_element() && n.tag_name().name() == name)
}

/// All direct child elements called `name`.
pub(crate) fn children<'a, 'i: 'a>(
    node: Node<'a, 'i>,
    name: &'a str,
) -> impl Iterator<Item = Node<'a, 'i>> + 'a {
    node.children()
        .filter(move |n| n.is_element() && n.tag_name().name() == name)
}

/// Follows a path of direct children.
pub(crate) fn path<'a, 'i>(node: Node<'a, 'i>, names: &[&str]) -> Option<Node<'a, 'i>> {
    names.iter().try_fold(node, |n, name| child(n, name))
}

/// The trimmed text of the direct child `name`; `None` when absent or empty.
pub(crate) fn text<'a>(node: Node<'a, '_>, name: &str) -> Option<&'a str> {
    child(node, name)
        .and_then(|c| c.text())
        .map(str::trim)
        .filter(|t| !t.is_empty())
}

/// Like [`text`] but required: names the element when it is missing.
pub(crate) fn required<'a>(node: Node<'a, '_>, name: &str) -> Result<&'a str, String> {
    text(node, name).ok_or_else(|| format!("<{}> has no <{name}>", node.tag_name().name()))
}

/// The root element, checked to be the expected answer.
pub(crate) fn root<'a, 'i>(doc: &'a Document<'i>, expected: &str) -> Result<Node<'a, 'i>, String> {
    let root = doc.root_element();
    let name = root.tag_name().name();
    if name == expected {
        Ok(root)
    } else {
        Err(format!("expected <{expected}>, got <{name}>"))
    }
}

/// An AWS error document, in any of the shapes AWS (and moto) send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    pub request_id: Option<String>,
}

/// Reads `<ErrorResponse><Error>` (Query API: autoscaling, IAM, STS),
/// `<Response><Errors><Error>` (EC2) and bare `<Error>` (S3-style). `None`
/// when the text is not such a document (an HTML page from a proxy, say).
pub fn parse_error_response(text: &str) -> Option<ErrorBody> {
    let doc = Document::parse(text).ok()?;
    let root = doc.root_element();
    let error = if root.tag_name().name() == "Error" {
        root
    } else {
        root.descendants()
            .find(|n| n.is_element() && n.tag_name().name() == "Error")?
    };
    let code = self::text(error, "Code")?.to_string();
    let message = self::text(error, "Message")
        .unwrap_or("(no message)")
        .to_string();
    // EC2 says RequestID at the root, Query APIs RequestId; S3 puts it in <Error>.
    let request_id = ["RequestId", "RequestID"]
        .iter()
        .find_map(|name| self::text(root, name).or_else(|| self::text(error, name)))
        .map(str::to_string);
    Some(ErrorBody {
        code,
        message,
        request_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> String {
        crate::test_fixture("aws", name)
    }

    #[test]
    fn ec2_error_from_the_api_reference() {
        let e = parse_error_response(&fixture("doc_error_ec2.xml")).expect("an error document");
        assert_eq!(e.code, "InvalidInstanceID.NotFound");
        assert_eq!(e.message, "The instance ID 'i-1a2b3c4d' does not exist");
        assert_eq!(
            e.request_id.as_deref(),
            Some("ea966190-f9aa-478e-9ede-example")
        );
    }

    #[test]
    fn query_and_moto_error_shapes() {
        let e = parse_error_response(&fixture("moto_error_validation.xml")).expect("query error");
        assert_eq!(e.code, "ValidationError");
        assert_eq!(
            e.message,
            "At least one Availability Zone or VPC Subnet is required."
        );
        assert!(e.request_id.is_some());

        let e = parse_error_response(&fixture("moto_error_invalid_client_token.xml"))
            .expect("auth error");
        assert_eq!(e.code, "InvalidClientTokenId");
        assert_eq!(e.request_id, None);

        let e =
            parse_error_response(&fixture("moto_error_auth_failure.xml")).expect("ec2 auth error");
        assert_eq!(e.code, "AuthFailure");

        let e =
            parse_error_response(&fixture("moto_error_instance_not_found.xml")).expect("ec2 error");
        assert_eq!(e.code, "InvalidInstanceID.NotFound");
        assert_eq!(e.request_id.as_deref(), Some("request-id"));

        let s3 = "<Error><Code>SlowDown</Code><Message>Reduce your request rate.</Message><RequestId>R1</RequestId></Error>";
        let e = parse_error_response(s3).expect("bare error");
        assert_eq!(
            (e.code.as_str(), e.request_id.as_deref()),
            ("SlowDown", Some("R1"))
        );
    }

    #[test]
    fn non_error_documents_are_not_errors() {
        assert_eq!(
            parse_error_response("<html><body>502 Bad Gateway</body></html>"),
            None
        );
        assert_eq!(parse_error_response("not xml"), None);
        assert_eq!(
            parse_error_response(
                "<Response><Errors><Error><Message>m</Message></Error></Errors></Response>"
            ),
            None
        );
        // A DTD with entities is refused outright (billion laughs).
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE l [<!ENTITY a \"aaaa\"><!ENTITY b \"&a;&a;&a;\">]><Error><Code>&b;</Code></Error>";
        assert_eq!(parse_error_response(bomb), None);
    }

    #[test]
    fn lookups_are_direct_children_only() {
        let doc = parse("<item><nic><ip>10.0.0.9</ip></nic><ip> 10.0.0.1 </ip><empty/></item>")
            .expect("xml");
        let item = doc.root_element();
        assert_eq!(text(item, "ip"), Some("10.0.0.1"));
        assert_eq!(text(item, "empty"), None);
        assert_eq!(
            path(item, &["nic", "ip"]).and_then(|n| n.text()),
            Some("10.0.0.9")
        );
        assert_eq!(children(item, "nic").count(), 1);
        assert!(
            required(item, "nope")
                .expect_err("missing")
                .contains("<item> has no <nope>")
        );
        assert!(root(&doc, "Other").is_err());
    }
}
