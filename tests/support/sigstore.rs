//! The tests' own Sigstore, offline: a certificate authority standing in for Fulcio, issuing
//! short-lived certificates that name an identity and its OIDC issuer, and a transparency log
//! standing in for Rekor, which records each signature in a Merkle tree and signs checkpoints
//! and entry timestamps with its own key. Bundles are assembled as cosign 3 writes them
//! (a DSSE envelope over an in-toto statement, with the certificate and the log entry), and
//! the trust root as Sigstore's `trusted_root.json` names its CAs and logs.
//!
//! Shared by the unit tests (`src/decide/signature/tests.rs` includes this file) and the
//! integration tests (`tests/support`), so both check the same bundles.

// Each includer uses only part of it.
#![allow(dead_code)]

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair as _};
use base64::Engine as _;
use rcgen::{
    BasicConstraints, CertificateParams, CustomExtension, DistinguishedName,
    ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use sha2::Digest as _;

/// Fulcio's OIDC issuer extensions: the legacy raw one and the current DER UTF8String.
const ISSUER_V1: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 1];
const ISSUER_V2: &[u64] = &[1, 3, 6, 1, 4, 1, 57264, 1, 8];

/// The predicate of a cosign image signature.
pub(crate) const SIGN_PREDICATE: &str = "https://sigstore.dev/cosign/sign/v1";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    sha2::Sha256::digest(bytes).into()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Seconds since the epoch, now.
pub(crate) fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn time(secs: i64) -> time::OffsetDateTime {
    time::OffsetDateTime::from_unix_timestamp(secs).expect("a valid time")
}

/// A certificate a test signs with: its DER, and its key.
pub(crate) struct Leaf {
    pub(crate) der: Vec<u8>,
    key: KeyPair,
}

impl Leaf {
    /// The certificate as PEM, as Rekor's entries name their verifier.
    fn pem(&self) -> String {
        let body = b64(&self.der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).expect("base64 is ASCII"))
            .collect();
        format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        )
    }
}

/// What the log entry of a bundle is like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LogEntry {
    /// Recorded, with an inclusion proof, a signed checkpoint and a signed entry timestamp.
    Logged,
    /// No log entry at all.
    Missing,
    /// A checkpoint whose signature is not the log's.
    ForgedCheckpoint,
    /// An inclusion proof that does not lead to the checkpoint's root.
    ForgedProof,
}

/// A CA and a log, with the keys to issue and record.
pub(crate) struct TestSigstore {
    ca_key: KeyPair,
    ca_params: CertificateParams,
    ca_der: Vec<u8>,
    /// The log's key, as PKCS#8 (a CA of its own may share a log: [`TestSigstore::other_ca`]).
    log_pkcs8: Vec<u8>,
    log_spki: Vec<u8>,
}

