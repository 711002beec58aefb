use super::*;
use crate::policy::keep::compile_keep;
use proptest::prelude::*;
use std::collections::BTreeMap;

const DAY: i64 = 86_400;
const NOW: i64 = 1_800_000_000;

fn image(id: &str, tags: &[&str], size: u64, created: i64) -> StoreImage {
    StoreImage {
        id: id.into(),
        parent: None,
        tags: tags.iter().map(|s| s.to_string()).collect(),
        digests: tags
            .iter()
            .map(|t| format!("{}@sha256:{id}", repository(t)))
            .collect(),
        digest_names: Vec::new(),
        labels: BTreeMap::new(),
        size,
        created,
        steps: Vec::new(),
    }
}

fn input(images: Vec<StoreImage>) -> PruneInput {
    let mut usage = Usage {
        watching_since: NOW - 100 * DAY,
        ..Usage::default()
    };
    for i in &images {
        usage.first_seen.insert(i.id.clone(), i.created);
    }
    PruneInput {
        images,
        usage,
        now: NOW,
        ..PruneInput::default()
    }
}

fn limits() -> Limits {
    Limits {
        min_age: DAY,
        dangling_min_age: Some(DAY),
        unused_max_age: Some(30 * DAY),
        max_removals: 100,
        ..Limits::default()
    }
}

/// Why the plan keeps image `id`, when it does.
fn kept_why(plan: &PrunePlan, id: &str) -> Option<Protection> {
    plan.keep
        .iter()
        .find(|k| k.id == id)
        .map(|k| k.protection.clone())
}

fn removed(plan: &PrunePlan) -> Vec<&str> {
    plan.remove.iter().map(|c| c.id.as_str()).collect()
}

#[test]
fn dangling_and_unused_by_age() {
    let plan = plan_prune(
        &input(vec![
            image("dangling-old", &[], 10, NOW - 2 * DAY),
            image("dangling-new", &[], 10, NOW - 3600),
            image("unused-old", &["r/a:1"], 10, NOW - 40 * DAY),
            image("unused-recent", &["r/b:1"], 10, NOW - 10 * DAY),
        ]),
        &KeepRules::default(),
        &limits(),
    );
    // Least recently used first.
    assert_eq!(removed(&plan), ["unused-old", "dangling-old"]);
    assert_eq!(plan.bytes_expected, 20);
    let why = |id: &str| kept_why(&plan, id).unwrap();
    assert_eq!(why("dangling-new"), Protection::TooYoung);
    assert_eq!(why("unused-recent"), Protection::NotSelected);
}

/// A young image no rule could ever take is "not selected", not "younger than min_age": the
/// defaults without a `[prune]` table take only dangling images.
#[test]
fn a_young_image_no_rule_takes_is_not_selected_rather_than_too_young() {
    let mut only_dangling = limits();
    only_dangling.unused_max_age = None;
    let plan = plan_prune(
        &input(vec![
            image("dangling-new", &[], 10, NOW - 3600),
            image("tagged-new", &["r/a:1"], 10, NOW - 3600),
        ]),
        &KeepRules::default(),
        &only_dangling,
    );
    let why = |id: &str| kept_why(&plan, id).unwrap();
    assert_eq!(why("dangling-new"), Protection::TooYoung);
    assert_eq!(why("tagged-new"), Protection::NotSelected);
}

#[test]
fn protections_win_over_every_rule() {
    let mut inp = input(vec![
        image("req", &["r/req:1"], 10, NOW - 99 * DAY),
        image("used", &["r/used:1"], 10, NOW - 99 * DAY),
        image("pulling", &["r/pull:1"], 10, NOW - 99 * DAY),
        image("self", &["r/self:1"], 10, NOW - 99 * DAY),
    ]);
    inp.required.insert("req".into());
    inp.in_use.insert("used".into());
    inp.in_flight.insert("r/pull:1".into());
    inp.own_image = Some("self".into());
    inp.disk = Some(Disk {
        total: 100,
        used: 99,
    });
    let mut l = limits();
    l.high_watermark = Some(50.0);
    l.low_watermark = Some(10.0);
    let plan = plan_prune(&inp, &KeepRules::default(), &l);
    assert!(plan.remove.is_empty(), "{plan:#?}");
}

