//! Whether a digest carries a valid cosign signature by one of a policy's keys: a pure
//! function over the signatures the registry holds, in either layout.
//!
//! A legacy layer vouches for `digest` when its signature verifies over the payload's exact
//! bytes with one of the keys (ECDSA P-256, SHA-256, DER), and the payload is a cosign image
//! signature whose `critical.image.docker-manifest-digest` is `digest`. A bundle vouches for it
//! on the same two conditions, in its own terms (`bundle`). The second check matters: a valid
//! signature copied from another digest must not vouch for this one.

use base64::Engine as _;
use serde::Deserialize;

use crate::model::signature::Signer;
use crate::model::signature::{Finding, PAYLOAD_TYPE, Signature, SignatureLayer};
use crate::policy::signature::{Keyless, PublicKey};

mod bundle;

use bundle::Outcome;

/// Who signed `digest` as the policy requires (one of `keys`, or a certificate naming one of
/// `keyless`'s identities), or what was found instead.
pub(crate) fn check(
    digest: &str,
    signatures: &[Signature],
    keys: &[impl AsRef<PublicKey>],
    keyless: Option<&Keyless>,
) -> Result<Signer, Finding> {
    if signatures.is_empty() {
        return Err(Finding::NoSignature);
    }
    let mut bad_payload = None;
    let mut untrusted = None;
    for signature in signatures {
        match outcome(signature, digest, keys, keyless) {
            Outcome::Signer(signer) => return Ok(signer),
            Outcome::BadPayload(why) => bad_payload = Some(why),
            Outcome::Untrusted(why) => untrusted = Some(why),
            Outcome::Unsigned => {}
        }
    }
    // The most telling: a signature as required over something else, then a certificate
    // that was refused, then signatures by others.
    Err(match (bad_payload, untrusted) {
        (Some(why), _) => Finding::BadPayload { why },
        (None, Some(why)) => Finding::Untrusted { why },
        (None, None) => Finding::WrongKey {
            signatures: signatures.len(),
        },
    })
}

/// What one signature says of `digest`.
fn outcome(
    signature: &Signature,
    digest: &str,
    keys: &[impl AsRef<PublicKey>],
    keyless: Option<&Keyless>,
) -> Outcome {
    match signature {
        Signature::Bundle(json) => bundle::check(json, digest, keys, keyless),
        Signature::Legacy(layer) => match signer(layer, keys) {
            None => Outcome::Unsigned,
            Some(key) => match vouches_for(&layer.payload, digest) {
                Ok(()) => Outcome::Signer(Signer::Key(key.fingerprint.clone())),
                Err(why) => Outcome::BadPayload(why),
            },
        },
    }
}

/// The key whose signature `layer` carries, if any.
fn signer<'k, K: AsRef<PublicKey>>(layer: &SignatureLayer, keys: &'k [K]) -> Option<&'k PublicKey> {
    // cosign writes one line of base64; some tools wrap it (sigstore-rs #550): ignore
    // whitespace rather than refuse a good signature.
    let text: String = layer
        .signature
        .as_deref()?
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let signature = base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()?;
    keys.iter()
        .map(AsRef::as_ref)
        .find(|k| k.key.verify_sig(&layer.payload, &signature).is_ok())
}

#[derive(Deserialize)]
struct Payload {
    critical: Critical,
}

#[derive(Deserialize)]
struct Critical {
    #[serde(rename = "type")]
    kind: String,
    image: PayloadImage,
}

#[derive(Deserialize)]
struct PayloadImage {
    #[serde(rename = "docker-manifest-digest")]
    digest: String,
}

/// Whether a signed payload is a cosign image signature of `digest`.
fn vouches_for(payload: &[u8], digest: &str) -> Result<(), String> {
    let payload: Payload = serde_json::from_slice(payload)
        .map_err(|e| format!("not a cosign simple-signing payload ({e})"))?;
    if payload.critical.kind != PAYLOAD_TYPE {
        return Err(format!(
            "its type is \"{}\", not \"{PAYLOAD_TYPE}\"",
            payload.critical.kind
        ));
    }
    if payload.critical.image.digest != digest {
        return Err(format!(
            "it signs {}, not this digest",
            payload.critical.image.digest
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests;

/// A trust root of the tests' own Sigstore, for tests elsewhere.
#[cfg(test)]
pub(crate) fn test_sigstore() -> String {
    tests::trusted_root()
}