impl TestSigstore {
    /// A new CA (valid from a year ago for two years) and a new log key.
    pub(crate) fn new(name: &str) -> TestSigstore {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &rng)
            .expect("a log key")
            .as_ref()
            .to_vec();
        TestSigstore::with_log(name, pkcs8)
    }

    /// Another CA, whose certificates this one's trust root does not vouch for, recording in
    /// the same log.
    pub(crate) fn other_ca(&self, name: &str) -> TestSigstore {
        TestSigstore::with_log(name, self.log_pkcs8.clone())
    }

    fn log_key(&self) -> EcdsaKeyPair {
        EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &self.log_pkcs8)
            .expect("the log key")
    }

    fn with_log(name: &str, log_pkcs8: Vec<u8>) -> TestSigstore {
        let ca_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a CA key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        let mut dn = DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "stowage tests");
        dn.push(rcgen::DnType::CommonName, format!("{name} CA"));
        ca_params.distinguished_name = dn;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        ca_params.not_before = time(now() - 365 * 86_400);
        ca_params.not_after = time(now() + 365 * 86_400);
        let ca_der = ca_params
            .self_signed(&ca_key)
            .expect("a self-signed CA")
            .der()
            .to_vec();
        let log_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_ASN1_SIGNING, &log_pkcs8)
            .expect("a log key");
        let log_spki = log_key
            .public_key()
            .as_der()
            .expect("an encodable key")
            .as_ref()
            .to_vec();
        TestSigstore {
            ca_key,
            ca_params,
            ca_der,
            log_pkcs8,
            log_spki,
        }
    }

    /// The log's ID: SHA-256 of its key's SubjectPublicKeyInfo, as Rekor's.
    fn log_id(&self) -> [u8; 32] {
        sha256(&self.log_spki)
    }

    /// The trust root naming this CA and this log, as `trusted_root.json`.
    pub(crate) fn trusted_root(&self) -> String {
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.trustedroot+json;version=0.1",
            "tlogs": [{
                "baseUrl": "https://rekor.stowage.test",
                "hashAlgorithm": "SHA2_256",
                "publicKey": {
                    "rawBytes": b64(&self.log_spki),
                    "keyDetails": "PKIX_ECDSA_P256_SHA_256",
                    "validFor": { "start": "2020-01-01T00:00:00Z" },
                },
                "logId": { "keyId": b64(&self.log_id()) },
            }],
            "certificateAuthorities": [{
                "subject": { "organization": "stowage tests", "commonName": "stowage test CA" },
                "uri": "https://fulcio.stowage.test",
                "certChain": { "certificates": [{ "rawBytes": b64(&self.ca_der) }] },
                "validFor": { "start": "2020-01-01T00:00:00Z" },
            }],
            "ctlogs": [],
            "timestampAuthorities": [],
        })
        .to_string()
    }

    /// A code-signing certificate for `subject` (a URI), vouched for by `issuer`, valid from
    /// `not_before` to `not_after` (seconds), as Fulcio issues them.
    pub(crate) fn leaf(
        &self,
        subject: &str,
        issuer: &str,
        not_before: i64,
        not_after: i64,
    ) -> Leaf {
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("a leaf key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("leaf params");
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(subject.try_into().expect("an IA5 subject"))];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::CodeSigning];
        params.not_before = time(not_before);
        params.not_after = time(not_after);
        let mut utf8 = vec![0x0c, u8::try_from(issuer.len()).expect("a short issuer")];
        utf8.extend_from_slice(issuer.as_bytes());
        params.custom_extensions = vec![
            CustomExtension::from_oid_content(ISSUER_V1, issuer.as_bytes().to_vec()),
            CustomExtension::from_oid_content(ISSUER_V2, utf8),
        ];
        let ca = Issuer::from_params(&self.ca_params, &self.ca_key);
        let der = params
            .signed_by(&key, &ca)
            .expect("a leaf certificate")
            .der()
            .to_vec();
        Leaf { der, key }
    }

    /// A leaf valid for ten minutes from five minutes ago, as Fulcio's are.
    pub(crate) fn fresh_leaf(&self, subject: &str, issuer: &str) -> Leaf {
        self.leaf(subject, issuer, now() - 300, now() + 300)
    }

    /// A bundle of `statement` signed with `leaf`, logged at `integrated_time` as `entry`
    /// says.
    pub(crate) fn bundle(
        &self,
        leaf: &Leaf,
        statement: &[u8],
        integrated_time: i64,
        entry: LogEntry,
    ) -> Vec<u8> {
        use rcgen::SigningKey as _;
        let kind = "application/vnd.in-toto+json";
        let mut pae = format!("DSSEv1 {} {kind} {} ", kind.len(), statement.len()).into_bytes();
        pae.extend_from_slice(statement);
        let signature = leaf.key.sign(&pae).expect("a signature");
        let tlog: Vec<serde_json::Value> = match entry {
            LogEntry::Missing => Vec::new(),
            _ => vec![self.log_entry(leaf, statement, &signature, integrated_time, entry)],
        };
        serde_json::json!({
            "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
            "verificationMaterial": {
                "certificate": { "rawBytes": b64(&leaf.der) },
                "tlogEntries": tlog,
            },
            "dsseEnvelope": {
                "payload": b64(statement),
                "payloadType": kind,
                "signatures": [{ "sig": b64(&signature) }],
            },
        })
        .to_string()
        .into_bytes()
    }

    /// The log's entry for a signature: a Rekor `dsse` body, recorded as leaf 5 of 7.
    fn log_entry(
        &self,
        leaf: &Leaf,
        statement: &[u8],
        signature: &[u8],
        integrated_time: i64,
        entry: LogEntry,
    ) -> serde_json::Value {
        let body = serde_json::json!({
            "apiVersion": "0.0.1",
            "kind": "dsse",
            "spec": {
                "envelopeHash": { "algorithm": "sha256", "value": hex(&sha256(statement)) },
                "payloadHash": { "algorithm": "sha256", "value": hex(&sha256(statement)) },
                "signatures": [{ "signature": b64(signature), "verifier": b64(leaf.pem().as_bytes()) }],
            },
        })
        .to_string();
        let (index, size) = (5usize, 7usize);
        let mut leaves: Vec<[u8; 32]> = (0..size)
            .map(|i| leaf_hash(format!("another entry {i}").as_bytes()))
            .collect();
        leaves[index] = leaf_hash(body.as_bytes());
        let root = tree_root(&leaves);
        let mut proof = inclusion_proof(index, &leaves);
        if entry == LogEntry::ForgedProof {
            proof[0] = sha256(b"not the sibling");
        }
        let global_index = 100_000 + index;
        let origin = "rekor.stowage.test - 4242";
        let note = format!("{origin}\n{size}\n{}\n", b64(&root));
        let log_key = self.log_key();
        let signer = match entry {
            LogEntry::ForgedCheckpoint => {
                EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING).expect("a key")
            }
            _ => self.log_key(),
        };
        let mut signed = self.log_id()[..4].to_vec();
        signed.extend_from_slice(sign(&signer, note.as_bytes()).as_slice());
        let checkpoint = format!("{note}\n\u{2014} rekor.stowage.test {}\n", b64(&signed));
        // The signed entry timestamp: the log's promise, over RFC 8785 JSON (keys sorted).
        let promise = format!(
            "{{\"body\":\"{}\",\"integratedTime\":{integrated_time},\"logID\":\"{}\",\"logIndex\":{global_index}}}",
            b64(body.as_bytes()),
            hex(&self.log_id())
        );
        serde_json::json!({
            "logIndex": global_index.to_string(),
            "logId": { "keyId": b64(&self.log_id()) },
            "kindVersion": { "kind": "dsse", "version": "0.0.1" },
            "integratedTime": integrated_time.to_string(),
            "inclusionPromise": { "signedEntryTimestamp": b64(&sign(&log_key, promise.as_bytes())) },
            "inclusionProof": {
                "logIndex": index.to_string(),
                "rootHash": b64(&root),
                "treeSize": size.to_string(),
                "hashes": proof.iter().map(|h| b64(h)).collect::<Vec<_>>(),
                "checkpoint": { "envelope": checkpoint },
            },
            "canonicalizedBody": b64(body.as_bytes()),
        })
    }
}

