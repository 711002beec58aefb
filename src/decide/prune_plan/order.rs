//! Phase three: the removal order. Children before parents (the engine refuses a parent whose
//! child is there), then least recently used first.

use std::collections::HashMap;

use super::{ById, Candidate, PruneInput, Rule, last_use, names};

/// The selected images as candidates, in removal order.
pub(super) fn order(
    input: &PruneInput,
    selected: &HashMap<&str, Rule>,
    by_id: &ById<'_>,
) -> Vec<Candidate> {
    let mut remove: Vec<Candidate> = selected
        .iter()
        .filter_map(|(id, rule)| by_id.get(id).map(|i| (i, *rule)))
        .map(|(i, rule)| (i, rule, last_use(i, &input.usage)))
        .map(|(i, rule, (last_used, last_used_from))| Candidate {
            id: i.id.clone(),
            names: names(i),
            // Tags last: the engine guards the last name of an image a container uses, and on
            // Podman a `name@digest` is a name too. Removing a tag first there would leave an
            // image a container created meanwhile uses without its tag, the removal refused.
            references: i.digests.iter().chain(i.tags.iter()).cloned().collect(),
            digest_names: i.digest_names.clone(),
            parent: i.parent.clone(),
            steps: Vec::new(),
            size: i.size,
            last_used,
            last_used_from,
            rule,
        })
        .collect();
    remove.sort_by(|a, b| {
        depth(input, by_id, &b.id)
            .cmp(&depth(input, by_id, &a.id))
            .then(a.last_used.cmp(&b.last_used))
            .then(a.id.cmp(&b.id))
    });
    remove
}

/// How many ancestors an image has in the store.
fn depth(input: &PruneInput, by_id: &ById<'_>, id: &str) -> usize {
    let mut d = 0usize;
    let mut cur = by_id.get(id).and_then(|i| i.parent.as_deref());
    while let Some(p) = cur {
        d += 1;
        if d > input.images.len() {
            break; // a cycle in parent links: give up counting, never loop forever
        }
        cur = by_id.get(p).and_then(|i| i.parent.as_deref());
    }
    d
}
