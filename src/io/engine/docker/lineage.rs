//! Where each listed image comes from: the nearest listed image it was built on, and the
//! unlisted build steps between them.

use std::collections::{HashMap, HashSet};

use bollard::models::ImageSummary;

use crate::model::image::{BuildStep, qualified_id};

/// For each of `listed` (the top-level images), its nearest listed ancestor and the build
/// steps on the way to it, child-most first, read from `everything` (the listing with
/// intermediate images). The engine refuses to remove an image while a child exists, so
/// children go first; the steps go with their image.
pub(super) fn lineages(
    listed: &[ImageSummary],
    everything: &[ImageSummary],
) -> Vec<(Option<String>, Vec<BuildStep>)> {
    let parent_of: HashMap<String, String> = everything
        .iter()
        .filter(|s| !s.parent_id.is_empty())
        .map(|s| (qualified_id(&s.id), qualified_id(&s.parent_id)))
        .collect();
    let labels_of: HashMap<String, &HashMap<String, String>> = everything
        .iter()
        .map(|s| (qualified_id(&s.id), &s.labels))
        .collect();
    let top: HashSet<String> = listed.iter().map(|s| qualified_id(&s.id)).collect();
    let lineage = |id: &str| {
        let mut steps = Vec::new();
        let mut cur = parent_of.get(&qualified_id(id));
        while let Some(p) = cur {
            if top.contains(p) {
                return (Some(p.clone()), steps);
            }
            if steps.len() > parent_of.len() {
                break; // a cycle in parent links: never loop forever
            }
            steps.push(BuildStep {
                id: p.clone(),
                labels: labels_of
                    .get(p)
                    .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
                    .unwrap_or_default(),
            });
            cur = parent_of.get(p);
        }
        // No listed ancestor: the steps lead to images that are not top-level either (an
        // untagged parent with a child is not listed); they are steps all the same.
        (None, steps)
    };
    listed.iter().map(|s| lineage(&s.id)).collect()
}
