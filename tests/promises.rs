//! Issue 19: the five ways a prune removed what it promised to keep, on the real engine, each
//! with the store changing under the prune as it did when they were found. Every engine
//! profile runs them; docs/reliability.md says what each engine does with parents, with a name
//! that moved, and with a digest reference.

use std::path::Path;

use serde_json::Value;

use crate::prune::seasoned_state;
use crate::support::{Env, ScopedStore, Scratch, engine_lock, env, fresh_repo};

/// A repository of the plain registry no other test uses.
fn own_repo(env: &Env) -> String {
    format!("{}/stowage-test/{}", env.plain, fresh_repo("promise"))
}

/// Prune settings as aggressive as the keys allow: every image no protection keeps goes.
const AGGRESSIVE: &str = "min_age = \"0s\"\ndangling_min_age = \"0s\"\nunused_max_age = \"0s\"\n\
                          prune_local_only = true\npause = \"0s\"\nmax_removals = 100\n";

fn push(env: &Env, name: &str) {
    let out = env.docker(&["push", name]);
    assert!(out.status.success(), "push {name}: {out:?}");
}

/// Removes what a test made, whatever is left of it.
fn clean(env: &Env, ids: &[&str]) {
    for id in ids {
        let _ = env.docker(&["image", "rm", "-f", id]);
    }
}

/// Hole 1: the engine, told nothing, deletes the untagged parents a removal leaves childless.
/// A parent kept by a label rule (listed or not: an untagged parent with a child is not in the
/// engine's list) stays when its child goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_removal_never_takes_an_untagged_parent_with_it() {
    let _lock = engine_lock();
    let env = env();
    for pushed in [false, true] {
        let repo = own_repo(&env);
        let (p, c) = (format!("{repo}/p:1"), format!("{repo}/c:1"));
        let old_p = env.build_image(&p, "scratch", "parent", Some("tier=gold"));
        if pushed {
            push(&env, &p);
        }
        // Its own label: a child inherits its parent's, which would keep it too.
        let child = env.build_image(&c, &p, "child", Some("tier=bronze"));
        // The parent's tag is rebuilt: the old parent is untagged, its child still on it.
        let new_p = env.build_image(&p, "scratch", "parent, rebuilt", Some("tier=gold"));
        assert_ne!(old_p, new_p);
        let scope = [child.clone(), old_p.clone(), new_p.clone()];
        let cycle = prune_once(&env, &scope, "keep_labels = [\"tier=gold\"]\n", |_| {}).await;
        let removed: Vec<&str> = cycle
            .removals
            .iter()
            .filter(|r| r.result == stowage::RemovalResult::Removed)
            .map(|r| r.candidate.id.as_str())
            .collect();
        assert_eq!(
            removed,
            [child.as_str()],
            "pushed {pushed}: {:#?}",
            cycle.removals
        );
        assert!(
            env.has_image(&old_p),
            "pushed {pushed}: the parent kept by its label went with its child: {:#?}",
            cycle.removals
        );
        assert!(env.has_image(&new_p));
        assert!(
            cycle.removals.iter().all(|r| r.against_plan.is_empty()),
            "{:#?}",
            cycle.removals
        );
        clean(&env, &[&child, &old_p, &new_p]);
    }
}

