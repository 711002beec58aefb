use super::*;
use crate::decide::prune_plan::{Candidate, Kept, Protection, PrunePlan, Rule};
use crate::service::pruner::Removal;

fn line<'a>(text: &'a str, metric: &str) -> Option<&'a str> {
    text.lines()
        .find(|l| l.starts_with(metric) && l[metric.len()..].starts_with(' '))
        .map(|l| &l[metric.len() + 1..])
}

fn outcome(name: &str, digest: &str, drift: bool, result: PullResult) -> Outcome {
    use crate::decide::pin::{PinMode, Pinned};
    use crate::decide::pull_plan::{Action, Decision, Presence};
    let pinned = Pinned::for_tests(name, PinMode::Lock);
    Outcome {
        decision: Decision {
            digest: Some(digest.into()),
            drift,
            ..Decision::for_tests(pinned, Presence::Present, Action::Tag)
        },
        result,
        attempts: 0,
        elapsed_ms: 0,
    }
}

#[test]
fn each_image_s_pin_digest_and_drift_and_the_last_success_are_exported() {
    let m = Metrics::new();
    let tagged = PullResult::Tagged {
        digest: "sha256:aa".into(),
    };
    let failed = PullResult::Failed {
        class: FailureClass::Engine,
        message: "tag refused".into(),
        detail: String::new(),
    };
    m.pass(
        "boot",
        &[
            outcome("reg.example/a:1", "sha256:aa", true, tagged.clone()),
            outcome("reg.example/b:1", "sha256:bb", true, failed),
        ],
    );
    let text = m.encode();
    let info = |image, digest| {
        format!("stowage_image_info{{digest=\"{digest}\",image=\"{image}\",pin=\"lock\"}}")
    };
    assert_eq!(
        line(&text, &info("reg.example/a:1", "sha256:aa")),
        Some("1"),
        "{text}"
    );
    // Drift repaired is counted, drift left is shown.
    assert_eq!(
        line(
            &text,
            "stowage_drift_repairs_total{image=\"reg.example/a:1\"}"
        ),
        Some("1")
    );
    assert_eq!(
        line(&text, "stowage_image_drifted{image=\"reg.example/a:1\"}"),
        Some("0")
    );
    assert_eq!(
        line(&text, "stowage_image_drifted{image=\"reg.example/b:1\"}"),
        Some("1")
    );
    // A run with a failure is no success; the engine answered.
    assert_eq!(
        line(&text, "stowage_pull_last_success_timestamp_seconds"),
        Some("0")
    );
    assert_eq!(line(&text, "stowage_engine_up"), Some("1"));
    assert_eq!(
        line(&text, "stowage_pull_failures_total{class=\"auth\"}"),
        Some("0")
    );

    // A new digest replaces the series; a clean run is a success.
    m.pass(
        "schedule",
        &[outcome("reg.example/a:1", "sha256:cc", false, tagged)],
    );
    let text = m.encode();
    assert_eq!(line(&text, &info("reg.example/a:1", "sha256:aa")), None);
    assert_eq!(
        line(&text, &info("reg.example/a:1", "sha256:cc")),
        Some("1")
    );
    let last: i64 = line(&text, "stowage_pull_last_success_timestamp_seconds")
        .unwrap()
        .parse()
        .unwrap();
    assert!(last > 1_700_000_000, "{last}");
    // An image that left the config leaves every series.
    m.presence(["reg.example/b:1"].into_iter(), &[]);
    let text = m.encode();
    assert_eq!(line(&text, &info("reg.example/a:1", "sha256:cc")), None);
    assert_eq!(
        line(&text, "stowage_image_drifted{image=\"reg.example/a:1\"}"),
        None
    );
    m.engine_up(false);
    assert_eq!(line(&m.encode(), "stowage_engine_up"), Some("0"));
}

