//! Signature policy: which keys must have signed a digest before it is pinned or pulled, and
//! whether a missing signature refuses the digest or only warns.
//!
//! Keys are cosign public keys (`cosign generate-key-pair` writes `cosign.pub`): PEM
//! `PUBLIC KEY` blocks holding an ECDSA P-256 SubjectPublicKeyInfo. Each is known by its
//! fingerprint, `sha256:` of that DER, which the lock and state files record.
//!
//! Identities are keyless signers: a short-lived certificate from a certificate authority of
//! the policy's trust root (Sigstore's Fulcio, or a private one) names the OIDC identity that
//! signed (a CI workflow, a person) and the issuer that vouched for it. A `trust_root` file in
//! Sigstore's `trusted_root.json` format holds the CAs and transparency logs to trust, so the
//! check is offline.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1, ParsedPublicKey};
use rustls_pki_types::SubjectPublicKeyInfoDer;
use rustls_pki_types::pem::PemObject;
use sha2::Digest;

use crate::model::signature::{ISSUER_MARK, Signer, short_fingerprint};

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

/// An identity a policy trusts: the issuer, and the subject exactly or by pattern.
#[derive(Debug, Clone)]
pub struct Identity {
    /// The OIDC issuer, exactly (`https://token.actions.githubusercontent.com`).
    pub issuer: String,
    /// The subject the certificate must name.
    pub subject: SubjectMatch,
}

/// How an identity's subject is matched.
#[derive(Debug, Clone)]
pub enum SubjectMatch {
    /// Exactly this subject.
    Exact(String),
    /// Any subject this pattern matches (as cosign's `--certificate-identity-regexp`,
    /// unanchored: write `^…$` to match it whole).
    Regex(regex::Regex),
}

impl PartialEq for Identity {
    fn eq(&self, other: &Self) -> bool {
        self.issuer == other.issuer && self.subject.as_str() == other.subject.as_str()
    }
}

impl SubjectMatch {
    /// As written in the config.
    pub(crate) fn as_str(&self) -> &str {
        match self {
            SubjectMatch::Exact(s) => s,
            SubjectMatch::Regex(r) => r.as_str(),
        }
    }
}

impl Identity {
    /// Whether a certificate naming `subject`, vouched for by `issuer`, is this identity.
    pub(crate) fn matches(&self, subject: &str, issuer: &str) -> bool {
        issuer == self.issuer
            && match &self.subject {
                SubjectMatch::Exact(s) => s == subject,
                SubjectMatch::Regex(r) => r.is_match(subject),
            }
    }
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.subject {
            SubjectMatch::Exact(s) => write!(f, "{s}{ISSUER_MARK}{})", self.issuer),
            SubjectMatch::Regex(r) => write!(f, "/{}/{ISSUER_MARK}{})", r.as_str(), self.issuer),
        }
    }
}

/// A Sigstore trust root (`trusted_root.json`): the certificate authorities, transparency
/// logs and timestamp authorities keyless signatures are checked against.
pub struct TrustRoot {
    /// The file it was read from, for messages.
    pub(crate) path: PathBuf,
    /// Ready to verify bundles: keys and anchors parsed once, when the config is loaded.
    pub(crate) verifier: sigstore_verify::Verifier,
    /// Whether it names certificate-transparency logs: certificates' SCTs are checked
    /// against them then (Sigstore's public Fulcio embeds them; a private CA may not).
    pub(crate) has_ct_logs: bool,
}

impl fmt::Debug for TrustRoot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TrustRoot({})", self.path.display())
    }
}

impl TrustRoot {
    /// Reads a `trusted_root.json`.
    pub(crate) fn load(path: &Path) -> Result<TrustRoot, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        TrustRoot::from_json(path, &text)
    }

    /// A trust root from its JSON.
    pub(crate) fn from_json(path: &Path, json: &str) -> Result<TrustRoot, String> {
        let root = sigstore_verify::trust_root::TrustedRoot::from_json(json).map_err(|e| {
            format!("not a Sigstore trusted_root.json ({e}); see the README on getting one")
        })?;
        if root.certificate_authorities.is_empty() {
            return Err(
                "it names no certificate authority, so no identity could ever verify".to_owned(),
            );
        }
        let verifier = sigstore_verify::Verifier::new(&root)
            .map_err(|e| format!("its keys or certificates are unusable: {e}"))?;
        Ok(TrustRoot {
            path: path.to_owned(),
            has_ct_logs: !root.ctlogs.is_empty(),
            verifier,
        })
    }
}

