//! The removal promise against a store that changes under the prune: whatever happens between
//! the plan and each DELETE (a tag moves, a name is added or removed, a container appears),
//! the engine deletes no image the plan did not name, nor one that carried a name outside its
//! plan or had a container at that moment, without the cycle reporting it and putting it back.

use proptest::prelude::*;

use super::*;
use crate::decide::removal::qualified;
use crate::io::fake::{Churn, FakeEngine};
use crate::service::session::Session;

/// Tags the store's images may carry: two plain repositories, one a keep rule keeps, one the
/// config requires.
const TAGS: [&str; 6] = [
    "r.example/a:1",
    "r.example/a:2",
    "r.example/b:1",
    "r.example/b:2",
    "r.example/keep:1",
    "r.example/req:1",
];

/// Repositories the images' digest references are in.
const DIGEST_REPOS: [&str; 2] = ["r.example/a", "r.example/b"];

fn digest(i: usize) -> String {
    format!("sha256:{i:064x}")
}

/// An image ID as the fake engine gives the content of `digest(i)`: pulled back, it is the same.
fn id(i: usize) -> String {
    format!("sha256:id-{i:064x}")
}

/// One image of a generated store.
#[derive(Debug, Clone)]
struct Spec {
    /// The repository of its digest reference, if it has one (pulled, not built here).
    digest_repo: Option<usize>,
    /// An earlier image it is built on.
    parent: Option<usize>,
    /// A container uses it.
    used: bool,
}

/// A generated store: images, which image each tag names, and the churn with the call before
/// which it happens.
#[derive(Debug, Clone)]
struct World {
    images: Vec<Spec>,
    tags: Vec<Option<usize>>,
    churn: Vec<(usize, ChurnSpec)>,
}

#[derive(Debug, Clone)]
enum ChurnSpec {
    Tag(usize, usize),
    Untag(usize),
    Use(usize),
}

fn world() -> impl Strategy<Value = World> {
    (2usize..7).prop_flat_map(|n| {
        let spec = (
            prop::option::weighted(0.8, 0..DIGEST_REPOS.len()),
            prop::option::weighted(0.3, 0..n),
            prop::bool::weighted(0.15),
        )
            .prop_map(|(digest_repo, parent, used)| Spec {
                digest_repo,
                parent,
                used,
            });
        let churn = prop_oneof![
            4 => (0..TAGS.len(), 0..n).prop_map(|(t, i)| ChurnSpec::Tag(t, i)),
            1 => (0..TAGS.len()).prop_map(ChurnSpec::Untag),
            1 => (0..n).prop_map(ChurnSpec::Use),
        ];
        (
            prop::collection::vec(spec, n),
            prop::collection::vec(prop::option::of(0..n), TAGS.len()),
            prop::collection::vec((0usize..40, churn), 0..6),
        )
            .prop_map(|(images, tags, mut churn)| {
                churn.sort_by_key(|(at, _)| *at);
                World {
                    images,
                    tags,
                    churn,
                }
            })
    })
}

/// The fake engine holding `world`, its churn scheduled.
fn engine_of(world: &World) -> FakeEngine {
    let engine = FakeEngine::default();
    for (i, spec) in world.images.iter().enumerate() {
        let tags: Vec<&str> = TAGS
            .iter()
            .zip(&world.tags)
            .filter(|(_, owner)| **owner == Some(i))
            .map(|(t, _)| *t)
            .collect();
        let digests: Vec<String> = spec
            .digest_repo
            .map(|r| format!("{}@{}", DIGEST_REPOS[r], digest(i)))
            .into_iter()
            .collect();
        let digests: Vec<&str> = digests.iter().map(String::as_str).collect();
        engine.add(&id(i), &tags, &digests);
        engine.serve(&digest(i));
        // Only an earlier image can be a parent: no cycles.
        if let Some(p) = spec.parent.filter(|p| *p < i) {
            engine.set_parent(&id(i), &id(p));
        }
        if spec.used {
            engine.use_image(&id(i));
        }
    }
    for (at, c) in &world.churn {
        let churn = match *c {
            ChurnSpec::Tag(t, i) => Churn::Tag {
                tag: TAGS[t].into(),
                to: id(i),
            },
            ChurnSpec::Untag(t) => Churn::Untag {
                name: TAGS[t].into(),
            },
            ChurnSpec::Use(i) => Churn::Use { id: id(i) },
        };
        engine.churn_at(*at, churn);
    }
    engine
}

fn session(dir: &std::path::Path) -> Session {
    session_with(dir, "0s", "")
}

/// A session whose prune settings are as aggressive as the keys allow (everything
/// unprotected is a candidate), with `pause` between removals and `extra` lines.
fn session_with(dir: &std::path::Path, pause: &str, extra: &str) -> Session {
    let text = format!(
        "[state]\nfile = \"state.json\"\n[prune]\nmin_age = \"0s\"\n\
         dangling_min_age = \"0s\"\nunused_max_age = \"0s\"\npause = \"{pause}\"\n\
         max_removals = 100\nkeep = [\"r.example/keep:*\"]\n{extra}\
         [[image]]\nname = \"r.example/req:1\"\npin = \"follow\"\n"
    );
    super::tests::session_of(dir, &text)
}

/// Runs one cycle of `pruner` under paused time.
fn run_cycle(pruner: &Pruner<'_, FakeEngine>) -> Cycle {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .unwrap()
        .block_on(pruner.cycle(false))
        .unwrap()
}

