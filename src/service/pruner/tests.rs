//! A prune cycle against the fake store: what it removes, what it keeps, and a stop.

use super::*;
use crate::io::fake::{Churn, FakeEngine, FakeRegistry};
use crate::service::session::Session;

const SETUP: &str = "[state]\nfile = \"state.json\"\n[prune]\nmin_age = \"0s\"\n\
                     dangling_min_age = \"0s\"\npause = \"0s\"\n\
                     [[image]]\nname = \"r.example/app:1\"\npin = \"follow\"\n";

fn setup(dir: &std::path::Path) -> Session {
    session_of(dir, SETUP)
}

/// A session over the fake registry, its config `text` (as `dir`'s config.toml).
pub(super) fn session_of(dir: &std::path::Path, text: &str) -> Session {
    session_over(dir, text, FakeRegistry::default())
}

/// [`session_of`] over `registry` (a handle on the same fake).
fn session_over(dir: &std::path::Path, text: &str, registry: FakeRegistry) -> Session {
    let config = Config::parse(&dir.join("config.toml"), text).unwrap();
    Session::with_registry(config, None, State::default(), Box::new(registry)).unwrap()
}

fn ids(removals: &[Removal], result: RemovalResult) -> Vec<&str> {
    removals
        .iter()
        .filter(|r| r.result == result)
        .map(|r| r.candidate.id.as_str())
        .collect()
}

#[tokio::test(start_paused = true)]
async fn a_cycle_removes_what_no_protection_keeps() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    engine.add("sha256:required", &["r.example/app:1"], &[]);
    engine.add("sha256:used", &[], &["r.example/old@sha256:1"]);
    engine.add("sha256:dangling", &[], &["r.example/old@sha256:2"]);
    engine.use_image("sha256:used");
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(
        ids(&cycle.removals, RemovalResult::Removed),
        ["sha256:dangling"]
    );
    let kept = |id: &str| {
        cycle
            .plan
            .keep
            .iter()
            .find(|k| k.id == id)
            .unwrap()
            .protection
            .clone()
    };
    assert_eq!(
        kept("sha256:required"),
        crate::decide::prune_plan::Protection::Required
    );
    assert_eq!(
        kept("sha256:used"),
        crate::decide::prune_plan::Protection::InUse
    );
    assert!(engine.tagged("r.example/app:1").is_some());
    // The usage history was saved: the next process knows when each image was first seen.
    let saved = State::load(&session.config.state_file);
    assert!(saved.first_seen.contains_key("sha256:required"));
}

#[tokio::test(start_paused = true)]
async fn a_stopped_pruner_starts_no_removal_and_a_dry_run_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    engine.add("sha256:dangling", &[], &["r.example/old@sha256:2"]);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let dry = pruner.cycle(true).await.unwrap();
    assert_eq!(dry.plan.remove.len(), 1);
    assert!(dry.removals.is_empty());
    let stop = Shutdown::new();
    stop.trigger();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), stop);
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(
        ids(&cycle.removals, RemovalResult::Skipped),
        ["sha256:dangling"]
    );
    assert!(engine.has_image("sha256:dangling").await.unwrap());
}