#[test]
fn every_metric_the_alert_rules_use_is_exported() {
    let m = Metrics::new();
    m.prunes_configured(Some(85.0));
    m.pass(
        "boot",
        &[outcome(
            "reg.example/a:1",
            "sha256:aa",
            true,
            PullResult::Kept,
        )],
    );
    m.presence(["reg.example/a:1"].into_iter(), &[]);
    m.update_available("reg.example/a:1", true);
    m.budgets(&BTreeMap::from([(
        "docker.io".to_owned(),
        Budget {
            limit: 100,
            remaining: 5,
            window_secs: Some(21600),
        },
    )]));
    let plan = PrunePlan {
        keep: vec![Kept {
            id: "k".into(),
            names: vec![],
            size: 7,
            protection: Protection::InUse,
        }],
        ..PrunePlan::default()
    };
    m.prune(
        "schedule",
        &Cycle {
            plan,
            removals: Vec::new(),
            late_races: vec![],
            still_lost: vec![],
            build_cache_freed: None,
        },
    );
    // An image with a signature policy, checked.
    m.signature(
        "r.example/a:1",
        Some(&Check::Verified {
            signer: crate::model::signature::Signer::Key("sha256:k".into()),
            cached: false,
        }),
    );
    // Exported once measured, as a pruning daemon does at each cycle.
    m.disk(50, 100);
    let text = m.encode();
    let rules = include_str!("../../../prometheus/alerts.yml");
    let mut used: Vec<&str> = rules
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .flat_map(|e| e.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')))
        .filter(|w| w.starts_with("stowage_"))
        .collect();
    used.sort_unstable();
    used.dedup();
    assert!(used.len() >= 10, "{used:?}");
    for name in used {
        assert!(
            text.lines()
                .any(|l| l.starts_with(&format!("# TYPE {name} "))),
            "the alert rules use {name}, which stowage does not export"
        );
    }
}

#[test]
fn presence_and_prune_cycles_are_exported_as_recorded() {
    let m = Metrics::new();
    let missing = [Missing {
        name: "r/b:1".into(),
        class: None,
    }];
    m.presence(["r/a:1", "r/b:1"].into_iter(), &missing);
    let candidate = |id: &str, size, rule| Candidate {
        id: id.into(),
        names: vec![],
        references: vec![],
        digest_names: vec![],
        parent: None,
        steps: vec![],
        size,
        last_used: 0,
        last_used_from: crate::decide::prune_plan::UseSource::Use,
        rule,
    };
    let plan = PrunePlan {
        remove: vec![
            candidate("x", 100, Rule::Dangling),
            candidate("y", 50, Rule::UnusedMaxAge),
        ],
        keep: vec![Kept {
            id: "k".into(),
            names: vec![],
            size: 7,
            protection: Protection::InUse,
        }],
        bytes_expected: 150,
        deferred: 3,
        ..PrunePlan::default()
    };
    let removals = [
        Removal {
            candidate: plan.remove[0].clone(),
            result: RemovalResult::Removed,
            error: None,
            race: Some(crate::service::pruner::Race::Healed),
            untagged: vec![],
            steps_removed: vec![],
            moved: vec![],
            against_plan: vec![crate::service::pruner::AgainstPlan {
                taken: crate::decide::removal::Taken {
                    image: Some("sha256:other".into()),
                    names: vec!["r/b:1".into()],
                    another: false,
                },
                outcome: crate::service::pruner::Race::Lost {
                    error: "a local build".into(),
                },
            }],
        },
        Removal {
            candidate: plan.remove[1].clone(),
            result: RemovalResult::Failed,
            error: Some("conflict".into()),
            race: None,
            untagged: vec![],
            steps_removed: vec![],
            moved: vec![],
            against_plan: vec![],
        },
    ];
    m.prune(
        "schedule",
        &Cycle {
            plan,
            removals: removals.to_vec(),
            late_races: vec![crate::service::pruner::LateRace {
                id: "sha256:late".into(),
                names: vec!["r/late:1".into()],
                removed_at: 1,
                outcome: crate::service::pruner::Race::Lost {
                    error: "not served".into(),
                },
            }],
            still_lost: vec![crate::service::pruner::LostImage {
                id: "sha256:before".into(),
                names: vec![],
                removed_at: 0,
            }],
            build_cache_freed: Some(4096),
        },
    );
    let text = m.encode();
    assert_eq!(line(&text, "stowage_required_images"), Some("2"));
    assert_eq!(line(&text, "stowage_missing_images"), Some("1"));
    assert_eq!(
        line(&text, "stowage_image_present{image=\"r/a:1\"}"),
        Some("1")
    );
    assert_eq!(
        line(&text, "stowage_image_present{image=\"r/b:1\"}"),
        Some("0")
    );
    assert_eq!(
        line(
            &text,
            "stowage_prune_removed_images_total{rule=\"dangling\"}"
        ),
        Some("1")
    );
    assert_eq!(
        line(
            &text,
            "stowage_prune_removed_bytes_total{rule=\"dangling\"}"
        ),
        Some("100")
    );
    assert_eq!(
        line(&text, "stowage_prune_removal_failures_total"),
        Some("1")
    );
    assert_eq!(
        line(&text, "stowage_prune_against_plan_total{outcome=\"lost\"}"),
        Some("1")
    );
    assert_eq!(
        line(&text, "stowage_prune_races_total{outcome=\"healed\"}"),
        Some("1")
    );
    // A late race counts as a race.
    assert_eq!(
        line(&text, "stowage_prune_races_total{outcome=\"lost\"}"),
        Some("1")
    );
    assert_eq!(
        line(&text, "stowage_prune_kept_images{protection=\"in-use\"}"),
        Some("1")
    );
    assert_eq!(line(&text, "stowage_prune_deferred_images"), Some("3"));
    // The late race lost now, and the image lost before and still missing.
    assert_eq!(line(&text, "stowage_prune_images_lost"), Some("2"));
    assert_eq!(
        line(&text, "stowage_build_cache_freed_bytes_total"),
        Some("4096")
    );
    // The store after the cycle: three images of 157 bytes, less the one removed.
    assert_eq!(line(&text, "stowage_store_images"), Some("2"));
    assert_eq!(line(&text, "stowage_store_bytes"), Some("57"));

    // The kept picture is the last cycle's only.
    m.prune(
        "schedule",
        &Cycle {
            plan: PrunePlan::default(),
            removals: Vec::new(),
            late_races: vec![],
            still_lost: vec![],
            build_cache_freed: None,
        },
    );
    let text = m.encode();
    assert_eq!(line(&text, "stowage_prune_images_lost"), Some("0"));
    assert_eq!(
        line(&text, "stowage_prune_kept_images{protection=\"in-use\"}"),
        None
    );
    assert_eq!(
        line(&text, "stowage_prune_cycles_total{trigger=\"schedule\"}"),
        Some("2")
    );
}

/// What is never measured is never exported: a host that does not prune has no store size or
/// disk use to show, and a 0 would read as an empty store and an empty disk.
#[test]
fn the_store_and_the_disk_are_exported_only_once_measured() {
    let m = Metrics::new();
    let text = m.encode();
    for name in [
        "stowage_store_images",
        "stowage_store_bytes",
        "stowage_data_root_used_ratio",
    ] {
        assert!(!text.contains(name), "{name} before any measure: {text}");
    }
    m.disk(25, 100);
    let text = m.encode();
    assert_eq!(line(&text, "stowage_data_root_used_ratio"), Some("0.25"));
    assert!(!text.contains("stowage_store_images"), "{text}");
}
