//! Signature checks of the digests the puller is about to pin or pull. What a check verified is
//! known at once to later checks (in the shared state) and handed to the caller to keep: the
//! puller saves it in the state file with its pins, so each digest is checked once per host;
//! `plan` and `status` save nothing.
//!
//! A digest counts as signed when the policy's key signed it, or signed the multi-platform
//! index the tag or lock names and the digest is that index's entry for this platform (the
//! index is content-addressed, so it vouches for what it lists): `cosign sign` signs the
//! index alone unless told `--recursive`. Signatures are fetched from the mirrors first, as
//! content is: a mirror can withhold a signature but not forge one.

use std::collections::BTreeMap;
use std::sync::Mutex;

use tracing::{info, warn};

use crate::decide::pull_plan::mirrors_first;
use crate::decide::signature::check;
use crate::io::registry::Registry;
use crate::model::failure::{Failure, FailureClass};
use crate::model::reference::ImageRef;
use crate::model::signature::Signer;
use crate::model::signature::{Check, Finding};
use crate::model::sync::Locked;
use crate::policy::config::{Config, RequiredImage};
use crate::policy::signature::{SignaturePolicy, VerifyMode};
use crate::policy::state::State;

/// What signature checks need: where signatures are, and where verifications are kept.
pub(crate) struct Verifier<'a> {
    pub(crate) registry: &'a dyn Registry,
    pub(crate) config: &'a Config,
    /// What is known: earlier verifications are looked up here, new ones added.
    pub(crate) state: &'a Mutex<State>,
    /// New verifications (digest to key fingerprint), for the caller to save.
    pub(crate) found: &'a Mutex<BTreeMap<String, String>>,
}

impl Verifier<'_> {
    /// Checks `digest` of `image` against its policy; `subject` is the digest its tag or lock
    /// names when that differs (an index). `Ok(None)`: the image has no policy. A refusal is
    /// `Ok(Some(Check::Refused))` ([`Verifier::refusal`] makes it a failure); `Err` is a
    /// registry that could not be asked.
    pub(crate) async fn verify(
        &self,
        image: &RequiredImage,
        digest: &str,
        subject: Option<&str>,
    ) -> Result<Option<Check>, Failure> {
        let Some(policy) = &image.verify else {
            return Ok(None);
        };
        let subjects: Vec<&str> = subject
            .into_iter()
            .filter(|s| *s != digest)
            .chain([digest])
            .collect();
        if let Some(signer) = self.remembered(policy, &subjects) {
            return Ok(Some(Check::Verified {
                signer,
                cached: true,
            }));
        }
        let mut found = Finding::NoSignature;
        for signed in &subjects {
            match self.check_sources(&image.reference, policy, signed).await? {
                Ok(signer) => {
                    info!(image = %image.reference, digest, signer = %signer, "signature verified");
                    // A signed index vouches for the platform digest it lists; a signed
                    // platform digest vouches for nothing else: its index may list others.
                    let vouched = if *signed == digest {
                        &subjects[subjects.len() - 1..]
                    } else {
                        &subjects[..]
                    };
                    self.remember(vouched, &signer.to_string());
                    return Ok(Some(Check::Verified {
                        signer,
                        cached: false,
                    }));
                }
                // The most telling finding: a bad payload, then a wrong key, then nothing.
                Err(f) => found = most_telling(found, f),
            }
        }
        Ok(Some(match policy.mode {
            VerifyMode::Enforce => Check::Refused { finding: found },
            VerifyMode::Warn => {
                warn!(
                    image = %image.reference,
                    digest,
                    "signature: {}; used anyway (mode = \"warn\")",
                    message(image, policy, digest, &found)
                );
                Check::Warned { finding: found }
            }
        }))
    }

    /// The failure that refuses `digest` of `image`, when `check` refused it. Its words say
    /// what was found; each caller says what follows (not locked, not pulled, kept).
    pub(crate) fn refusal(image: &RequiredImage, digest: &str, check: &Check) -> Option<Failure> {
        let (Check::Refused { finding }, Some(policy)) = (check, &image.verify) else {
            return None;
        };
        Some(Failure::new(
            FailureClass::Signature,
            message(image, policy, digest, finding),
        ))
    }

    /// Who verified one of `subjects` before, if the policy still trusts them.
    fn remembered(&self, policy: &SignaturePolicy, subjects: &[&str]) -> Option<Signer> {
        let state = self.state.locked();
        subjects
            .iter()
            .filter_map(|s| state.verified.get(*s))
            .find(|signer| policy.trusts(signer))
            .and_then(|signer| Signer::parse(signer))
    }

    /// Makes the verification known to later checks, and to the caller to save.
    fn remember(&self, subjects: &[&str], key: &str) {
        let mut state = self.state.locked();
        let mut found = self.found.locked();
        for s in subjects {
            state.verified.insert((*s).to_owned(), key.to_owned());
            found.insert((*s).to_owned(), key.to_owned());
        }
    }

    /// Who signed `digest` of `reference`'s repository, by its signatures on the mirrors
    /// first, then the origin. A mirror whose signatures do not verify (none yet, or not
    /// these) does not decide: the origin is asked. A mirror can withhold a signature or serve
    /// junk, but neither refuses a digest the origin has signed. `Err`: the origin could not
    /// be asked (and no mirror had a signature that verifies).
    async fn check_sources(
        &self,
        reference: &ImageRef,
        policy: &SignaturePolicy,
        digest: &str,
    ) -> Result<Result<Signer, Finding>, Failure> {
        let mut found = Finding::NoSignature;
        for name in mirrors_first(reference, &self.config.registries) {
            let signed: ImageRef = format!("{name}@{digest}")
                .parse()
                .map_err(|e| Failure::new(FailureClass::Engine, format!("{e}")))?;
            let origin = signed.registry() == reference.registry();
            let signatures = match self.registry.signatures(&signed).await {
                Ok(signatures) => signatures,
                // A mirror that cannot be asked is passed over, as for content.
                Err(_) if !origin => continue,
                Err(f) => return Err(f),
            };
            match check(digest, &signatures, &policy.keys, policy.keyless.as_ref()) {
                Ok(signer) => return Ok(Ok(signer)),
                Err(f) => found = most_telling(found, f),
            }
        }
        Ok(Err(found))
    }
}

/// The finding to report of two: a bad payload says most, then a wrong key.
fn most_telling(a: Finding, b: Finding) -> Finding {
    let rank = |f: &Finding| match f {
        Finding::NoSignature => 0,
        Finding::WrongKey { .. } => 1,
        Finding::Untrusted { .. } => 2,
        Finding::BadPayload { .. } => 3,
    };
    if rank(&b) > rank(&a) { b } else { a }
}

/// "name@digest is not signed by KEYS: found FINDING".
fn message(
    image: &RequiredImage,
    policy: &SignaturePolicy,
    digest: &str,
    found: &Finding,
) -> String {
    format!(
        "{}@{digest} is not signed by {}: found {found}",
        image.reference.name(),
        policy.describe_keys()
    )
}