#[test]
fn each_kept_image_reports_the_protection_that_keeps_it() {
    let mut inp = input(vec![
        image("req", &["r/req:1"], 10, NOW - 99 * DAY),
        image("self", &["r/self:1"], 10, NOW - 99 * DAY),
        image("used", &["r/used:1"], 10, NOW - 99 * DAY),
        image("by-name", &["r/pull:1"], 10, NOW - 99 * DAY),
        image("by-digest", &["other/copy:1"], 10, NOW - 99 * DAY),
        image("unrelated", &["r/pull:2"], 10, NOW - 99 * DAY),
    ]);
    inp.required.insert("req".into());
    inp.in_use.extend(["used".to_owned(), "self".to_owned()]);
    inp.own_image = Some("self".into());
    // Pulling r/pull:1, and some registry's copy of `by-digest`'s content.
    inp.in_flight
        .extend(["r/pull:1".to_owned(), "sha256:by-digest".to_owned()]);
    let plan = plan_prune(&inp, &KeepRules::default(), &limits());
    let why = |id: &str| kept_why(&plan, id);
    assert_eq!(why("req"), Some(Protection::Required));
    assert_eq!(why("self"), Some(Protection::OwnImage));
    assert_eq!(why("used"), Some(Protection::InUse));
    assert_eq!(why("by-name"), Some(Protection::InFlight));
    assert_eq!(why("by-digest"), Some(Protection::InFlight));
    // Another tag of a repository being pulled is not part of the pull.
    assert_eq!(removed(&plan), ["unrelated"]);
}

#[test]
fn a_pull_covers_its_names_and_its_content_only() {
    let pulling: HashSet<String> = ["reg/a:1".to_owned(), "sha256:abc".to_owned()].into();
    let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    assert!(being_pulled("x", names(&["reg/a:1"]).iter(), &pulling));
    assert!(being_pulled(
        "x",
        names(&["mirror/a@sha256:abc"]).iter(),
        &pulling
    ));
    assert!(!being_pulled(
        "x",
        names(&["reg/a:2", "reg/a@sha256:abd"]).iter(),
        &pulling
    ));
    assert!(!being_pulled(
        "x",
        names(&["reg/a:1"]).iter(),
        &HashSet::new()
    ));
    // The image a re-tag will name, whatever its names.
    let retag: HashSet<String> = ["sha256:holder".to_owned()].into();
    assert!(being_pulled("sha256:holder", names(&[]).iter(), &retag));
}

#[test]
fn a_lost_state_file_causes_no_mass_deletion() {
    let mut inp = input(vec![image("old", &["r/a:1"], 10, NOW - 400 * DAY)]);
    // The state was lost an hour ago: stowage has watched for an hour only.
    inp.usage = Usage {
        watching_since: NOW - 3600,
        ..Usage::default()
    };
    inp.usage.first_seen.insert("old".into(), NOW - 3600);
    let mut l = limits();
    l.min_age = 60;
    let plan = plan_prune(&inp, &KeepRules::default(), &l);
    assert!(plan.remove.is_empty(), "{plan:#?}");
}

#[test]
fn keep_rules() {
    let mut labelled = image("labelled", &["r/l:1"], 10, NOW - 99 * DAY);
    labelled.labels.insert("tier".into(), "infra".into());
    let local = StoreImage {
        digests: vec![],
        ..image("local", &["r/local:1"], 10, NOW - 99 * DAY)
    };
    let inp = input(vec![
        // Listed fully qualified, as the engine's names are; `r/infra/*` reads as docker.io/r/infra/*.
        image("globbed", &["docker.io/r/infra/x:1"], 10, NOW - 99 * DAY),
        image("pinned", &["r/p:1"], 10, NOW - 99 * DAY),
        labelled,
        local,
        image("gone", &["r/gone:1"], 10, NOW - 99 * DAY),
    ]);
    let keep = KeepRules {
        names: vec![compile_keep("r/infra/*").unwrap()],
        digests: ["sha256:pinned".to_owned()].into(),
        labels: vec![("tier".into(), Some("infra".into()))],
        ..KeepRules::default()
    };
    let plan = plan_prune(&inp, &keep, &limits());
    assert_eq!(removed(&plan), ["gone"]);
    let why = |id: &str| kept_why(&plan, id).unwrap();
    assert_eq!(why("globbed"), Protection::KeepRule("r/infra/*".into()));
    assert_eq!(why("pinned"), Protection::KeepRule("sha256:pinned".into()));
    assert_eq!(
        why("labelled"),
        Protection::KeepRule("label tier=infra".into())
    );
    assert_eq!(why("local"), Protection::LocalOnly);
}

