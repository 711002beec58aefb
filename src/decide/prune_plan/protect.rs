//! Phase one: why each image must stay, if it must. The first protection that holds is the one
//! reported, the most specific first.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::{ById, Protection, PruneInput, being_pulled, first_seen, repository};
use crate::model::image::StoreImage;
use crate::policy::keep::{KeepRules, Limits};

/// Every protected image, by ID, with its protection; ancestors of protected images included.
pub(super) fn protect<'a>(
    input: &'a PruneInput,
    keep: &KeepRules,
    limits: &Limits,
    by_id: &ById<'a>,
) -> HashMap<&'a str, Protection> {
    let newest = newest_per_repository(&input.images, keep.newest_per_repository);
    let mut protection: HashMap<&str, Protection> = input
        .images
        .iter()
        .filter_map(|image| {
            own_protection(input, keep, limits, &newest, image).map(|p| (image.id.as_str(), p))
        })
        .collect();
    protect_ancestors(&mut protection, by_id);
    protection
}

/// The IDs of the `n` newest images (by creation time) of each repository, and those made in
/// the same second as the n-th.
fn newest_per_repository(images: &[StoreImage], n: usize) -> HashSet<&str> {
    let mut newest: HashSet<&str> = HashSet::new();
    if n == 0 {
        return newest;
    }
    let mut repos: HashMap<&str, Vec<&StoreImage>> = HashMap::new();
    for image in images {
        let mut seen = HashSet::new();
        for t in &image.tags {
            let r = repository(t);
            if seen.insert(r) {
                repos.entry(r).or_default().push(image);
            }
        }
    }
    for list in repos.values_mut() {
        list.sort_by(|a, b| b.created.cmp(&a.created).then(a.id.cmp(&b.id)));
        // Creation times are whole seconds: images made in the same second as the n-th newest
        // cannot be told apart, so all of them are kept, never one picked by its ID.
        let Some(nth) = list.get(n - 1).map(|i| i.created) else {
            newest.extend(list.iter().map(|i| i.id.as_str()));
            continue;
        };
        newest.extend(
            list.iter()
                .take_while(|i| i.created >= nth)
                .map(|i| i.id.as_str()),
        );
    }
    newest
}

/// The protection of the image itself. The daemon's own container also uses its image, but
/// "own image" says more, so it comes first.
fn own_protection(
    input: &PruneInput,
    keep: &KeepRules,
    limits: &Limits,
    newest: &HashSet<&str>,
    image: &StoreImage,
) -> Option<Protection> {
    let first_seen = first_seen(image, input);
    let all_names = || image.tags.iter().chain(image.digests.iter());
    if input.required.contains(&image.id) {
        Some(Protection::Required)
    } else if input.own_image.as_deref() == Some(image.id.as_str()) {
        Some(Protection::OwnImage)
    } else if input.in_use.contains(&image.id) {
        Some(Protection::InUse)
    } else if being_pulled(&image.id, all_names(), &input.in_flight) {
        Some(Protection::InFlight)
    } else if input.now - first_seen < limits.min_age {
        Some(Protection::TooYoung)
    } else if let Some(rule) = keep_rule(keep, image) {
        Some(Protection::KeepRule(rule))
    } else if newest.contains(image.id.as_str()) {
        Some(Protection::Newest)
    } else if !keep.prune_local_only
        && !image.tags.is_empty()
        && (image.digests.is_empty() || input.no_registry_copy.contains(&image.id))
    {
        Some(Protection::LocalOnly)
    } else {
        None
    }
}

/// The build steps that go with `image`: its unlisted intermediate images, child-most first, up
/// to the first one another image is built on too (`shared`: some engines delete it all the
/// same) or policy keeps (a keep label, which steps inherit from their base; a container; the
/// daemon's own; required; being pulled). The engine, told `noprune`, would
/// leave them all; told nothing, it would take them all, kept or not.
pub(super) fn private_steps(
    input: &PruneInput,
    keep: &KeepRules,
    shared: &HashSet<&str>,
    image: &StoreImage,
) -> Vec<String> {
    image
        .steps
        .iter()
        .take_while(|step| {
            let id = step.id.as_str();
            !(shared.contains(id)
                || input.required.contains(id)
                || input.own_image.as_deref() == Some(id)
                || input.in_use.contains(id)
                || input.in_flight.contains(id)
                || label_rule(keep, &step.labels).is_some())
        })
        .map(|step| step.id.clone())
        .collect()
}

/// The keep rule (as written) that keeps the image: a name pattern, a digest or a label.
fn keep_rule(keep: &KeepRules, image: &StoreImage) -> Option<String> {
    let all_names = || image.tags.iter().chain(image.digests.iter());
    if let Some(m) = keep
        .names
        .iter()
        .find(|m| all_names().any(|n| m.regex.is_match(n)))
    {
        return Some(m.written.clone());
    }
    if let Some(d) = image.digests.iter().find_map(|d| {
        let digest = d.split_once('@').map(|(_, d)| d)?;
        keep.digests.contains(digest).then_some(digest)
    }) {
        return Some(d.to_owned());
    }
    label_rule(keep, &image.labels)
}

/// The label rule (as written) that keeps an image with these labels.
fn label_rule(keep: &KeepRules, labels: &BTreeMap<String, String>) -> Option<String> {
    let (k, v) = keep.labels.iter().find(|(k, v)| {
        labels
            .get(k)
            .is_some_and(|actual| v.as_ref().is_none_or(|v| v == actual))
    })?;
    Some(match v {
        Some(v) => format!("label {k}={v}"),
        None => format!("label {k}"),
    })
}

/// Every ancestor of a protected image is protected too: the engine refuses to remove a parent
/// whose child stays, and it would free nothing.
fn protect_ancestors<'a>(protection: &mut HashMap<&'a str, Protection>, by_id: &ById<'a>) {
    let protected_ids: Vec<&str> = protection.keys().copied().collect();
    for id in protected_ids {
        let mut cur = by_id.get(id).and_then(|i| i.parent.as_deref());
        while let Some(parent) = cur {
            if protection.contains_key(parent) {
                break;
            }
            protection.insert(parent, Protection::ParentOfKept);
            cur = by_id.get(parent).and_then(|i| i.parent.as_deref());
        }
    }
}

/// The build steps more than one image is built on.
pub(super) fn shared_steps(images: &[StoreImage]) -> HashSet<&str> {
    let mut seen = HashSet::new();
    let mut shared = HashSet::new();
    for step in images.iter().flat_map(|i| &i.steps) {
        if !seen.insert(step.id.as_str()) {
            shared.insert(step.id.as_str());
        }
    }
    shared
}