/// Whether the cycle reported `name` (or any name, when `None`) of image `image` as taken
/// against the plan; `image` `None` matches names taken from the planned image `planned`.
fn reported(removals: &[Removal], image: &str, name: Option<&str>) -> Option<Race> {
    removals.iter().find_map(|r| {
        r.against_plan
            .iter()
            .find(|a| {
                let same = match &a.taken.image {
                    Some(i) => i == image,
                    // Known by its names: a digest reference names its content.
                    None if a.taken.another => true,
                    None => r.candidate.id == image,
                };
                same && name.is_none_or(|n| a.taken.names.contains(&qualified(n)))
            })
            .map(|a| a.outcome.clone())
    })
}

fn check(world: &World) -> Result<(), TestCaseError> {
    let dir = tempfile::tempdir().unwrap();
    let session = session(dir.path());
    let engine = engine_of(world);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = run_cycle(&pruner);
    let plan_of = |id: &str| cycle.plan.remove.iter().find(|c| c.id == id);
    for (deleted, names_then, used_then) in engine.deleted() {
        let planned_names: Vec<String> = plan_of(&deleted)
            .map(|c| c.references.iter().map(|n| qualified(n)).collect())
            .unwrap_or_default();
        let outside = plan_of(&deleted).is_none()
            || used_then
            || names_then
                .iter()
                .any(|n| !planned_names.contains(&qualified(n)));
        if !outside {
            continue;
        }
        let outcome = reported(&cycle.removals, &deleted, None);
        prop_assert!(
            outcome.is_some(),
            "{deleted} deleted outside its plan (names then {names_then:?}, used {used_then}), \
             unreported: {:#?}",
            cycle.removals
        );
        // Whatever had a digest is back.
        let had_digest = names_then.iter().any(|n| n.contains('@'))
            || planned_names.iter().any(|n| n.contains('@'));
        if had_digest {
            prop_assert_eq!(outcome, Some(Race::Healed));
            prop_assert!(engine.image(&deleted).is_some(), "{deleted} not put back");
        }
    }
    let deleted = engine.deleted();
    for u in engine.untagged() {
        let planned = plan_of(&u.image).is_some_and(|c| {
            c.references
                .iter()
                .any(|n| qualified(n) == qualified(&u.name))
        });
        // The one instant no look can cover: a tag moved onto another image between its last
        // look and its DELETE (that image keeps its content; docs/reliability.md).
        let outcome = reported(&cycle.removals, &u.image, Some(&u.name));
        prop_assert!(
            planned || outcome.is_some() || u.moved_just_before,
            "{} taken from {} outside the plan, unreported: {:#?}",
            u.name,
            u.image,
            cycle.removals
        );
        // A digest reference taken from an image that stays is put back on it.
        let stays = deleted.iter().all(|(d, _, _)| *d != u.image);
        if !planned && stays && u.name.contains('@') {
            prop_assert_eq!(outcome, Some(Race::Healed), "{} not put back", u.name);
            let now = engine.image(&u.image);
            prop_assert!(
                now.is_some_and(|i| i.digests.contains(&u.name)),
                "{} not back on {}",
                u.name,
                u.image
            );
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(512),
        ..ProptestConfig::default()
    })]

    #[test]
    fn no_interleaving_removes_what_was_not_planned(world in world()) {
        check(&world)?;
    }
}

/// Issue 19's second way, as the fake engine replays it: the tag moves before any DELETE.
#[test]
fn a_tag_moved_between_plan_and_removal_takes_nothing_of_the_new_image() {
    // X is planned with a:1 and b:1; before any DELETE, a:1 moves to Y, kept by its keep tag.
    let world = World {
        images: vec![
            Spec {
                digest_repo: Some(0),
                parent: None,
                used: false,
            },
            Spec {
                digest_repo: Some(0),
                parent: None,
                used: false,
            },
        ],
        tags: vec![Some(0), None, Some(0), None, Some(1), None],
        churn: vec![(0, ChurnSpec::Tag(0, 1))],
    };
    check(&world).unwrap();
    let engine = engine_of(&world);
    let dir = tempfile::tempdir().unwrap();
    let session = session(dir.path());
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = run_cycle(&pruner);
    let x = cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == id(0))
        .unwrap();
    assert_eq!(x.result, RemovalResult::Removed, "{x:#?}");
    assert_eq!(x.moved, ["r.example/a:1"]);
    assert!(x.against_plan.is_empty(), "{x:#?}");
    let y = engine.image(&id(1)).expect("Y stays");
    assert!(y.tags.contains(&"r.example/a:1".to_owned()), "{y:?}");
}

/// A cycle over `world` with `extra` lines in `[prune]` (one removal at a time, a pause
/// between), and the engine after it.
fn cycle_with(world: &World, extra: &str) -> (Cycle, FakeEngine) {
    let dir = tempfile::tempdir().unwrap();
    let session = session_with(dir.path(), "1s", extra);
    let engine = engine_of(world);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    (run_cycle(&pruner), engine)
}

fn pulled(n: usize) -> Vec<Spec> {
    (0..n)
        .map(|_| Spec {
            digest_repo: Some(1),
            parent: None,
            used: false,
        })
        .collect()
}

/// A name a keep rule matches, put on a planned image while the cycle removes another, keeps
/// it: the plan is made again before its removal.
#[test]
fn a_kept_name_added_during_the_cycle_keeps_the_image() {
    let world = World {
        images: pulled(2),
        tags: vec![Some(0), None, Some(1), None, None, None],
        // During the first removal, keep:1 is put on the second image.
        churn: vec![(0, ChurnSpec::Tag(4, 1))],
    };
    let (cycle, engine) = cycle_with(&world, "");
    let second = cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == id(1))
        .unwrap();
    assert_eq!(second.result, RemovalResult::Skipped, "{second:#?}");
    assert!(
        second
            .error
            .as_deref()
            .unwrap()
            .contains("keep rule r.example/keep:*"),
        "{second:#?}"
    );
    assert!(engine.image(&id(1)).is_some());
    assert!(engine.image(&id(0)).is_none());
}
