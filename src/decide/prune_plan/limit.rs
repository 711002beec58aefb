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
        let removing: HashSet<&str> = remove.iter().map(|c| c.id.as_str()).collect();
        let child_stays = |id: &str| {
            input
                .images
                .iter()
                .any(|i| i.parent.as_deref() == Some(id) && !removing.contains(i.id.as_str()))
        };
        let keep: Vec<bool> = remove.iter().map(|c| !child_stays(&c.id)).collect();
        if keep.iter().all(|k| *k) {
            break;
        }
        let mut keep = keep.into_iter();
        remove.retain(|_| keep.next().unwrap_or(true));
    }
    let deferred = deferred + (before - remove.len());
    (remove, deferred)
}
