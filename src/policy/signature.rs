//! Signature policy: which keys must have signed a digest before it is pinned or pulled, and
//! whether a missing signature refuses the digest or only warns.
//!
//! Keys are cosign public keys (`cosign generate-key-pair` writes `cosign.pub`): PEM
//! `PUBLIC KEY` blocks holding an ECDSA P-256 SubjectPublicKeyInfo. Each is known by its
//! fingerprint, `sha256:` of that DER, which the lock and state files record.
//!
//! Keyless verification (a Fulcio certificate naming an OIDC identity, logged in Rekor) would
//! be another kind of policy beside `keys`, checked by the same call; it needs the internet and
//! sigstore's trust root, so this build does not offer it (docs/signatures.md).

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest;

/// A public key a policy trusts.
#[derive(Clone)]
pub struct PublicKey {
    /// The file it was read from, for messages.
    pub(crate) path: PathBuf,
    /// `sha256:` and the hex SHA-256 of its SubjectPublicKeyInfo DER.
    pub(crate) fingerprint: String,
    /// The parsed key, checked to be on P-256.
    pub(crate) key: ParsedPublicKey,
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "PublicKey({}, {})",
            self.path.display(),
            self.fingerprint
        )
    }
}

impl PartialEq for PublicKey {
    fn eq(&self, other: &Self) -> bool {
        self.fingerprint == other.fingerprint && self.path == other.path
    }
}

/// So a check takes the policy's `Arc`s and plain keys alike.
impl AsRef<PublicKey> for PublicKey {
    fn as_ref(&self) -> &PublicKey {
        self
    }
}

impl PublicKey {
    /// Reads a PEM public key file.
    pub(crate) fn load(path: &Path) -> Result<PublicKey, String> {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read it: {e}"))?;
        PublicKey::from_pem(path, &bytes)
    }

    /// A key from PEM text (`-----BEGIN PUBLIC KEY-----`).
    pub(crate) fn from_pem(path: &Path, pem: &[u8]) -> Result<PublicKey, String> {
        let der = SubjectPublicKeyInfoDer::from_pem_slice(pem).map_err(|e| {
            format!("no PEM \"PUBLIC KEY\" block in it ({e}); give the .pub file of the key pair")
        })?;
        let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, der.as_ref()).map_err(|e| {
            format!(
                "not an ECDSA P-256 public key ({e}): stowage verifies the signatures of \
                 cosign's own key pairs (`cosign generate-key-pair`)"
            )
        })?;
        Ok(PublicKey {
            path: path.to_owned(),
            fingerprint: fingerprint(der.as_ref()),
            key,
        })
    }
}

/// `sha256:<hex>` of a key's DER.
fn fingerprint(der: &[u8]) -> String {
    let hex: String = sha2::Sha256::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("sha256:{hex}")
}

/// What happens to a digest that is not signed as required.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum VerifyMode {
    /// It is refused: never pinned or pulled (class `signature`).
    Enforce,
    /// It is pinned and pulled anyway, with a warning and a metric: for a fleet that is
    /// still signing its images.
    Warn,
}

impl VerifyMode {
    /// The spelling used in the config.
    pub fn as_str(self) -> &'static str {
        match self {
            VerifyMode::Enforce => "enforce",
            VerifyMode::Warn => "warn",
        }
    }
}

/// The signature policy of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SignaturePolicy {
    /// A digest verifies when any of these keys signed it.
    pub keys: Vec<Arc<PublicKey>>,
    /// Refuse, or only warn.
    pub mode: VerifyMode,
    /// Where it was written (`line 12`), for plans.
    pub(crate) line: usize,
}

impl SignaturePolicy {
    /// Whether `fingerprint` is one of the policy's keys: a verification remembered with a
    /// key that has since left the policy no longer counts.
    pub(crate) fn trusts(&self, fingerprint: &str) -> bool {
        self.keys.iter().any(|k| k.fingerprint == fingerprint)
    }