#[test]
fn digests_no_registry_serves_do_not_make_an_image_pullable() {
    // The containerd store and Podman list a repository digest for a local build too.
    let mut inp = input(vec![
        image("built", &["r/built:1"], 10, NOW - 99 * DAY),
        image("pulled", &["r/pulled:1"], 10, NOW - 99 * DAY),
        image("dangling", &[], 10, NOW - 99 * DAY),
    ]);
    inp.no_registry_copy = ["built".to_owned(), "dangling".to_owned()].into();
    let plan = plan_prune(&inp, &KeepRules::default(), &limits());
    let mut gone = removed(&plan);
    gone.sort_unstable();
    assert_eq!(gone, ["dangling", "pulled"]);
    let kept = plan.keep.iter().find(|k| k.id == "built").unwrap();
    assert_eq!(kept.protection, Protection::LocalOnly);
    // Unless local-only images may go.
    let keep = KeepRules {
        prune_local_only: true,
        ..KeepRules::default()
    };
    let all = plan_prune(&inp, &keep, &limits());
    let mut gone = removed(&all);
    gone.sort_unstable();
    assert_eq!(gone, ["built", "dangling", "pulled"]);
}

#[test]
fn keep_the_newest_per_repository() {
    let inp = input(vec![
        image("v1", &["r/app:1"], 10, NOW - 90 * DAY),
        image("v2", &["r/app:2"], 10, NOW - 80 * DAY),
        image("v3", &["r/app:3"], 10, NOW - 70 * DAY),
    ]);
    let keep = KeepRules {
        newest_per_repository: 2,
        ..KeepRules::default()
    };
    assert_eq!(removed(&plan_prune(&inp, &keep, &limits())), ["v1"]);
}

/// Creation times are whole seconds: two images made in the same second as the newest are
/// both newest, whatever their IDs.
#[test]
fn images_made_in_the_same_second_are_all_the_newest() {
    let inp = input(vec![
        image("a-newer", &["r/app:new"], 10, NOW - 70 * DAY),
        image("b-older", &["r/app:old"], 10, NOW - 70 * DAY),
        image("c-oldest", &["r/app:1"], 10, NOW - 90 * DAY),
    ]);
    let keep = KeepRules {
        newest_per_repository: 1,
        ..KeepRules::default()
    };
    assert_eq!(removed(&plan_prune(&inp, &keep, &limits())), ["c-oldest"]);
}

/// A build step goes with its image, up to the first one policy keeps (by a label it
/// inherited) or another image is built on too.
#[test]
fn build_steps_go_with_their_image_up_to_a_kept_or_shared_one() {
    let step = |id: &str, label: Option<&str>| crate::model::image::BuildStep {
        id: id.into(),
        labels: label
            .map(|l| BTreeMap::from([(l.to_owned(), "x".to_owned())]))
            .unwrap_or_default(),
    };
    let mut a = image("a", &[], 10, NOW - 90 * DAY);
    a.steps = vec![step("a1", None), step("a2", Some("gold")), step("a3", None)];
    let mut b = image("b", &[], 10, NOW - 90 * DAY);
    b.steps = vec![step("b1", None), step("shared", None), step("b3", None)];
    let mut c = image("c", &[], 10, NOW - 90 * DAY);
    c.steps = vec![step("shared", None)];
    let keep = KeepRules {
        labels: vec![("gold".into(), None)],
        ..KeepRules::default()
    };
    let plan = plan_prune(&input(vec![a, b, c]), &keep, &limits());
    let steps = |id: &str| {
        plan.remove
            .iter()
            .find(|r| r.id == id)
            .map(|r| r.steps.clone())
            .unwrap()
    };
    assert_eq!(steps("a"), ["a1"]);
    assert_eq!(steps("b"), ["b1"]);
    assert!(steps("c").is_empty());
}

