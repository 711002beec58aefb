//! The required images a host is still missing: which, why, and the status line systemd shows.

use std::collections::{BTreeMap, BTreeSet};

use crate::decide::outcome::{Deferral, Outcome, PullResult};
use crate::decide::pin::Pinned;
use crate::model::failure::FailureClass;

/// A required image that is not there after a pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Missing {
    /// Its fully qualified name.
    pub name: String,
    /// Why, when it failed (none when it was skipped because stowage was stopping).
    pub class: Option<FailureClass>,
}

/// The images of a pass that are not present afterwards. Kept counts as present: the name
/// points at usable content even if a newer digest could not be had.
pub(crate) fn missing(outcomes: &[Outcome]) -> Vec<Missing> {
    outcomes
        .iter()
        .filter_map(|o| match &o.result {
            // Deferred images are present: only refreshes wait for a window.
            PullResult::Kept
            | PullResult::Pulled { .. }
            | PullResult::Tagged { .. }
            | PullResult::Deferred { .. } => None,
            PullResult::Failed { class, .. } => Some(Missing {
                name: o.decision.reference().to_string(),
                class: Some(*class),
            }),
            PullResult::Skipped => Some(Missing {
                name: o.decision.reference().to_string(),
                class: None,
            }),
        })
        .collect()
}

/// The status line while images are missing: how many, and the first few with their class.
pub(crate) fn waiting_status(missing: &[Missing], total: usize) -> String {
    const SHOWN: usize = 3;
    let mut names: Vec<String> = missing
        .iter()
        .take(SHOWN)
        .map(|m| match m.class {
            Some(c) => format!("{} ({})", m.name, c.as_str()),
            None => m.name.clone(),
        })
        .collect();
    if missing.len() > SHOWN {
        names.push(format!("and {} more", missing.len() - SHOWN));
    }
    format!(
        "waiting for {} of {total} images: {}",
        missing.len(),
        names.join(", ")
    )
}

/// The status line once everything is present, saying which refreshes wait and why.
pub(crate) fn ready_status(total: usize, outcomes: &[Outcome]) -> String {
    let mut line = match total {
        1 => "ready: the 1 required image is present".to_owned(),
        n => format!("ready: all {n} required images present"),
    };
    let waits: Vec<&Deferral> = outcomes
        .iter()
        .filter_map(|o| match &o.result {
            PullResult::Deferred { why } => Some(why),
            _ => None,
        })
        .collect();
    if let Some(first) = waits.first() {
        line.push_str(&format!("; {} refreshes wait ({first}", waits.len()));
        if waits.len() > 1 && waits.iter().any(|w| w != first) {
            line.push_str(", and more");
        }
        line.push(')');
    }
    line
}

/// The required images that are not there, by name, and how many retries they have had.
#[derive(Debug, Default)]
pub(crate) struct Shortfall {
    /// What is missing, by name, with the image and why.
    missing: BTreeMap<String, (Pinned, Missing)>,
    /// Retries of the missing images so far (0 once none is missing): the backoff step.
    pub attempt: u32,
    /// The images a pass has seen in the store (present or not) at least once.
    known: BTreeSet<String>,
}

impl Shortfall {
    /// Takes in a pass over `images`: what it left present is no longer missing, what it did
    /// not is. `None`: the engine could not be read. An image no pass has seen yet counts as
    /// missing then; what was seen stands.
    pub(crate) fn record(&mut self, images: &[Pinned], outcomes: Option<&[Outcome]>) {
        let name = |p: &Pinned| p.image.reference.to_string();
        let gone: Vec<Missing> = match outcomes {
            Some(outcomes) => {
                self.known.extend(images.iter().map(name));
                missing(outcomes)
            }
            None => images
                .iter()
                .filter(|p| !self.known.contains(&name(p)))
                .map(|p| Missing {
                    name: name(p),
                    class: Some(FailureClass::Engine),
                })
                .collect(),
        };
        for p in images {
            if outcomes.is_some() || !self.known.contains(&name(p)) {
                self.missing.remove(&name(p));
            }
        }
        for m in gone {
            if let Some(p) = images
                .iter()
                .find(|p| p.image.reference.to_string() == m.name)
            {
                self.missing.insert(m.name.clone(), (p.clone(), m));
            }
        }
        if self.missing.is_empty() {
            self.attempt = 0;
        }
    }

    /// The missing images, to retry.
    pub(crate) fn images(&self) -> Vec<Pinned> {
        self.missing.values().map(|(p, _)| p.clone()).collect()
    }