/// An ECDSA P-256 signature (DER) of `message`.
fn sign(key: &EcdsaKeyPair, message: &[u8]) -> Vec<u8> {
    key.sign(&SystemRandom::new(), message)
        .expect("a signature")
        .as_ref()
        .to_vec()
}

/// An in-toto statement of `digest` with `predicate_type`, as cosign 3 writes it.
pub(crate) fn statement(digest: &str, predicate_type: &str) -> Vec<u8> {
    let hex = digest.trim_start_matches("sha256:");
    serde_json::json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{ "digest": { "sha256": hex }, "annotations": {} }],
        "predicateType": predicate_type,
        "predicate": {},
    })
    .to_string()
    .into_bytes()
}

/// RFC 6962: a leaf's hash.
fn leaf_hash(data: &[u8]) -> [u8; 32] {
    let mut bytes = vec![0u8];
    bytes.extend_from_slice(data);
    sha256(&bytes)
}

/// RFC 6962: an inner node's hash.
fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut bytes = vec![1u8];
    bytes.extend_from_slice(left);
    bytes.extend_from_slice(right);
    sha256(&bytes)
}

/// The largest power of two below `n` (n > 1): where RFC 6962 splits a tree.
fn split(n: usize) -> usize {
    let mut k = 1;
    while k * 2 < n {
        k *= 2;
    }
    k
}

fn tree_root(leaves: &[[u8; 32]]) -> [u8; 32] {
    match leaves.len() {
        1 => leaves[0],
        n => {
            let k = split(n);
            node_hash(&tree_root(&leaves[..k]), &tree_root(&leaves[k..]))
        }
    }
}

/// RFC 6962's audit path of leaf `index`, from the leaf up.
fn inclusion_proof(index: usize, leaves: &[[u8; 32]]) -> Vec<[u8; 32]> {
    if leaves.len() <= 1 {
        return Vec::new();
    }
    let k = split(leaves.len());
    if index < k {
        let mut path = inclusion_proof(index, &leaves[..k]);
        path.push(tree_root(&leaves[k..]));
        path
    } else {
        let mut path = inclusion_proof(index - k, &leaves[k..]);
        path.push(tree_root(&leaves[..k]));
        path
    }
}
