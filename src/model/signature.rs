//! Cosign signatures as plain data: where the registry keeps them, what was fetched, and what a
//! check of them found.
//!
//! cosign stores the signatures of `repo@sha256:<hex>` as the layers of a manifest tagged
//! `sha256-<hex>.sig` in the same repository. Each layer is a "simple signing" payload (JSON
//! naming the signed digest), and its annotation holds the base64 ECDSA signature over the
//! payload's exact bytes.

use std::fmt;

use serde::Serialize;

/// The media type of a cosign signature payload layer.
pub(crate) const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation that holds the base64 signature.
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The `critical.type` every cosign image signature payload carries.
pub(crate) const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Payloads are a few hundred bytes; anything past this is not a cosign payload, and is not
/// fetched or hashed.
pub(crate) const MAX_PAYLOAD: u64 = 64 * 1024;

/// The tag cosign keeps the signatures of `digest` under: `sha256-<hex>.sig`.
pub(crate) fn signature_tag(digest: &str) -> Option<String> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| !hex.is_empty())
        .map(|hex| format!("sha256-{hex}.sig"))
}

/// One signature layer as fetched: its payload (checked against the layer's digest) and the
/// signature annotation, when it has one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignatureLayer {
    /// The payload's bytes, exactly as stored: the signature is over these.
    pub payload: Vec<u8>,
    /// The base64 DER signature from the layer's annotation.
    pub signature: Option<String>,
}

/// Why a digest is not verified: what was found where its signature should be.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "found", rename_all = "kebab-case")]
pub enum Finding {
    /// The registry has no signature for the digest.
    NoSignature,
    /// Signatures are there, but none verifies with the keys of the policy.
    WrongKey {
        /// How many signatures were tried.
        signatures: usize,
    },
    /// A signature verifies, but its payload does not vouch for this digest.
    BadPayload {
        /// What is wrong with it.
        why: String,
    },
}

impl Finding {
    /// The label used in metrics and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            Finding::NoSignature => "no-signature",
            Finding::WrongKey { .. } => "wrong-key",
            Finding::BadPayload { .. } => "bad-payload",
        }
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Finding::NoSignature => f.write_str("no signature"),
            Finding::WrongKey { signatures: 1 } => {
                f.write_str("1 signature, not made with any of these keys")
            }
            Finding::WrongKey { signatures } => {
                write!(
                    f,
                    "{signatures} signatures, none made with any of these keys"
                )
            }
            Finding::BadPayload { why } => write!(f, "a valid signature over a bad payload: {why}"),
        }
    }
}

/// What the signature check of an image's digest came to this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Check {
    /// Signed with the key of this fingerprint.
    Verified {
        /// `sha256:` of the key's SubjectPublicKeyInfo.
        key: String,
        /// Known from the state file: no registry request was made.
        cached: bool,
    },
    /// Not signed as the policy requires: the digest is not pinned or pulled.
    Refused {
        /// What was found.
        #[serde(flatten)]
        finding: Finding,
    },
    /// Not signed as the policy requires, which only warns (`mode = "warn"`).
    Warned {
        /// What was found.
        #[serde(flatten)]
        finding: Finding,
    },
}

impl Check {
    /// The label used in metrics: verified, refused, warned.
    pub fn as_str(&self) -> &'static str {
        match self {
            Check::Verified { .. } => "verified",
            Check::Refused { .. } => "refused",
            Check::Warned { .. } => "warned",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_live_under_the_digest_tag() {
        assert_eq!(
            signature_tag("sha256:abc").as_deref(),
            Some("sha256-abc.sig")
        );
        assert_eq!(signature_tag("sha512:abc"), None);
        assert_eq!(signature_tag("sha256:"), None);
    }

    #[test]
    fn findings_read_as_sentences() {
        assert_eq!(Finding::NoSignature.to_string(), "no signature");
        assert_eq!(
            Finding::WrongKey { signatures: 2 }.to_string(),
            "2 signatures, none made with any of these keys"
        );
    }
}
