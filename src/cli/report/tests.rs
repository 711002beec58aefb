use super::*;
use crate::decide::pin::Pinned;
use crate::model::failure::FailureClass;

const D: &str = "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";

/// `text` with its line breaks and runs of spaces made one space: what a wrapped table says.
fn flat(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// A table's last column wraps within the width, under itself; the other columns stay.
#[test]
fn a_table_wraps_its_last_column_within_the_width() {
    let rows = vec![
        vec![
            "r/a:1".to_owned(),
            "a reason long enough to be wrapped twice over".to_owned(),
        ],
        vec!["r/b:1".to_owned(), "short".to_owned()],
    ];
    let text = table_within(&["IMAGE", "WHY"], &rows, 40);
    assert_eq!(
        text,
        "IMAGE  WHY\n\
         r/a:1  a reason long enough to be\n       wrapped twice over\n\
         r/b:1  short\n"
    );
    // Never narrower than the last column's minimum, however wide the rest.
    let wide = vec![vec![
        "x".repeat(70),
        "one two three four five six seven".to_owned(),
    ]];
    let text = table_within(&["IMAGE", "WHY"], &wide, 80);
    assert!(
        text.lines()
            .nth(1)
            .unwrap()
            .ends_with("one two three four five"),
        "{text}"
    );
}

/// A table whose other columns leave the last one no room becomes one block per row, every
/// line within the width.
#[test]
fn a_table_too_wide_for_the_terminal_becomes_blocks() {
    let rows = vec![
        vec![
            "registry.example.com/platform/team/app:1.4.2".to_owned(),
            "first-pull".to_owned(),
            "abcdef012345".to_owned(),
            "missing".to_owned(),
            "the registry refuses this login: the next run needs credentials".to_owned(),
        ],
        vec![
            String::new(),
            String::new(),
            String::new(),
            String::new(),
            String::new(),
        ],
    ];
    let mut rows = rows;
    rows[1][0] = "r/b:1".into();
    rows[1][3] = "present".into();
    let text = table_within(&["IMAGE", "PIN", "DIGEST", "STATE", "NOTE"], &rows, 60);
    assert_eq!(
        text,
        "registry.example.com/platform/team/app:1.4.2\n\
         \x20   pin first-pull  digest abcdef012345  state missing\n\
         \x20   the registry refuses this login: the next run needs\n\
         \x20   credentials\n\
         \n\
         r/b:1\n\
         \x20   state present\n"
    );
    assert!(text.lines().all(|l| l.len() <= 60), "{text}");
}

fn decision(name: &str, action: Action) -> Decision {
    Decision {
        pinned: Pinned {
            digest: Some(D.into()),
            ..Pinned::for_tests(name, PinMode::Lock)
        },
        digest: Some(D.into()),
        state: if action == Action::Pull {
            Presence::Missing
        } else {
            Presence::Present
        },
        local_digest: None,
        drift: false,
        action,
        reason: "because".into(),
        failure: None,
        holder: None,
        resolve_attempts: 0,
        signature: None,
        cooldown: None,
    }
}

#[test]
fn plan_table_is_aligned_and_qualified() {
    let text = plan_text_within(
        &[
            decision("nginx", Action::Pull),
            decision("r:1/a:1", Action::Keep),
        ],
        120,
    );
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("IMAGE                           PIN   DIGEST"),
        "{text}"
    );
    assert!(
        lines[1].starts_with("docker.io/library/nginx:latest  lock  abcdef012345  missing  pull"),
        "{text}"
    );
    assert!(
        lines[2].starts_with("r:1/a:1                         lock"),
        "{text}"
    );
    assert_eq!(lines[4], "1 to pull, 0 to tag, 1 to keep, 0 failing");
    // A lock-pinned image to pull: its digest was not checked with the registry, and the
    // plan says so.
    assert!(
        flat(&text).contains("were not checked with their registries: `stowage status` asks"),
        "{text}"
    );
}

