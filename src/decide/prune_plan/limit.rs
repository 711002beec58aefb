//! Phase four: at most `max_removals` per cycle, and never a parent whose child stays.

use std::collections::HashSet;

use super::{Candidate, PruneInput};

/// The candidates this cycle removes, and how many are left for a later one.
pub(super) fn limit(
    input: &PruneInput,
    mut remove: Vec<Candidate>,
    max_removals: usize,
) -> (Vec<Candidate>, usize) {
    let deferred = remove.len().saturating_sub(max_removals);
    remove.truncate(max_removals);
    // A parent whose child stays (deferred, or dropped here) cannot go this cycle either; one
    // dropped parent can make its own parent drop in turn, so repeat until nothing changes.
    let before = remove.len();
    loop {
        let removing: HashSet<String> = remove.iter().map(|c| c.id.clone()).collect();
        let child_stays = |id: &str| {
            input
                .images
                .iter()
                .any(|i| i.parent.as_deref() == Some(id) && !removing.contains(&i.id))
        };
        let count = remove.len();
        remove.retain(|c| !child_stays(&c.id));
        if remove.len() == count {
            break;
        }
    }
    let deferred = deferred + (before - remove.len());
    (remove, deferred)
}
