use super::*;
use crate::policy::signature::test_keys::{pair, payload, sign};
use proptest::prelude::*;

#[path = "../../../tests/support/sigstore.rs"]
mod sigstore;

use aws_lc_rs::signature::EcdsaKeyPair;
use sigstore::statement;

/// A Sigstore bundle of `statement`, signed with `pair` over DSSE's encoding, as
/// `cosign sign --key` makes it.
fn bundle(pair: &EcdsaKeyPair, statement: &[u8]) -> Vec<u8> {
    use base64::Engine as _;
    let kind = "application/vnd.in-toto+json";
    serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "verificationMaterial": { "publicKey": { "hint": "" } },
        "dsseEnvelope": {
            "payload": base64::engine::general_purpose::STANDARD.encode(statement),
            "payloadType": kind,
            "signatures": [{ "sig": sign(pair, &bundle::pae(kind, statement)) }],
        },
    })
    .to_string()
    .into_bytes()
}

/// A `trusted_root.json` of a test Sigstore.
pub(super) fn trusted_root() -> String {
    sigstore::TestSigstore::new("config").trusted_root()
}

const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

/// The check with keys alone, its signer as the state file writes it.
fn keyed(digest: &str, signatures: &[Signature], keys: &[&PublicKey]) -> Result<String, Finding> {
    check(digest, signatures, keys, None).map(|s| s.to_string())
}

fn layer(payload: Vec<u8>, signature: Option<String>) -> Signature {
    Signature::Legacy(SignatureLayer { payload, signature })
}

#[test]
fn a_bundle_by_a_policy_key_over_this_digest_verifies() {
    let (signer, key) = pair("release.pub");
    let (_, other) = pair("other.pub");
    let signed = [Signature::Bundle(bundle(
        &signer,
        &statement(D, bundle::SIGN_PREDICATE),
    ))];
    assert_eq!(
        keyed(D, &signed, &[&other, &key]),
        Ok(key.fingerprint.clone())
    );
    assert_eq!(
        keyed(D, &signed, &[&other]),
        Err(Finding::WrongKey { signatures: 1 })
    );
}

#[test]
fn a_bundle_for_another_digest_or_an_attestation_does_not_vouch() {
    let (signer, key) = pair("k.pub");
    let other = [Signature::Bundle(bundle(
        &signer,
        &statement(E, bundle::SIGN_PREDICATE),
    ))];
    match keyed(D, &other, &[&key]) {
        Err(Finding::BadPayload { why }) => assert!(why.contains(&E[7..]), "{why}"),
        found => panic!("{found:?}"),
    }
    let provenance = "https://slsa.dev/provenance/v1";
    let attestation = [Signature::Bundle(bundle(
        &signer,
        &statement(D, provenance),
    ))];
    match keyed(D, &attestation, &[&key]) {
        Err(Finding::BadPayload { why }) => {
            assert!(
                why.contains("attestation") && why.contains(provenance),
                "{why}"
            );
        }
        found => panic!("{found:?}"),
    }
    // Beside a real signature, the attestation is no obstacle.
    let both = [
        attestation[0].clone(),
        Signature::Bundle(bundle(&signer, &statement(D, bundle::SIGN_PREDICATE))),
    ];
    assert_eq!(keyed(D, &both, &[&key]), Ok(key.fingerprint.clone()));
}

#[test]
fn the_envelope_signs_the_pre_authentication_encoding_not_the_bare_payload() {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (signer, key) = pair("k.pub");
    let payload = statement(D, bundle::SIGN_PREDICATE);
    // Signed over the payload alone, as a legacy signature is: not a DSSE signature.
    let json = serde_json::json!({
        "mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json",
        "dsseEnvelope": {
            "payload": b64.encode(&payload),
            "payloadType": "application/vnd.in-toto+json",
            "signatures": [{ "sig": sign(&signer, &payload) }],
        },
    });
    let signed = [Signature::Bundle(json.to_string().into_bytes())];
    assert_eq!(
        keyed(D, &signed, &[&key]),
        Err(Finding::WrongKey { signatures: 1 })
    );
    assert_eq!(
        bundle::pae("t/x", b"hello"),
        b"DSSEv1 3 t/x 5 hello".to_vec(),
        "the encoding of the DSSE specification"
    );
}