    /// The keys, for messages: `cosign.pub (sha256:ab12..)`.
    pub(crate) fn describe_keys(&self) -> String {
        self.keys
            .iter()
            .map(|k| {
                let short: String = k.fingerprint.chars().take("sha256:".len() + 12).collect();
                format!("{} ({short}…)", k.path.display())
            })
            .collect::<Vec<_>>()
            .join(", ")
    }
}

#[cfg(test)]
pub(crate) mod test_keys {
    //! Key pairs made on the spot, for the tests of every layer.

    use super::*;
    use aws_lc_rs::encoding::AsDer;
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
    use base64::Engine as _;

    /// A fresh P-256 key pair and its public half as a policy key.
    pub(crate) fn pair(name: &str) -> (EcdsaKeyPair, PublicKey) {
        let (pair, pem) = pem_pair();
        let public = PublicKey::from_pem(Path::new(name), pem.as_bytes()).expect("a valid key");
        (pair, public)
    }

    /// A fresh P-256 key pair and its public half as PEM, as `cosign.pub` holds it.
    pub(crate) fn pem_pair() -> (EcdsaKeyPair, String) {
        let pair = EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("a key pair");
        let der = pair.public_key().as_der().expect("an encodable public key");
        let pem = format!(
            "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
            base64::engine::general_purpose::STANDARD.encode(der.as_ref())
        );
        (pair, pem)
    }

    /// The base64 signature of `payload`, as cosign's annotation holds it.
    pub(crate) fn sign(pair: &EcdsaKeyPair, payload: &[u8]) -> String {
        let sig = pair
            .sign(&SystemRandom::new(), payload)
            .expect("a signature");
        base64::engine::general_purpose::STANDARD.encode(sig.as_ref())
    }

    /// An in-toto statement of `digest` with `predicate_type`, as cosign 3 writes it.
    pub(crate) fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
        let hex = digest.trim_start_matches("sha256:");
        format!(
            "{{\"_type\":\"https://in-toto.io/Statement/v1\", \"subject\":[{{\"digest\":\
             {{\"sha256\":\"{hex}\"}}, \"annotations\":{{}}}}], \"predicateType\":\
             \"{predicate_type}\", \"predicate\":{{}}}}"
        )
        .into_bytes()
    }

    /// A Sigstore bundle of `statement`, signed with `pair` as `cosign sign --key` does.
    pub(crate) fn bundle(pair: &EcdsaKeyPair, statement: &[u8]) -> Vec<u8> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let kind = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {kind} {} ", kind.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement);
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": { "publicKey": { "hint": "" } },
            "dsseEnvelope": {
                "payload": b64.encode(statement),
                "payloadType": kind,
                "signatures": [{ "sig": sign(pair, &pae) }],
            },
        })
        .to_string()
        .into_bytes()
    }

    /// A cosign payload for `digest`.
    pub(crate) fn payload(digest: &str) -> Vec<u8> {
        format!(
            "{{\"critical\":{{\"identity\":{{\"docker-reference\":\"r.example/a\"}},\
             \"image\":{{\"docker-manifest-digest\":\"{digest}\"}},\
             \"type\":\"cosign container image signature\"}},\"optional\":null}}"
        )
        .into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_read_from_pem_and_known_by_fingerprint() {
        let (_, key) = test_keys::pair("a.pub");
        assert!(key.fingerprint.starts_with("sha256:"));
        assert_eq!(key.fingerprint.len(), "sha256:".len() + 64);
        let (_, other) = test_keys::pair("b.pub");
        assert_ne!(key.fingerprint, other.fingerprint);
    }

    #[test]
    fn anything_but_a_p256_public_key_is_refused_with_a_reason() {
        let e = PublicKey::from_pem(Path::new("x"), b"not pem").unwrap_err();
        assert!(e.contains("no PEM \"PUBLIC KEY\" block"), "{e}");
        let junk = "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
        let e = PublicKey::from_pem(Path::new("x"), junk.as_bytes()).unwrap_err();
        assert!(e.contains("not an ECDSA P-256 public key"), "{e}");
    }
}