#[test]
fn children_go_before_parents_and_parents_of_kept_images_stay() {
    let mut child = image("child", &[], 10, NOW - 50 * DAY);
    child.parent = Some("parent".into());
    let mut grandchild = image("grandchild", &[], 10, NOW - 60 * DAY);
    grandchild.parent = Some("child".into());
    let parent = image("parent", &[], 10, NOW - 40 * DAY);
    let plan = plan_prune(
        &input(vec![parent.clone(), child.clone(), grandchild.clone()]),
        &KeepRules::default(),
        &limits(),
    );
    assert_eq!(removed(&plan), ["grandchild", "child", "parent"]);
    let mut inp = input(vec![parent, child, grandchild]);
    inp.in_use.insert("grandchild".into());
    let plan = plan_prune(&inp, &KeepRules::default(), &limits());
    assert!(plan.remove.is_empty());
    let why = |id: &str| kept_why(&plan, id).unwrap();
    assert_eq!(why("parent"), Protection::ParentOfKept);
}

/// Regression (found by the property test): a grandparent stayed selected after its child
/// was dropped for a child of its own that stays.
#[test]
fn a_staying_grandchild_keeps_the_whole_chain() {
    let gp = image("gp", &[], 10, NOW - 90 * DAY);
    let mut p = image("p", &[], 10, NOW - 80 * DAY);
    p.parent = Some("gp".into());
    // Tagged and recently made: not selected, not protected.
    let mut c = image("c", &["r/c:1"], 10, NOW - 2 * DAY);
    c.parent = Some("p".into());
    let plan = plan_prune(&input(vec![gp, p, c]), &KeepRules::default(), &limits());
    assert!(plan.remove.is_empty(), "{plan:#?}");
    assert_eq!(plan.deferred, 2);
    assert_eq!(plan.keep.len(), 3);
}

#[test]
fn watermarks_remove_least_recently_used_down_to_the_low_mark() {
    let mut inp = input(vec![
        image("a", &["r/a:1"], 30, NOW - 5 * DAY),
        image("b", &["r/b:1"], 30, NOW - 6 * DAY),
        image("c", &["r/c:1"], 30, NOW - 7 * DAY),
    ]);
    inp.usage.last_used.insert("c".into(), NOW - 2 * DAY);
    inp.disk = Some(Disk {
        total: 1000,
        used: 900,
    });
    let l = Limits {
        high_watermark: Some(85.0),
        low_watermark: Some(84.0),
        unused_max_age: None,
        ..limits()
    };
    // 90% used; the low mark is 84%: 60 bytes must go, b (oldest use) then a.
    let plan = plan_prune(&inp, &KeepRules::default(), &l);
    assert_eq!(removed(&plan), ["b", "a"]);
    assert!(plan.remove.iter().all(|c| c.rule == Rule::DiskWatermark));
    // Under the high mark, nothing moves.
    inp.disk = Some(Disk {
        total: 1000,
        used: 800,
    });
    assert!(
        plan_prune(&inp, &KeepRules::default(), &l)
            .remove
            .is_empty()
    );
}

#[test]
fn removals_per_cycle_are_capped() {
    let images = (0..10)
        .map(|i| image(&format!("d{i}"), &[], 1, NOW - 9 * DAY))
        .collect();
    let l = Limits {
        max_removals: 3,
        ..limits()
    };
    let plan = plan_prune(&input(images), &KeepRules::default(), &l);
    assert_eq!((plan.remove.len(), plan.deferred), (3, 7));
}

