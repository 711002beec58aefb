//! What a pull run did, image by image, as plain data: reported, exported as metrics, and fed
//! back into the shortfall bookkeeping.

use serde::Serialize;

use crate::decide::pull_plan::Decision;
use crate::model::failure::FailureClass;

/// How one required image ended up after a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "result", rename_all = "kebab-case")]
pub enum PullResult {
    /// Nothing to do: the name points at the wanted content.
    Kept,
    /// Pulled by digest, and named.
    Pulled {
        /// The digest pulled: the decision's, which the entry carries.
        #[serde(skip)]
        digest: Option<String>,
        /// Whether new content arrived (false: the engine had it already).
        updated: bool,
        /// Where it came from: the origin registry or a mirror.
        from: String,
    },
    /// The wanted content was present; only the name was pointed at it.
    Tagged {
        /// The digest the name now points at: the decision's, which the entry carries.
        #[serde(skip)]
        digest: String,
    },
    /// Every attempt failed, or the failure was not worth retrying.
    Failed {
        /// Which kind of failure.
        class: FailureClass,
        /// What happened and what to do about it, in a sentence.
        message: String,
        /// The engine's or the registry client's own words, for JSON and debug logs.
        #[serde(skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// Not attempted because stowage was stopping.
    Skipped,
    /// Present, and the refresh waits (the daemon only).
    Deferred {
        /// What it waits for.
        #[serde(flatten)]
        why: Deferral,
    },
}

/// What a deferred refresh waits for.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "deferred_for", rename_all = "kebab-case")]
pub enum Deferral {
    /// The pull window, closed when the image's turn came.
    Window {
        /// When it opens next (RFC 3339), if it ever does.
        opens: Option<String>,
    },
    /// Budget: the registry's remaining requests would not cover this refresh on every host
    /// that shares its rate limit.
    RateLimit {
        /// The registry.
        registry: String,
        /// Requests it said were left.
        remaining: u64,
        /// Hosts sharing them (`limit_shared_by`).
        shared_by: u64,
    },
}

impl std::fmt::Display for Deferral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Deferral::Window { opens } => write!(
                f,
                "outside the pull window; it opens {}",
                opens.as_deref().unwrap_or("never again")
            ),
            Deferral::RateLimit {
                registry,
                remaining,
                shared_by,
            } => write!(
                f,
                "held back: {registry} has {remaining} requests left for {shared_by} hosts"
            ),
        }
    }
}

/// One image's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The decision that was carried out.
    pub decision: Decision,
    /// How it ended.
    pub result: PullResult,
    /// Registry attempts made for the image: failed resolutions and pulls (0 when none was
    /// needed).
    pub attempts: u32,
    /// Time spent on it, retries included, in milliseconds.
    pub elapsed_ms: u64,
}

/// A run's entry: the decision's head, the store as it was found (`before`: a pulled image
/// was missing then, not now), what was decided, and how it ended.
impl Serialize for Outcome {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use crate::decide::pull_plan::{Found, Head, Verdict};
        #[derive(Serialize)]
        struct Entry<'a> {
            #[serde(flatten)]
            head: Head<'a>,
            before: Found<'a>,
            #[serde(flatten)]
            verdict: Verdict<'a>,
            #[serde(flatten)]
            result: &'a PullResult,
            attempts: u32,
            elapsed_ms: u64,
        }
        let d = &self.decision;
        Entry {
            head: d.head(),
            before: d.found(),
            verdict: d.verdict(),
            result: &self.result,
            attempts: self.attempts,
            elapsed_ms: self.elapsed_ms,
        }
        .serialize(serializer)
    }
}

impl Outcome {
    /// Whether the image is now in the store as required.
    pub fn is_ok(&self) -> bool {
        matches!(
            self.result,
            PullResult::Kept | PullResult::Pulled { .. } | PullResult::Tagged { .. }
        )
    }
}

/// Counts of a run's outcomes, for the summary line.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Summary {
    /// Images pulled with new content.
    pub pulled: usize,
    /// Images pulled whose content the engine already had.
    pub up_to_date: usize,
    /// Images whose name was pointed back at the pinned content.
    pub tagged: usize,
    /// Images present with nothing to do.
    pub kept: usize,
    /// Images that failed.
    pub failed: usize,
    /// Images not attempted because of shutdown.
    pub skipped: usize,
    /// Present images whose refresh waits for the pull window.
    pub deferred: usize,
}

impl Summary {
    /// Tallies `outcomes`.
    pub(crate) fn of(outcomes: &[Outcome]) -> Summary {
        let mut s = Summary::default();
        for o in outcomes {
            match &o.result {
                PullResult::Kept => s.kept += 1,
                PullResult::Pulled { updated: true, .. } => s.pulled += 1,
                PullResult::Pulled { updated: false, .. } => s.up_to_date += 1,
                PullResult::Tagged { .. } => s.tagged += 1,
                PullResult::Failed { .. } => s.failed += 1,
                PullResult::Skipped => s.skipped += 1,
                PullResult::Deferred { .. } => s.deferred += 1,
            }
        }
        s
    }

    /// Whether every image is present as required.
    pub(crate) fn all_ok(&self) -> bool {
        self.failed == 0 && self.skipped == 0
    }
}