/// Parses `text` as a strict parser would, failing on a key an object has twice (serde_json,
/// like most, keeps the last one silently).
fn strict(text: &str) {
    use serde::de::{Deserialize, Deserializer, Error, MapAccess, SeqAccess, Visitor};
    struct Strict;
    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
            d.deserialize_any(Strict)
        }
    }
    impl<'de> Visitor<'de> for Strict {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("JSON")
        }
        fn visit_bool<E>(self, _: bool) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_i64<E>(self, _: i64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_u64<E>(self, _: u64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_f64<E>(self, _: f64) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_str<E>(self, _: &str) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict)
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
            while a.next_element::<Strict>()?.is_some() {}
            Ok(Strict)
        }
        fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Strict, A::Error> {
            let mut seen = std::collections::HashSet::new();
            while let Some(key) = a.next_key::<String>()? {
                if !seen.insert(key.clone()) {
                    return Err(A::Error::custom(format!("the key {key:?} twice")));
                }
                a.next_value::<Strict>()?;
            }
            Ok(Strict)
        }
    }
    if let Err(e) = serde_json::from_str::<Strict>(text) {
        panic!("not valid to a strict parser: {e}\n{text}");
    }
}

#[test]
fn pull_json_has_each_key_once_and_the_state_before_the_run_apart() {
    let mut failed = decision("r:1/b:1", Action::Fail);
    failed.failure = Some(crate::model::failure::Failure::new(
        FailureClass::Network,
        "connection refused",
    ));
    let outcomes = vec![
        Outcome {
            decision: decision("r:1/a:1", Action::Pull),
            result: PullResult::Pulled {
                digest: Some(D.into()),
                updated: true,
                from: "r:1".into(),
            },
            attempts: 1,
            elapsed_ms: 1500,
        },
        Outcome {
            decision: failed,
            result: PullResult::Failed {
                class: FailureClass::Network,
                message: "network: r:1 cannot be reached".into(),
                detail: "connection refused".into(),
            },
            attempts: 2,
            elapsed_ms: 10,
        },
        Outcome {
            decision: decision("r:1/c:1", Action::Tag),
            result: PullResult::Tagged { digest: D.into() },
            attempts: 0,
            elapsed_ms: 1,
        },
    ];
    let text = pull_json(Path::new("/c.toml"), &outcomes);
    strict(&text);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    let pulled = &json["images"][0];
    assert_eq!(pulled["result"], "pulled");
    assert_eq!(pulled["digest"], D);
    assert_eq!(pulled["before"]["state"], "missing", "{pulled:#}");
    assert!(pulled.get("state").is_none(), "{pulled:#}");
    let failed = &json["images"][1];
    assert_eq!(failed["detail"], "connection refused");
    assert_eq!(failed["resolve_failure"]["class"], "network", "{failed:#}");
    // A plan's entries are the store as it is: flat.
    let plan: serde_json::Value = serde_json::from_str(&plan_json(
        Path::new("/c.toml"),
        &[outcomes[1].decision.clone()],
        None,
        &Windows::default(),
    ))
    .unwrap();
    assert_eq!(plan["images"][0]["state"], "present", "{plan:#}");
}