/// Keyless verification: the identities a certificate may name, checked against a trust root.
#[derive(Debug, Clone)]
pub struct Keyless {
    /// A digest verifies when a certificate names any of these.
    pub identities: Vec<Identity>,
    /// The CAs and logs to trust.
    pub trust_root: Arc<TrustRoot>,
    /// Whether a transparency-log entry (inclusion proof and signed checkpoint, or signed
    /// entry timestamp) is required; off only for private CAs that run no log.
    pub require_tlog: bool,
}

impl PartialEq for Keyless {
    fn eq(&self, other: &Self) -> bool {
        self.identities == other.identities
            && self.trust_root.path == other.trust_root.path
            && self.require_tlog == other.require_tlog
    }
}

/// The signature policy of one image.
#[derive(Debug, Clone, PartialEq)]
pub struct SignaturePolicy {
    /// A digest verifies when any of these keys signed it.
    pub keys: Vec<Arc<PublicKey>>,
    /// Or when a certificate names one of these identities.
    pub keyless: Option<Keyless>,
    /// Refuse, or only warn.
    pub mode: VerifyMode,
    /// Where it was written (`line 12`), for plans.
    pub(crate) line: usize,
}

impl SignaturePolicy {
    /// Whether `signer` (as the state file writes it) is one of the policy's keys or
    /// identities: a verification remembered with a signer that has since left the policy no
    /// longer counts.
    pub(crate) fn trusts(&self, signer: &str) -> bool {
        match Signer::parse(signer) {
            Some(Signer::Key(fingerprint)) => {
                self.keys.iter().any(|k| k.fingerprint == fingerprint)
            }
            Some(Signer::Identity { subject, issuer }) => self
                .keyless
                .as_ref()
                .is_some_and(|k| k.identities.iter().any(|i| i.matches(&subject, &issuer))),
            None => false,
        }
    }

    /// The keys and identities, for messages: `cosign.pub (sha256:ab12..)`,
    /// `https://github.com/org/repo/... (issuer https://token.actions...)`.
    pub(crate) fn describe_keys(&self) -> String {
        let keys = self.keys.iter().map(|k| {
            format!(
                "{} ({})",
                k.path.display(),
                short_fingerprint(&k.fingerprint)
            )
        });
        let identities = self
            .keyless
            .iter()
            .flat_map(|k| k.identities.iter().map(ToString::to_string));
        keys.chain(identities).collect::<Vec<_>>().join(", ")
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
    fn sigstores_public_trust_root_is_read() {
        // The file `cosign initialize` fetches (as embedded in sigstore-trust-root): its CAs,
        // logs, CT logs and timestamp authority are all usable.
        let json = sigstore_verify::trust_root::SIGSTORE_PRODUCTION_TRUSTED_ROOT;
        let root = TrustRoot::from_json(Path::new("trusted_root.json"), json).expect("usable");
        assert!(root.has_ct_logs);
        let e = TrustRoot::from_json(Path::new("r.json"), "{}").unwrap_err();
        assert!(e.contains("not a Sigstore trusted_root.json"), "{e}");
    }

    #[test]
    fn signers_are_written_and_read_back_as_the_lock_says_them() {
        let identity = Signer::Identity {
            subject: "https://github.com/o/r/.github/workflows/a (b).yml@refs/heads/main".into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
        };
        let text = identity.to_string();
        assert_eq!(
            text,
            "https://github.com/o/r/.github/workflows/a (b).yml@refs/heads/main (issuer \
             https://token.actions.githubusercontent.com)"
        );
        assert_eq!(Signer::parse(&text), Some(identity));
        let key = Signer::Key(format!("sha256:{}", "a".repeat(64)));
        assert_eq!(Signer::parse(&key.to_string()), Some(key));
        for junk in ["", "someone", "x (issuer )", " (issuer y)"] {
            assert_eq!(Signer::parse(junk), None, "{junk}");
        }
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
