use super::*;
use crate::policy::signature::test_keys::{pair, payload, sign};
use proptest::prelude::*;

const D: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const E: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn layer(payload: Vec<u8>, signature: Option<String>) -> SignatureLayer {
    SignatureLayer { payload, signature }
}

#[test]
fn a_signature_by_a_policy_key_over_this_digest_verifies() {
    let (signer, key) = pair("release.pub");
    let (_, other) = pair("other.pub");
    let p = payload(D);
    let layers = [layer(p.clone(), Some(sign(&signer, &p)))];
    assert_eq!(
        check(D, &layers, &[&other, &key]),
        Ok(key.fingerprint.clone())
    );
}

#[test]
fn no_layer_is_no_signature() {
    let (_, key) = pair("k.pub");
    assert_eq!(check(D, &[], &[&key]), Err(Finding::NoSignature));
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
        check(D, &layers, &[&key]),
        Err(Finding::WrongKey { signatures: 3 })
    );
}

#[test]
fn a_valid_signature_of_another_digest_does_not_vouch_for_this_one() {
    let (signer, key) = pair("k.pub");
    let p = payload(E);
    let layers = [layer(p.clone(), Some(sign(&signer, &p)))];
    match check(D, &layers, &[&key]) {
        Err(Finding::BadPayload { why }) => assert!(why.contains(E), "{why}"),
        other => panic!("{other:?}"),
    }
    let p = br#"{"critical":{"type":"something else","image":{"docker-manifest-digest":"x"}}}"#;
    let layers = [layer(p.to_vec(), Some(sign(&signer, p)))];
    assert!(matches!(
        check(D, &layers, &[&key]),
        Err(Finding::BadPayload { .. })
    ));
}

#[test]
fn a_wrapped_base64_signature_still_verifies() {
    let (signer, key) = pair("k.pub");
    let p = payload(D);
    let sig = sign(&signer, &p);
    let wrapped = format!("{}\n{}\n", &sig[..20], &sig[20..]);
    assert!(check(D, &[layer(p, Some(wrapped))], &[&key]).is_ok());
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
    assert_eq!(check(D, &layers, &[&key]), Ok(key.fingerprint.clone()));
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
        let result = check(D, &[layer(changed, Some(signature))], &[&key]);
        prop_assert_eq!(result, Err(Finding::WrongKey { signatures: 1 }));
    }
}
