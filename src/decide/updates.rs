//! `pin.check_updates`: which pinned images to ask about, when within an interval, and what
//! the registry's answer means.

use std::time::Duration;

use crate::decide::pin::{PinMode, Pinned};

/// Whether an image pinned in `mode` is checked for updates: lock and first-pull pins. A
/// followed tag is pulled when it moves anyway, and a digest written in the config has no tag
/// of its own to watch.
pub(crate) fn checked(p: &Pinned) -> bool {
    matches!(p.mode, PinMode::Lock | PinMode::FirstPull)
}

/// Whether the registry's tag names other content than `pinned`: its manifest for this
/// host's platform (`digest`) and, for a multi-platform tag, its index (`index`) both differ.
pub(crate) fn update_available(pinned: &str, digest: &str, index: Option<&str>) -> bool {
    pinned != digest && index != Some(pinned)
}

/// The pause before each of `n` checks in a round of `every`, spread evenly so a registry sees
/// one request at a time rather than a burst, one every `every / n`. Every round lasts
/// `every`; within it, this host's checks are shifted by `offset` (its splay), so a fleet's
/// hosts do not ask at the same moment. The first round starts at once.
pub(crate) fn spread(n: usize, every: Duration, offset: Duration, first: bool) -> Vec<Duration> {
    let Some(count) = u32::try_from(n).ok().filter(|c| *c > 0) else {
        return Vec::new();
    };
    let gap = every / count;
    let rest = gap * (count - 1);
    let lead = if first {
        // Within the first gap, so the round's checks all fit in it.
        if gap.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(u64::try_from(offset.as_nanos() % gap.as_nanos()).unwrap_or(0))
        }
    } else {
        // Back to the same place in the next round.
        every - rest
    };
    std::iter::once(lead)
        .chain(std::iter::repeat_n(gap, n - 1))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const A: &str = "sha256:aaaa";
    const B: &str = "sha256:bbbb";
    const I: &str = "sha256:1111";

    #[test]
    fn an_update_is_content_other_than_the_pin() {
        assert!(!update_available(A, A, None));
        assert!(update_available(A, B, None));
        // Pinned to the index itself (a first pull by tag of a multi-platform image).
        assert!(!update_available(I, A, Some(I)));
        assert!(update_available(I, A, Some(B)));
        // Pinned to this platform's manifest, which the moved index still lists.
        assert!(!update_available(A, A, Some(B)));
    }

    #[test]
    fn only_lock_and_first_pull_pins_are_checked() {
        for (mode, yes) in [
            (PinMode::Lock, true),
            (PinMode::FirstPull, true),
            (PinMode::Follow, false),
            (PinMode::Fixed, false),
        ] {
            assert_eq!(checked(&Pinned::for_tests("r.example/a:1", mode)), yes);
        }
    }

    proptest! {
        /// One check per image; a later round lasts exactly the interval, and the first one
        /// no longer than it, evenly spaced after its lead.
        #[test]
        fn a_round_spreads_its_checks_over_the_interval(
            n in 0usize..500,
            every_ms in 1u64..100_000_000,
            offset_ms in 0u64..200_000_000,
        ) {
            let every = Duration::from_millis(every_ms);
            let offset = Duration::from_millis(offset_ms);
            let first = spread(n, every, offset, true);
            let later = spread(n, every, offset, false);
            prop_assert_eq!(first.len(), n);
            prop_assert_eq!(later.len(), n);
            if n > 0 {
                prop_assert!(first.iter().sum::<Duration>() <= every);
                prop_assert_eq!(later.iter().sum::<Duration>(), every);
                prop_assert!(first[1..].iter().chain(&later[1..]).all(|p| *p == first.get(1).copied().unwrap_or_default()));
            }
        }
    }

    #[test]
    fn one_image_is_checked_once_an_interval() {
        let hour = Duration::from_secs(3600);
        assert_eq!(spread(1, hour, Duration::ZERO, true), [Duration::ZERO]);
        assert_eq!(spread(1, hour, Duration::ZERO, false), [hour]);
        let quarter = Duration::from_secs(900);
        assert_eq!(
            spread(4, hour, Duration::from_secs(60), false),
            [quarter, quarter, quarter, quarter]
        );
        assert_eq!(
            spread(4, hour, Duration::from_secs(960), true)[0],
            Duration::from_secs(60)
        );
    }
}
