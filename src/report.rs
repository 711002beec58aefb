//! What `plan` and `pull` print: aligned text for people, JSON for machines.

use std::fmt::Write as _;
use std::path::Path;

use serde::Serialize;

use crate::converge::{Outcome, PullResult, Summary};
use crate::plan::{Action, Decision};

/// The `plan` table.
pub fn plan_text(plan: &[Decision]) -> String {
    if plan.is_empty() {
        return "no images are required by the configuration\n".into();
    }
    let width = plan
        .iter()
        .map(|d| display_name(d).len())
        .max()
        .unwrap_or(0)
        .max("IMAGE".len());
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<width$}  {:<8} {:<8} WHY",
        "IMAGE", "STATE", "ACTION"
    );
    for d in plan {
        let state = match d.state {
            crate::plan::Presence::Missing => "missing",
            crate::plan::Presence::Present => "present",
        };
        let _ = writeln!(
            out,
            "{:<width$}  {:<8} {:<8} {}",
            display_name(d),
            state,
            d.action.as_str(),
            d.reason
        );
    }
    let count = |a: Action| plan.iter().filter(|d| d.action == a).count();
    let _ = writeln!(
        out,
        "\n{} to pull, {} to refresh, {} present",
        count(Action::Pull),
        count(Action::Refresh),
        count(Action::Keep)
    );
    out
}

/// The `plan --json` document.
pub fn plan_json(config: &Path, plan: &[Decision]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        config: &'a Path,
        images: &'a [Decision],
    }
    let doc = Doc {
        config,
        images: plan,
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

/// The `pull` report: one line per image, then a summary.
pub fn pull_text(outcomes: &[Outcome]) -> String {
    let width = outcomes
        .iter()
        .map(|o| display_name(&o.decision).len())
        .max()
        .unwrap_or(0);
    let mut out = String::new();
    for o in outcomes {
        let name = display_name(&o.decision);
        let secs = o.elapsed_ms as f64 / 1000.0;
        let line = match &o.result {
            PullResult::Kept => format!("present     {name}"),
            PullResult::Pulled { digest, updated } => format!(
                "{}  {name:<width$}  {} ({secs:.1}s{})",
                if *updated { "pulled    " } else { "up to date" },
                digest.as_deref().unwrap_or("digest unknown"),
                attempts_note(o.attempts),
            ),
            PullResult::Failed { message, .. } if o.attempts > 1 => {
                format!(
                    "FAILED      {name}: {message} (after {} attempts)",
                    o.attempts
                )
            }
            PullResult::Failed { message, .. } => format!("FAILED      {name}: {message}"),
            PullResult::Skipped => format!("skipped     {name} (stopping)"),
        };
        out.push_str(line.trim_end());
        out.push('\n');
    }
    let s = Summary::of(outcomes);
    let _ = writeln!(
        out,
        "{} images: {} pulled, {} up to date, {} present, {} failed{}",
        outcomes.len(),
        s.pulled,
        s.up_to_date,
        s.kept,
        s.failed,
        if s.skipped > 0 {
            format!(", {} skipped", s.skipped)
        } else {
            String::new()
        }
    );
    out
}

/// The `pull --json` document.
pub fn pull_json(config: &Path, outcomes: &[Outcome]) -> String {
    #[derive(Serialize)]
    struct Doc<'a> {
        config: &'a Path,
        images: &'a [Outcome],
        summary: Summary,
    }
    let doc = Doc {
        config,
        images: outcomes,
        summary: Summary::of(outcomes),
    };
    serde_json::to_string_pretty(&doc).expect("plain data always serialises") + "\n"
}

fn attempts_note(attempts: u32) -> String {
    if attempts > 1 {
        format!(", {attempts} attempts")
    } else {
        String::new()
    }
}

fn display_name(d: &Decision) -> String {
    match &d.image.platform {
        Some(p) => format!("{} [{p}]", d.image.reference),
        None => d.image.reference.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{PullPolicy, RequiredImage};
    use crate::failure::FailureClass;
    use crate::plan::Presence;

    fn decision(name: &str, action: Action) -> Decision {
        let reference: crate::reference::ImageRef = name.parse().unwrap();
        Decision {
            image: RequiredImage {
                policy: PullPolicy::default_for(&reference),
                reference,
                platform: None,
                schedule: None,
            },
            state: if action == Action::Pull {
                Presence::Missing
            } else {
                Presence::Present
            },
            action,
            reason: "because",
        }
    }

    #[test]
    fn plan_table_is_aligned_and_qualified() {
        let text = plan_text(&[
            decision("nginx", Action::Pull),
            decision("r:1/a:1", Action::Keep),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("IMAGE "));
        assert!(lines[1].starts_with("docker.io/library/nginx:latest  missing  pull"));
        assert!(lines[2].starts_with("r:1/a:1                         present  keep"));
        assert_eq!(lines[4], "1 to pull, 0 to refresh, 1 present");
    }

    #[test]
    fn pull_report_lists_failures_and_counts() {
        let outcomes = vec![
            Outcome {
                decision: decision("r:1/a:1", Action::Pull),
                result: PullResult::Pulled {
                    digest: Some("sha256:abc".into()),
                    updated: true,
                },
                attempts: 1,
                elapsed_ms: 1500,
            },
            Outcome {
                decision: decision("r:1/b:1", Action::Pull),
                result: PullResult::Failed {
                    class: FailureClass::NotFound,
                    message: "not found: r:1/b:1 does not exist".into(),
                },
                attempts: 1,
                elapsed_ms: 10,
            },
        ];
        let text = pull_text(&outcomes);
        assert!(
            text.contains("pulled      r:1/a:1  sha256:abc (1.5s)"),
            "{text}"
        );
        assert!(
            text.contains("FAILED      r:1/b:1: not found: r:1/b:1 does not exist\n"),
            "{text}"
        );
        assert!(
            text.ends_with("2 images: 1 pulled, 0 up to date, 0 present, 1 failed\n"),
            "{text}"
        );
        let json: serde_json::Value =
            serde_json::from_str(&pull_json(Path::new("/c.toml"), &outcomes)).unwrap();
        assert_eq!(json["images"][1]["result"], "failed");
        assert_eq!(json["images"][1]["class"], "not-found");
        assert_eq!(json["images"][0]["image"], "r:1/a:1");
        assert_eq!(json["summary"]["failed"], 1);
    }
}