/// Hole 2: a tag that moves between the plan and the removal (a pull, a CI build) names an
/// image the plan never saw; the removal leaves it, and its tag, alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_tag_that_moves_during_the_prune_keeps_its_new_image() {
    let _lock = engine_lock();
    let env = env();
    // One tag; then two, where the other is removed by name after a look.
    for second_tag in [false, true] {
        let repo = own_repo(&env);
        let (v1, v2) = (format!("{repo}/app:v1"), format!("{repo}/app:v2"));
        let x = env.build_image(&v1, "scratch", "x", None);
        push(&env, &v1);
        if second_tag {
            assert!(env.docker(&["tag", &v1, &v2]).status.success());
        }
        let moved = v1.clone();
        let cycle = cycle_after(
            &env,
            std::slice::from_ref(&x),
            "keep_labels = [\"tier=gold\"]\n",
            Box::new(move || {
                // Rebuilt with a label a rule keeps, seconds old.
                crate::support::env().build_image(&moved, "scratch", "y", Some("tier=gold"));
            }),
        )
        .await;
        let y = env.image_id(&v1).unwrap_or_else(|| {
            panic!(
                "the moved tag's new image was removed: {:#?}",
                cycle.removals
            )
        });
        assert_ne!(y, x);
        let removal = outcome(&cycle, &x);
        assert_eq!(
            removal.result,
            stowage::RemovalResult::Removed,
            "{removal:#?}"
        );
        assert!(removal.against_plan.is_empty(), "{removal:#?}");
        assert!(!env.has_image(&x), "{removal:#?}");
        assert!(!env.has_image(&v2));
        clean(&env, &[&y]);
    }
}

/// The one instant no look covers: an extra tag moved onto another image between its look
/// and its DELETE. The other image keeps its content (it has another name here), whatever the
/// engine; the tag itself is the documented loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_tag_moved_in_the_instant_before_its_delete_takes_no_content() {
    let _lock = engine_lock();
    let env = env();
    let repo = own_repo(&env);
    let (v1, v2, other) = (
        format!("{repo}/app:v1"),
        format!("{repo}/app:v2"),
        format!("{repo}/other:1"),
    );
    let x = env.build_image(&v1, "scratch", "x", None);
    push(&env, &v1);
    assert!(env.docker(&["tag", &v1, &v2]).status.success());
    let y = env.build_image(&other, "scratch", "y", Some("tier=gold"));
    push(&env, &other);
    let (from, to) = (other.clone(), v1.clone());
    let tag = Box::new(move || {
        let out = crate::support::env().docker(&["tag", &from, &to]);
        assert!(out.status.success(), "{out:?}");
    });
    let cycle = prune_once(
        &env,
        std::slice::from_ref(&x),
        "keep_labels = [\"tier=gold\"]\n",
        |store| store.before_delete(tag),
    )
    .await;
    let removal = outcome(&cycle, &x);
    assert!(env.has_image(&y), "{removal:#?}");
    assert!(
        removal
            .against_plan
            .iter()
            .all(|a| a.outcome == stowage::Race::Healed),
        "{removal:#?}"
    );
    clean(&env, &[&x, &y]);
}

/// Hole 3: an image removed and pulled again is new to the store: `min_age` counts from its
/// return.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn an_image_pulled_again_after_its_removal_is_young_again() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    env.purge_images(std::slice::from_ref(&name));
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    let x = env.image_id(&name).unwrap();
    // Another, there long before (first seen 60 days ago too).
    let other = env.plain_image("alpha:1");
    assert!(env.docker(&["pull", "-q", &other]).status.success());
    let y = env.image_id(&other).unwrap();
    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let (config, settings) = scratch.prune_config(
        &[],
        "min_age = \"20s\"\nunused_max_age = \"0s\"\nprune_local_only = true\npause = \"0s\"\n",
    );
    let store = ScopedStore::connect(&env, std::slice::from_ref(&x)).await;
    let session = stowage::Session::new(config, None, &store.inner)
        .await
        .unwrap();
    let pruner = store.pruner(&session, &settings);
    let first = pruner.cycle(false).await.unwrap();
    assert!(
        first
            .removals
            .iter()
            .any(|r| r.candidate.id == x && r.result == stowage::RemovalResult::Removed),
        "{:#?}",
        first.removals
    );
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    assert_eq!(env.image_id(&name).as_deref(), Some(x.as_str()));
    let (plan, _) = pruner.plan().await.unwrap();
    assert!(plan.remove.is_empty(), "{plan:#?}");
    let kept = plan.keep.iter().find(|k| k.id == x).unwrap();
    assert_eq!(kept.protection.name(), "too-young", "{kept:#?}");

    // Removed and pulled again by someone else between two cycles (no daemon watching): the
    // engine's events since the last cycle say so.
    // A state file whose last cycle looked at the store now, Y there for 60 days.
    let scratch = Scratch::new();
    let state = scratch.dir.path().join("state.json");
    seasoned_state(&env, &state, 60);
    let mut doc: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    doc["observed_at_ns"] = chrono::Utc::now().timestamp_nanos_opt().unwrap().into();
    std::fs::write(&state, doc.to_string()).unwrap();
    let (config, settings) = scratch.prune_config(
        &[],
        "min_age = \"20s\"\nunused_max_age = \"0s\"\nprune_local_only = true\npause = \"0s\"\n",
    );
    let both = ScopedStore::connect(&env, std::slice::from_ref(&y)).await;
    let session = stowage::Session::new(config, None, &both.inner)
        .await
        .unwrap();
    let pruner = both.pruner(&session, &settings);
    let (plan, _) = pruner.plan().await.unwrap();
    assert!(plan.remove.iter().any(|c| c.id == y), "{plan:#?}");
    assert!(env.docker(&["image", "rm", &other]).status.success());
    assert!(env.docker(&["pull", "-q", &other]).status.success());
    let (plan, _) = pruner.plan().await.unwrap();
    let kept = plan.keep.iter().find(|k| k.id == y);
    if env.engine.is_podman() {
        // Podman's compatible API answers no bounded events query (docs/reliability.md).
        eprintln!("on Podman, only a running daemon sees it: {kept:?}");
    } else {
        let kept = kept.unwrap_or_else(|| panic!("{plan:#?}"));
        assert_eq!(kept.protection.name(), "too-young", "{kept:#?}");
    }
    env.purge_images(&[name, other]);
}