#[test]
fn an_unreadable_bundle_counts_as_a_signature_that_does_not_verify() {
    let (_, key) = pair("k.pub");
    let junk = [
        Signature::Bundle(b"not json".to_vec()),
        Signature::Bundle(br#"{"dsseEnvelope": {"payload": "!", "payloadType": "x"}}"#.to_vec()),
    ];
    assert_eq!(
        keyed(D, &junk, &[&key]),
        Err(Finding::WrongKey { signatures: 2 })
    );
    // A blob signature is no image signature, and says so.
    let blob = [Signature::Bundle(br#"{"messageSignature": {}}"#.to_vec())];
    assert!(matches!(
        keyed(D, &blob, &[&key]),
        Err(Finding::Untrusted { why }) if why.contains("messageSignature")
    ));
}

#[test]
fn a_signature_by_a_policy_key_over_this_digest_verifies() {
    let (signer, key) = pair("release.pub");
    let (_, other) = pair("other.pub");
    let p = payload(D);
    let layers = [layer(p.clone(), Some(sign(&signer, &p)))];
    assert_eq!(
        keyed(D, &layers, &[&other, &key]),
        Ok(key.fingerprint.clone())
    );
}

#[test]
fn no_layer_is_no_signature() {
    let (_, key) = pair("k.pub");
    assert_eq!(keyed(D, &[], &[&key]), Err(Finding::NoSignature));
}

#[test]
fn another_key_is_the_wrong_key() {
    let (signer, _) = pair("theirs.pub");
    let (_, key) = pair("ours.pub");
    let p = payload(D);
    let layers = [
        layer(p.clone(), Some(sign(&signer, &p))),
        layer(p.clone(), None),
        layer(p.clone(), Some("not base64!".into())),
    ];
    assert_eq!(
        keyed(D, &layers, &[&key]),
        Err(Finding::WrongKey { signatures: 3 })
    );
}

#[test]
fn a_valid_signature_of_another_digest_does_not_vouch_for_this_one() {
    let (signer, key) = pair("k.pub");
    let p = payload(E);
    let layers = [layer(p.clone(), Some(sign(&signer, &p)))];
    match keyed(D, &layers, &[&key]) {
        Err(Finding::BadPayload { why }) => assert!(why.contains(E), "{why}"),
        other => panic!("{other:?}"),
    }
    let p = br#"{"critical":{"type":"something else","image":{"docker-manifest-digest":"x"}}}"#;
    let layers = [layer(p.to_vec(), Some(sign(&signer, p)))];
    assert!(matches!(
        keyed(D, &layers, &[&key]),
        Err(Finding::BadPayload { .. })
    ));
}

#[test]
fn a_wrapped_base64_signature_still_verifies() {
    let (signer, key) = pair("k.pub");
    let p = payload(D);
    let sig = sign(&signer, &p);
    let wrapped = format!("{}\n{}\n", &sig[..20], &sig[20..]);
    assert!(keyed(D, &[layer(p, Some(wrapped))], &[&key]).is_ok());
}

#[test]
fn one_good_signature_among_others_is_enough() {
    let (signer, key) = pair("k.pub");
    let (stranger, _) = pair("s.pub");
    let good = payload(D);
    let layers = [
        layer(payload(E), Some(sign(&signer, &payload(E)))),
        layer(good.clone(), Some(sign(&stranger, &good))),
        layer(good.clone(), Some(sign(&signer, &good))),
    ];
    assert_eq!(keyed(D, &layers, &[&key]), Ok(key.fingerprint.clone()));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any change to a signed payload's bytes breaks its signature: a payload is never
    /// accepted on the strength of another's signature.
    #[test]
    fn a_changed_payload_never_verifies(at in 0usize..200, bit in 0u8..8) {
        let (signer, key) = pair("k.pub");
        let p = payload(D);
        let signature = sign(&signer, &p);
        let mut changed = p.clone();
        let at = at % changed.len();
        changed[at] ^= 1 << bit;
        let result = keyed(D, &[layer(changed, Some(signature))], &[&key]);
        prop_assert_eq!(result, Err(Finding::WrongKey { signatures: 1 }));
    }

    /// Likewise for a bundle: any change to its statement breaks the envelope's signature.
    #[test]
    fn a_changed_statement_never_verifies(at in 0usize..300, bit in 0u8..8) {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD;
        let (signer, key) = pair("k.pub");
        let json = bundle(&signer, &statement(D, bundle::SIGN_PREDICATE));
        let mut value: serde_json::Value = serde_json::from_slice(&json).unwrap();
        let mut payload = b64
            .decode(value["dsseEnvelope"]["payload"].as_str().unwrap())
            .unwrap();
        let at = at % payload.len();
        payload[at] ^= 1 << bit;
        value["dsseEnvelope"]["payload"] = b64.encode(&payload).into();
        let changed = [Signature::Bundle(value.to_string().into_bytes())];
        prop_assert_eq!(
            keyed(D, &changed, &[&key]),
            Err(Finding::WrongKey { signatures: 1 })
        );
    }
}

/// The order of P-256, big-endian.
const N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// The two INTEGERs of a DER ECDSA signature, as 32-byte big-endian numbers.
fn der_integers(der: &[u8]) -> ([u8; 32], [u8; 32]) {
    let mut at = 2;
    let mut read = || {
        assert_eq!(der[at], 0x02, "an INTEGER");
        let len = usize::from(der[at + 1]);
        let bytes = &der[at + 2..at + 2 + len];
        at += 2 + len;
        let bytes = &bytes[bytes.len().saturating_sub(32)..];
        let mut out = [0u8; 32];
        out[32 - bytes.len()..].copy_from_slice(bytes);
        out
    };
    (read(), read())
}

/// A DER ECDSA signature of `r` and `s`.
fn der_signature(r: &[u8; 32], s: &[u8; 32]) -> Vec<u8> {
    let integer = |v: &[u8; 32]| {
        let start = v.iter().position(|b| *b != 0).unwrap_or(31);
        let mut out = vec![0x02];
        let body = &v[start..];
        let pad = body[0] & 0x80 != 0;
        out.push(u8::try_from(body.len() + usize::from(pad)).unwrap());
        if pad {
            out.push(0);
        }
        out.extend_from_slice(body);
        out
    };
    let (r, s) = (integer(r), integer(s));
    let mut out = vec![0x30, u8::try_from(r.len() + s.len()).unwrap()];
    out.extend(r);
    out.extend(s);
    out
}

/// `N - s`.
fn negate(s: &[u8; 32]) -> [u8; 32] {
    let mut out = [0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = u8::try_from(d).unwrap();
    }
    out
}

#[test]
fn a_high_s_signature_verifies_as_cosign_writes_them() {
    // Go's crypto/ecdsa, which cosign uses, does not normalise S: (r, s) and (r, n - s) are
    // both valid, and about half of cosign's signatures have the "high" one.
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (signer, key) = pair("k.pub");
    let p = payload(D);
    let der = b64.decode(sign(&signer, &p)).unwrap();
    let (r, s) = der_integers(&der);
    assert_eq!(der_signature(&r, &s), der, "the DER round-trips");
    let flipped = b64.encode(der_signature(&r, &negate(&s)));
    assert_eq!(
        keyed(D, &[layer(p, Some(flipped))], &[&key]),
        Ok(key.fingerprint.clone())
    );
}

mod keyless {
    //! Certificate-signed bundles from the tests' own Sigstore (`tests/support/sigstore.rs`):
    //! a CA and a log made on the spot, and bundles as cosign 3 writes them.

    use std::path::Path;
    use std::sync::Arc;

    use super::sigstore::{LogEntry, SIGN_PREDICATE, TestSigstore, now, statement};
    use super::*;
    use crate::policy::signature::{Identity, Keyless, SubjectMatch, TrustRoot};

    const WORKFLOW: &str =
        "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main";
    const ACTIONS: &str = "https://token.actions.githubusercontent.com";

    fn exact(subject: &str, issuer: &str) -> Identity {
        Identity {
            issuer: issuer.into(),
            subject: SubjectMatch::Exact(subject.into()),
        }
    }

    fn trusting(sigstore: &TestSigstore, identities: Vec<Identity>, require_tlog: bool) -> Keyless {
        let root = TrustRoot::from_json(Path::new("trusted_root.json"), &sigstore.trusted_root())
            .expect("a valid trust root");
        Keyless {
            identities,
            trust_root: Arc::new(root),
            require_tlog,
        }
    }

    /// The check of `bundle` for digest D under `keyless` alone.
    fn verify(keyless: &Keyless, bundle: Vec<u8>) -> Result<Signer, Finding> {
        let no_keys: &[&PublicKey] = &[];
        check(D, &[Signature::Bundle(bundle)], no_keys, Some(keyless))
    }

    /// A bundle of D by `subject`, logged a minute ago.
    fn signed_by(sigstore: &TestSigstore, subject: &str, issuer: &str, entry: LogEntry) -> Vec<u8> {
        let leaf = sigstore.fresh_leaf(subject, issuer);
        sigstore.bundle(&leaf, &statement(D, SIGN_PREDICATE), now() - 60, entry)
    }

    fn untrusted(found: Result<Signer, Finding>) -> String {
        match found {
            Err(Finding::Untrusted { why }) => why,
            other => panic!("not refused as untrusted: {other:?}"),
        }
    }

    #[test]
    fn the_right_identity_verifies_exactly_or_by_pattern() {
        let sigstore = TestSigstore::new("fulcio");
        let bundle = signed_by(&sigstore, WORKFLOW, ACTIONS, LogEntry::Logged);
        let signer = Signer::Identity {
            subject: WORKFLOW.into(),
            issuer: ACTIONS.into(),
        };
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        assert_eq!(verify(&keyless, bundle.clone()), Ok(signer.clone()));
        let pattern = Identity {
            issuer: ACTIONS.into(),
            subject: SubjectMatch::Regex(
                regex::Regex::new(r"^https://github\.com/org/.*@refs/heads/main$").unwrap(),
            ),
        };
        let keyless = trusting(&sigstore, vec![pattern], true);
        assert_eq!(verify(&keyless, bundle.clone()), Ok(signer));
        // A key-only policy takes no certificate for a key.
        let (_, key) = pair("k.pub");
        assert_eq!(
            keyed(D, &[Signature::Bundle(bundle)], &[&key]),
            Err(Finding::WrongKey { signatures: 1 })
        );
    }

    #[test]
    fn another_subject_or_issuer_is_refused_and_named() {
        let sigstore = TestSigstore::new("fulcio");
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        let fork = "https://github.com/fork/app/.github/workflows/release.yml@refs/heads/main";
        let why = untrusted(verify(
            &keyless,
            signed_by(&sigstore, fork, ACTIONS, LogEntry::Logged),
        ));
        assert!(
            why.contains(fork) && why.contains("not one of these identities"),
            "{why}"
        );
        let gitlab = "https://gitlab.com";
        let why = untrusted(verify(
            &keyless,
            signed_by(&sigstore, WORKFLOW, gitlab, LogEntry::Logged),
        ));
        assert!(why.contains("(issuer https://gitlab.com)"), "{why}");
    }

    #[test]
    fn a_certificate_from_another_ca_is_refused() {
        let ours = TestSigstore::new("fulcio");
        let theirs = ours.other_ca("elsewhere");
        let keyless = trusting(&ours, vec![exact(WORKFLOW, ACTIONS)], true);
        let why = untrusted(verify(
            &keyless,
            signed_by(&theirs, WORKFLOW, ACTIONS, LogEntry::Logged),
        ));
        assert!(why.contains("certificate"), "{why}");
    }

    #[test]
    fn a_certificate_expired_when_it_was_logged_is_refused() {
        let sigstore = TestSigstore::new("fulcio");
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        let leaf = sigstore.leaf(WORKFLOW, ACTIONS, now() - 3_600, now() - 3_000);
        let late = sigstore.bundle(
            &leaf,
            &statement(D, SIGN_PREDICATE),
            now() - 600,
            LogEntry::Logged,
        );
        let why = untrusted(verify(&keyless, late));
        assert!(
            why.contains("at the time of signing") && why.contains("Expired"),
            "{why}"
        );
    }

    #[test]
    fn a_missing_or_forged_log_proof_is_refused() {
        let sigstore = TestSigstore::new("fulcio");
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        for (entry, words) in [
            (LogEntry::Missing, "inclusion proof"),
            (LogEntry::ForgedCheckpoint, "checkpoint"),
            (LogEntry::ForgedProof, "inclusion proof"),
        ] {
            let why = untrusted(verify(
                &keyless,
                signed_by(&sigstore, WORKFLOW, ACTIONS, entry),
            ));
            assert!(why.to_lowercase().contains(words), "{entry:?}: {why}");
        }
    }

    #[test]
    fn require_tlog_false_waives_the_inclusion_proof_but_not_a_time_of_signing() {
        // For a private CA that runs no full log: the inclusion proof is not checked, but the
        // time of signing must still come from something signed (an entry timestamp here, or
        // a timestamp authority of the trust root).
        let sigstore = TestSigstore::new("private");
        let lax = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], false);
        let strict = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        let unproven = signed_by(&sigstore, WORKFLOW, ACTIONS, LogEntry::ForgedProof);
        assert!(verify(&lax, unproven.clone()).is_ok());
        assert!(verify(&strict, unproven).is_err());
        let why = untrusted(verify(
            &lax,
            signed_by(&sigstore, WORKFLOW, ACTIONS, LogEntry::Missing),
        ));
        assert!(why.contains("timestamp"), "{why}");
    }

    #[test]
    fn a_blob_signature_beside_the_envelope_is_refused_whatever_the_envelope_says() {
        // sigstore-verify checks the first content of a bundle it finds; a blob signature
        // there must not lend its verification to an unsigned envelope beside it.
        let sigstore = TestSigstore::new("fulcio");
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        let bundle = signed_by(&sigstore, WORKFLOW, ACTIONS, LogEntry::Logged);
        let mut value: serde_json::Value = serde_json::from_slice(&bundle).unwrap();
        value["messageSignature"] = serde_json::json!({
            "messageDigest": { "algorithm": "SHA2_256", "digest": "AAAA" },
            "signature": "AAAA",
        });
        let why = untrusted(verify(&keyless, value.to_string().into_bytes()));
        assert!(why.contains("messageSignature"), "{why}");
    }

    #[test]
    fn an_attestation_or_another_digest_is_not_a_signature_of_this_one() {
        let sigstore = TestSigstore::new("fulcio");
        let keyless = trusting(&sigstore, vec![exact(WORKFLOW, ACTIONS)], true);
        let leaf = sigstore.fresh_leaf(WORKFLOW, ACTIONS);
        let provenance = statement(D, "https://slsa.dev/provenance/v1");
        let attestation = sigstore.bundle(&leaf, &provenance, now() - 60, LogEntry::Logged);
        match verify(&keyless, attestation) {
            Err(Finding::BadPayload { why }) => assert!(why.contains("attestation"), "{why}"),
            other => panic!("{other:?}"),
        }
        let other = sigstore.bundle(
            &leaf,
            &statement(E, SIGN_PREDICATE),
            now() - 60,
            LogEntry::Logged,
        );
        assert!(verify(&keyless, other).is_err());
    }
}
