//! Sigstore bundles, as cosign 3 signs images: a DSSE envelope whose payload is an in-toto
//! statement naming the signed digest.
//!
//! A bundle vouches for a digest when a signature of its envelope verifies, over DSSE's
//! pre-authentication encoding of the payload, with one of the keys, and the statement is a
//! cosign image signature (not an attestation, which `cosign attest` writes in the same
//! artifact type) whose subject is the digest.

use base64::Engine as _;
use serde::Deserialize;

use crate::model::signature::Signer;
use crate::policy::signature::{Keyless, PublicKey};

/// The in-toto statement's media type: the only payload a signature bundle carries.
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The predicate type of a cosign image signature; attestations carry any other.
pub(crate) const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// What a signature came to with the policy's keys and identities.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Signed by this signer, for this digest.
    Signer(Signer),
    /// Unreadable, or signed by none of the keys.
    Unsigned,
    /// A certificate that does not verify against the trust root, or names none of the
    /// policy's identities: why.
    Untrusted(String),
    /// Signed as the policy requires, but what it signs does not vouch for this digest.
    BadPayload(String),
}

/// The parts of a bundle read here: the envelope, and whether a certificate signed it (the
/// rest of the verification material is the keyless check's, in sigstore-verify's terms).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bundle {
    pub(super) dsse_envelope: Option<Envelope>,
    /// A blob signature (`cosign sign-blob`): never an image signature. Read only to refuse a
    /// bundle that has one, so that what sigstore-verify checks (it takes the first content it
    /// finds) is always the envelope read here.
    #[serde(default)]
    message_signature: Option<serde_json::Value>,
    #[serde(default)]
    verification_material: Option<Material>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Material {
    certificate: Option<serde_json::Value>,
    x509_certificate_chain: Option<serde_json::Value>,
}