fn arb_store() -> impl Strategy<Value = (PruneInput, Limits)> {
    let image = (
        0u8..30,
        prop::option::of(0u8..30),
        prop::bool::ANY,
        1u64..1000,
        0i64..200,
        prop::option::of(0i64..200),
        prop::bool::ANY,
    );
    (
        prop::collection::vec(image, 1..40),
        prop::collection::hash_set(0u8..30, 0..10),
        prop::collection::hash_set(0u8..30, 0..10),
        0u64..50_000,
        prop::option::of((50.0f64..99.0, 1.0f64..49.0)),
        1usize..50,
        0i64..120,
    )
        .prop_map(
            |(imgs, in_use, required, used, marks, max_removals, watched_days)| {
                let mut seen = HashSet::new();
                let images: Vec<StoreImage> = imgs
                    .into_iter()
                    .filter(|(id, ..)| seen.insert(*id))
                    .map(
                        |(id, parent, tagged, size, age, _used_ago, local)| StoreImage {
                            id: format!("i{id}"),
                            // Parents point to lower ids only: no cycles.
                            parent: parent.filter(|p| *p < id).map(|p| format!("i{p}")),
                            tags: if tagged {
                                vec![format!("r/repo{}:t{id}", id % 4)]
                            } else {
                                vec![]
                            },
                            digests: if tagged && !local {
                                vec![format!("r/repo{}@sha256:{id}", id % 4)]
                            } else {
                                vec![]
                            },
                            digest_names: Vec::new(),
                            labels: BTreeMap::new(),
                            size,
                            created: NOW - age * DAY,
                            steps: Vec::new(),
                        },
                    )
                    .collect();
                let mut usage = Usage {
                    watching_since: NOW - watched_days * DAY,
                    ..Usage::default()
                };
                for i in &images {
                    usage
                        .first_seen
                        .insert(i.id.clone(), i.created.max(usage.watching_since));
                }
                let _ = used;
                let inp = PruneInput {
                    in_use: in_use.iter().map(|i| format!("i{i}")).collect(),
                    required: required.iter().map(|i| format!("i{i}")).collect(),
                    disk: Some(Disk {
                        total: 100_000,
                        used: used.min(100_000)
                            + images.iter().map(|i| i.size).sum::<u64>().min(50_000),
                    }),
                    images,
                    usage,
                    now: NOW,
                    ..PruneInput::default()
                };
                let limits = Limits {
                    min_age: DAY,
                    dangling_min_age: Some(2 * DAY),
                    unused_max_age: Some(30 * DAY),
                    high_watermark: marks.map(|(h, _)| h),
                    low_watermark: marks.map(|(_, l)| l),
                    max_store_size: None,
                    max_removals,
                };
                (inp, limits)
            },
        )
}

proptest! {
    /// Never a protected image; never a parent before its child, nor a parent whose child
    /// stays; never more than the cap; every image is either removed or kept.
    #[test]
    fn never_removes_what_is_protected((inp, limits) in arb_store()) {
        let plan = plan_prune(&inp, &KeepRules::default(), &limits);
        let removing: HashSet<&str> = plan.remove.iter().map(|c| c.id.as_str()).collect();
        prop_assert!(plan.remove.len() <= limits.max_removals);
        for c in &plan.remove {
            prop_assert!(!inp.in_use.contains(&c.id), "in use: {}", c.id);
            prop_assert!(!inp.required.contains(&c.id), "required: {}", c.id);
            let image = inp.images.iter().find(|i| i.id == c.id).unwrap();
            let first_seen = inp.usage.first_seen[&c.id];
            prop_assert!(inp.now - first_seen >= limits.min_age, "too young: {}", c.id);
            prop_assert!(image.tags.is_empty() || !image.digests.is_empty(), "local only: {}", c.id);
            // Every child of a removed image is removed too, and earlier.
            for child in inp.images.iter().filter(|i| i.parent.as_deref() == Some(c.id.as_str())) {
                prop_assert!(removing.contains(child.id.as_str()), "parent {} of staying {}", c.id, child.id);
                let pos = |id: &str| plan.remove.iter().position(|x| x.id == id).unwrap();
                prop_assert!(pos(&child.id) < pos(&c.id));
            }
            if c.rule == Rule::UnusedMaxAge {
                prop_assert!(inp.now - inp.usage.watching_since >= 30 * DAY);
            }
        }
        prop_assert_eq!(plan.remove.len() + plan.keep.len(), inp.images.len());
    }

    /// The watermark rule stops as soon as the disk would be under the low mark.
    #[test]
    fn stops_at_the_low_watermark((inp, mut limits) in arb_store()) {
        limits.unused_max_age = None;
        limits.dangling_min_age = None;
        limits.max_removals = usize::MAX;
        let plan = plan_prune(&inp, &KeepRules::default(), &limits);
        if let (Some(disk), Some(low)) = (inp.disk, limits.low_watermark) {
            let pct = |used: u64| used as f64 * 100.0 / disk.total as f64;
            let freed: u64 = plan.remove.iter().map(|c| c.size).sum();
            if let Some(largest) = plan.remove.iter().map(|c| c.size).max() {
                // Selection stopped as soon as it was enough: without the last image it
                // chose (at most the largest) the disk was still above the low mark.
                prop_assert!(pct(disk.used.saturating_sub(freed) + largest) > low);
            }
        } else {
            prop_assert!(plan.remove.is_empty());
        }
    }
}