#[test]
fn pull_report_lists_failures_and_counts() {
    let outcomes = vec![
        Outcome {
            decision: decision("r:1/a:1", Action::Pull),
            result: PullResult::Pulled {
                digest: Some(D.into()),
                updated: true,
                from: "r:1".into(),
            },
            attempts: 1,
            elapsed_ms: 1500,
        },
        Outcome {
            decision: decision("r:1/b:1", Action::Pull),
            result: PullResult::Failed {
                class: FailureClass::NotFound,
                message: "not found: r:1/b:1 does not exist".into(),
                detail: String::new(),
            },
            attempts: 1,
            elapsed_ms: 10,
        },
    ];
    let text = pull_text_within(&outcomes, 80);
    assert!(
        text.contains(&format!(
            "pulled      r:1/a:1  {} from r:1 (1.5s)",
            short(D)
        )),
        "{text}"
    );
    assert!(
        text.contains("FAILED      r:1/b:1  not found: r:1/b:1 does not exist\n"),
        "{text}"
    );
    assert!(
        text.ends_with("2 images: 1 pulled, 0 up to date, 0 tagged, 0 kept, 1 failed\n"),
        "{text}"
    );
    // Narrower: the sentence goes under the name, wrapped.
    let narrow = pull_text_within(&outcomes, 40);
    assert!(
        narrow.contains(
            "FAILED      r:1/b:1\n            not found: r:1/b:1 does not\n            exist\n"
        ),
        "{narrow}"
    );
    let text = pull_json(Path::new("/c.toml"), &outcomes);
    strict(&text);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["images"][1]["result"], "failed");
    assert_eq!(json["images"][1]["class"], "not-found");
    assert_eq!(json["images"][0]["image"], "r:1/a:1");
    assert_eq!(json["images"][0]["pin"], "lock");
    assert_eq!(json["summary"]["failed"], 1);
}

#[test]
fn status_says_what_the_signature_check_came_to() {
    use crate::model::signature::Finding;
    let row = |check: Check| {
        let mut d = decision("r:1/a:1", Action::Keep);
        d.state = Presence::Present;
        d.signature = Some(check);
        StatusRow {
            decision: d,
            registry_digest: None,
            registry_error: None,
            registry_error_class: None,
            registry_has_pinned: None,
            resolved_now: false,
        }
    };
    let refused = row(Check::Refused {
        finding: Finding::NoSignature,
    });
    let verified = row(Check::Verified {
        signer: crate::model::signature::Signer::Key("sha256:k".into()),
        cached: true,
    });
    let text = flat(&status_text(&[refused, verified]));
    assert!(
        text.contains("REFUSED: the tag's digest is not signed as required (no signature)"),
        "{text}"
    );
    assert!(text.contains("ok, signed by key sha256:k…"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&status_json(
        Path::new("/c"),
        &[row(Check::Refused {
            finding: Finding::WrongKey { signatures: 2 },
        })],
        &Windows::default(),
    ))
    .unwrap();
    let signature = &json["images"][0]["signature"];
    assert_eq!(signature["result"], "refused");
    assert_eq!(signature["found"], "wrong-key");
    assert_eq!(signature["signatures"], 2);
}

#[test]
fn status_flags_drift() {
    let mut d = decision("r:1/a:1", Action::Tag);
    d.drift = true;
    d.local_digest = Some("sha256:999".into());
    let rows = [StatusRow {
        decision: d,
        registry_digest: Some(D.into()),
        registry_error: None,
        registry_error_class: None,
        registry_has_pinned: None,
        resolved_now: false,
    }];
    let text = status_text(&rows);
    assert!(text.contains("DRIFT"), "{text}");
    let text = status_json(Path::new("/c"), &rows, &Windows::default());
    strict(&text);
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["version"], JSON_VERSION);
    assert_eq!(json["images"][0]["drift"], true);
    assert_eq!(json["images"][0]["digest"], D);
    assert_eq!(json["images"][0]["registry"]["digest"], D);
}

#[test]
fn a_digest_in_a_name_is_shortened_in_tables_and_whole_in_json() {
    let digest = "sha256:abcdef0123456789abcdef0123456789abcdef0123456789abcdef0123456789";
    let name = format!("r.example/app:1@{digest}");
    let decision = Decision {
        pinned: Pinned::for_tests(&name, PinMode::Fixed),
        digest: Some(digest.into()),
        state: Presence::Present,
        local_digest: None,
        drift: false,
        action: Action::Keep,
        reason: "present".into(),
        failure: None,
        holder: None,
        resolve_attempts: 0,
        signature: None,
        cooldown: None,
    };
    let text = plan_text_within(std::slice::from_ref(&decision), 120);
    let row = text.lines().nth(1).unwrap();
    assert!(
        row.starts_with("r.example/app:1@sha256:abcdef012345  "),
        "{text}"
    );
    assert!(!text.contains(digest), "{text}");
    let json = plan_json(Path::new("c.toml"), &[decision], None, &Windows::default());
    assert!(json.contains(&name), "{json}");
}

