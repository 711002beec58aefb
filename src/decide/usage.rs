//! What the store's history says about each image: when it was first seen and last used, and
//! which images the config requires.

use std::collections::{BTreeMap, HashMap, HashSet};

use crate::decide::pin::Pinned;
use crate::decide::pull_plan::content_names;
use crate::model::image::StoreImage;
use crate::policy::config::Config;
use crate::policy::state::State;

/// What stowage knows about images over time (from the state file).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    /// When stowage first saw each image (seconds).
    pub first_seen: HashMap<String, i64>,
    /// When a container last used each image (seconds).
    pub last_used: HashMap<String, i64>,
    /// Since when stowage has been watching this host (seconds).
    pub watching_since: i64,
    /// When this was observed (nanoseconds; the caller may say more precisely than `now`).
    pub observed_at_ns: i64,
}

/// The IDs of the images the config requires or pins: the image each required tag points at,
/// and the holder of each known pinned digest (under its repository or a mirror's).
pub(crate) fn required_ids(
    pinned: &[Pinned],
    state: &State,
    images: &[StoreImage],
    config: &Config,
) -> HashSet<String> {
    let mut ids = HashSet::new();
    for p in pinned {
        let reference = &p.image.reference;
        if let Some(tag) = reference.tag() {
            let name = format!("{}:{tag}", reference.name());
            ids.extend(
                images
                    .iter()
                    .filter(|i| i.tags.contains(&name))
                    .map(|i| i.id.clone()),
            );
        }
        if let Some(d) = p.known_digest(state) {
            let names: Vec<String> = content_names(reference, &config.registries)
                .into_iter()
                .map(|n| format!("{n}@{d}"))
                .collect();
            ids.extend(
                images
                    .iter()
                    .filter(|i| i.digests.iter().any(|x| names.contains(x)))
                    .map(|i| i.id.clone()),
            );
        }
    }
    ids
}

/// Brings the usage history up to date with what is seen now: images never seen before are
/// first seen now, images containers use are used now, images gone are forgotten, and so are
/// images the engine deleted since the last look (`deleted`) that are back: they are new.
pub(crate) fn observe(
    state: &State,
    images: &[StoreImage],
    in_use: &HashSet<String>,
    deleted: &HashSet<String>,
    now: i64,
) -> Usage {
    let present: HashSet<&str> = images
        .iter()
        .map(|i| i.id.as_str())
        .filter(|id| !deleted.contains(*id))
        .collect();
    let mut first_seen: BTreeMap<String, i64> = state
        .first_seen
        .iter()
        .filter(|(id, _)| present.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for i in images {
        first_seen.entry(i.id.clone()).or_insert(now);
    }
    let mut last_used: BTreeMap<String, i64> = state
        .last_used
        .iter()
        .filter(|(id, _)| present.contains(id.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect();
    for id in in_use {
        if present.contains(id.as_str()) {
            last_used.insert(id.clone(), now);
        }
    }
    Usage {
        first_seen: first_seen.into_iter().collect(),
        last_used: last_used.into_iter().collect(),
        watching_since: state.watching_since.unwrap_or(now),
        observed_at_ns: now.saturating_mul(1_000_000_000),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn image(id: &str, tags: &[&str], digests: &[&str]) -> StoreImage {
        StoreImage {
            id: id.into(),
            parent: None,
            tags: tags.iter().map(|s| s.to_string()).collect(),
            digests: digests.iter().map(|s| s.to_string()).collect(),
            digest_names: Vec::new(),
            labels: BTreeMap::new(),
            size: 1,
            created: 0,
            steps: Vec::new(),
        }
    }

    #[test]
    fn observing_keeps_first_sight_and_marks_use() {
        let mut state = State::default();
        state.first_seen.insert("a".into(), 10);
        state.first_seen.insert("gone".into(), 5);
        state.watching_since = Some(1);
        let images = [image("a", &[], &[]), image("b", &[], &[])];
        let none = HashSet::new();
        let usage = observe(
            &state,
            &images,
            &HashSet::from(["b".to_owned()]),
            &none,
            100,
        );
        assert_eq!(usage.first_seen.get("a"), Some(&10));
        assert_eq!(usage.first_seen.get("b"), Some(&100));
        assert!(!usage.first_seen.contains_key("gone"));
        assert_eq!(usage.last_used.get("b"), Some(&100));
        assert_eq!(usage.watching_since, 1);
        let fresh = observe(&State::default(), &images, &none, &none, 100);
        assert_eq!(fresh.watching_since, 100);
        // Deleted since the last look and back: first seen now, its use forgotten.
        state.last_used.insert("a".into(), 50);
        let back = observe(
            &state,
            &images,
            &none,
            &HashSet::from(["a".to_owned()]),
            200,
        );
        assert_eq!(back.first_seen.get("a"), Some(&200));
        assert!(!back.last_used.contains_key("a"));
    }

    #[test]
    fn required_images_are_found_by_tag_and_by_pinned_digest() {
        let text = "[[image]]\nname = \"r:1/a:1\"\n[[image]]\nname = \"r:1/b:1\"\n";
        let config = Config::parse(std::path::Path::new("c.toml"), text).unwrap();
        let pinned = crate::decide::pin::pin_images(&config, None, None).unwrap();
        let mut state = State::default();
        state
            .first_pull
            .insert(pinned[1].key.to_string(), "sha256:bb".into());
        let images = [
            image("ta", &["r:1/a:1"], &[]),
            image("hb", &[], &["r:1/b@sha256:bb"]),
            image("other", &["r:1/c:1"], &["r:1/b@sha256:cc"]),
        ];
        let ids = required_ids(&pinned, &state, &images, &config);
        assert_eq!(ids, HashSet::from(["ta".to_owned(), "hb".to_owned()]));
    }
}