/// The re-check before each removal costs one container listing per batch while no container
/// event arrives; an event makes the next removal look again, and a container that took up a
/// planned image since the plan keeps it.
#[tokio::test(start_paused = true)]
async fn one_listing_per_batch_until_a_container_event() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    for n in 0..10 {
        engine.add(
            &format!("sha256:old{n}"),
            &[],
            &[&format!("r.example/old@sha256:{n}")],
        );
    }
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let (plan, _) = pruner.plan().await.unwrap();
    let order: Vec<String> = plan.remove.iter().map(|c| c.id.clone()).collect();
    assert_eq!(order.len(), 10);
    // The first removal races a container created from the last planned image.
    engine.on_removal_use(&order[0], &order[9]);
    let before = engine.container_listings();
    let cycle = pruner.cycle(false).await.unwrap();
    let last = cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == order[9])
        .unwrap();
    assert_eq!(last.result, RemovalResult::Skipped, "{last:#?}");
    assert!(
        last.error
            .as_deref()
            .unwrap()
            .starts_with("kept: a container started using it since the plan")
    );
    assert_eq!(ids(&cycle.removals, RemovalResult::Removed).len(), 9);
    // The plan's, the batch's, one after the event, and one after the batch: a container was
    // created while it ran, and may use an image it removed.
    assert_eq!(engine.container_listings() - before, 4);

    // A quiet batch: the plan's and the batch's, for any number removed; its events say no
    // container was created, so none is looked for after it.
    for n in 0..10 {
        engine.add(
            &format!("sha256:new{n}"),
            &[],
            &[&format!("r.example/new@sha256:{n}")],
        );
    }
    let before = engine.container_listings();
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(ids(&cycle.removals, RemovalResult::Removed).len(), 10);
    assert_eq!(engine.container_listings() - before, 2);
}

#[tokio::test(start_paused = true)]
async fn a_closed_window_starts_no_removal_and_an_open_one_removes() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    engine.add("sha256:dangling", &[], &["r.example/old@sha256:2"]);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let now = crate::service::clock::now().with_timezone(&chrono::Utc);
    let closed = pruner
        .cycle_within(false, Some(now - chrono::Duration::seconds(1)))
        .await
        .unwrap();
    assert_eq!(
        ids(&closed.removals, RemovalResult::Skipped),
        ["sha256:dangling"]
    );
    assert_eq!(
        closed.removals[0].error.as_deref(),
        Some("the prune window closed")
    );
    let open = pruner
        .cycle_within(false, Some(now + chrono::Duration::hours(1)))
        .await
        .unwrap();
    assert_eq!(
        ids(&open.removals, RemovalResult::Removed),
        ["sha256:dangling"]
    );
}

/// A container created from an image just after the engine checked it for containers, and
/// announced after its deletion (the order a real engine's race can take): the batch's events
/// say a container was created, the containers are listed, and the image is pulled back by
/// its digest.
#[tokio::test(start_paused = true)]
async fn a_container_created_as_its_image_goes_gets_the_image_back() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
    engine.serve(&digest);
    engine.on_removal_use(&id, &id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(ids(&cycle.removals, RemovalResult::Removed), [id.as_str()]);
    assert_eq!(cycle.removals[0].race, Some(Race::Healed), "{cycle:#?}");
    assert!(engine.has_image(&id).await.unwrap());
}

/// The same race on an engine that pulls the image back without its layers (Docker 28's
/// containerd store): the image is loaded from its registry as an archive, under its name.
#[tokio::test(start_paused = true)]
async fn an_image_pulled_back_without_its_layers_is_loaded_whole_from_its_registry() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::default();
    let session = session_over(dir.path(), SETUP, registry.clone());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    let by_digest = format!("r.example/old@{digest}");
    engine.add(&id, &[], &[&by_digest]);
    engine.serve(&digest);
    engine.on_removal_use(&id, &id);
    engine.pull_back_partial(&id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(cycle.removals[0].race, Some(Race::Healed), "{cycle:#?}");
    assert_eq!(
        registry.archived(),
        [(by_digest.clone(), by_digest.clone())]
    );
    assert_eq!(engine.loads(), [by_digest]);
    assert!(engine.image_whole(&id).await.unwrap());
}