fn prune_dry_run(env: &Env, config: &Path, own: &str) -> (i32, Value, String) {
    let out = env
        .stowage(config)
        .args(["prune", "--dry-run", "--json"])
        .env("STOWAGE_OWN_IMAGE_ID", own)
        .output()
        .unwrap();
    let doc = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    (
        out.status.code().unwrap_or(-1),
        doc,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Hole 4: `STOWAGE_OWN_IMAGE_ID` in any form `docker` accepts protects the image; one that
/// names none stops stowage with exit 2, never ignored.
#[test]
fn the_own_image_id_is_read_as_docker_reads_it_or_refused() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    let id = env.image_id(&name).unwrap();
    let hex = id.trim_start_matches("sha256:").to_owned();
    let scratch = Scratch::new();
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap() + "[prune]\n" + AGGRESSIVE;
    std::fs::write(&config, text).unwrap();
    // Another image under a repository named like the short ID: the engine reads a name
    // first, so a short ID asked for by name would protect that image instead.
    let decoy = format!("{}:latest", &hex[..12]);
    let other = env.plain_image("alpha:1");
    assert!(env.docker(&["pull", "-q", &other]).status.success());
    assert!(env.docker(&["tag", &other, &decoy]).status.success());
    for own in [hex[..12].to_owned(), hex.clone(), id.clone()] {
        let (code, doc, stderr) = prune_dry_run(&env, &config, &own);
        assert_eq!(code, 0, "{own}: {stderr}");
        let kept = doc["prune"]["keep"]
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == id.as_str())
            .unwrap_or_else(|| panic!("{own}: not kept: {doc:#}"));
        assert_eq!(kept["protection"], "own-image", "{own}: {kept:#}");
    }
    let _ = env.docker(&["image", "rm", &decoy]);
    for bad in ["not-an-id", "0123456789ab0123456789ab"] {
        let (code, _, stderr) = prune_dry_run(&env, &config, bad);
        assert_eq!(code, 2, "{bad}: {stderr}");
        assert!(
            stderr.contains("STOWAGE_OWN_IMAGE_ID") && stderr.contains(bad),
            "{stderr}"
        );
    }
}

