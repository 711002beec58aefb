//! Deciding what to do for each required image: a pure function from the pinned images, the
//! digests they must have, and the local store.

use std::collections::HashMap;

use serde::Serialize;

use crate::decide::cooldown::Cooldown;
use crate::decide::pin::{PinMode, Pinned};
use crate::model::failure::{Failure, FailureClass, explain};
use crate::model::image::LocalImage;
use crate::model::reference::ImageRef;
use crate::model::signature::Check;
use crate::policy::config::{RegistrySettings, RequiredImage};

/// The digest an image must have this run.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Want {
    /// This digest.
    Digest(String),
    /// Unknown: the registry could not be asked (and nothing pins the image yet), after this
    /// many attempts.
    Unknown(Failure, u32),
    /// The tag names this digest, which is not adopted yet (`min_digest_age`): a present image
    /// stays; a missing one is pulled at this digest.
    Cooling(Cooldown),
}

/// Whether the required tag is in the local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// No local image answers to the name.
    Missing,
    /// A local image answers to the name.
    Present,
}

/// What a run does about a required image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Nothing: the name points at the wanted content.
    Keep,
    /// Pull by digest (mirrors first), then point the name at it.
    Pull,
    /// The wanted content is present under its digest: point the name at it, no pull.
    Tag,
    /// Nothing can be done: the digest is unknown and nothing is present.
    Fail,
}

impl Action {
    /// The word used in plans and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Keep => "keep",
            Action::Pull => "pull",
            Action::Tag => "tag",
            Action::Fail => "fail",
        }
    }
}

/// The decision for one required image, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The image and how it is pinned.
    pub pinned: Pinned,
    /// The digest it must have, when known.
    pub digest: Option<String>,
    /// Whether its name is in the local store.
    pub state: Presence,
    /// The digest of the image its name points at now, when the engine knows one.
    pub local_digest: Option<String>,
    /// The name points at other content than the pinned digest (re-tagged or pulled over).
    pub drift: bool,
    /// What to do.
    pub action: Action,
    /// Why, in words.
    pub reason: String,
    /// Why the digest is unknown, when it is.
    pub failure: Option<Failure>,
    /// The local image that holds the wanted content, when one does (the source of a retag).
    pub holder: Option<String>,
    /// Attempts made to resolve the digest that failed (0 when nothing failed).
    pub resolve_attempts: u32,
    /// What the signature check of the digest came to, when the image has a policy and it
    /// was checked (or known) this run.
    pub signature: Option<Check>,
    /// The digest the tag names that is not adopted yet, while the present image stays.
    pub cooldown: Option<Cooldown>,
}

impl Decision {
    /// The image's reference.
    pub fn reference(&self) -> &ImageRef {
        &self.pinned.image.reference
    }
}

#[cfg(test)]
impl Decision {
    /// `action` for `pinned` in `state`, with no digest, reason, failure or holder.
    pub(crate) fn for_tests(pinned: Pinned, state: Presence, action: Action) -> Decision {
        Decision {
            pinned,
            digest: None,
            state,
            local_digest: None,
            drift: false,
            action,
            reason: String::new(),
            failure: None,
            holder: None,
            resolve_attempts: 0,
            signature: None,
            cooldown: None,
        }
    }
}

/// What names an image and the content it must have: the head of both a plan's entry and a
/// run's.
#[derive(Serialize)]
pub(crate) struct Head<'a> {
    image: &'a ImageRef,
    platform: &'a Option<String>,
    pin: &'a PinMode,
    schedule: Option<&'a str>,
    /// The digest it must have, when known.
    digest: &'a Option<String>,
}

/// The name's state in the store when the decision was made.
#[derive(Serialize)]
pub(crate) struct Found<'a> {
    state: Presence,
    local_digest: &'a Option<String>,
    drift: bool,
}

/// What was decided and why: the tail of both a plan's entry and a run's.
#[derive(Serialize)]
pub(crate) struct Verdict<'a> {
    action: Action,
    reason: &'a str,
    /// Why the digest could not be resolved, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    resolve_failure: Option<ResolveFailure<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    signature: &'a Option<Check>,
    /// The tag's digest that is not adopted yet (`min_digest_age`).
    #[serde(skip_serializing_if = "Option::is_none")]
    cooldown: &'a Option<Cooldown>,
}