/// A tag pulled onto another image between the removal and the heal stays there: the image
/// comes back under its digest, and the tag is not taken from its new owner.
#[tokio::test(start_paused = true)]
async fn a_heal_leaves_a_tag_that_names_another_image_now() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::default();
    // Every unprotected image a candidate, tagged ones too.
    let text = SETUP.replace("pause = ", "max_store_size = \"1B\"\npause = ");
    let session = session_over(dir.path(), &text, registry.clone());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.add(
        &id,
        &["r.example/old:2"],
        &[&format!("r.example/old@{digest}")],
    );
    engine.add("sha256:newer", &[], &[]);
    engine.use_image("sha256:newer");
    registry.set("r.example/old:2", &digest);
    engine.serve(&digest);
    engine.on_removal_use(&id, &id);
    // Call 0 is the look before the tag goes, 1 and 2 the DELETEs of the tag and the ID; the
    // heal's look at the tag is call 3.
    let moved = Churn::Tag {
        tag: "r.example/old:2".into(),
        to: "sha256:newer".into(),
    };
    engine.churn_at(3, moved);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    let removal = cycle.removals.iter().find(|r| r.candidate.id == id);
    let removal = removal.unwrap_or_else(|| panic!("{:#?}", cycle.plan));
    assert_eq!(removal.race, Some(Race::Healed), "{cycle:#?}");
    let tag = engine
        .image_named("r.example/old:2")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tag.id, "sha256:newer");
    assert!(engine.has_image(&id).await.unwrap());
}

/// When the registry cannot give the archive, the race is lost, and said so with the reason.
#[tokio::test(start_paused = true)]
async fn an_image_that_cannot_be_made_whole_is_a_race_lost_with_its_reason() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::default();
    registry.fail_archives();
    let session = session_over(dir.path(), SETUP, registry);
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
    engine.serve(&digest);
    engine.on_removal_use(&id, &id);
    engine.pull_back_partial(&id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    let Some(Race::Lost { error }) = &cycle.removals[0].race else {
        panic!("{cycle:#?}");
    };
    assert!(
        error.contains("fetching") && error.contains("connection refused"),
        "{error}"
    );
    assert!(engine.loads().is_empty());
}

/// A race the cycle finds and cannot heal (the registry does not serve the digest at that
/// moment) is reported lost once, then tried again at every cycle while the container uses the
/// image, counted as still missing each time, and reported put back when the registry serves it
/// again.
#[tokio::test(start_paused = true)]
async fn a_race_lost_in_the_cycle_is_tried_again_and_counted_until_it_is_back() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
    engine.on_removal_use(&id, &id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let lost = pruner.cycle(false).await.unwrap();
    assert!(
        matches!(&lost.removals[0].race, Some(Race::Lost { .. })),
        "{lost:#?}"
    );
    assert_eq!(lost.images_lost(), 1);
    assert!(on_disk(dir.path()).removed[&id].lost);
    let again = pruner.cycle(false).await.unwrap();
    assert!(again.late_races.is_empty(), "said once: {again:#?}");
    assert_eq!(again.still_lost.len(), 1, "{again:#?}");
    assert_eq!(again.still_lost[0].id, id);
    assert_eq!(again.images_lost(), 1);
    engine.serve(&digest);
    let back = pruner.cycle(false).await.unwrap();
    assert_eq!(back.late_races.len(), 1, "{back:#?}");
    assert_eq!(back.late_races[0].outcome, Race::Healed);
    assert!(back.still_lost.is_empty());
    assert_eq!(back.images_lost(), 0);
    assert!(engine.image_whole(&id).await.unwrap());
    assert!(on_disk(dir.path()).removed.is_empty());
}

/// A name someone gives an image while the engine deletes it goes with the image on Podman,
/// and only the tag's event says so: the image is pulled back by digest under that name, and
/// the removal reports the name as taken against the plan. Where it cannot be pulled back, it
/// is reported lost.
#[tokio::test(start_paused = true)]
async fn a_name_given_to_an_image_as_it_is_deleted_brings_it_back_under_that_name() {
    for served in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let session = setup(dir.path());
        let engine = FakeEngine::default();
        let digest = format!("sha256:{:064x}", 7);
        let id = format!("sha256:id-{:064x}", 7);
        engine.say_podman();
        engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
        if served {
            engine.serve(&digest);
        }
        engine.on_removal_tag(&id, "r.example/wanted:1");
        let settings = session.config.prune.clone().unwrap();
        let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
        let cycle = pruner.cycle(false).await.unwrap();
        let removal = &cycle.removals[0];
        assert_eq!(removal.result, RemovalResult::Removed, "{cycle:#?}");
        let [taken] = &removal.against_plan[..] else {
            panic!("{cycle:#?}");
        };
        assert_eq!(taken.taken.image.as_deref(), Some(id.as_str()));
        assert_eq!(taken.taken.names, ["r.example/wanted:1"]);
        let named = engine.image_named("r.example/wanted:1").await.unwrap();
        if served {
            assert_eq!(taken.outcome, Race::Healed);
            assert_eq!(named.map(|i| i.id), Some(id.clone()));
        } else {
            assert!(matches!(taken.outcome, Race::Lost { .. }), "{taken:?}");
            assert!(named.is_none());
        }
    }
}

