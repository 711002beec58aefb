//! Deciding what to pull: a pure function from the required images and the local store.

use std::collections::HashSet;

use serde::Serialize;

use crate::config::{PullPolicy, RequiredImage};
use crate::engine::LocalImage;

/// Whether a required image is in the local store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Presence {
    /// No local image answers to the reference.
    Missing,
    /// A local image answers to the reference.
    Present,
}

/// What a run does about a required image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Pull it: it is missing.
    Pull,
    /// Pull it again: it is present, but its policy follows the tag.
    Refresh,
    /// Nothing to do.
    Keep,
}

impl Action {
    /// Whether the action contacts the registry.
    pub fn pulls(self) -> bool {
        matches!(self, Action::Pull | Action::Refresh)
    }

    /// The word used in plans and logs.
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Pull => "pull",
            Action::Refresh => "refresh",
            Action::Keep => "keep",
        }
    }
}

/// The decision for one required image, with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The required image.
    pub image: RequiredImage,
    /// Whether it is in the local store.
    pub state: Presence,
    /// What to do.
    pub action: Action,
    /// Why, in words.
    pub reason: &'static str,
}

impl Serialize for Decision {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let image = &self.image;
        let mut map = serializer.serialize_map(Some(7))?;
        map.serialize_entry("image", &image.reference)?;
        map.serialize_entry("platform", &image.platform)?;
        map.serialize_entry("policy", &image.policy)?;
        map.serialize_entry(
            "schedule",
            &image.schedule.as_ref().map(crate::schedule::Schedule::expr),
        )?;
        map.serialize_entry("state", &self.state)?;
        map.serialize_entry("action", &self.action)?;
        map.serialize_entry("reason", self.reason)?;
        map.end()
    }
}

/// Decides, for each required image in order, whether to pull it.
///
/// An image is present when a local image carries its tag, or, for a digest reference, its
/// repository digest. Present images are pulled again only under the `always` policy.
pub fn plan_pulls(required: &[RequiredImage], local: &[LocalImage]) -> Vec<Decision> {
    let tags: HashSet<&str> = local
        .iter()
        .flat_map(|i| i.tags.iter().map(String::as_str))
        .collect();
    let digests: HashSet<&str> = local
        .iter()
        .flat_map(|i| i.digests.iter().map(String::as_str))
        .collect();
    required
        .iter()
        .map(|image| {
            let r = &image.reference;
            let present = match (r.digest(), r.tag()) {
                (Some(digest), _) => digests.contains(format!("{}@{digest}", r.name()).as_str()),
                (None, Some(tag)) => tags.contains(format!("{}:{tag}", r.name()).as_str()),
                (None, None) => false,
            };
            let (state, action, reason) = match (present, image.policy) {
                (false, _) => (Presence::Missing, Action::Pull, "not in the local store"),
                (true, PullPolicy::Always) => (
                    Presence::Present,
                    Action::Refresh,
                    "present; policy \"always\" follows the tag",
                ),
                (true, PullPolicy::IfMissing) => (
                    Presence::Present,
                    Action::Keep,
                    "present; policy \"if-missing\"",
                ),
            };
            Decision {
                image: image.clone(),
                state,
                action,
                reason,
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reference::ImageRef;
    use proptest::prelude::*;

    const D1: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

    fn req(name: &str) -> RequiredImage {
        let reference: ImageRef = name.parse().unwrap();
        RequiredImage {
            policy: PullPolicy::default_for(&reference),
            reference,
            platform: None,
            schedule: None,
        }
    }

    fn local(tags: &[&str], digests: &[&str]) -> LocalImage {
        LocalImage {
            id: "sha256:x".into(),
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
        }
    }

    #[test]
    fn missing_present_and_refresh() {
        let required = [req("r:1/a:1"), req("r:1/b:1"), req("r:1/c"), req("r:1/d")];
        let store = [local(&["r:1/a:1"], &[]), local(&["r:1/c:latest"], &[])];
        let plan = plan_pulls(&required, &store);
        let actions: Vec<_> = plan.iter().map(|d| (d.state, d.action)).collect();
        assert_eq!(
            actions,
            [
                (Presence::Present, Action::Keep),
                (Presence::Missing, Action::Pull),
                (Presence::Present, Action::Refresh),
                (Presence::Missing, Action::Pull),
            ]
        );
    }

    #[test]
    fn digest_references_match_repo_digests_only() {
        let required = [req(&format!("r:1/a@{D1}"))];
        // Same tag present, different content: not the pinned image.
        let plan = plan_pulls(&required, &[local(&["r:1/a:latest"], &[])]);
        assert_eq!(plan[0].action, Action::Pull);
        let plan = plan_pulls(&required, &[local(&[], &[&format!("r:1/a@{D1}")])]);
        assert_eq!(plan[0].action, Action::Keep);
    }

    #[test]
    fn json_names_are_fully_qualified() {
        let plan = plan_pulls(&[req("nginx")], &[]);
        let json = serde_json::to_value(&plan[0]).unwrap();
        assert_eq!(json["image"], "docker.io/library/nginx:latest");
        assert_eq!(json["action"], "pull");
        assert_eq!(json["state"], "missing");
        assert_eq!(json["policy"], "always");
    }

    proptest! {
        /// Every required image gets exactly one decision, in order; a missing image is always
        /// pulled; an if-missing image that is present is never pulled.
        #[test]
        fn decisions_follow_presence(
            names in prop::collection::vec(0u8..20, 0..15),
            present in prop::collection::vec(0u8..20, 0..15),
            always in prop::collection::vec(any::<bool>(), 15),
        ) {
            let mut seen = HashSet::new();
            let required: Vec<RequiredImage> = names.iter().enumerate()
                .filter(|(_, n)| seen.insert(**n))
                .map(|(i, n)| {
                    let mut r = req(&format!("r:1/img{n}:1"));
                    if always[i] { r.policy = PullPolicy::Always; }
                    r
                })
                .collect();
            let store: Vec<LocalImage> = present.iter()
                .map(|n| local(&[&format!("r:1/img{n}:1")], &[]))
                .collect();
            let plan = plan_pulls(&required, &store);
            prop_assert_eq!(plan.len(), required.len());
            for (d, r) in plan.iter().zip(&required) {
                prop_assert_eq!(&d.image, r);
                let is_present = store.iter().any(|l| l.tags.contains(&r.reference.to_string()));
                prop_assert_eq!(d.state == Presence::Present, is_present);
                match (is_present, r.policy) {
                    (false, _) => prop_assert_eq!(d.action, Action::Pull),
                    (true, PullPolicy::Always) => prop_assert_eq!(d.action, Action::Refresh),
                    (true, PullPolicy::IfMissing) => prop_assert_eq!(d.action, Action::Keep),
                }
            }
        }
    }
}