/// Why a digest could not be resolved: its class, and the registry client's own words that
/// the one-line reason leaves out.
#[derive(Serialize)]
struct ResolveFailure<'a> {
    class: crate::model::failure::FailureClass,
    detail: &'a str,
}

impl Decision {
    pub(crate) fn head(&self) -> Head<'_> {
        let image = &self.pinned.image;
        Head {
            image: &image.reference,
            platform: &image.platform,
            pin: &self.pinned.mode,
            schedule: image
                .schedule
                .as_ref()
                .map(crate::policy::schedule::Schedule::expr),
            digest: &self.digest,
        }
    }

    pub(crate) fn found(&self) -> Found<'_> {
        Found {
            state: self.state,
            local_digest: &self.local_digest,
            drift: self.drift,
        }
    }

    pub(crate) fn verdict(&self) -> Verdict<'_> {
        Verdict {
            action: self.action,
            reason: &self.reason,
            resolve_failure: self.failure.as_ref().map(|f| ResolveFailure {
                class: f.class,
                detail: &f.detail,
            }),
            signature: &self.signature,
            cooldown: &self.cooldown,
        }
    }
}

/// A plan's entry: the head, the store as found, and what is to be done and why.
impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            head: Head<'a>,
            #[serde(flatten)]
            found: Found<'a>,
            #[serde(flatten)]
            verdict: Verdict<'a>,
        }
        Entry {
            head: self.head(),
            found: self.found(),
            verdict: self.verdict(),
        }
        .serialize(serializer)
    }
}

/// The local store, indexed for the planner.
pub(crate) struct Inventory<'a> {
    by_tag: HashMap<&'a str, &'a LocalImage>,
    by_digest: HashMap<&'a str, &'a LocalImage>,
}

impl<'a> Inventory<'a> {
    /// Indexes `local` by tag and by repository digest.
    pub(crate) fn new(local: &'a [LocalImage]) -> Inventory<'a> {
        let mut by_tag = HashMap::new();
        let mut by_digest = HashMap::new();
        for image in local {
            for t in &image.tags {
                by_tag.insert(t.as_str(), image);
            }
            for d in &image.digests {
                by_digest.insert(d.as_str(), image);
            }
        }
        Inventory { by_tag, by_digest }
    }

    /// The image a reference's tag points at.
    pub(crate) fn tagged(&self, reference: &ImageRef) -> Option<&'a LocalImage> {
        let tag = reference.tag()?;
        self.by_tag
            .get(format!("{}:{tag}", reference.name()).as_str())
            .copied()
    }

    /// The image with `digest` under the reference's repository or one of its mirrors.
    pub(crate) fn with_digest(&self, names: &[String], digest: &str) -> Option<&'a LocalImage> {
        names.iter().find_map(|n| {
            self.by_digest
                .get(format!("{n}@{digest}").as_str())
                .copied()
        })
    }
}

/// The repository names content of `reference` may be recorded under locally: its own, then
/// the same repository on each mirror of its registry.
pub(crate) fn content_names(reference: &ImageRef, registries: &[RegistrySettings]) -> Vec<String> {
    let mut names = vec![reference.name()];
    if let Some(r) = registries.iter().find(|r| r.host == reference.registry()) {
        names.extend(r.mirrors.iter().map(|m| m.name_of(reference.repository())));
    }
    names
}

/// The names to fetch `reference`'s content from by digest, in order: its mirrors first, then
/// the origin. Content-addressed, so whatever a mirror serves under a digest is what was
/// pinned (and a signature it serves cannot be forged).
pub(crate) fn mirrors_first(reference: &ImageRef, registries: &[RegistrySettings]) -> Vec<String> {
    let mut names = content_names(reference, registries);
    names.rotate_left(1);
    names
}

/// The digest a local image is known by under `names`, preferring `prefer`.
pub(crate) fn local_digest(
    image: &LocalImage,
    names: &[String],
    prefer: Option<&str>,
) -> Option<String> {
    let digests: Vec<&str> = image
        .digests
        .iter()
        .filter_map(|d| {
            let (name, digest) = d.split_once('@')?;
            names.iter().any(|n| n == name).then_some(digest)
        })
        .collect();
    prefer
        .filter(|p| digests.contains(p))
        .or_else(|| digests.first().copied())
        .map(str::to_owned)
}