/// A name given to a removed image that names an image now (given after the deletion, to
/// whatever the name resolved to then, or moved on since) was not taken: nothing is put back.
#[tokio::test(start_paused = true)]
async fn a_name_given_that_names_an_image_now_brings_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.say_podman();
    engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
    engine.add("sha256:other", &["r.example/wanted:1"], &[]);
    engine.use_image("sha256:other");
    engine.serve(&digest);
    engine.on_removal_tag(&id, "r.example/wanted:1");
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    let removal = cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == id)
        .unwrap();
    assert_eq!(removal.result, RemovalResult::Removed, "{cycle:#?}");
    assert!(removal.against_plan.is_empty(), "{cycle:#?}");
    assert!(!engine.has_image(&id).await.unwrap());
}

/// The state file of a test's `dir` (SETUP's `state.json`), as a later run would read it.
fn on_disk(dir: &std::path::Path) -> State {
    State::load(&dir.join("state.json"))
}

/// An image removed by one cycle, and the image's ID, digest and `name@digest`, served by the
/// fake registry: a cycle removes it (nothing uses it yet).
async fn removed_by_a_cycle(session: &Session, engine: &FakeEngine) -> (String, String) {
    let digest = format!("sha256:{:064x}", 9);
    let id = format!("sha256:id-{:064x}", 9);
    let by_digest = format!("r.example/old@{digest}");
    engine.add(&id, &[], &[&by_digest]);
    engine.serve(&digest);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(ids(&cycle.removals, RemovalResult::Removed), [id.as_str()]);
    assert!(!engine.has_image(&id).await.unwrap());
    (id, by_digest)
}

/// A `docker create` that began before the removal and registered its container only after
/// the cycle's last look (a slow one): the next cycle finds the container, its image gone, and
/// pulls the image back.
#[tokio::test(start_paused = true)]
async fn a_container_registered_after_the_cycle_gets_its_image_back_at_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let (id, by_digest) = removed_by_a_cycle(&session, &engine).await;
    let saved = on_disk(dir.path());
    assert_eq!(
        saved.removed[&id].references,
        std::slice::from_ref(&by_digest)
    );
    engine.use_image(&id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let next = pruner.cycle(false).await.unwrap();
    assert_eq!(next.late_races.len(), 1, "{next:#?}");
    assert_eq!(next.late_races[0].id, id);
    assert_eq!(next.late_races[0].names, [by_digest]);
    assert_eq!(next.late_races[0].outcome, Race::Healed);
    assert!(engine.image_whole(&id).await.unwrap());
    // Dealt with once: not reported again.
    assert!(!on_disk(dir.path()).removed.contains_key(&id));
    let again = pruner.cycle(false).await.unwrap();
    assert!(again.late_races.is_empty(), "{again:#?}");
}

