//! The cooldown of new digests (`min_digest_age`): a `follow` or `first-pull` image adopts a
//! digest its tag names only once stowage has seen the tag name it for that long. A digest
//! published by a compromised pipeline is usually found and withdrawn within hours; a fleet
//! that waits a day never runs it. Missing images are never held back: a host without the
//! image gets the tag's digest at once, as without the cooldown.
//!
//! What counts is how long stowage has seen the tag name the digest (kept in the state file),
//! never the image's creation time, which a build sets to anything.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::policy::state::Sighting;

/// A digest the tag names that is not adopted yet.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Cooldown {
    /// The digest the tag names now.
    pub digest: String,
    /// Since when stowage has seen the tag name it.
    #[serde(serialize_with = "rfc3339")]
    pub seen_since: i64,
    /// When it is adopted, if the tag still names it then.
    #[serde(serialize_with = "rfc3339")]
    pub eligible_at: i64,
}

impl Cooldown {
    /// When it is adopted, for people: "2026-12-07 14:00 UTC".
    pub(crate) fn eligible_at_words(&self) -> String {
        at(self.eligible_at)
    }

    /// "the tag moved to D; it is adopted from 2026-12-07 14:00 UTC, once the tag has named
    /// it for 1day (min_digest_age)".
    pub(crate) fn words(&self, min_age: Duration) -> String {
        format!(
            "the tag moved to {}; it is adopted from {}, once the tag has named it for {} \
             (min_digest_age)",
            self.digest,
            at(self.eligible_at),
            humantime::format_duration(min_age)
        )
    }
}

/// What stowage has seen of the tag by `now`: the earlier sighting when the tag named the
/// same digest then, else a new one from `now` (a tag that moved on starts over).
pub(crate) fn sighting(previous: Option<&Sighting>, digest: &str, now: i64) -> Sighting {
    match previous {
        Some(p) if p.digest == digest && p.since <= now => p.clone(),
        _ => Sighting {
            digest: digest.to_owned(),
            since: now,
        },
    }
}

/// The cooldown `seen` is still in at `now`, or `None` when its digest may be adopted.
pub(crate) fn cooling(seen: &Sighting, min_age: Duration, now: i64) -> Option<Cooldown> {
    let eligible_at = seen
        .since
        .saturating_add(i64::try_from(min_age.as_secs()).unwrap_or(i64::MAX));
    (now < eligible_at).then(|| Cooldown {
        digest: seen.digest.clone(),
        seen_since: seen.since,
        eligible_at,
    })
}

/// Seconds since the epoch as a UTC time, for people.
fn at(secs: i64) -> String {
    DateTime::<Utc>::from_timestamp(secs, 0).map_or_else(
        || secs.to_string(),
        |t| t.format("%Y-%m-%d %H:%M UTC").to_string(),
    )
}

fn rfc3339<S: serde::Serializer>(secs: &i64, serializer: S) -> Result<S::Ok, S::Error> {
    match DateTime::<Utc>::from_timestamp(*secs, 0) {
        Some(t) => serializer.serialize_str(&t.to_rfc3339()),
        None => serializer.serialize_i64(*secs),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const DAY: Duration = Duration::from_secs(86_400);

    fn seen(digest: &str, since: i64) -> Sighting {
        Sighting {
            digest: digest.into(),
            since,
        }
    }

    #[test]
    fn a_digest_is_adopted_once_the_tag_has_named_it_for_the_minimum_age() {
        let s = sighting(None, "sha256:b", 1_000);
        assert_eq!(s, seen("sha256:b", 1_000));
        let c = cooling(&s, DAY, 1_000).expect("cooling");
        assert_eq!((c.seen_since, c.eligible_at), (1_000, 1_000 + 86_400));
        assert!(cooling(&s, DAY, 1_000 + 86_399).is_some());
        assert_eq!(cooling(&s, DAY, 1_000 + 86_400), None);
        assert!(
            c.words(DAY).contains("1970-01-02 00:16 UTC"),
            "{}",
            c.words(DAY)
        );
    }

    #[test]
    fn a_tag_that_moves_on_starts_over() {
        let first = sighting(None, "sha256:b", 1_000);
        let same = sighting(Some(&first), "sha256:b", 50_000);
        assert_eq!(same, first, "the same digest keeps its first sighting");
        let moved = sighting(Some(&first), "sha256:c", 50_000);
        assert_eq!(moved, seen("sha256:c", 50_000));
        // Back to the first digest: seen anew, since it was not named all along.
        assert_eq!(
            sighting(Some(&moved), "sha256:b", 60_000),
            seen("sha256:b", 60_000)
        );
    }

    #[test]
    fn a_sighting_from_the_future_is_not_trusted() {
        // A clock stepped back (or a state file from another host) must not start the wait
        // later than now, nor let a digest through early: it starts over from now.
        let ahead = seen("sha256:b", 90_000);
        assert_eq!(
            sighting(Some(&ahead), "sha256:b", 10_000),
            seen("sha256:b", 10_000)
        );
    }

    proptest! {
        /// A digest is adopted exactly when it has been seen for the minimum age, whatever the
        /// sightings before.
        #[test]
        fn adoption_waits_exactly_the_minimum_age(
            since in 0i64..1_000_000,
            age in 0u64..200_000,
            later in 0i64..400_000,
        ) {
            let s = seen("sha256:b", since);
            let now = since + later;
            let adopted = cooling(&sighting(Some(&s), "sha256:b", now), Duration::from_secs(age), now).is_none();
            prop_assert_eq!(adopted, later >= i64::try_from(age).unwrap());
        }
    }
}