/// Hole 5: keep patterns are read as image names: `alpine` keeps Docker Hub's alpine under any
/// tag, `busybox:*` any tag of busybox.
#[test]
fn short_keep_patterns_keep_what_they_name() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    for short in ["alpine:3.20", "busybox:1.36"] {
        assert!(env.docker(&["tag", &name, short]).status.success());
    }
    let scratch = Scratch::new();
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\n"
        + AGGRESSIVE
        + "keep = [\"alpine\", \"busybox:*\"]\n";
    std::fs::write(&config, text).unwrap();
    let out = env
        .stowage(&config)
        .args(["prune", "--dry-run", "--json"])
        .output()
        .unwrap();
    let doc = crate::support::report(&out);
    let id = env.image_id(&name).unwrap();
    let kept = doc["prune"]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id.as_str())
        .unwrap_or_else(|| panic!("not kept: {doc:#}"));
    assert_eq!(kept["protection"], "keep-rule", "{kept:#}");
    for short in ["alpine:3.20", "busybox:1.36"] {
        let _ = env.docker(&["image", "rm", short]);
    }
}

/// One aggressive cycle over `scope` (and what is built meanwhile), with `extra` `[prune]`
/// lines, the store `arrange`d first (a change it makes at some moment of the cycle).
async fn prune_once(
    env: &Env,
    scope: &[String],
    extra: &str,
    arrange: impl FnOnce(&ScopedStore),
) -> stowage::Cycle {
    let scratch = Scratch::new();
    seasoned_state(env, &scratch.dir.path().join("state.json"), 60);
    let (config, settings) = scratch.prune_config(&[], &format!("{AGGRESSIVE}{extra}"));
    let store = ScopedStore::connect(env, scope).await;
    arrange(&store);
    let session = stowage::Session::new(config, None, &store.inner)
        .await
        .unwrap();
    store
        .pruner(&session, &settings)
        .cycle(false)
        .await
        .unwrap()
}

/// [`prune_once`] with `churn` made once the plan is made: the store changing during a
/// prune's pause.
async fn cycle_after(
    env: &Env,
    scope: &[String],
    extra: &str,
    churn: crate::support::Churn,
) -> stowage::Cycle {
    prune_once(env, scope, extra, |store| store.after_plan(churn)).await
}

fn outcome<'a>(cycle: &'a stowage::Cycle, id: &str) -> &'a stowage::Removal {
    cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == id)
        .unwrap_or_else(|| panic!("{id} not planned: {:#?}", cycle.plan))
}

/// A name a keep rule matches, put on a planned image after the plan (a release promoted to
/// `:prod` during the pause), keeps it, whether a registry has it or not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_kept_name_added_after_the_plan_keeps_the_image() {
    let _lock = engine_lock();
    let env = env();
    for pushed in [true, false] {
        let repo = own_repo(&env);
        let (v1, prod) = (format!("{repo}/app:1"), format!("{repo}/app:prod"));
        let x = env.build_image(&v1, "scratch", "app", None);
        if pushed {
            push(&env, &v1);
        }
        let (from, to) = (v1.clone(), prod.clone());
        let cycle = cycle_after(
            &env,
            std::slice::from_ref(&x),
            &format!("keep = [\"{repo}/app:prod\"]\n"),
            Box::new(move || {
                assert!(
                    crate::support::env()
                        .docker(&["tag", &from, &to])
                        .status
                        .success()
                );
            }),
        )
        .await;
        let removal = outcome(&cycle, &x);
        assert_eq!(
            removal.result,
            stowage::RemovalResult::Skipped,
            "pushed {pushed}: {removal:#?}"
        );
        // Kept by the plan made again on the tag's event, or, if the event is late (Podman's
        // go through a file), by the look at its names before its first DELETE.
        let why = removal.error.as_deref().unwrap_or("");
        assert!(
            why.contains("keep rule") || why.contains("gained a name"),
            "{removal:#?}"
        );
        assert_eq!(env.image_id(&prod).as_deref(), Some(x.as_str()));
        assert_eq!(env.image_id(&v1).as_deref(), Some(x.as_str()));
        clean(&env, &[&x]);
    }
}