#[test]
fn windows_say_whether_they_are_open_and_when_they_open_next() {
    let config = Config::parse(
        Path::new("/c.toml"),
        "[pull.window]\nstart = \"0 22 * * *\"\nduration = \"4h\"\ntime_zone = \"UTC\"\n\
             [prune]\n[prune.window]\nstart = \"0 3 * * 6\"\nduration = \"1h\"\n\
             time_zone = \"Europe/Berlin\"\n",
    )
    .unwrap();
    // Saturday 2027-01-02, 23:00 UTC.
    let now = chrono::DateTime::parse_from_rfc3339("2027-01-02T23:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc);
    let windows = Windows::of(&config, now);
    let json = serde_json::to_value(&windows).unwrap();
    assert_eq!(json["pull"]["open"], true, "{json:#}");
    assert_eq!(
        json["pull"]["closes"], "2027-01-03T02:00:00+00:00",
        "{json:#}"
    );
    assert_eq!(json["prune"]["open"], false, "{json:#}");
    // The next Saturday, 03:00 in Berlin (02:00 UTC in winter).
    assert_eq!(
        json["prune"]["opens"], "2027-01-09T02:00:00+00:00",
        "{json:#}"
    );
    let text = windows.text();
    assert!(
        text.contains("open now, until 2027-01-03T02:00:00+00:00"),
        "{text}"
    );
    assert!(
        text.contains("closed; opens 2027-01-09T02:00:00+00:00"),
        "{text}"
    );
    assert!(Windows::default().text().is_empty());
    let plan = plan_json(Path::new("c.toml"), &[], None, &Windows::default());
    assert!(!plan.contains("windows"), "{plan}");
}

/// A missing image's note says what the next run needs, by what the registry answered: never
/// "the next run pulls it" when a login is missing.
#[test]
fn status_says_what_a_missing_image_needs() {
    use crate::model::failure::FailureClass;
    let row = |class: Option<FailureClass>| {
        let mut d = decision("r:1/a:1", Action::Pull);
        d.state = Presence::Missing;
        StatusRow {
            decision: d,
            registry_digest: None,
            registry_error: class.map(|_| "refused".to_owned()),
            registry_error_class: class,
            registry_has_pinned: None,
            resolved_now: false,
        }
    };
    for (class, says) in [
        (None, "the next run pulls it"),
        (Some(FailureClass::Auth), "needs a working login"),
        (Some(FailureClass::NotFound), "has no such image"),
        (Some(FailureClass::Network), "does not answer"),
    ] {
        let text = flat(&status_text(&[row(class)]));
        assert!(text.contains(says), "{class:?}: {text}");
    }
    let text = flat(&status_text(&[row(Some(FailureClass::Auth))]));
    assert!(!text.contains("the next run pulls it"), "{text}");
    // The registry no longer has the locked digest: only a new pin helps.
    let mut gone = row(None);
    gone.registry_digest = Some("sha256:moved".into());
    gone.registry_has_pinned = Some(false);
    let text = flat(&status_text(std::slice::from_ref(&gone)));
    assert!(
        text.contains("does not have") && text.contains("run `stowage pin`"),
        "{text}"
    );
    assert!(!text.contains("the next run pulls it"), "{text}");
    let json: serde_json::Value =
        serde_json::from_str(&status_json(Path::new("/c"), &[gone], &Windows::default())).unwrap();
    assert_eq!(json["images"][0]["registry"]["has_pinned"], false);
    // Present, and the registry refuses it: not "ok", and `--exit-code` fails for it.
    let mut present = row(Some(FailureClass::Auth));
    present.decision.state = Presence::Present;
    let text = flat(&status_text(&[present]));
    assert!(
        text.contains("refused present; the registry refused access: refreshes fail"),
        "{text}"
    );
    assert!(needs_fixing(Some(FailureClass::Auth)) && needs_fixing(Some(FailureClass::NotFound)));
    assert!(!needs_fixing(Some(FailureClass::Network)) && !needs_fixing(None));
}

/// The prune table names every name of an image, says what its LAST USED time is, shows a
/// removal the store changed under as kept, and says since when stowage has watched.
#[test]
fn the_prune_report_shows_every_name_what_last_used_is_and_since_when_it_watches() {
    use crate::decide::prune_plan::{Candidate, Kept, Protection, PrunePlan, Rule, UseSource};
    use crate::service::pruner::{Removal, RemovalResult};
    const NOW: i64 = 1_800_000_000;
    let candidate = |id: &str, names: &[&str], from: UseSource| Candidate {
        id: id.into(),
        names: names.iter().map(|n| n.to_string()).collect(),
        references: vec![],
        digest_names: vec![],
        parent: None,
        steps: vec![],
        size: 1000,
        last_used: NOW - 3300,
        last_used_from: from,
        rule: Rule::UnusedMaxAge,
    };
    let plan = PrunePlan {
        remove: vec![
            candidate("sha256:aaaa", &["r/a:1", "r/a:latest"], UseSource::Build),
            candidate("sha256:bbbb", &["r/b:1"], UseSource::Arrival),
            candidate("sha256:cccc", &["r/c:1"], UseSource::Use),
        ],
        keep: vec![Kept {
            id: "sha256:dddd".into(),
            names: vec!["r/d:1".into()],
            size: 1,
            protection: Protection::TooYoung,
        }],
        bytes_expected: 3000,
        deferred: 0,
        watching_since: NOW - 120,
        min_age: 3600,
        space: None,
    };
    let kept = Removal {
        candidate: plan.remove[2].clone(),
        result: RemovalResult::Skipped,
        error: Some("kept: a container started using it since the plan".into()),
        race: None,
        untagged: vec![],
        steps_removed: vec![],
        moved: vec![],
        against_plan: vec![],
    };
    let text = prune_text(&plan, Some(&[kept]), NOW);
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[1].contains("r/a:1") && lines[1].contains("built 55m ago"),
        "{text}"
    );
    assert!(lines[2].trim() == "r/a:latest", "{text}");
    assert!(lines[3].contains("arrived 55m ago"), "{text}");
    assert!(
        flat(&text).contains(
            "kept cccc r/c:1 1.0 kB 55m ago rule: unused_max_age; a container started using \
             it since the plan"
        ),
        "{text}"
    );
    assert!(!text.contains("skipped"), "{text}");
    // What ran, not what was planned.
    assert!(
        text.contains("\n0 removed (0 B of images), 2 kept\n"),
        "{text}"
    );
    let text = flat(&text);
    assert!(
        text.contains("stowage started watching this store 2m ago")
            && text.contains("min_age (1h)"),
        "{text}"
    );
    assert!(
        text.contains("\"built\": no use seen since stowage started watching"),
        "{text}"
    );
}

