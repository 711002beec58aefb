//! Pushing a Sigstore bundle to the plain registry as cosign 3 does on a registry without the
//! referrers API: the bundle as an OCI artifact whose `subject` is the image, listed in the
//! index tagged `sha256-<hex>`. For bundles the tests assemble (keyless signatures from the
//! tests' own Sigstore), which no cosign command pushes offline.

use std::io::{Read, Write};
use std::net::TcpStream;

use sha2::Digest as _;

use super::env::Env;

const BUNDLE_TYPE: &str = "application/vnd.dev.sigstore.bundle.v0.3+json";
const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";
const MANIFEST_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX_TYPE: &str = "application/vnd.oci.image.index.v1+json";

fn digest_of(bytes: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// One HTTP/1.1 request to `host:port`; the status, the headers (lower-case names) and the body.
fn send(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut stream = TcpStream::connect(host).expect("the registry answers");
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut response = Vec::new();
    stream.read_to_end(&mut response).unwrap();
    let split = response
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("an HTTP answer");
    let text = String::from_utf8_lossy(&response[..split]).into_owned();
    let mut lines = text.lines();
    let status = lines
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|s| s.parse().ok())
        .expect("a status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, response[split + 4..].to_vec())
}

impl Env {
    /// Uploads `bytes` as a blob of `repo` in the plain registry; returns its digest.
    fn push_blob(&self, repo: &str, bytes: &[u8]) -> String {
        let digest = digest_of(bytes);
        let (status, headers, _) = send(
            &self.plain,
            "POST",
            &format!("/v2/{repo}/blobs/uploads/"),
            &[],
            &[],
        );
        assert_eq!(status, 202, "an upload starts");
        let location = headers
            .iter()
            .find(|(n, _)| n == "location")
            .map(|(_, v)| v.clone())
            .expect("an upload location");
        let path = location
            .split_once("://")
            .and_then(|(_, rest)| rest.find('/').map(|i| rest[i..].to_owned()))
            .unwrap_or(location);
        let sep = if path.contains('?') { '&' } else { '?' };
        let (status, _, body) = send(
            &self.plain,
            "PUT",
            &format!("{path}{sep}digest={digest}"),
            &[("Content-Type", "application/octet-stream")],
            bytes,
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
        digest
    }

    /// Puts `manifest` (of `media_type`) under `reference` (a tag or its digest).
    fn push_manifest(&self, repo: &str, reference: &str, media_type: &str, manifest: &[u8]) {
        let (status, _, body) = send(
            &self.plain,
            "PUT",
            &format!("/v2/{repo}/manifests/{reference}"),
            &[("Content-Type", media_type)],
            manifest,
        );
        assert_eq!(status, 201, "{}", String::from_utf8_lossy(&body));
    }

    /// Pushes `bundle` as a signature of `repo@digest`, as cosign 3 does on distribution.
    /// With `typed_entry` false, the fallback index's entry lacks its artifact type, as some
    /// cosign versions write it (cosign #4641).
    pub(crate) fn push_bundle(&self, repo: &str, digest: &str, bundle: &[u8], typed_entry: bool) {
        self.push_referrer(repo, digest, &[(bundle, None)], 1, typed_entry);
    }

    /// Pushes one artifact about `repo@digest` whose layers are `layers` (their bytes, and the
    /// size its descriptor states, when it lies), listed `copies` times in the fallback index:
    /// what a hostile registry can serve.
    pub(crate) fn push_referrer(
        &self,
        repo: &str,
        digest: &str,
        layers: &[(&[u8], Option<u64>)],
        copies: usize,
        typed_entry: bool,
    ) {
        let (status, headers, subject) = send(
            &self.plain,
            "GET",
            &format!("/v2/{repo}/manifests/{digest}"),
            &[(
                "Accept",
                "application/vnd.docker.distribution.manifest.v2+json, \
                 application/vnd.oci.image.manifest.v1+json, \
                 application/vnd.oci.image.index.v1+json, \
                 application/vnd.docker.distribution.manifest.list.v2+json",
            )],
            &[],
        );
        assert_eq!(status, 200, "the signed image exists");
        let subject_type = headers
            .iter()
            .find(|(n, _)| n == "content-type")
            .map(|(_, v)| v.clone())
            .expect("a media type");
        let config = self.push_blob(repo, b"{}");
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .map(|(bytes, stated)| {
                let layer = self.push_blob(repo, bytes);
                let size = stated.unwrap_or(bytes.len() as u64);
                serde_json::json!({ "mediaType": BUNDLE_TYPE, "size": size, "digest": layer })
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_TYPE,
            "artifactType": BUNDLE_TYPE,
            "config": { "mediaType": EMPTY_TYPE, "size": 2, "digest": config },
            "layers": descriptors,
            "subject": { "mediaType": subject_type, "size": subject.len(), "digest": digest },
            "annotations": { "dev.sigstore.bundle.predicateType": "https://sigstore.dev/cosign/sign/v1" },
        })
        .to_string()
        .into_bytes();
        let manifest_digest = digest_of(&manifest);
        self.push_manifest(repo, &manifest_digest, MANIFEST_TYPE, &manifest);
        let mut entry = serde_json::json!({
            "mediaType": MANIFEST_TYPE,
            "size": manifest.len(),
            "digest": manifest_digest,
        });
        if typed_entry {
            entry["artifactType"] = BUNDLE_TYPE.into();
        }
        let index = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": INDEX_TYPE,
            "manifests": vec![entry; copies],
        })
        .to_string()
        .into_bytes();
        let tag = format!("sha256-{}", digest.trim_start_matches("sha256:"));
        self.push_manifest(repo, &tag, INDEX_TYPE, &index);
    }
}