/// The same late container, on an engine that pulls the image back without its layers: it is
/// loaded whole from its registry, as a race found in the cycle is.
#[tokio::test(start_paused = true)]
async fn a_late_container_on_a_store_that_drops_layers_gets_its_image_whole() {
    let dir = tempfile::tempdir().unwrap();
    let registry = FakeRegistry::default();
    let session = session_over(dir.path(), SETUP, registry.clone());
    let engine = FakeEngine::default();
    let (id, by_digest) = removed_by_a_cycle(&session, &engine).await;
    engine.use_image(&id);
    engine.pull_back_partial(&id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let next = pruner.cycle(false).await.unwrap();
    assert_eq!(next.late_races[0].outcome, Race::Healed, "{next:#?}");
    assert_eq!(engine.loads(), [by_digest]);
    assert!(engine.image_whole(&id).await.unwrap());
}

/// An image that cannot come back (its registry no longer serves it) is reported lost, with
/// why, once; it is tried again at every cycle while the container uses it, and put back when
/// its registry serves it again.
#[tokio::test(start_paused = true)]
async fn a_late_container_whose_image_cannot_come_back_is_reported_once_and_tried_again() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let (id, _) = removed_by_a_cycle(&session, &engine).await;
    engine.use_image(&id);
    let digest = format!("sha256:{:064x}", 9);
    engine.unserve(&digest);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let next = pruner.cycle(false).await.unwrap();
    match &next.late_races[..] {
        [late] => assert!(
            matches!(&late.outcome, Race::Lost { error } if !error.is_empty()),
            "{late:?}"
        ),
        other => panic!("{other:#?}"),
    }
    assert!(next.still_lost.is_empty(), "{next:#?}");
    assert_eq!(next.images_lost(), 1);
    let again = pruner.cycle(false).await.unwrap();
    assert!(again.late_races.is_empty(), "said once: {again:#?}");
    assert_eq!(
        again.still_lost.len(),
        1,
        "counted while missing: {again:#?}"
    );
    assert!(on_disk(dir.path()).removed[&id].lost);
    engine.serve(&digest);
    let back = pruner.cycle(false).await.unwrap();
    assert_eq!(back.late_races.len(), 1, "{back:#?}");
    assert_eq!(back.late_races[0].outcome, Race::Healed);
    assert!(engine.image_whole(&id).await.unwrap());
    assert!(on_disk(dir.path()).removed.is_empty());
}

/// A container created after the removal (the image pulled again, a container made from it,
/// then the image removed by hand with `docker rmi -f`) did not race stowage: the image stays
/// gone, nothing is said, and the removal is forgotten.
#[tokio::test(start_paused = true)]
async fn a_container_created_after_the_removal_does_not_bring_the_image_back() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let (id, _) = removed_by_a_cycle(&session, &engine).await;
    let removed_at = on_disk(dir.path()).removed[&id].at;
    engine.use_image_created(&id, removed_at + 30);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let next = pruner.cycle(false).await.unwrap();
    assert!(next.late_races.is_empty(), "{next:#?}");
    assert!(!engine.has_image(&id).await.unwrap());
    assert!(on_disk(dir.path()).removed.is_empty());
}

/// An engine whose clock runs an hour ahead (a remote one): the late container, dated by
/// that clock a moment before the removal, raced it, and gets its image back.
#[tokio::test(start_paused = true)]
async fn a_late_container_on_an_engine_with_another_clock_is_told_by_that_clock() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    engine.set_clock_ahead(3_600);
    let before = chrono::Utc::now().timestamp() + 3_600;
    let (id, _) = removed_by_a_cycle(&session, &engine).await;
    engine.use_image_created(&id, before);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let next = pruner.cycle(false).await.unwrap();
    assert_eq!(next.late_races.len(), 1, "{next:#?}");
    assert_eq!(next.late_races[0].outcome, Race::Healed);
}