/// `keep_newest`: the newest image of a repository removed by someone else after the plan
/// makes the planned one the newest, which then stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn the_next_newest_stays_when_the_newest_goes_during_the_prune() {
    let _lock = engine_lock();
    let env = env();
    let repo = own_repo(&env);
    let (old, new) = (format!("{repo}/nw:1"), format!("{repo}/nw:2"));
    let older = env.build_image(&old, "scratch", "older", None);
    // Created a second apart: "newest" is by creation time.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let newer = env.build_image(&new, "scratch", "newer", None);
    let gone = new.clone();
    let cycle = cycle_after(
        &env,
        &[older.clone(), newer.clone()],
        "keep_newest = 1\n",
        Box::new(move || {
            let env = crate::support::env();
            // A container event first: the image events behind it must not be held back.
            let created = env.docker(&["create", &gone, "/x"]);
            assert!(created.status.success(), "{created:?}");
            let container = String::from_utf8_lossy(&created.stdout).trim().to_owned();
            assert!(env.docker(&["rm", "-f", &container]).status.success());
            assert!(env.docker(&["image", "rm", &gone]).status.success());
        }),
    )
    .await;
    let removal = outcome(&cycle, &older);
    assert_eq!(
        removal.result,
        stowage::RemovalResult::Skipped,
        "{removal:#?}"
    );
    assert!(env.has_image(&old), "{removal:#?}");
    clean(&env, &[&older, &newer]);
}

/// A child built on a planned image after the plan, and kept, keeps its parent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_kept_child_built_after_the_plan_keeps_its_parent() {
    let _lock = engine_lock();
    let env = env();
    let repo = own_repo(&env);
    let (p, c) = (format!("{repo}/p:2"), format!("{repo}/c:prod"));
    let parent = env.build_image(&p, "scratch", "parent", None);
    let (base, child) = (p.clone(), c.clone());
    let cycle = cycle_after(
        &env,
        std::slice::from_ref(&parent),
        &format!("keep = [\"{repo}/c:prod\"]\n"),
        Box::new(move || {
            crate::support::env().build_image(&child, &base, "child", None);
        }),
    )
    .await;
    let removal = outcome(&cycle, &parent);
    assert_ne!(
        removal.result,
        stowage::RemovalResult::Removed,
        "{removal:#?}"
    );
    assert!(env.has_image(&p), "{removal:#?}");
    let child_id = env.image_id(&c).unwrap();
    clean(&env, &[&child_id, &parent]);
}

/// The same content pulled under a kept repository, by digest, in the instant before the
/// removal's first DELETE: a name the image gained, so it stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn the_same_content_pulled_under_a_kept_name_keeps_the_image() {
    let _lock = engine_lock();
    let env = env();
    let repo = own_repo(&env);
    let (a, keeper) = (format!("{repo}/a:1"), format!("{repo}/keeper:1"));
    // One content under two repositories, published by the seed engine (Podman's push would
    // compress it again, under another digest).
    let source = env.plain_image("gamma:1");
    env.publish(&source, &a);
    env.publish(&source, &keeper);
    let by_digest = env.plain_digest_name(&a).unwrap();
    let digest = by_digest.rsplit_once('@').unwrap().1.to_owned();
    env.purge_images(&[source]);
    assert!(env.docker(&["pull", "-q", &by_digest]).status.success());
    let x = env.image_id(&by_digest).unwrap();
    let kept_name = format!("{repo}/keeper@{digest}");
    let pull = Box::new(move || {
        let out = crate::support::env().docker(&["pull", "-q", &kept_name]);
        assert!(out.status.success(), "{out:?}");
    });
    let cycle = prune_once(
        &env,
        std::slice::from_ref(&x),
        &format!("keep = [\"{repo}/keeper\"]\n"),
        |store| store.before_delete(pull),
    )
    .await;
    let removal = outcome(&cycle, &x);
    assert!(env.has_image(&x), "{removal:#?}");
    assert_eq!(
        removal.result,
        stowage::RemovalResult::Skipped,
        "{removal:#?}"
    );
    clean(&env, &[&x]);
}