/// One name per concept, one shape per key: a keep rule is `rule`, a race's outcome is an
/// object with its `result`, a plan has no `results`, and a config path that is not UTF-8
/// still gives a document.
#[test]
fn json_keys_have_one_shape_and_odd_paths_do_not_lose_the_document() {
    use crate::decide::prune_plan::{Kept, Protection, PrunePlan};
    use crate::service::pruner::Race;
    use std::os::unix::ffi::OsStrExt;
    let kept = Kept {
        id: "sha256:k".into(),
        names: vec![],
        size: 1,
        protection: Protection::KeepRule("tier=gold".into()),
    };
    let v = serde_json::to_value(&kept).unwrap();
    assert_eq!(
        (&v["protection"], &v["rule"]),
        (&"keep-rule".into(), &"tier=gold".into())
    );
    assert_eq!(
        serde_json::to_value(Race::Healed).unwrap(),
        serde_json::json!({"result": "healed"})
    );
    assert_eq!(
        serde_json::to_value(Race::Lost {
            error: "gone".into()
        })
        .unwrap(),
        serde_json::json!({"result": "lost", "error": "gone"})
    );
    let plan = PrunePlan::default();
    let doc: serde_json::Value = serde_json::from_str(&plan_json(
        Path::new("/c.toml"),
        &[],
        Some(&plan),
        &Windows::default(),
    ))
    .unwrap();
    assert!(doc["prune"].get("results").is_none(), "{doc:#}");
    let odd = Path::new(std::ffi::OsStr::from_bytes(b"/etc/stowage/\xffconfig.toml"));
    let doc: serde_json::Value =
        serde_json::from_str(&status_json(odd, &[], &Windows::default())).unwrap();
    assert_eq!(doc["config"], "/etc/stowage/\u{fffd}config.toml");
}