    /// What is missing, and why.
    pub(crate) fn list(&self) -> Vec<Missing> {
        self.missing.values().map(|(_, m)| m.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decide::pin::PinMode;
    use crate::decide::pull_plan::{Action, Decision, Presence};

    fn m(name: &str, class: Option<FailureClass>) -> Missing {
        Missing {
            name: name.into(),
            class,
        }
    }

    #[test]
    fn the_waiting_status_names_a_few_and_counts_the_rest() {
        let one = [m("r/a:1", Some(FailureClass::Auth))];
        assert_eq!(
            waiting_status(&one, 3),
            "waiting for 1 of 3 images: r/a:1 (auth)"
        );
        let many: Vec<Missing> = (0..5)
            .map(|i| m(&format!("r/{i}:1"), Some(FailureClass::Network)))
            .chain([m("r/s:1", None)])
            .collect();
        assert_eq!(
            waiting_status(&many, 9),
            "waiting for 6 of 9 images: r/0:1 (network), r/1:1 (network), r/2:1 (network), \
             and 3 more"
        );
    }

    fn pinned(name: &str) -> Pinned {
        Pinned::for_tests(name, PinMode::Follow)
    }

    fn outcome(p: &Pinned, result: PullResult) -> Outcome {
        Outcome {
            decision: Decision::for_tests(p.clone(), Presence::Missing, Action::Pull),
            result,
            attempts: 1,
            elapsed_ms: 0,
        }
    }

    fn failed() -> PullResult {
        PullResult::Failed {
            class: FailureClass::Network,
            message: "down".into(),
            detail: String::new(),
        }
    }

    fn names(s: &Shortfall) -> Vec<String> {
        s.list().into_iter().map(|m| m.name).collect()
    }

    #[test]
    fn a_shortfall_follows_what_each_pass_got() {
        let (a, b) = (pinned("r.example/a:1"), pinned("r.example/b:1"));
        let mut s = Shortfall::default();
        // Before any pass read the store, an unreadable engine leaves everything missing.
        s.record(&[a.clone(), b.clone()], None);
        assert_eq!(names(&s), ["r.example/a:1", "r.example/b:1"]);
        s.record(
            &[a.clone(), b.clone()],
            Some(&[outcome(&a, PullResult::Kept), outcome(&b, failed())]),
        );
        assert_eq!(names(&s), ["r.example/b:1"]);
        // Once seen, an unreadable engine changes nothing: a is not reported missing. An image
        // no pass has seen yet (c, on a schedule of its own) is.
        let c = pinned("r.example/c:1");
        s.record(&[a.clone(), b.clone(), c.clone()], None);
        assert_eq!(names(&s), ["r.example/b:1", "r.example/c:1"]);
        s.record(
            std::slice::from_ref(&c),
            Some(&[outcome(&c, PullResult::Kept)]),
        );
        assert_eq!(names(&s), ["r.example/b:1"]);
        // A retry covers only b; a pass over a alone leaves b's entry as it was.
        s.record(std::slice::from_ref(&a), Some(&[outcome(&a, failed())]));
        assert_eq!(names(&s), ["r.example/a:1", "r.example/b:1"]);
        s.attempt = 3;
        let tagged = PullResult::Tagged {
            digest: "sha256:00".into(),
        };
        s.record(
            &[a.clone(), b.clone()],
            Some(&[outcome(&a, tagged), outcome(&b, PullResult::Kept)]),
        );
        assert!(names(&s).is_empty());
        assert_eq!(
            s.attempt, 0,
            "the backoff starts over once nothing is missing"
        );
    }

    /// A present image's outcome.
    fn present(result: PullResult) -> Outcome {
        let p = Pinned::for_tests("r.example/a:1", PinMode::Follow);
        Outcome {
            decision: Decision::for_tests(p, Presence::Present, Action::Pull),
            result,
            attempts: 0,
            elapsed_ms: 0,
        }
    }

    #[test]
    fn the_ready_line_says_which_refreshes_wait() {
        assert_eq!(ready_status(2, &[]), "ready: all 2 required images present");
        let held = PullResult::Deferred {
            why: Deferral::RateLimit {
                registry: "docker.io".into(),
                remaining: 3,
                shared_by: 50,
            },
        };
        let line = ready_status(2, &[present(PullResult::Kept), present(held)]);
        assert_eq!(
            line,
            "ready: all 2 required images present; 1 refreshes wait (held back: docker.io has 3 \
             requests left for 50 hosts)"
        );
        assert!(missing(&[present(PullResult::Kept)]).is_empty());
    }
}