proptest! {
    /// On a fresh state (every image first seen now, no use ever observed), a size cap removes
    /// the oldest images by creation time, not a set chosen by ID.
    #[test]
    fn a_fresh_state_removes_the_oldest_by_creation(
        ages in prop::collection::hash_set(1i64..100_000, 4..60),
        keep in 1usize..4,
    ) {
        let images: Vec<StoreImage> = ages
            .iter()
            .enumerate()
            .map(|(n, age)| image(&format!("{:08x}", n * 7919 % 1000), &[&format!("r/a:{n}")], 1, NOW - age * 60))
            .collect();
        let mut usage = Usage { watching_since: NOW, ..Usage::default() };
        for i in &images {
            usage.first_seen.insert(i.id.clone(), NOW);
        }
        let inp = PruneInput { images, usage, now: NOW, ..PruneInput::default() };
        let limits = Limits {
            min_age: 0,
            dangling_min_age: None,
            unused_max_age: None,
            max_store_size: Some(keep as u64),
            max_removals: usize::MAX,
            ..Limits::default()
        };
        let plan = plan_prune(&inp, &KeepRules::default(), &limits);
        let mut by_age: Vec<&StoreImage> = inp.images.iter().collect();
        by_age.sort_by_key(|i| i.created);
        let oldest: HashSet<&str> = by_age[..inp.images.len() - keep].iter().map(|i| i.id.as_str()).collect();
        let removed: HashSet<&str> = removed(&plan).into_iter().collect();
        prop_assert_eq!(removed, oldest);
        // And in that order.
        let created: Vec<i64> = plan.remove.iter().map(|c| c.last_used).collect();
        prop_assert!(created.windows(2).all(|w| w[0] <= w[1]));
    }
}

#[test]
fn arrivals_while_watching_count_from_their_arrival() {
    let mut inp = input(vec![
        image("before", &["r/a:1"], 1, NOW - 150 * DAY),
        image("arrived", &["r/a:2"], 1, NOW - 80 * DAY),
    ]);
    // `before` was there when watching began; `arrived` came (an old image) ten days ago.
    inp.usage
        .first_seen
        .insert("before".into(), inp.usage.watching_since);
    inp.usage
        .first_seen
        .insert("arrived".into(), NOW - 10 * DAY);
    let by_id: ById<'_> = inp.images.iter().map(|i| (i.id.as_str(), i)).collect();
    assert_eq!(
        last_use(by_id["before"], &inp.usage),
        (NOW - 150 * DAY, UseSource::Build)
    );
    assert_eq!(
        last_use(by_id["arrived"], &inp.usage),
        (NOW - 10 * DAY, UseSource::Arrival)
    );
    inp.usage.last_used.insert("arrived".into(), NOW - DAY);
    assert_eq!(
        last_use(by_id["arrived"], &inp.usage),
        (NOW - DAY, UseSource::Use)
    );
    // The engine does not say when it was built: stowage's first look stands in.
    let unknown = image("unknown", &["r/a:3"], 1, 0);
    inp.usage
        .first_seen
        .insert("unknown".into(), inp.usage.watching_since);
    assert_eq!(
        last_use(&unknown, &inp.usage),
        (inp.usage.watching_since, UseSource::Watching)
    );
}