/// A first-pull image not pinned yet shows no pinned digest: the one the registry gave now is
/// not a pin until its first pull.
#[test]
fn a_first_pull_image_not_pinned_yet_shows_no_pin() {
    let mut d = decision("r:1/a:1", Action::Pull);
    d.pinned.mode = PinMode::FirstPull;
    let row = |resolved_now| StatusRow {
        decision: d.clone(),
        registry_digest: Some(D.into()),
        registry_error: None,
        registry_error_class: None,
        registry_has_pinned: None,
        resolved_now,
    };
    assert_eq!(row(true).pinned(), None);
    assert_eq!(row(false).pinned(), Some(D));
}

/// Ages in their two largest units, sizes in decimal units as `docker images` shows them.
#[test]
fn ages_and_sizes_read_as_the_docker_cli_and_the_config_write_them() {
    use super::{age, bytes};
    let now = 1_000_000;
    assert_eq!(age(now, now), "just now");
    assert_eq!(age(now, now - 59), "just now");
    assert_eq!(age(now, now - 55 * 60), "55m ago");
    assert_eq!(age(now, now - 7200), "2h ago");
    assert_eq!(age(now, now - 7260), "2h 1m ago");
    assert_eq!(age(now, now - 3 * 86_400 - 4 * 3600 - 5 * 60), "3d 4h ago");
    assert_eq!(age(now, now - 86_400 - 60), "1d ago");
    assert_eq!(age(now, now + 30), "just now", "a clock that stepped back");
    assert_eq!(bytes(999), "999 B");
    assert_eq!(bytes(9_280), "9.3 kB");
    assert_eq!(bytes(10_000_000_000), "10.0 GB");
}

/// A removal by a space rule says what it was measured against: the disk's use and the
/// watermarks, the store's size and its cap.
#[test]
fn a_space_rule_says_the_figures_it_was_applied_to() {
    const NOW: i64 = 1_800_000_000;
    use crate::decide::prune_plan::{Candidate, PrunePlan, Rule, Space, UseSource};
    let candidate = |rule| Candidate {
        id: "sha256:aaaa".into(),
        names: vec!["r/a:1".into()],
        references: vec![],
        digest_names: vec![],
        parent: None,
        steps: vec![],
        size: 1000,
        last_used: NOW - 3600,
        last_used_from: UseSource::Use,
        rule,
    };
    let space = Space {
        disk_used_percent: Some(91.24),
        high_watermark: Some(85.0),
        low_watermark: Some(80.0),
        store_bytes: 12_300_000_000,
        max_store_size: Some(10_000_000_000),
    };
    let plan = |rule| PrunePlan {
        remove: vec![candidate(rule)],
        space: Some(space),
        watching_since: NOW - 86_400,
        ..PrunePlan::default()
    };
    let text = flat(&prune_text(&plan(Rule::DiskWatermark), None, NOW));
    assert!(
        text.contains(
            "the disk is 91.2% used, above high_watermark (85%): the least recently used go \
             until it is under low_watermark (80%)"
        ),
        "{text}"
    );
    let text = flat(&prune_text(&plan(Rule::StoreSize), None, NOW));
    assert!(
        text.contains("the store holds 12.3 GB of images, above max_store_size (10.0 GB)"),
        "{text}"
    );
    // No space rule chose anything: nothing said.
    let text = prune_text(&plan(Rule::UnusedMaxAge), None, NOW);
    assert!(!text.contains("high_watermark"), "{text}");
}

