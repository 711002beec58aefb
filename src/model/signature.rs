//! Cosign signatures as plain data: where the registry keeps them, what was fetched, and what a
//! check of them found.
//!
//! cosign keeps signatures in one of two layouts, both in the signed image's repository:
//! - **Bundles** (cosign 3's default): a Sigstore bundle, a DSSE envelope around an in-toto
//!   statement whose subject is the signed digest, pushed as an OCI artifact whose `subject`
//!   is the image. It is found through the registry's referrers API
//!   (`/v2/<name>/referrers/<digest>`), or where a registry has none, through the index
//!   tagged `sha256-<hex>` that lists the referrers.
//! - **Legacy** (cosign 2, and cosign 3 with `--new-bundle-format=false`): the layers of a
//!   manifest tagged `sha256-<hex>.sig`. Each layer is a "simple signing" payload (JSON
//!   naming the signed digest), and its annotation holds the base64 ECDSA signature over the
//!   payload's exact bytes.

use std::fmt;

use serde::Serialize;

/// The media type of a cosign signature payload layer.
pub(crate) const SIMPLE_SIGNING: &str = "application/vnd.dev.cosign.simplesigning.v1+json";

/// The layer annotation that holds the base64 signature.
pub(crate) const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";

/// The `critical.type` every cosign image signature payload carries.
pub(crate) const PAYLOAD_TYPE: &str = "cosign container image signature";

/// Payloads are a few hundred bytes, and bundles a few KiB (a certificate chain and a log
/// entry); anything past this is not a signature, and is not fetched or hashed.
pub(crate) const MAX_PAYLOAD: u64 = 64 * 1024;

/// How many referrers of one digest are read, at most: signatures sit beside SBOMs and
/// attestations, and a registry's list has no bound of its own.
pub(crate) const MAX_REFERRERS: usize = 32;

/// How many signature blobs of one digest are fetched, at most, in each layout. cosign adds a
/// `.sig` layer each time a digest is signed again; a digest signed more often than this has
/// its first ones read.
pub(crate) const MAX_SIGNATURES: usize = 64;

/// Whether `media_type` is a Sigstore bundle's (`application/vnd.dev.sigstore.bundle.v0.3+json`,
/// or the older `application/vnd.dev.sigstore.bundle+json;version=0.2` spelling).
pub(crate) fn is_bundle_type(media_type: &str) -> bool {
    media_type.starts_with("application/vnd.dev.sigstore.bundle")
}

/// The empty descriptor's media type. Some cosign versions write it as a referrer's
/// artifactType in the fallback index (cosign #4641), so such an entry may still be a bundle.
pub(crate) const EMPTY_TYPE: &str = "application/vnd.oci.empty.v1+json";

/// The tag of the index listing the referrers of `digest` on a registry without the referrers
/// API: `sha256-<hex>`.
pub(crate) fn referrers_tag(digest: &str) -> Option<String> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| !hex.is_empty())
        .map(|hex| format!("sha256-{hex}"))
}

/// The tag cosign keeps the signatures of `digest` under: `sha256-<hex>.sig`.
pub(crate) fn signature_tag(digest: &str) -> Option<String> {
    digest
        .strip_prefix("sha256:")
        .filter(|hex| !hex.is_empty())
        .map(|hex| format!("sha256-{hex}.sig"))
}

/// One signature as fetched, in either layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signature {
    /// A layer of the `.sig` manifest.
    Legacy(SignatureLayer),
    /// A Sigstore bundle's JSON, exactly as stored (checked against its digest).
    Bundle(Vec<u8>),
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

/// Who signed a digest: a key of the policy, or an identity its certificate names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Signer {
    /// `sha256:` of the key's SubjectPublicKeyInfo.
    Key(String),
    /// The certificate's identity and the OIDC issuer that vouched for it.
    Identity {
        /// The subject alternative name: a workflow's URI, an email address.
        subject: String,
        /// The OIDC issuer (Fulcio's issuer extension).
        issuer: String,
    },
}

/// How an identity signer is written in the lock and state files: `SUBJECT (issuer ISSUER)`.
pub(crate) const ISSUER_MARK: &str = " (issuer ";

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Key(fingerprint) => f.write_str(fingerprint),
            Signer::Identity { subject, issuer } => write!(f, "{subject}{ISSUER_MARK}{issuer})"),
        }
    }
}

impl Signer {
    /// For tables: `key sha256:ab12cd34ef56…`, or the identity as written.
    pub(crate) fn words(&self) -> String {
        match self {
            Signer::Key(fingerprint) => format!("key {}", short_fingerprint(fingerprint)),
            identity => identity.to_string(),
        }
    }

    /// A signer as the lock and state files write it; `None` when it is neither a key
    /// fingerprint nor an identity.
    pub(crate) fn parse(text: &str) -> Option<Signer> {
        if text.starts_with("sha256:") {
            return Some(Signer::Key(text.to_owned()));
        }
        let (subject, rest) = text.rsplit_once(ISSUER_MARK)?;
        let issuer = rest.strip_suffix(')')?;
        (!subject.is_empty() && !issuer.is_empty()).then(|| Signer::Identity {
            subject: subject.to_owned(),
            issuer: issuer.to_owned(),
        })
    }
}

/// A key fingerprint for people: `sha256:` and its first 12 hex digits, `sha256:ab12cd34ef56…`.
pub(crate) fn short_fingerprint(fingerprint: &str) -> String {
    let short: String = fingerprint.chars().take("sha256:".len() + 12).collect();
    format!("{short}…")
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
    /// A certificate signed it, but does not verify against the trust root or names none of
    /// the policy's identities.
    Untrusted {
        /// Why: the identity it names, or what failed (chain, time, log proof).
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
            Finding::Untrusted { .. } => "untrusted",
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
            Finding::Untrusted { why } => f.write_str(why),
        }
    }
}

/// What the signature check of an image's digest came to this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum Check {
    /// Signed by one of the policy's keys or identities.
    Verified {
        /// Which: `key` (`sha256:` of its SubjectPublicKeyInfo) or `identity` (subject and
        /// issuer).
        #[serde(flatten)]
        signer: Signer,
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
    /// Every pair of metric labels a check can have, `(result, found)`.
    pub const LABELS: [(&'static str, &'static str); 10] = [
        ("verified", "key"),
        ("verified", "identity"),
        ("refused", "no-signature"),
        ("refused", "wrong-key"),
        ("refused", "untrusted"),
        ("refused", "bad-payload"),
        ("warned", "no-signature"),
        ("warned", "wrong-key"),
        ("warned", "untrusted"),
        ("warned", "bad-payload"),
    ];

    /// What was found, for metrics: the kind of signer, or the finding.
    pub fn found(&self) -> &'static str {
        match self {
            Check::Verified {
                signer: Signer::Key(_),
                ..
            } => "key",
            Check::Verified {
                signer: Signer::Identity { .. },
                ..
            } => "identity",
            Check::Refused { finding } | Check::Warned { finding } => finding.as_str(),
        }
    }

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