/// Decides, for each image in order, what to do. `wants` holds the digest each image must
/// have, and `aliases` other digests the same content may be recorded under locally (an
/// index's, when pulled by tag); both in the order of `pinned`.
pub(crate) fn plan_pulls(
    pinned: &[Pinned],
    wants: &[Want],
    aliases: &[Vec<String>],
    local: &[LocalImage],
    registries: &[RegistrySettings],
) -> Vec<Decision> {
    let inventory = Inventory::new(local);
    let none = Vec::new();
    pinned
        .iter()
        .zip(wants)
        .enumerate()
        .map(|(i, (p, want))| {
            let aliases = aliases.get(i).unwrap_or(&none);
            decide(p, want, aliases, &inventory, registries)
        })
        .collect()
}

fn decide(
    p: &Pinned,
    want: &Want,
    aliases: &[String],
    inv: &Inventory<'_>,
    registries: &[RegistrySettings],
) -> Decision {
    let reference = &p.image.reference;
    let names = content_names(reference, registries);
    if let Want::Cooling(c) = want {
        return cooled(p, c, aliases, inv, registries);
    }
    let wanted = match want {
        Want::Digest(d) | Want::Cooling(Cooldown { digest: d, .. }) => Some(d.as_str()),
        Want::Unknown(..) => None,
    };
    let tagged = inv.tagged(reference);
    let by_digest = wanted.and_then(|d| {
        std::iter::once(d)
            .chain(aliases.iter().map(String::as_str))
            .find_map(|d| inv.with_digest(&names, d))
    });
    // A digest-only reference has no name to point: its content is all there is.
    let named = if reference.tag().is_some() {
        tagged
    } else {
        by_digest
    };
    // Shown as the wanted digest when the name holds the content under an alias.
    let local = named.and_then(|i| match (by_digest, wanted) {
        (Some(h), Some(w)) if h.id == i.id => Some(w.to_owned()),
        _ => local_digest(i, &names, wanted),
    });
    let state = if named.is_some() {
        Presence::Present
    } else {
        Presence::Missing
    };
    let drift = match (named, by_digest) {
        (Some(n), Some(d)) => n.id != d.id,
        (Some(_), None) => wanted.is_some() && p.mode != PinMode::Follow,
        _ => false,
    };
    let (action, reason, failure) = action(p, want, named, by_digest);
    Decision {
        pinned: p.clone(),
        digest: wanted.map(str::to_owned),
        state,
        local_digest: local,
        drift,
        action,
        reason,
        failure,
        holder: by_digest.map(|i| i.id.clone()),
        resolve_attempts: match want {
            Want::Unknown(_, attempts) => *attempts,
            Want::Digest(_) | Want::Cooling(_) => 0,
        },
        // The puller checks signatures; the plan only says what to do.
        signature: None,
        cooldown: None,
    }
}

/// The decision for a tag whose digest is not adopted yet. A present image under the name
/// stays, unless it already holds that digest; a missing one is pulled at it, as without the
/// cooldown (a host without the image is better off with the new digest than with none).
fn cooled(
    p: &Pinned,
    c: &Cooldown,
    aliases: &[String],
    inv: &Inventory<'_>,
    registries: &[RegistrySettings],
) -> Decision {
    let adopted = decide(p, &Want::Digest(c.digest.clone()), aliases, inv, registries);
    let Some(present) = inv.tagged(&p.image.reference) else {
        return adopted;
    };
    if adopted.holder.as_deref() == Some(present.id.as_str()) {
        return adopted;
    }
    let names = content_names(&p.image.reference, registries);
    let min_age = p.image.min_digest_age.unwrap_or_default();
    Decision {
        digest: None,
        local_digest: local_digest(present, &names, None),
        drift: false,
        action: Action::Keep,
        reason: format!("keeping the present image: {}", c.words(min_age)),
        failure: None,
        holder: None,
        cooldown: Some(c.clone()),
        ..adopted
    }
}

/// Why pulling the decided digest failed, in words. A pinned digest its registry does not
/// have is told apart from an image that does not exist: only a new pin helps.
pub(crate) fn explain_pull(decision: &Decision, failure: &Failure) -> String {
    let gone = match (&decision.digest, failure.class) {
        (Some(digest), FailureClass::NotFound) if !failure.no_platform && !failure.maybe_auth => {
            decision.pinned.digest_gone(digest)
        }
        _ => None,
    };
    gone.unwrap_or_else(|| explain_for(&decision.pinned.image, failure))
}