/// A container found using an image an earlier prune removed: one line each, saying whether
/// it came back and, when not, why; in JSON under `late_races`, the race's shape.
#[test]
fn late_races_say_what_came_back_and_what_is_lost() {
    use crate::decide::prune_plan::PrunePlan;
    use crate::service::pruner::Race;
    let late = [
        LateRace {
            id: format!("sha256:{}", "a".repeat(64)),
            names: vec!["r.example/app:1".into()],
            removed_at: 5,
            outcome: Race::Healed,
        },
        LateRace {
            id: format!("sha256:{}", "b".repeat(64)),
            names: vec![],
            removed_at: 6,
            outcome: Race::Lost {
                error: "manifest unknown".into(),
            },
        },
    ];
    let text = late_race_notes(&late);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("aaaaaaaaaaaa (r.example/app:1): removed by an earlier prune")
            && lines[0].ends_with(": pulled back"),
        "{text}"
    );
    assert!(
        lines[1].ends_with("LOST, it could not be pulled back: manifest unknown"),
        "{text}"
    );
    assert_eq!(late_race_notes(&[]), "");
    let cycle = Cycle {
        plan: PrunePlan::default(),
        removals: vec![],
        late_races: late.to_vec(),
        still_lost: vec![],
        build_cache_freed: None,
    };
    let doc: serde_json::Value =
        serde_json::from_str(&prune_doc(Path::new("/c.toml"), false, &cycle)).unwrap();
    assert_eq!(
        doc["prune"]["late_races"][1],
        serde_json::json!({
            "id": late[1].id,
            "names": [],
            "removed_at": 6,
            "outcome": {"result": "lost", "error": "manifest unknown"}
        })
    );
    assert_eq!(doc["prune"]["still_lost"], serde_json::json!([]));
}

/// An image a container uses that an earlier prune could not put back is said again at every
/// run while it is missing: a line each, and in JSON under `still_lost`.
#[test]
fn an_image_still_lost_is_said_at_every_run() {
    use crate::decide::prune_plan::PrunePlan;
    let lost = LostImage {
        id: format!("sha256:{}", "c".repeat(64)),
        names: vec!["r.example/app:2".into()],
        removed_at: 7,
    };
    let text = still_lost_notes(std::slice::from_ref(&lost));
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(
        text.starts_with(
            "cccccccccccc (r.example/app:2): STILL MISSING, removed by an earlier prune"
        ),
        "{text}"
    );
    assert_eq!(still_lost_notes(&[]), "");
    let cycle = Cycle {
        plan: PrunePlan::default(),
        removals: vec![],
        late_races: vec![],
        still_lost: vec![lost.clone()],
        build_cache_freed: None,
    };
    assert_eq!(cycle.images_lost(), 1);
    let doc: serde_json::Value =
        serde_json::from_str(&prune_doc(Path::new("/c.toml"), false, &cycle)).unwrap();
    assert_eq!(
        doc["prune"]["still_lost"],
        serde_json::json!([{"id": lost.id, "names": ["r.example/app:2"], "removed_at": 7}])
    );
}
