//! Holding back refreshes that a registry's rate limit would not cover: a pure function of the
//! plan and the budgets registries stated.
//!
//! A fleet that shares one limit (one account, or one NAT address for anonymous pulls) must not
//! let each host spend what the whole fleet needs. Each host takes its share, the budget left
//! divided by the hosts that share it (`limit_shared_by`), and holds back the refreshes past
//! it until the budget comes back. A missing image is never held back: a host without its
//! images is worse than a spent limit.

use std::collections::BTreeMap;

use crate::decide::outcome::Deferral;
use crate::decide::pull_plan::{Action, Decision, Presence};
use crate::model::rate_limit::Budget;

/// For each decision, in plan order, the deferral when its refresh must wait for the budget.
/// Only pulls of present images spend it (a re-tag asks no registry). `shared_by` gives the
/// hosts sharing a registry's limit, or `None` when refreshes there are never held back (its
/// pulls go through a mirror, which asks the origin once for the fleet).
pub(crate) fn held_back(
    plan: &[Decision],
    budgets: &BTreeMap<String, Budget>,
    shared_by: impl Fn(&str) -> Option<u64>,
) -> Vec<Option<Deferral>> {
    let mut spent: BTreeMap<&str, u64> = BTreeMap::new();
    plan.iter()
        .map(|d| {
            if d.action != Action::Pull || d.state != Presence::Present {
                return None;
            }
            let registry = d.reference().registry();
            let budget = budgets.get(registry)?;
            let sharing = shared_by(registry)?.max(1);
            let used = spent.entry(registry).or_default();
            if *used < budget.remaining / sharing {
                *used += 1;
                return None;
            }
            Some(Deferral::RateLimit {
                registry: registry.to_owned(),
                remaining: budget.remaining,
                shared_by: sharing,
            })
        })
        .collect()
}

/// Whether an update check (one request) waits: the budget would not cover one request on
/// every host that shares it.
pub(crate) fn check_held_back(budget: Option<&Budget>, shared_by: Option<u64>) -> bool {
    match (budget, shared_by) {
        (Some(b), Some(n)) => b.remaining < n.max(1),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::pin::{PinMode, Pinned};
    use proptest::prelude::*;

    fn decision(name: &str, state: Presence, action: Action) -> Decision {
        Decision::for_tests(Pinned::for_tests(name, PinMode::Follow), state, action)
    }

    fn budget(remaining: u64) -> Budget {
        Budget {
            limit: 100,
            remaining,
            window_secs: Some(21600),
        }
    }

    #[test]
    fn each_host_takes_its_share_and_missing_images_never_wait() {
        let plan = [
            decision("r.example/a:1", Presence::Present, Action::Pull),
            decision("r.example/b:1", Presence::Missing, Action::Pull),
            decision("r.example/c:1", Presence::Present, Action::Pull),
            decision("r.example/d:1", Presence::Present, Action::Tag),
            decision("o.example/e:1", Presence::Present, Action::Pull),
        ];
        // 25 left for 10 hosts: 2 refreshes each.
        let budgets = BTreeMap::from([("r.example".to_owned(), budget(25))]);
        let held = held_back(&plan, &budgets, |_| Some(10));
        assert_eq!(held[..4], [None, None, None, None], "{held:?}");
        assert_eq!(held[4], None, "no budget stated");
        let budgets = BTreeMap::from([("r.example".to_owned(), budget(15))]);
        let held = held_back(&plan, &budgets, |_| Some(10));
        assert_eq!(held[0], None);
        assert_eq!(held[1], None, "missing");
        assert_eq!(
            held[2],
            Some(Deferral::RateLimit {
                registry: "r.example".into(),
                remaining: 15,
                shared_by: 10
            })
        );
        assert_eq!(held[3], None, "a re-tag asks no registry");
        // Behind a mirror: never held back.
        assert!(
            held_back(&plan, &budgets, |_| None)
                .iter()
                .all(Option::is_none)
        );
        assert!(check_held_back(Some(&budget(9)), Some(10)));
        assert!(!check_held_back(Some(&budget(10)), Some(10)));
        assert!(!check_held_back(None, Some(10)));
    }

    proptest! {
        #[test]
        fn refreshes_never_exceed_the_share_and_missing_images_always_go(
            states in proptest::collection::vec((any::<bool>(), any::<bool>(), 0usize..3), 0..40),
            remaining in 0u64..50,
            sharing in 1u64..8,
        ) {
            let registries = ["a.example", "b.example", "c.example"];
            let plan: Vec<Decision> = states
                .iter()
                .enumerate()
                .map(|(i, (present, pull, r))| {
                    decision(
                        &format!("{}/img-{i}:1", registries[*r]),
                        if *present { Presence::Present } else { Presence::Missing },
                        if *pull { Action::Pull } else { Action::Keep },
                    )
                })
                .collect();
            let budgets: BTreeMap<String, Budget> =
                registries.iter().map(|r| ((*r).to_owned(), budget(remaining))).collect();
            let held = held_back(&plan, &budgets, |_| Some(sharing));
            for r in registries {
                let refreshes: Vec<bool> = plan
                    .iter()
                    .zip(&held)
                    .filter(|(d, _)| d.reference().registry() == r
                        && d.state == Presence::Present && d.action == Action::Pull)
                    .map(|(_, h)| h.is_none())
                    .collect();
                let going = refreshes.iter().filter(|g| **g).count() as u64;
                prop_assert_eq!(going, (remaining / sharing).min(refreshes.len() as u64));
                // The first ones go, in plan order.
                prop_assert!(refreshes.windows(2).all(|w| w[0] || !w[1]));
            }
            for (d, h) in plan.iter().zip(&held) {
                if d.state == Presence::Missing || d.action != Action::Pull {
                    prop_assert!(h.is_none());
                }
            }
        }
    }
}