/// Why an operation on a required image failed, in words; for a name written without a
/// registry that Docker Hub lacks or cannot be reached for, with what such a name means.
pub(crate) fn explain_for(image: &RequiredImage, failure: &Failure) -> String {
    let mut text = explain(&image.reference, failure);
    if image.hub_implied
        && matches!(
            failure.class,
            FailureClass::NotFound | FailureClass::Network
        )
    {
        text.push_str(
            "; note that a name without a registry means Docker Hub (docker.io): write the \
             registry host in the name if the image lives elsewhere",
        );
    }
    text
}

/// The decision table: what to do, why, and the failure behind it, given the digest wanted,
/// the image the name points at (`named`) and the image holding the wanted content
/// (`by_digest`).
fn action(
    p: &Pinned,
    want: &Want,
    named: Option<&LocalImage>,
    by_digest: Option<&LocalImage>,
) -> (Action, String, Option<Failure>) {
    match (want, named, by_digest) {
        // `decide` hands a cooling digest to `cooled`; were one to reach here, the present
        // image would still stay.
        (Want::Cooling(c), _, _) => (
            Action::Keep,
            c.words(p.image.min_digest_age.unwrap_or_default()),
            None,
        ),
        (Want::Unknown(f, _), Some(_), _) if f.class == FailureClass::Signature => (
            Action::Keep,
            format!(
                "keeping the present image: the tag's new digest is refused ({})",
                explain_for(&p.image, f)
            ),
            Some(f.clone()),
        ),
        (Want::Unknown(f, _), None, _) if f.class == FailureClass::Signature => (
            Action::Fail,
            format!("{}; it is not pulled", explain_for(&p.image, f)),
            Some(f.clone()),
        ),
        (Want::Unknown(f, _), Some(_), _) => (
            Action::Keep,
            format!(
                "the registry could not be asked, keeping the present image ({})",
                explain_for(&p.image, f)
            ),
            Some(f.clone()),
        ),
        (Want::Unknown(f, _), None, _) => (Action::Fail, explain_for(&p.image, f), Some(f.clone())),
        (Want::Digest(_), Some(n), Some(d)) if n.id == d.id => (
            Action::Keep,
            match p.mode {
                PinMode::Follow => "present at the tag's current digest",
                _ => "present at the pinned digest",
            }
            .to_owned(),
            None,
        ),
        (Want::Digest(_), None, Some(_)) => (
            Action::Tag,
            "the content is present under its digest; the name is missing".to_owned(),
            None,
        ),
        (Want::Digest(_), Some(_), Some(_)) => (
            Action::Tag,
            "the name points at other content than the pinned digest (a new pin, or drift); the \
             pinned content is present"
                .to_owned(),
            None,
        ),
        (Want::Digest(_), None, None) => (Action::Pull, "not in the local store".to_owned(), None),
        (Want::Digest(d), Some(_), None) if p.mode == PinMode::Follow => {
            (Action::Pull, format!("the tag moved to {d}"), None)
        }
        (Want::Digest(_), Some(_), None) => (
            Action::Pull,
            "the name points at other content than the pinned digest (a new pin, or drift); the \
             pinned content is not present"
                .to_owned(),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::config::Mirror;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
    const D2: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

    fn pinned(name: &str, mode: PinMode) -> Pinned {
        Pinned::for_tests(name, mode)
    }

    fn local(id: &str, tags: &[&str], digests: &[&str]) -> LocalImage {
        LocalImage {
            id: id.into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn one(p: Pinned, want: Want, store: &[LocalImage]) -> Decision {
        plan_pulls(&[p], &[want], &[], store, &[]).remove(0)
    }

    #[test]
    fn docker_hub_is_named_only_for_a_name_written_without_a_registry() {
        let mut p = pinned("docker.io/library/nginx:1", PinMode::Follow);
        let down = Failure::new(FailureClass::Network, "timed out");
        assert!(!explain_for(&p.image, &down).contains("Docker Hub"));
        p.image.hub_implied = true;
        assert!(explain_for(&p.image, &down).contains("means Docker Hub"));
        let login = Failure::new(FailureClass::Auth, "unauthorized");
        assert!(!explain_for(&p.image, &login).contains("Docker Hub"));
    }

    #[test]
    fn a_pinned_digest_the_registry_lacks_is_not_called_a_missing_image() {
        let lock = Pinned {
            written_at: Some(crate::model::problem::Place {
                path: "l.lock".into(),
                line: 4,
            }),
            ..pinned("r.example/a:1", PinMode::Lock)
        };
        let d = one(lock, Want::Digest(D1.into()), &[]);
        let gone = Failure::new(FailureClass::NotFound, "manifest unknown");
        let text = explain_pull(&d, &gone);
        assert!(
            text.contains(D1) && text.contains("l.lock:4") && text.contains("stowage pin"),
            "{text}"
        );
        // Other failures, and a not-found that may be a login, keep their own words.
        let down = Failure::new(FailureClass::Network, "connection refused");
        assert_eq!(explain_pull(&d, &down), explain(d.reference(), &down));
        let login = Failure::new(
            FailureClass::NotFound,
            "pull access denied, repository does not exist or may require 'docker login'",
        );
        assert!(explain_pull(&d, &login).contains("does not exist"));
        // A followed tag has no pin to renew: a not-found is the image's.
        let follow = one(
            pinned("r.example/a:1", PinMode::Follow),
            Want::Digest(D1.into()),
            &[],
        );
        assert_eq!(
            explain_pull(&follow, &gone),
            explain(follow.reference(), &gone)
        );
    }

    #[test]
    fn missing_is_pulled() {
        let d = one(
            pinned("r:1/a:1", PinMode::Lock),
            Want::Digest(D1.into()),
            &[],
        );
        assert_eq!(
            (d.state, d.action, d.drift),
            (Presence::Missing, Action::Pull, false)
        );
    }

    #[test]
    fn present_at_the_pin_is_kept() {
        let store = [local("i1", &["r:1/a:1"], &[&format!("r:1/a@{D1}")])];
        let d = one(
            pinned("r:1/a:1", PinMode::Lock),
            Want::Digest(D1.into()),
            &store,
        );
        assert_eq!((d.action, d.drift), (Action::Keep, false));
        assert_eq!(d.local_digest.as_deref(), Some(D1));
    }

    #[test]
    fn drift_with_the_pinned_content_present_is_a_retag() {
        let store = [
            local("i1", &[], &[&format!("r:1/a@{D1}")]),
            local("i2", &["r:1/a:1"], &[&format!("r:1/a@{D2}")]),
        ];
        let d = one(
            pinned("r:1/a:1", PinMode::Lock),
            Want::Digest(D1.into()),
            &store,
        );
        assert_eq!((d.action, d.drift), (Action::Tag, true));
        assert_eq!(d.local_digest.as_deref(), Some(D2));
    }

    #[test]
    fn drift_without_the_pinned_content_is_a_pull() {
        let store = [local("i2", &["r:1/a:1"], &[&format!("r:1/a@{D2}")])];
        let d = one(
            pinned("r:1/a:1", PinMode::Lock),
            Want::Digest(D1.into()),
            &store,
        );
        assert_eq!((d.action, d.drift), (Action::Pull, true));
        // Following a tag that moved is not drift: it is the point.
        let d = one(
            pinned("r:1/a:1", PinMode::Follow),
            Want::Digest(D1.into()),
            &store,
        );
        assert_eq!((d.action, d.drift), (Action::Pull, false));
        assert_eq!(d.reason, format!("the tag moved to {D1}"));
    }

    #[test]
    fn unknown_digest_keeps_what_is_present() {
        let f = Failure::new(FailureClass::Network, "dial tcp: connection refused");
        let store = [local("i1", &["r:1/a:1"], &[])];
        let d = one(
            pinned("r:1/a:1", PinMode::Follow),
            Want::Unknown(f.clone(), 1),
            &store,
        );
        assert_eq!(d.action, Action::Keep);
        assert!(d.failure.is_some());
        let d = one(pinned("r:1/a:1", PinMode::Follow), Want::Unknown(f, 1), &[]);
        assert_eq!(d.action, Action::Fail);
    }

    #[test]
    fn a_refused_signature_says_so_not_that_the_registry_was_silent() {
        let f = Failure::new(
            FailureClass::Signature,
            "r:1/a@sha256:1 is not signed by k.pub",
        );
        let store = [local("i1", &["r:1/a:1"], &[])];
        let follow = || pinned("r:1/a:1", PinMode::Follow);
        let d = one(follow(), Want::Unknown(f.clone(), 1), &store);
        assert_eq!(d.action, Action::Keep);
        assert_eq!(
            d.reason,
            "keeping the present image: the tag's new digest is refused (signature: r:1/a@sha256:1 \
             is not signed by k.pub)"
        );
        let d = one(follow(), Want::Unknown(f, 1), &[]);
        assert_eq!(d.action, Action::Fail);
        assert!(d.reason.ends_with("; it is not pulled"), "{}", d.reason);
        assert!(!d.reason.contains("could not be asked"), "{}", d.reason);
    }

    #[test]
    fn mirror_pulled_content_counts() {
        let mirror = |host: &str, prefix: Option<&str>| Mirror {
            host: host.into(),
            prefix: prefix.map(str::to_owned),
        };
        let registries = [RegistrySettings {
            host: "r:1".into(),
            mirrors: vec![mirror("m:2", None), mirror("h:3", Some("proxy/hub"))],
            insecure: false,
            limit_shared_by: 1,
        }];
        for name in ["m:2/a", "h:3/proxy/hub/a"] {
            let store = [local("i1", &["r:1/a:1"], &[&format!("{name}@{D1}")])];
            let d = plan_pulls(
                &[pinned("r:1/a:1", PinMode::Lock)],
                &[Want::Digest(D1.into())],
                &[],
                &store,
                &registries,
            )
            .remove(0);
            assert_eq!(d.action, Action::Keep, "{name}");
            assert_eq!(d.local_digest.as_deref(), Some(D1));
        }
        // A mirror's copy is the origin's content only under the mirror's own prefix.
        let store = [local("i1", &["r:1/a:1"], &[&format!("h:3/a@{D1}")])];
        let d = plan_pulls(
            &[pinned("r:1/a:1", PinMode::Lock)],
            &[Want::Digest(D1.into())],
            &[],
            &store,
            &registries,
        )
        .remove(0);
        assert_eq!(d.local_digest, None);
    }

    #[test]
    fn content_pulled_by_tag_under_its_index_digest_counts() {
        // `docker pull name:tag` of an index records the index digest (D2 here).
        let store = [local("i1", &["r:1/a:1"], &[&format!("r:1/a@{D2}")])];
        let d = plan_pulls(
            &[pinned("r:1/a:1", PinMode::Lock)],
            &[Want::Digest(D1.into())],
            &[vec![D2.into()]],
            &store,
            &[],
        )
        .remove(0);
        assert_eq!((d.action, d.drift), (Action::Keep, false));
        assert_eq!(d.local_digest.as_deref(), Some(D1));
    }

    #[test]
    fn digest_only_references_need_only_the_content() {
        let name = format!("r:1/a@{D1}");
        let store = [local("i1", &[], &[&name])];
        let d = one(
            pinned(&name, PinMode::Fixed),
            Want::Digest(D1.into()),
            &store,
        );
        assert_eq!((d.state, d.action), (Presence::Present, Action::Keep));
    }

    proptest! {
        /// Over random stores: Keep only when the name points at an image carrying the wanted
        /// digest; Tag only when that content is present; Pull only when it is not.
        #[test]
        fn actions_match_the_store(
            tag_on in prop::option::of(0usize..3),
            digests in prop::collection::vec(prop::option::of(0usize..2), 3),
            want in 0usize..2,
        ) {
            let ds = [D1, D2];
            let store: Vec<LocalImage> = (0..3).map(|i| {
                let tags: Vec<&str> = if tag_on == Some(i) { vec!["r:1/a:1"] } else { vec![] };
                let dg = digests[i].map(|d| format!("r:1/a@{}", ds[d]));
                local(&format!("i{i}"), &tags, &dg.iter().map(String::as_str).collect::<Vec<_>>())
            }).collect();
            let d = one(pinned("r:1/a:1", PinMode::Lock), Want::Digest(ds[want].into()), &store);
            let holder = (0..3).rev().find(|i| digests[*i] == Some(want));
            match d.action {
                Action::Keep => prop_assert_eq!(tag_on, holder),
                Action::Tag => prop_assert!(holder.is_some() && tag_on != holder),
                Action::Pull => prop_assert!(holder.is_none()),
                Action::Fail => prop_assert!(false, "a known digest never fails"),
            }
        }
    }
}