/// The same content pulled by digest into a repository the planned image is tagged in (a
/// deploy pinned by digest), in the instant before the removal's first DELETE: a name the
/// image gained, so it stays, with that name. Podman's look at an image hides such a name: an
/// adversarial run saw the removal take the image's other names and be reported failed, and
/// before the digest names change, take the pulled name too. On the containerd store that name
/// is a record of its own that no look tells from the repository digest the store shows for the
/// tag: there the image goes, the pulled name with it (docs/reliability.md).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_digest_pulled_into_a_planned_repository_keeps_the_image() {
    let _lock = engine_lock();
    let env = env();
    let repo = own_repo(&env);
    let (a, b) = (format!("{repo}/a:1"), format!("{repo}/b:1"));
    let source = env.plain_image("gamma:1");
    env.publish(&source, &a);
    env.publish(&source, &b);
    let by_digest = env.plain_digest_name(&b).unwrap();
    env.purge_images(&[source]);
    assert!(env.docker(&["pull", "-q", &a]).status.success());
    assert!(env.docker(&["tag", &a, &b]).status.success());
    let x = env.image_id(&a).unwrap();
    let pulled = by_digest.clone();
    let pull = Box::new(move || {
        let out = crate::support::env().docker(&["pull", "-q", &pulled]);
        assert!(out.status.success(), "{out:?}");
    });
    let cycle = prune_once(&env, std::slice::from_ref(&x), "", |store| {
        store.before_delete(pull)
    })
    .await;
    let removal = outcome(&cycle, &x);
    if env.engine.is_containerd() {
        assert_eq!(
            removal.result,
            stowage::RemovalResult::Removed,
            "{removal:#?}"
        );
        clean(&env, &[&x]);
        return;
    }
    assert_eq!(
        removal.result,
        stowage::RemovalResult::Skipped,
        "{removal:#?}"
    );
    let why = removal.error.as_deref().unwrap_or("");
    assert!(why.contains("gained a name"), "{removal:#?}");
    assert_eq!(env.image_id(&by_digest).as_deref(), Some(x.as_str()));
    clean(&env, &[&x]);
}

/// A `name@digest` of a multi-platform index names the image pulled for one platform: pulled
/// for another platform once the plan is made, the name moves to that image. The removal leaves the moved name alone (it took the other image, found by an
/// adversarial run on Podman 5.8) and removes the planned image by its ID.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_digest_name_moved_to_another_platform_s_image_takes_nothing_from_it() {
    let _lock = engine_lock();
    let env = env();
    // On the containerd store the image is the index, whatever platforms it holds, and Docker's
    // classic store refuses the pull ("Cannot overwrite digest"): no name moves.
    crate::skip_on!(
        env,
        Docker20 | Docker26 | Docker28,
        "a name@digest cannot move to another image on Docker"
    );
    let multi = env.plain_image("multi:1");
    env.purge_images(std::slice::from_ref(&multi));
    let by_digest = env.plain_digest_name(&multi).unwrap();
    let tag = format!("{}/mx:1", own_repo(&env));
    for args in [
        vec![
            "pull",
            "-q",
            "--platform",
            "linux/amd64",
            by_digest.as_str(),
        ],
        vec!["tag", by_digest.as_str(), tag.as_str()],
    ] {
        let out = env.docker(&args);
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    }
    let x = env.image_id(&tag).unwrap();
    let pulled = by_digest.clone();
    let pull = Box::new(move || {
        let args = ["pull", "-q", "--platform", "linux/arm64", pulled.as_str()];
        let out = crate::support::env().docker(&args);
        assert!(out.status.success(), "{out:?}");
    });
    let cycle = cycle_after(&env, std::slice::from_ref(&x), "", pull).await;
    let removal = outcome(&cycle, &x);
    let y = env.image_id(&by_digest);
    assert!(
        y.as_ref().is_some_and(|y| *y != x && env.has_image(y)),
        "the arm64 image ({y:?}) went: {removal:#?}"
    );
    assert!(removal.against_plan.is_empty(), "{removal:#?}");
    assert_eq!(
        removal.result,
        stowage::RemovalResult::Removed,
        "{removal:#?}"
    );
    assert!(!env.has_image(&x), "{removal:#?}");
    env.purge_images(&[by_digest, tag]);
}