/// A tag moved since the removal onto another image, which the next cycle removes (unused):
/// the late heal, before that cycle's removals, sees the tag name the other image and leaves
/// it; the old image comes back untagged, and the tag goes with the image it was moved to.
#[tokio::test(start_paused = true)]
async fn a_late_heal_does_not_put_back_a_tag_moved_onto_an_image_the_cycle_removes() {
    let dir = tempfile::tempdir().unwrap();
    let text = SETUP.replace("pause = ", "max_store_size = \"1B\"\npause = ");
    let registry = FakeRegistry::default();
    let session = session_over(dir.path(), &text, registry.clone());
    let engine = FakeEngine::default();
    let digest = format!("sha256:{:064x}", 9);
    let id = format!("sha256:id-{:064x}", 9);
    engine.add(
        &id,
        &["r.example/old:2"],
        &[&format!("r.example/old@{digest}")],
    );
    // Its registry serves it: not a local-only image, which the rules keep.
    registry.set("r.example/old:2", &digest);
    engine.serve(&digest);
    // A byte the store cannot go under: the cap selects every unprotected image.
    engine.add("sha256:busy", &[], &[]);
    engine.use_image("sha256:busy");
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let first = pruner.cycle(false).await.unwrap();
    assert_eq!(
        ids(&first.removals, RemovalResult::Removed),
        [id.as_str()],
        "{first:#?}"
    );
    // The late container, and the tag moved by the operator onto another image.
    engine.use_image(&id);
    let other = format!("sha256:{:064x}", 8);
    registry.set("r.example/other:1", &other);
    let by_digest = format!("r.example/other@{other}");
    engine.add("sha256:newer", &["r.example/old:2"], &[&by_digest]);
    let next = pruner.cycle(false).await.unwrap();
    assert_eq!(next.late_races.len(), 1, "{next:#?}");
    assert_eq!(next.late_races[0].outcome, Race::Healed);
    assert_eq!(
        ids(&next.removals, RemovalResult::Removed),
        ["sha256:newer"]
    );
    assert!(engine.image_whole(&id).await.unwrap());
    let tag = engine.image_named("r.example/old:2").await.unwrap();
    assert_eq!(tag, None, "the tag went with the image it named");
}

/// A dry run puts nothing back and forgets nothing; an image pulled again since (by a
/// `docker run`) needs nothing put back.
#[tokio::test(start_paused = true)]
async fn a_dry_run_heals_nothing_and_an_image_pulled_again_is_not_a_race() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let (id, by_digest) = removed_by_a_cycle(&session, &engine).await;
    engine.use_image(&id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let dry = pruner.cycle(true).await.unwrap();
    assert!(dry.late_races.is_empty());
    assert!(!engine.has_image(&id).await.unwrap());
    assert!(on_disk(dir.path()).removed.contains_key(&id));
    engine.add(&id, &[], &[&by_digest]);
    let next = pruner.cycle(false).await.unwrap();
    assert!(next.late_races.is_empty(), "{next:#?}");
    assert!(!on_disk(dir.path()).removed.contains_key(&id));
}

/// A removal no container took up is forgotten by the first cycle that looks long enough after
/// it; a race the cycle found itself is not remembered (it was dealt with and reported).
#[tokio::test(start_paused = true)]
async fn removals_are_remembered_only_while_a_late_container_can_appear() {
    let dir = tempfile::tempdir().unwrap();
    let session = setup(dir.path());
    let engine = FakeEngine::default();
    let path = dir.path().join("state.json");
    let old = crate::policy::state::RemovedImage {
        names: vec!["r.example/gone:1".into()],
        references: vec!["r.example/gone:1".into()],
        at: chrono::Utc::now().timestamp() - crate::decide::late::LATE_CREATE_AT_MOST - 5,
        lost: false,
    };
    State::update(&path, |s| {
        s.removed.insert("sha256:long-gone".into(), old);
    })
    .await
    .unwrap();
    *session.state.locked() = State::load(&path);
    let digest = format!("sha256:{:064x}", 7);
    let id = format!("sha256:id-{:064x}", 7);
    engine.add(&id, &[], &[&format!("r.example/old@{digest}")]);
    engine.serve(&digest);
    engine.on_removal_use(&id, &id);
    let settings = session.config.prune.clone().unwrap();
    let pruner = session.pruner(&engine, &settings, InFlight::default(), Shutdown::new());
    let cycle = pruner.cycle(false).await.unwrap();
    assert_eq!(cycle.removals[0].race, Some(Race::Healed), "{cycle:#?}");
    let removed = State::load(&path).removed;
    assert!(removed.is_empty(), "{removed:#?}");
}
