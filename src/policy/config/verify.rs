//! Validation of signature policies: `[[verify]]` defaults by name pattern, and an image's own
//! `verify = { ... }` over them. Key files are read here, once each, so a missing or wrong key
//! is a config problem at its line, before anything runs.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use toml::Spanned;

use super::raw::{RawIdentity, RawImageVerify, RawVerify};
use super::validator::Validator;
use crate::model::problem::line_col;
use crate::model::reference::ImageRef;
use crate::policy::keep::{NameMatcher, compile_keep, glob_without_tag_or_digest};
use crate::policy::signature::{
    Identity, Keyless, PublicKey, SignaturePolicy, SubjectMatch, TrustRoot, VerifyMode,
};

/// A `[[verify]]` entry, validated. The first whose pattern matches an image applies.
#[derive(Debug, Clone)]
pub(super) struct VerifyRule {
    matcher: NameMatcher,
    /// `None`: `mode = "off"`, these images are not verified.
    mode: Option<VerifyMode>,
    keys: Vec<Arc<PublicKey>>,
    keyless: Option<Keyless>,
    /// The cooldown of new digests for the images it matches: `None` when not written,
    /// `Some(None)` for "0s" (none, over a broader entry's).
    min_digest_age: Option<Option<Duration>>,
    /// It sets only `min_digest_age`: it says nothing of signatures, so the signature policy
    /// comes from the next entry that matches.
    cooldown_only: bool,
    line: usize,
}