impl Bundle {
    /// Whether a certificate (keyless signing) rather than a key signed it.
    fn has_certificate(&self) -> bool {
        self.verification_material
            .as_ref()
            .is_some_and(|m| m.certificate.is_some() || m.x509_certificate_chain.is_some())
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Envelope {
    pub(super) payload: String,
    pub(super) payload_type: String,
    #[serde(default)]
    pub(super) signatures: Vec<EnvelopeSignature>,
}

#[derive(Deserialize)]
pub(super) struct EnvelopeSignature {
    pub(super) sig: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Statement {
    #[serde(rename = "_type")]
    kind: String,
    #[serde(default)]
    subject: Vec<Subject>,
    predicate_type: String,
}

#[derive(Deserialize)]
struct Subject {
    #[serde(default)]
    digest: std::collections::BTreeMap<String, String>,
}

/// What `bundle` (its JSON) says of `digest`: a certificate's with `keyless`, else with `keys`.
pub(super) fn check(
    bundle: &[u8],
    digest: &str,
    keys: &[impl AsRef<PublicKey>],
    keyless: Option<&Keyless>,
) -> Outcome {
    let Ok(parsed) = serde_json::from_slice::<Bundle>(bundle) else {
        return Outcome::Unsigned;
    };
    if parsed.message_signature.is_some() {
        return Outcome::Untrusted(
            "a bundle that holds a blob signature (messageSignature), not only a signed image \
             statement"
                .to_owned(),
        );
    }
    match (parsed.has_certificate(), keyless) {
        (true, Some(keyless)) => check_keyless(bundle, parsed, digest, keyless),
        (true, None) => Outcome::Unsigned,
        (false, _) => check_keyed(parsed, digest, keys),
    }
}

/// A key-signed bundle: its envelope's signature by one of `keys`.
fn check_keyed(bundle: Bundle, digest: &str, keys: &[impl AsRef<PublicKey>]) -> Outcome {
    let Some(envelope) = bundle.dsse_envelope else {
        return Outcome::Unsigned;
    };
    let Some((payload, signatures)) = decoded(&envelope) else {
        return Outcome::Unsigned;
    };
    let signed = pae(&envelope.payload_type, &payload);
    let signer = keys.iter().map(AsRef::as_ref).find(|k| {
        signatures
            .iter()
            .any(|sig| k.key.verify_sig(&signed, sig).is_ok())
    });
    let Some(signer) = signer else {
        return Outcome::Unsigned;
    };
    match vouches_for(&envelope.payload_type, &payload, digest) {
        Ok(()) => Outcome::Signer(Signer::Key(signer.fingerprint.clone())),
        Err(why) => Outcome::BadPayload(why),
    }
}

/// A certificate-signed bundle, by sigstore-verify: the certificate chains to a CA of the trust
/// root and was valid when the transparency log recorded the signature (its inclusion proof,
/// signed checkpoint and signed entry timestamp), the envelope's signature is the
/// certificate's, and the statement's subject is `digest`. Then the identity the certificate
/// names must be one of the policy's, and the statement a signature, not an attestation.
fn check_keyless(json: &[u8], bundle: Bundle, digest: &str, keyless: &Keyless) -> Outcome {
    use sigstore_verify::VerificationPolicy;
    use sigstore_verify::types::{Bundle as SigstoreBundle, Sha256Hash};

    let Some(envelope) = bundle.dsse_envelope else {
        return Outcome::Unsigned;
    };
    let parsed = std::str::from_utf8(json)
        .map_err(|e| e.to_string())
        .and_then(|text| SigstoreBundle::from_json(text).map_err(|e| e.to_string()));
    let sigstore_bundle = match parsed {
        Ok(b) => b,
        Err(e) => return Outcome::Untrusted(format!("an unreadable bundle ({e})")),
    };
    let Ok(artifact) = Sha256Hash::from_hex(digest.strip_prefix("sha256:").unwrap_or(digest))
    else {
        return Outcome::Unsigned;
    };
    let mut policy = VerificationPolicy::any_identity();
    if !keyless.require_tlog {
        policy = policy.skip_tlog_unsafe();
    }
    if !keyless.trust_root.has_ct_logs {
        policy = policy.skip_sct();
    }
    let verified = match keyless
        .trust_root
        .verifier
        .verify(artifact, &sigstore_bundle, &policy)
    {
        Ok(v) => v,
        Err(e) => return Outcome::Untrusted(untrusted_words(&e)),
    };
    let (Some(subject), Some(issuer)) = (verified.identity(), verified.issuer()) else {
        return Outcome::Untrusted("a certificate that names no identity or issuer".to_owned());
    };
    let subject = subject.as_str().to_owned();
    if !keyless
        .identities
        .iter()
        .any(|i| i.matches(&subject, issuer))
    {
        return Outcome::Untrusted(format!(
            "a certificate for {subject} (issuer {issuer}), which is not one of these identities"
        ));
    }
    let Some((payload, _)) = decoded(&envelope) else {
        return Outcome::Unsigned;
    };
    match vouches_for(&envelope.payload_type, &payload, digest) {
        Ok(()) => Outcome::Signer(Signer::Identity {
            subject,
            issuer: issuer.to_owned(),
        }),
        Err(why) => Outcome::BadPayload(why),
    }
}

/// What sigstore-verify refused, as a phrase after "found", with its own words after it.
fn untrusted_words(e: &sigstore_verify::Error) -> String {
    use sigstore_verify::Error as E;
    let what = match e {
        E::Certificate(_) => {
            "a certificate that no CA of the trust root vouches for at the time of signing"
        }
        E::TransparencyLog(_) => "a transparency-log entry that does not verify",
        E::Timestamp(_) => "a timestamp that does not verify",
        E::SignatureInvalid(_) => "a signature that is not the certificate's",
        E::ArtifactMismatch(_) => "a certificate-signed statement about another digest",
        E::Bundle(_) | E::InvalidBundle(_) | E::UnsupportedBundle(_) => {
            "a certificate-signed bundle without what the policy requires"
        }
        _ => "a certificate-signed bundle that does not verify",
    };
    format!("{what} ({e})")
}

/// The envelope's payload and signatures, base64-decoded; `None` when any is not base64.
pub(super) fn decoded(envelope: &Envelope) -> Option<(Vec<u8>, Vec<Vec<u8>>)> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let payload = b64.decode(&envelope.payload).ok()?;
    let signatures = envelope
        .signatures
        .iter()
        .map(|s| b64.decode(&s.sig).ok())
        .collect::<Option<Vec<_>>>()?;
    Some((payload, signatures))
}

/// DSSE's pre-authentication encoding: what the envelope's signatures sign.
pub(super) fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!(
        "DSSEv1 {} {payload_type} {} ",
        payload_type.len(),
        payload.len()
    )
    .into_bytes();
    out.extend_from_slice(payload);
    out
}

/// Whether a signed statement is a cosign image signature of `digest`.
pub(super) fn vouches_for(payload_type: &str, payload: &[u8], digest: &str) -> Result<(), String> {
    if payload_type != IN_TOTO {
        return Err(format!(
            "its payload is \"{payload_type}\", not an in-toto statement"
        ));
    }
    let statement: Statement =
        serde_json::from_slice(payload).map_err(|e| format!("not an in-toto statement ({e})"))?;
    if !statement.kind.starts_with("https://in-toto.io/Statement/") {
        return Err(format!(
            "not an in-toto statement (_type \"{}\")",
            statement.kind
        ));
    }
    if statement.predicate_type != SIGN_PREDICATE {
        return Err(format!(
            "it is an attestation (predicate {}), not a signature",
            statement.predicate_type
        ));
    }
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    if statement
        .subject
        .iter()
        .any(|s| s.digest.get("sha256").is_some_and(|d| d == hex))
    {
        return Ok(());
    }
    let named: Vec<String> = statement
        .subject
        .iter()
        .flat_map(|s| s.digest.iter().map(|(alg, d)| format!("{alg}:{d}")))
        .collect();
    Err(format!(
        "it signs {}, not this digest",
        if named.is_empty() {
            "no digest".to_owned()
        } else {
            named.join(", ")
        }
    ))
}
