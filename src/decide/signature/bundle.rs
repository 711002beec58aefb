//! Sigstore bundles, as cosign 3 signs images: a DSSE envelope whose payload is an in-toto
//! statement naming the signed digest.
//!
//! A bundle vouches for a digest when a signature of its envelope verifies, over DSSE's
//! pre-authentication encoding of the payload, with one of the keys, and the statement is a
//! cosign image signature (not an attestation, which `cosign attest` writes in the same
//! artifact type) whose subject is the digest.

use base64::Engine as _;
use serde::Deserialize;

use crate::policy::signature::PublicKey;

/// The in-toto statement's media type: the only payload a signature bundle carries.
const IN_TOTO: &str = "application/vnd.in-toto+json";

/// The predicate type of a cosign image signature; attestations carry any other.
pub(crate) const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

/// What a bundle came to with the policy's keys.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Outcome {
    /// Signed with this key (its fingerprint), for this digest.
    Signer(String),
    /// Unreadable, or signed by none of the keys.
    Unsigned,
    /// Signed with a policy key, but what it signs does not vouch for this digest.
    BadPayload(String),
}

/// The parts of a bundle that are read (`verificationMaterial` and log entries are the
/// identity check's).
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Bundle {
    pub(super) dsse_envelope: Option<Envelope>,
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

/// What `bundle` (its JSON) says of `digest`, checked with `keys`.
pub(super) fn check(bundle: &[u8], digest: &str, keys: &[impl AsRef<PublicKey>]) -> Outcome {
    let Some(envelope) = serde_json::from_slice::<Bundle>(bundle)
        .ok()
        .and_then(|b| b.dsse_envelope)
    else {
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
        Ok(()) => Outcome::Signer(signer.fingerprint.clone()),
        Err(why) => Outcome::BadPayload(why),
    }
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
