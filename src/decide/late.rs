//! Races found late: a container created from an image as a prune cycle removed it, that the
//! engine registered only after the cycle's last look.
//!
//! A cycle follows container `create` events until its batch's deletions are announced and a
//! second after. A `docker create` that began before a DELETE but takes longer than that to
//! register (copying a VOLUME of 30,000 files took 6 to 11 s in an adversarial run) leaves a
//! container whose image is gone, unseen by that cycle. The
//! removed images are remembered (in the state file, so a `stowage prune` from cron does it
//! too), and a later cycle that lists a container using one of them puts it back.

use std::collections::{BTreeMap, HashSet};

use crate::policy::state::RemovedImage;

/// How long after a removal a container's creation can still register with the removed image
/// (seconds). A removal is remembered until a cycle lists the containers this long after it.
pub(crate) const LATE_CREATE_AT_MOST: i64 = 10 * 60;

/// What a cycle does with the images removed before it, given the containers it listed.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct LateCheck {
    /// The removed images a container uses now: each is looked at, and put back if a container
    /// raced its removal ([`raced`]) and the store does not hold it whole again.
    pub heal: Vec<String>,
    /// The images no container uses that were removed longer than [`LATE_CREATE_AT_MOST`]
    /// before the listing: no longer to remember.
    pub forget: Vec<String>,
}

/// Which remembered removals a container listed at `listed_at` (seconds) now uses (`in_use`:
/// the image IDs of every container), and which are not to be remembered any longer.
pub(crate) fn late_check(
    removed: &BTreeMap<String, RemovedImage>,
    in_use: &HashSet<String>,
    listed_at: i64,
) -> LateCheck {
    let mut check = LateCheck::default();
    for (id, image) in removed {
        if in_use.contains(id) {
            check.heal.push(id.clone());
        } else if image.at.saturating_add(LATE_CREATE_AT_MOST) < listed_at {
            check.forget.push(id.clone());
        }
    }
    check
}

/// Whether one of the containers created at `created` (seconds) that use an image removed at
/// `removed_at` can have raced the removal: its creation began before the removal was over.
/// A container created after that was made from the image pulled again, and the image then
/// removed by someone else (`docker rmi -f`): not stowage's to put back. The engine dates a
/// container from the start of its creation, before a slow one copies its volumes; both times
/// are on the engine's clock, taken to agree within [`CLOCKS_AGREE_WITHIN`].
pub(crate) fn raced(removed_at: i64, created: &[i64]) -> bool {
    created
        .iter()
        .any(|&c| c <= removed_at.saturating_add(CLOCKS_AGREE_WITHIN))
}

/// How far apart the engine's clock and the removal's time, taken on it, may be (seconds): the
/// engine's clock is measured once, over a request, to the second.
pub(crate) const CLOCKS_AGREE_WITHIN: i64 = 2;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn removed_at(at: i64) -> RemovedImage {
        RemovedImage {
            names: vec!["r.example/app:1".into()],
            references: vec!["r.example/app:1".into(), "r.example/app@sha256:1".into()],
            at,
            lost: false,
        }
    }

    #[test]
    fn a_removed_image_a_container_uses_now_is_looked_at() {
        let removed = BTreeMap::from([("sha256:a".to_owned(), removed_at(1_000))]);
        let in_use = HashSet::from(["sha256:a".to_owned()]);
        let check = late_check(&removed, &in_use, 1_001);
        assert_eq!(check.heal, ["sha256:a"]);
        assert!(check.forget.is_empty());
    }

    #[test]
    fn only_a_container_created_by_the_removal_can_have_raced_it() {
        assert!(raced(1_000, &[999]));
        assert!(
            raced(1_000, &[1_000 + CLOCKS_AGREE_WITHIN]),
            "within the clocks' error"
        );
        assert!(raced(1_000, &[1_200, 990]));
        assert!(
            !raced(1_000, &[1_001 + CLOCKS_AGREE_WITHIN]),
            "created from the image pulled again"
        );
        assert!(!raced(1_000, &[]));
    }

    #[test]
    fn an_unused_removal_is_remembered_until_a_listing_long_enough_after_it() {
        let removed = BTreeMap::from([("sha256:a".to_owned(), removed_at(1_000))]);
        let none = HashSet::new();
        let at_limit = late_check(&removed, &none, 1_000 + LATE_CREATE_AT_MOST);
        assert_eq!(at_limit, LateCheck::default());
        let after = late_check(&removed, &none, 1_001 + LATE_CREATE_AT_MOST);
        assert!(after.heal.is_empty());
        assert_eq!(after.forget, ["sha256:a"]);
    }

    #[test]
    fn a_container_found_long_after_the_removal_is_still_healed() {
        // The cycle after a removal may come a day later (a daily prune window): the
        // container it lists was created long before it looked.
        let removed = BTreeMap::from([("sha256:a".to_owned(), removed_at(1_000))]);
        let in_use = HashSet::from(["sha256:a".to_owned()]);
        let check = late_check(&removed, &in_use, 1_000 + 86_400);
        assert_eq!(check.heal, ["sha256:a"]);
    }

    proptest! {
        /// Every remembered image a container uses is looked at and none other; an unused
        /// one is forgotten exactly when its time is up, a used one never by the check.
        #[test]
        fn the_check_heals_exactly_the_used_and_forgets_only_the_settled(
            images in prop::collection::btree_map(0u8..40, (any::<bool>(), 0i64..5_000), 0..30),
            listed_at in 0i64..5_000,
        ) {
            let removed: BTreeMap<String, RemovedImage> = images
                .iter()
                .map(|(id, (_, at))| (format!("sha256:{id}"), removed_at(*at)))
                .collect();
            let in_use: HashSet<String> = images
                .iter()
                .filter(|(_, (used, _))| *used)
                .map(|(id, _)| format!("sha256:{id}"))
                .collect();
            let check = late_check(&removed, &in_use, listed_at);
            for (id, image) in &removed {
                let used = in_use.contains(id);
                prop_assert_eq!(check.heal.contains(id), used);
                let settled = image.at + LATE_CREATE_AT_MOST < listed_at;
                prop_assert_eq!(check.forget.contains(id), !used && settled);
            }
        }
    }
}