impl Validator<'_> {
    /// The `[[verify]]` entries, in the order written.
    pub(super) fn verify_rules(&mut self, raw: Vec<RawVerify>) -> Vec<VerifyRule> {
        raw.into_iter()
            .filter_map(|r| self.verify_rule(r))
            .collect()
    }

    fn verify_rule(&mut self, raw: RawVerify) -> Option<VerifyRule> {
        let pattern = raw.pattern.get_ref();
        let matcher = match (compile_keep(pattern), glob_without_tag_or_digest(pattern)) {
            (Ok(_), Some(name)) => {
                self.problem(
                    raw.pattern.span(),
                    format!(
                        "verify.match: invalid pattern \"{pattern}\": it is matched against \
                         registry/repository, where a tag or digest never appears: write \
                         \"{name}\" (a signature vouches for a digest, whatever its tag)"
                    ),
                );
                None
            }
            (Ok(m), None) => Some(m),
            (Err(e), _) => {
                self.problem(
                    raw.pattern.span(),
                    format!("verify.match: invalid pattern \"{pattern}\": {e}"),
                );
                None
            }
        };
        let mode = match &raw.mode {
            Some(m) => self.verify_mode("verify.mode", m)?,
            None => Some(VerifyMode::Enforce),
        };
        let keys = self.verify_keys("verify.keys", &raw.keys)?;
        let keyless = self.keyless(
            "verify",
            raw.pattern.span(),
            (!raw.identities.is_empty()).then_some(&raw.identities[..]),
            raw.trust_root.as_ref(),
            raw.require_tlog,
            None,
        )?;
        let line = line_col(self.text(), raw.pattern.span().start).0;
        // An entry that only sets a cooldown verifies nothing: no keys are needed for it.
        let cooldown_only = keys.is_empty()
            && keyless.is_none()
            && raw.mode.is_none()
            && raw.min_digest_age.is_some();
        let min_digest_age = raw
            .min_digest_age
            .is_some()
            .then(|| self.min_digest_age("verify.min_digest_age", raw.min_digest_age));
        let mode = if cooldown_only { None } else { mode };
        if mode.is_some() && keys.is_empty() && keyless.is_none() {
            self.problem(
                raw.pattern.span(),
                "verify: no keys: name the public keys (`keys = [\"/etc/stowage/cosign.pub\"]`) \
                 or the identities (`identities = [...]` with a `trust_root`) a signature must \
                 be made with, or set mode = \"off\""
                    .to_owned(),
            );
            return None;
        }
        Some(VerifyRule {
            matcher: matcher?,
            mode,
            keys,
            keyless,
            min_digest_age,
            cooldown_only,
            line,
        })
    }

    /// The keyless part of a policy: `identities` checked against `trust_root`, each
    /// inherited from `inherited` (the matching `[[verify]]` entry) when not written.
    /// `Some(None)`: none; `None`: a problem was reported.
    fn keyless(
        &mut self,
        prefix: &str,
        span: std::ops::Range<usize>,
        identities: Option<&[Spanned<RawIdentity>]>,
        trust_root: Option<&Spanned<String>>,
        require_tlog: Option<bool>,
        inherited: Option<&Keyless>,
    ) -> Option<Option<Keyless>> {
        let identities = match identities {
            Some(raw) => self.identities(prefix, raw)?,
            None => inherited.map(|k| k.identities.clone()).unwrap_or_default(),
        };
        let root = match trust_root {
            Some(path) => Some(self.trust_root(&format!("{prefix}.trust_root"), path)?),
            None => inherited.map(|k| k.trust_root.clone()),
        };
        match (identities.is_empty(), root) {
            (true, None) => Some(None),
            (false, Some(trust_root)) => Some(Some(Keyless {
                identities,
                trust_root,
                require_tlog: require_tlog
                    .or(inherited.map(|k| k.require_tlog))
                    .unwrap_or(true),
            })),
            (false, None) => {
                self.problem(
                    span,
                    format!(
                        "{prefix}.identities: no trust_root: name the Sigstore trusted_root.json \
                         (the certificate authorities and logs) the identities' certificates are \
                         checked against"
                    ),
                );
                None
            }
            (true, Some(_)) => {
                self.problem(
                    span,
                    format!(
                        "{prefix}.trust_root: no identities: name who may sign \
                         (`identities = [{{ issuer = \"...\", subject = \"...\" }}]`)"
                    ),
                );
                None
            }
        }
    }

    /// `identities = [...]`, each with its issuer and one of `subject`, `subject_regex`.
    fn identities(&mut self, prefix: &str, raw: &[Spanned<RawIdentity>]) -> Option<Vec<Identity>> {
        let mut out = Vec::new();
        let mut ok = true;
        for entry in raw {
            let r = entry.get_ref();
            let subject = match (&r.subject, &r.subject_regex) {
                (Some(s), None) => Some(SubjectMatch::Exact(s.clone())),
                (None, Some(p)) => match regex::Regex::new(p) {
                    Ok(re) => Some(SubjectMatch::Regex(re)),
                    Err(e) => {
                        self.problem(
                            entry.span(),
                            format!("{prefix}.identities: invalid subject_regex \"{p}\": {e}"),
                        );
                        None
                    }
                },
                _ => {
                    self.problem(
                        entry.span(),
                        format!(
                            "{prefix}.identities: write one of `subject` (exactly) or \
                             `subject_regex` (a pattern) for the issuer \"{}\"",
                            r.issuer
                        ),
                    );
                    None
                }
            };
            match subject {
                Some(subject) if !r.issuer.is_empty() => out.push(Identity {
                    issuer: r.issuer.clone(),
                    subject,
                }),
                Some(_) => {
                    self.problem(
                        entry.span(),
                        format!("{prefix}.identities: the issuer is empty"),
                    );
                    ok = false;
                }
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// The trust root at `raw` (relative to the config's directory), read once.
    fn trust_root(&mut self, key: &str, raw: &Spanned<String>) -> Option<Arc<TrustRoot>> {
        let path = self.config_dir().join(raw.get_ref());
        let loaded = match self.roots_read().get(&path) {
            Some(known) => known
                .clone()
                .ok_or_else(|| "unusable (see above)".to_owned()),
            None => {
                let loaded = TrustRoot::load(&path).map(Arc::new);
                self.roots_read()
                    .insert(path.clone(), loaded.as_ref().ok().cloned());
                loaded
            }
        };
        match loaded {
            Ok(root) => Some(root),
            Err(e) => {
                self.problem(raw.span(), format!("{key}: \"{}\": {e}", path.display()));
                None
            }
        }
    }

    /// A `min_digest_age` as written; "0s" is none.
    pub(super) fn min_digest_age(
        &mut self,
        key: &str,
        raw: Option<Spanned<String>>,
    ) -> Option<Duration> {
        let age = self.duration(key, Some(raw?), Duration::ZERO);
        (!age.is_zero()).then_some(age)
    }

    /// The cooldown of the image `reference`: its own, else that of the first matching
    /// `[[verify]]` entry that sets one.
    pub(super) fn image_min_digest_age(
        &mut self,
        reference: &ImageRef,
        own: Option<Spanned<String>>,
        rules: &[VerifyRule],
    ) -> Option<Duration> {
        if own.is_some() {
            return self.min_digest_age("image.min_digest_age", own);
        }
        // The first matching entry that says anything of cooldowns.
        let name = reference.name();
        rules
            .iter()
            .filter(|r| r.min_digest_age.is_some())
            .find(|r| r.matcher.regex.is_match(&name))
            .and_then(|r| r.min_digest_age.flatten())
    }

    /// The signature policy of the image `reference`: its own `verify`, over the first
    /// `[[verify]]` entry whose pattern matches its name. `None`: not verified.
    pub(super) fn image_policy(
        &mut self,
        reference: &ImageRef,
        own: Option<Spanned<RawImageVerify>>,
        rules: &[VerifyRule],
    ) -> Option<SignaturePolicy> {
        // The first matching entry that says anything of signatures: one that sets only a
        // cooldown is passed over, so it never switches verification off.
        let name = reference.name();
        let rule = rules
            .iter()
            .filter(|r| !r.cooldown_only)
            .find(|r| r.matcher.regex.is_match(&name));
        let Some(own) = own else {
            return rule.and_then(|r| {
                Some(SignaturePolicy {
                    keys: r.keys.clone(),
                    keyless: r.keyless.clone(),
                    mode: r.mode?,
                    line: r.line,
                })
            });
        };
        let span = own.span();
        let own = own.into_inner();
        let mode = match &own.mode {
            Some(m) => self.verify_mode("image.verify.mode", m)?,
            None => rule.map_or(Some(VerifyMode::Enforce), |r| r.mode),
        };
        let keys = match &own.keys {
            Some(keys) => self.verify_keys("image.verify.keys", keys)?,
            None => rule.map(|r| r.keys.clone()).unwrap_or_default(),
        };
        let keyless = self.keyless(
            "image.verify",
            span.clone(),
            own.identities.as_deref(),
            own.trust_root.as_ref(),
            own.require_tlog,
            rule.and_then(|r| r.keyless.as_ref()),
        )?;
        let mode = mode?;
        if keys.is_empty() && keyless.is_none() {
            self.problem(
                span,
                format!(
                    "image.verify: no keys or identities for {reference}: name them here \
                     (`keys = [...]`, or `identities = [...]` with a `trust_root`) or in a \
                     [[verify]] entry whose match covers {name}"
                ),
            );
            return None;
        }
        Some(SignaturePolicy {
            keys,
            keyless,
            mode,
            line: line_col(self.text(), span.start).0,
        })
    }

    /// `Some(None)` for "off".
    fn verify_mode(&mut self, key: &str, raw: &Spanned<String>) -> Option<Option<VerifyMode>> {
        match raw.get_ref().as_str() {
            "enforce" => Some(Some(VerifyMode::Enforce)),
            "warn" => Some(Some(VerifyMode::Warn)),
            "off" => Some(None),
            other => {
                self.problem(
                    raw.span(),
                    format!(
                        "{key}: unknown mode \"{other}\" (expected \"enforce\", \"warn\" or \"off\")"
                    ),
                );
                None
            }
        }
    }

    /// The keys named by `raw` (paths relative to the config's directory), each read once.
    fn verify_keys(&mut self, key: &str, raw: &[Spanned<String>]) -> Option<Vec<Arc<PublicKey>>> {
        let mut out = Vec::new();
        let mut ok = true;
        for value in raw {
            let path = self.config_dir().join(value.get_ref());
            match self.public_key(&path) {
                Ok(k) => out.push(k),
                Err(e) => {
                    ok = false;
                    self.problem(value.span(), format!("{key}: \"{}\": {e}", path.display()));
                }
            }
        }
        ok.then_some(out)
    }

    fn public_key(&mut self, path: &Path) -> Result<Arc<PublicKey>, String> {
        if let Some(known) = self.keys_read().get(path) {
            return known
                .clone()
                .ok_or_else(|| "unusable (see above)".to_owned());
        }
        let loaded = PublicKey::load(path).map(Arc::new);
        self.keys_read()
            .insert(path.to_owned(), loaded.as_ref().ok().cloned());
        loaded
    }
}
