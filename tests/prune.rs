//! Pruning against the real engine: every rule selects what it should, every protection holds,
//! the dry run changes nothing.

use std::path::Path;

use serde_json::Value;

use crate::support::{Env, ScopedStore, Scratch, engine_lock, env};

const DAY: i64 = 86_400;

/// A state file in which stowage has watched for 400 days and first saw every image present
/// now `days_ago` days ago: the rules' ages apply at once.
pub(crate) fn seasoned_state(env: &Env, path: &Path, days_ago: i64) {
    let now = chrono::Utc::now().timestamp();
    let out = env.docker(&["images", "-q", "--no-trunc"]);
    let ids: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    let first_seen: serde_json::Map<String, Value> = ids
        .iter()
        .map(|id| (id.clone(), Value::from(now - days_ago * DAY)))
        .collect();
    let state = serde_json::json!({
        "version": 1,
        "first_seen": first_seen,
        "watching_since": now - 400 * DAY,
    });
    std::fs::write(path, serde_json::to_vec(&state).unwrap()).unwrap();
}

fn prune(env: &Env, config: &Path, args: &[&str]) -> (i32, Value) {
    let out = env
        .stowage(config)
        .arg("prune")
        .args(args)
        .arg("--json")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        crate::support::report(&out),
    )
}

fn ids(doc: &Value, key: &str) -> Vec<String> {
    doc["prune"][key]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap().to_owned())
        .collect()
}

fn protection(doc: &Value, id: &str) -> String {
    let kept = doc["prune"]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .unwrap_or_else(|| panic!("{id} not kept: {doc:#}"));
    format!(
        "{} {}",
        kept["protection"].as_str().unwrap(),
        kept["rule"].as_str().unwrap_or("")
    )
    .trim()
    .to_owned()
}

/// Builds a local-only image (no registry copy) `FROM base` with one distinct file.
fn build(env: &Env, tag: &str, base: &str, content: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("f.txt"), content).unwrap();
    let file = tag.replace([':', '/'], "_");
    std::fs::write(
        dir.path().join("Dockerfile"),
        format!("FROM {base}\nCOPY f.txt /{file}.txt\nLABEL org.stowage.test=1\n"),
    )
    .unwrap();
    let out = std::process::Command::new(&env.docker_cli)
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .env("DOCKER_HOST", &env.docker_host)
        .env("DOCKER_BUILDKIT", "0")
        .output()
        .unwrap();
    assert!(out.status.success(), "docker build {tag}: {out:?}");
}

#[test]
fn rules_select_and_protections_hold() {
    let _lock = engine_lock();
    let env = env();
    let required = env.plain_image("alpha:1");
    let unused = env.plain_image("beta:1");
    let in_use = env.plain_image("busybox:1");
    let kept = env.plain_image("gamma:1");
    env.purge_images(&[
        required.clone(),
        unused.clone(),
        in_use.clone(),
        kept.clone(),
    ]);
    for n in [&required, &unused, &in_use, &kept] {
        assert!(env.docker(&["pull", "-q", n]).status.success());
    }
    // A dangling image: content pulled by digest only.
    let alpha2 = env.plain_image("alpha:2");
    assert!(env.docker(&["pull", "-q", &alpha2]).status.success());
    let dangling_digest = env.repo_digests(&alpha2)[0].clone();
    env.purge_images(std::slice::from_ref(&alpha2));
    assert!(
        env.docker(&["pull", "-q", &dangling_digest])
            .status
            .success()
    );
    let dangling_id = env.image_id(&dangling_digest).unwrap();
    // The unused image also tagged in a repository never pushed: the containerd store then
    // lists that repository's digest only, and its registry copy is still there to be found.
    let never_pushed = env.plain_image("never-pushed:1");
    env.purge_images(std::slice::from_ref(&never_pushed));
    assert!(
        env.docker(&["tag", &unused, &never_pushed])
            .status
            .success()
    );
    // A local-only image (built here, no registry copy).
    build(&env, "stowage-local/only:1", "scratch", "local");
    // A container, created and never started, uses busybox.
    let created = env.docker(&[
        "create",
        "--network",
        "none",
        &in_use,
        "/bin/busybox",
        "true",
    ]);
    assert!(created.status.success(), "{created:?}");
    let container = String::from_utf8_lossy(&created.stdout).trim().to_owned();

    let scratch = Scratch::new();
    let state = scratch.dir.path().join("state.json");
    seasoned_state(&env, &state, 60);
    let config = scratch.config("", std::slice::from_ref(&required));
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "[prune]\nmin_age = \"1h\"\ndangling_min_age = \"1h\"\nunused_max_age = \"30d\"\nkeep = [\"{}\"]\nmax_removals = 100\npause = \"0s\"\n",
            kept.replace(":1", ":*")
        );
    std::fs::write(&config, text).unwrap();

    // The dry run says what it would do and does nothing.
    let (code, dry) = prune(&env, &config, &["--dry-run"]);
    assert_eq!(code, 0, "{dry:#}");
    let unused_id = env.image_id(&unused).unwrap();
    let planned = ids(&dry, "remove");
    assert!(
        planned.contains(&dangling_id) && planned.contains(&unused_id),
        "{dry:#}"
    );
    assert!(
        env.has_image(&unused) && env.image_id(&dangling_digest).is_some(),
        "the dry run removed something"
    );
    assert_eq!(
        protection(&dry, &env.image_id(&required).unwrap()),
        "required"
    );
    assert_eq!(protection(&dry, &env.image_id(&in_use).unwrap()), "in-use");
    assert_eq!(
        protection(&dry, &env.image_id(&kept).unwrap()),
        format!("keep-rule {}", kept.replace(":1", ":*"))
    );
    assert_eq!(
        protection(&dry, &env.image_id("stowage-local/only:1").unwrap()),
        "local-only"
    );

    // The real cycle removes exactly that, and the protected images stay.
    let (code, done) = prune(&env, &config, &[]);
    assert_eq!(code, 0, "{done:#}");
    let results = done["prune"]["results"].as_array().unwrap();
    assert!(results.iter().all(|r| r["result"] == "removed"), "{done:#}");
    assert!(!env.has_image(&unused) && !env.has_image(&never_pushed));
    assert!(env.image_id(&dangling_digest).is_none());
    for n in [&required, &in_use, &kept] {
        assert!(env.has_image(n), "{n} was removed");
    }
    assert!(env.has_image("stowage-local/only:1"));

    let _ = env.docker(&["rm", "-f", &container]);
    env.purge_images(&[required, in_use, kept, "stowage-local/only:1".into()]);
}

/// moby#48063: on the containerd image store, `docker image prune -a` once deleted images
/// that containers created from a digest reference used. Whatever the engine, such a container
/// protects its image.
#[test]
fn a_container_created_from_a_digest_reference_protects_its_image() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    env.purge_images(std::slice::from_ref(&name));
    let by_digest = env.plain_digest_name(&name).unwrap();
    assert!(env.docker(&["pull", "-q", &by_digest]).status.success());
    let id = env.image_id(&by_digest).unwrap();
    let created = env.docker(&["create", "--network", "none", &by_digest, "true"]);
    assert!(created.status.success(), "{created:?}");
    let container = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let scratch = Scratch::new();
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nmin_age = \"0s\"\ndangling_min_age = \"0s\"\nmax_store_size = \"1B\"\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let (code, doc) = prune(&env, &config, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(protection(&doc, &id), "in-use");
    assert!(env.image_id(&by_digest).is_some(), "the image was removed");
    let _ = env.docker(&["rm", "-f", &container]);
    env.purge_images(&[by_digest]);
}

#[test]
fn a_lost_state_file_removes_nothing_old() {
    let _lock = engine_lock();
    let env = env();
    let unused = env.plain_image("beta:1");
    assert!(env.docker(&["pull", "-q", &unused]).status.success());
    let scratch = Scratch::new();
    // No state file: everything is first seen now, and nothing has been watched for 30 days.
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nmin_age = \"0s\"\nunused_max_age = \"30d\"\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let (code, doc) = prune(&env, &config, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert!(
        !ids(&doc, "remove").contains(&env.image_id(&unused).unwrap()),
        "{doc:#}"
    );
    assert!(env.has_image(&unused));
    env.purge_images(&[unused]);
}

#[test]
fn children_go_before_parents() {
    let _lock = engine_lock();
    let env = env();
    build(&env, "stowage-local/parent:1", "scratch", "parent");
    build(
        &env,
        "stowage-local/child:1",
        "stowage-local/parent:1",
        "child",
    );
    let parent = env.image_id("stowage-local/parent:1").unwrap();
    let child = env.image_id("stowage-local/child:1").unwrap();
    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nunused_max_age = \"30d\"\nprune_local_only = true\nkeep = [\"127.0.0.1:*/**\"]\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let (code, doc) = prune(&env, &config, &[]);
    assert_eq!(code, 0, "{doc:#}");
    let order = ids(&doc, "remove");
    let pos = |id: &str| {
        order
            .iter()
            .position(|x| x == id)
            .unwrap_or_else(|| panic!("{id} not removed: {doc:#}"))
    };
    assert!(pos(&child) < pos(&parent), "{order:?}");
    assert!(
        doc["prune"]["results"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["result"] == "removed"),
        "{doc:#}"
    );
    assert!(!env.has_image("stowage-local/parent:1"));
}

/// A container created from `victim`, named `name`, as `docker create` makes it.
fn create_from(victim: &str, name: &str) -> crate::support::Churn {
    let (victim, name) = (victim.to_owned(), name.to_owned());
    Box::new(move || {
        let env = crate::support::env();
        let out = env.docker(&["create", "--name", &name, &victim, "/bin/busybox", "true"]);
        assert!(out.status.success(), "a container from the victim: {out:?}");
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_container_created_after_the_plan_keeps_its_image_and_is_reported() {
    let _lock = engine_lock();
    let env = env();
    let victim_name = env.plain_image("busybox:1");
    let other_name = env.plain_image("beta:1");
    let _ = env.docker(&["rm", "-f", "stowage-race"]);
    // Whatever an earlier test left using it (a container it created) goes first.
    env.purge_images(std::slice::from_ref(&victim_name));
    for n in [&victim_name, &other_name] {
        assert!(env.docker(&["pull", "-q", n]).status.success());
    }
    let victim = env.image_id(&victim_name).unwrap();
    let scratch = Scratch::new();
    let state_path = scratch.dir.path().join("state.json");
    seasoned_state(&env, &state_path, 60);
    let (config, settings) = scratch.prune_config(
        &[],
        "unused_max_age = \"30d\"\nkeep = [\"stowage-local/**\"]\npause = \"0s\"\n",
    );
    let other = env.image_id(&other_name).unwrap();
    let store = ScopedStore::connect(&env, &[victim.clone(), other]).await;
    // A container is created from it just before the (unforced) removal, as when one appears
    // between the plan and the removal: the engine refuses.
    store.before_deleting(&victim, create_from(&victim, "stowage-race"));
    let session = stowage::Session::new(config, None, &store.inner)
        .await
        .unwrap();
    let pruner = store.pruner(&session, &settings);
    let cycle = pruner.cycle(false).await.unwrap();
    let (plan, results) = (cycle.plan, cycle.removals);
    assert!(plan.remove.iter().any(|c| c.id == victim), "{plan:#?}");
    let v = results.iter().find(|r| r.candidate.id == victim).unwrap();
    // Never forced: the engine refuses, and the image stays. That is the protection working:
    // kept, and why, not a failure (the command does not exit 1 for it).
    assert_eq!(v.result, stowage::RemovalResult::Skipped, "{results:#?}");
    assert!(
        v.error
            .as_deref()
            .unwrap_or("")
            .starts_with("kept: a container started using it since the plan (the engine refused"),
        "{v:#?}"
    );
    assert!(env.has_image(&victim_name));
    // One failure does not stop the cycle.
    assert!(!env.has_image(&other_name), "{results:#?}");
    // Next cycle, the container protects it: planned as kept, not tried again.
    let (plan, _) = pruner.plan().await.unwrap();
    assert!(!plan.remove.iter().any(|c| c.id == victim));
    let _ = env.docker(&["rm", "-f", "stowage-race"]);
    env.purge_images(&[victim_name]);
}

/// The stage of a race with a container's creation: `gamma:1` pulled afresh (no container
/// named `container` left), and a config under which every unprotected image is a candidate.
struct Staged {
    victim_name: String,
    victim: String,
    scratch: Scratch,
    config: stowage::Config,
    settings: stowage::PruneSettings,
}

fn staged(env: &Env, container: &str) -> Staged {
    let victim_name = env.plain_image("gamma:1");
    let _ = env.docker(&["rm", "-f", container]);
    env.purge_images(std::slice::from_ref(&victim_name));
    assert!(env.docker(&["pull", "-q", &victim_name]).status.success());
    let victim = env.image_id(&victim_name).unwrap();
    let scratch = Scratch::new();
    let (config, settings) = scratch.prune_config(
        &[],
        "min_age = \"0s\"\nmax_store_size = \"1B\"\npause = \"0s\"\n",
    );
    Staged {
        victim_name,
        victim,
        scratch,
        config,
        settings,
    }
}

/// A container created from an image as it is being removed keeps a dangling reference (the
/// engine checked for containers, then deleted). The cycle sees it and pulls the image back
/// by digest, with its tag, and reports the race.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_removal_that_races_a_new_container_puts_the_image_back() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "Podman's forced removal takes the image's containers with it: the race's outcome cannot be staged"
    );
    let Staged {
        victim_name,
        victim,
        scratch: _scratch,
        config,
        settings,
    } = staged(&env, "stowage-staged-race");
    let store = ScopedStore::connect(&env, std::slice::from_ref(&victim)).await;
    // A container is created from it and the image deleted all the same (a forced removal):
    // how the race of `docker create` with an engine's removal ends.
    let (created, gone) = (create_from(&victim, "stowage-staged-race"), victim.clone());
    store.before_deleting(
        &victim,
        Box::new(move || {
            created();
            let out = crate::support::env().docker(&["image", "rm", "-f", &gone]);
            assert!(
                out.status.success(),
                "the image goes, as in the race: {out:?}"
            );
        }),
    );
    let session = stowage::Session::new(config, None, &store.inner)
        .await
        .unwrap();
    let pruner = store.pruner(&session, &settings);
    let cycle = pruner.cycle(false).await.unwrap();
    let removal = cycle
        .removals
        .iter()
        .find(|r| r.candidate.id == victim)
        .expect("the victim was removed");
    // Healed on every engine: on the containerd store, where the pull back leaves the layers
    // out, by loading it from its registry (docs/reliability.md).
    assert_eq!(removal.race, Some(stowage::Race::Healed), "{removal:#?}");
    // Back under its ID (what the container refers to) and its tag.
    assert_eq!(env.image_id(&victim_name).as_deref(), Some(victim.as_str()));
    let used = env.docker(&["inspect", "--format", "{{.Image}}", "stowage-staged-race"]);
    assert_eq!(String::from_utf8_lossy(&used.stdout).trim(), victim);
    let _ = env.docker(&["rm", "-f", "stowage-staged-race"]);
    env.purge_images(&[victim_name]);
}

/// A `docker create` that began before a removal and registered its container only after the
/// cycle's last look (one copying a large VOLUME takes seconds): the container's image is gone,
/// and that cycle did not see it. The next `stowage prune`, another process as from cron,
/// finds the container through the state file's memory of the removal, pulls the image back
/// and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_container_registered_after_the_cycle_gets_its_image_back_at_the_next() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "Podman's forced removal takes the image's containers with it: the late container cannot be staged"
    );
    let late = LateContainer::staged(&env, "stowage-late-race").await;
    let (victim_name, victim) = (&late.staged.victim_name, &late.staged.victim);
    // The next prune, by rules that select nothing else in the engine's store.
    let (config, _) = late
        .staged
        .scratch
        .prune_config(&[], "unused_max_age = \"3650d\"\n");
    let (code, doc) = prune(&env, &config.source, &[]);
    assert_eq!(code, 0, "{doc:#}");
    let found = doc["prune"]["late_races"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["id"], victim.as_str());
    assert_eq!(found[0]["outcome"]["result"], "healed", "{doc:#}");
    assert!(
        doc["prune"]["results"].as_array().unwrap().is_empty(),
        "{doc:#}"
    );
    // Back under its ID (what the container refers to) and its tag, whole.
    assert_eq!(env.image_id(victim_name).as_deref(), Some(victim.as_str()));
    let archive = late.staged.scratch.dir.path().join("saved.tar");
    let saved = env.docker(&["save", "-o", archive.to_str().unwrap(), victim_name]);
    assert!(saved.status.success(), "the image is whole: {saved:?}");
    // Reported once.
    let (code, doc) = prune(&env, &config.source, &[]);
    assert_eq!(code, 0, "{doc:#}");
    assert_eq!(doc["prune"]["late_races"], serde_json::json!([]), "{doc:#}");
    late.clean(&env);
}

/// The same late container, when its image cannot come back (the registry it was pulled from
/// does not answer): the first prune says it is lost, and every prune after it fails and lists
/// it under `still_lost` while the container lacks its image, until one puts it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn a_container_image_that_cannot_come_back_fails_every_prune_until_it_does() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "Podman's forced removal takes the image's containers with it: the late container cannot be staged"
    );
    let late = LateContainer::staged(&env, "stowage-still-lost").await;
    let victim = &late.staged.victim;
    // Its registry, as the removal remembered it, stops answering: nothing listens there.
    let dead = crate::support::free_port();
    let remembered = late.edit_memory(|image| {
        let references = image["references"].clone();
        let moved: Vec<String> = references
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.as_str().unwrap();
                let (_, path) = r.split_once('/').unwrap();
                format!("127.0.0.1:{dead}/{path}")
            })
            .collect();
        image["references"] = moved.into();
        references
    });
    let (config, _) = late
        .staged
        .scratch
        .prune_config(&[], "unused_max_age = \"3650d\"\n");
    let (code, doc) = prune(&env, &config.source, &[]);
    assert_eq!(code, 1, "{doc:#}");
    let found = doc["prune"]["late_races"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{doc:#}");
    assert_eq!(found[0]["outcome"]["result"], "lost", "{doc:#}");
    assert_eq!(doc["prune"]["still_lost"], serde_json::json!([]), "{doc:#}");
    // Said once as a race, and after that as missing, at every run: a cron'd prune keeps
    // failing.
    for _ in 0..2 {
        let (code, doc) = prune(&env, &config.source, &[]);
        assert_eq!(code, 1, "{doc:#}");
        assert_eq!(doc["prune"]["late_races"], serde_json::json!([]), "{doc:#}");
        let still = doc["prune"]["still_lost"].as_array().unwrap();
        assert_eq!(still.len(), 1, "{doc:#}");
        assert_eq!(still[0]["id"], victim.as_str(), "{doc:#}");
        let out = env
            .stowage(&config.source)
            .args(["prune"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("STILL MISSING"), "{text}");
        assert_eq!(out.status.code(), Some(1), "{text}");
    }
    // The registry answers again: put back, said so, and the prune succeeds.
    late.edit_memory(|image| {
        image["references"] = remembered.clone();
    });
    let (code, doc) = prune(&env, &config.source, &[]);
    assert_eq!(code, 0, "{doc:#}");
    let found = doc["prune"]["late_races"].as_array().unwrap();
    assert_eq!(found[0]["outcome"]["result"], "healed", "{doc:#}");
    assert_eq!(doc["prune"]["still_lost"], serde_json::json!([]), "{doc:#}");
    assert!(env.image_id(victim).is_some());
    late.clean(&env);
}

/// A late container of a test's own: an image removed by a prune cycle, then a container
/// created from it that the cycle did not see (staged: the image pulled again, the container
/// created, the image removed by force, the removal's time put after the container's).
struct LateContainer {
    staged: Staged,
    container: &'static str,
}

impl LateContainer {
    async fn staged(env: &Env, container: &'static str) -> LateContainer {
        let staged = staged(env, container);
        let (victim_name, victim) = (&staged.victim_name, &staged.victim);
        let store = ScopedStore::connect(env, std::slice::from_ref(victim)).await;
        let session = stowage::Session::new(staged.config.clone(), None, &store.inner)
            .await
            .unwrap();
        let cycle = store
            .pruner(&session, &staged.settings)
            .cycle(false)
            .await
            .unwrap();
        let removal = cycle.removals.iter().find(|r| &r.candidate.id == victim);
        assert_eq!(
            removal.map(|r| r.result),
            Some(stowage::RemovalResult::Removed),
            "{cycle:#?}"
        );
        assert_eq!(removal.unwrap().race, None);
        // The late container: created from the image, which then goes again (as when the
        // engine deleted it while the container was being set up).
        assert!(env.docker(&["pull", "-q", victim_name]).status.success());
        let out = env.docker(&[
            "create",
            "--name",
            container,
            victim,
            "/bin/busybox",
            "true",
        ]);
        assert!(out.status.success(), "{out:?}");
        let out = env.docker(&["image", "rm", "-f", victim]);
        assert!(out.status.success(), "{out:?}");
        assert!(!env.has_image(victim_name));
        let late = LateContainer { staged, container };
        // A late container's creation began before the removal it raced (the engine dates it
        // from then); this one was staged after it, so the removal is dated after it, as in the
        // race. Left as it was, it is the operator's container, and nothing comes back (a unit
        // test).
        late.edit_memory(|image| {
            image["at"] = (chrono::Utc::now().timestamp() + 1).into();
        });
        late
    }

    /// Changes what the state file remembers of the removed image, as the next run reads it.
    fn edit_memory<T>(&self, edit: impl FnOnce(&mut Value) -> T) -> T {
        let path = self.staged.scratch.dir.path().join("state.json");
        let mut state: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let out = edit(&mut state["removed"][&self.staged.victim]);
        std::fs::write(&path, serde_json::to_vec(&state).unwrap()).unwrap();
        out
    }

    fn clean(self, env: &Env) {
        let _ = env.docker(&["rm", "-f", self.container]);
        env.purge_images(&[self.staged.victim_name]);
    }
}

#[test]
fn the_daemon_prunes_on_its_schedule() {
    let _lock = engine_lock();
    let env = env();
    let by_digest = env.dangling_image("gamma:1");
    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let config = scratch.config("on_boot = false\nschedule = \"0 0 1 1 *\"", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nschedule = \"*/2 * * * * *\"\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let daemon = crate::support::Daemon::start(env.stowage(&config), &["run"]);
    let done = daemon.wait_for("a prune cycle", std::time::Duration::from_secs(90), |v| {
        crate::support::is_event(v, "prune cycle finished", None)
    });
    assert!(done["removed"].as_u64().unwrap() >= 1, "{done:#}");
    assert!(
        env.image_id(&by_digest).is_none(),
        "the dangling image is still there"
    );
    let (code, _) = daemon.terminate(std::time::Duration::from_secs(90));
    assert_eq!(code, 0);
}

#[test]
fn space_rules_and_keep_rules_against_the_real_store() {
    let _lock = engine_lock();
    let env = env();
    let names: Vec<String> = ["alpha:1", "alpha:2", "beta:1", "gamma:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    for n in &names {
        assert!(env.docker(&["pull", "-q", n]).status.success());
    }
    let scratch = Scratch::new();
    let state_path = scratch.dir.path().join("state.json");
    seasoned_state(&env, &state_path, 60);
    let config = scratch.config("", &[]);
    let base = std::fs::read_to_string(&config).unwrap();
    let with = |prune: &str| {
        std::fs::write(&config, format!("{base}[prune]\npause = \"0s\"\n{prune}")).unwrap();
    };

    // Any disk is above 1%, and can never get under 0.5%: every unprotected image is a
    // watermark candidate, least recently used first, capped at 2 per cycle.
    with("high_watermark = \"1%\"\nlow_watermark = \"0.5%\"\nmax_removals = 2\n");
    let (_, doc) = prune(&env, &config, &["--dry-run"]);
    let remove = doc["prune"]["remove"].as_array().unwrap();
    assert_eq!(remove.len(), 2, "{doc:#}");
    assert!(
        remove.iter().all(|c| c["rule"] == "disk-watermark"),
        "{doc:#}"
    );
    assert!(doc["prune"]["deferred"].as_u64().unwrap() >= 2, "{doc:#}");
    // What the rule measured: the data root's disk, read from the host, and the marks.
    let space = &doc["prune"]["space"];
    let used = space["disk_used_percent"].as_f64().unwrap_or(-1.0);
    assert!(used > 1.0 && used <= 100.0, "{doc:#}");
    assert_eq!(space["high_watermark"], 1.0, "{doc:#}");
    let out = env
        .stowage(&config)
        .args(["prune", "--dry-run"])
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap().replace('\n', " ");
    assert!(
        text.contains("used, above high_watermark (1%): the least recently used go"),
        "{text}"
    );

    // A store cap of 1 byte selects by size the same way.
    with("max_store_size = \"1B\"\nmax_removals = 100\n");
    let (_, doc) = prune(&env, &config, &["--dry-run"]);
    let remove = doc["prune"]["remove"].as_array().unwrap();
    assert!(
        remove.len() >= 4 && remove.iter().all(|c| c["rule"] == "store-size"),
        "{doc:#}"
    );

    // Keep rules: the test images' label keeps all of them; keep_newest keeps one per repo.
    with("max_store_size = \"1B\"\nkeep_labels = [\"org.stowage.test=1\"]\n");
    let (_, doc) = prune(&env, &config, &["--dry-run"]);
    let ours: Vec<String> = names.iter().map(|n| env.image_id(n).unwrap()).collect();
    for id in &ours {
        assert_eq!(protection(&doc, id), "keep-rule label org.stowage.test=1");
    }
    with("max_store_size = \"1B\"\nkeep_newest = 1\n");
    let (_, doc) = prune(&env, &config, &["--dry-run"]);
    let alpha: Vec<String> = names[..2]
        .iter()
        .map(|n| env.image_id(n).unwrap())
        .collect();
    let kept_alpha = alpha
        .iter()
        .filter(|id| protection_or_none(&doc, id) == Some("newest".into()))
        .count();
    // "Newest" is by creation to the second, as the engine lists it: two built in the same
    // second are both the newest, and both kept.
    let created: std::collections::HashSet<String> = names[..2]
        .iter()
        .map(|n| {
            let out = env.docker(&["image", "inspect", "-f", "{{.Created}}", n]);
            let created = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            created.split('.').next().unwrap().to_owned()
        })
        .collect();
    assert_eq!(kept_alpha, 3 - created.len(), "{created:?}: {doc:#}");
    // A dry run, every time: everything is still there.
    for n in &names {
        assert!(env.has_image(n));
    }
    env.purge_images(&names);
}

fn protection_or_none(doc: &Value, id: &str) -> Option<String> {
    doc["prune"]["keep"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == id)
        .map(|k| k["protection"].as_str().unwrap().to_owned())
}

/// Container events record an image's last use, even for a container that came and went
/// between two cycles (which listing containers at each cycle would miss).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn container_events_record_the_last_use() {
    use stowage::DockerEngine;
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("busybox:1");
    assert!(env.docker(&["pull", "-q", &name]).status.success());
    let id = env.image_id(&name).unwrap();
    let scratch = Scratch::new();
    let state_path = scratch.dir.path().join("state.json");
    let state = std::sync::Mutex::new(stowage::State::default());
    let engine = DockerEngine::connect(Some(&env.docker_host)).await.unwrap();
    let stop = stowage::Shutdown::new();
    let watcher = stowage::watch_uses(&engine, &state, &state_path, &stop);
    let test = async {
        // Give the subscription a moment, then run a short-lived container.
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        let run = env.use_image(&name);
        assert!(run.status.success(), "{run:?}");
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let used = state.lock().unwrap().last_used.get(&id).copied();
            if let Some(t) = used {
                assert!(t > chrono::Utc::now().timestamp() - 120);
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no use recorded for {id}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        stop.trigger();
    };
    tokio::join!(watcher, test);
    // On stop, what was recorded is in the state file too.
    let saved = stowage::State::load(&state_path);
    assert!(saved.last_used.contains_key(&id), "{saved:?}");
    env.purge_images(&[name]);
}

/// A BuildKit build (the classic builder leaves no build cache record), of a file new each
/// time: at least one record in the engine's build cache.
fn buildkit_build(env: &Env, tag: &str) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("f.txt"),
        format!("{:?}", std::time::SystemTime::now()),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("Dockerfile"),
        "FROM scratch\nCOPY f.txt /f.txt\n",
    )
    .unwrap();
    let out = std::process::Command::new(&env.docker_cli)
        .args(["build", "-q", "-t", tag])
        .arg(dir.path())
        .env("DOCKER_HOST", &env.docker_host)
        .env("DOCKER_BUILDKIT", "1")
        .output()
        .unwrap();
    assert!(out.status.success(), "BuildKit build: {out:?}");
}

/// How many records the engine's build cache holds, as `docker system df` counts them.
fn build_cache_records(env: &Env) -> usize {
    let out = env.docker(&["system", "df", "--format", "{{.Type}}={{.TotalCount}}"]);
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("Build Cache="))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or_else(|| panic!("no build cache count: {out:?}"))
}

/// `stowage prune` with `prune` (a `[prune]` table's lines) and everything kept: what it logged.
fn prune_build_cache_with(env: &Env, prune: &str) -> Vec<Value> {
    let scratch = Scratch::new();
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nkeep = [\"**\"]\npause = \"0s\"\n"
        + prune;
    std::fs::write(&config, text).unwrap();
    let out = env.stowage(&config).arg("prune").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect()
}

#[test]
fn the_build_cache_is_pruned_by_age() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "Podman's compatible API has no BuildKit (its build cache is image layers; podman#19604)"
    );
    buildkit_build(&env, "stowage-local/buildkit:1");
    // `until` compares the records' last use with now minus the age: a record used in this
    // very second may not count as older than 0 s yet (seen once on Docker 26 in CI).
    std::thread::sleep(std::time::Duration::from_secs(2));
    let logged = prune_build_cache_with(&env, "build_cache_max_age = \"0s\"\n");
    let pruned = logged
        .iter()
        .find(|v| v["message"] == "build cache pruned")
        .unwrap_or_else(|| panic!("no build cache pruning: {logged:#?}"));
    assert!(pruned["bytes"].as_u64().unwrap() > 0, "{pruned:#}");
    env.purge_images(&["stowage-local/buildkit:1".into()]);
}

/// `build_cache_max_size` alone: an engine with API 1.48 (Docker 28) prunes the cache down to
/// it; an older one is not asked, since it would ignore the size and prune every unused record.
#[test]
fn the_build_cache_is_bounded_by_size_only_where_the_engine_can() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "Podman's compatible API has no BuildKit (its build cache is image layers; podman#19604)"
    );
    buildkit_build(&env, "stowage-local/buildkit:2");
    let before = build_cache_records(&env);
    assert!(before > 0);
    let logged = prune_build_cache_with(&env, "build_cache_max_size = \"1B\"\n");
    let pruned = logged.iter().find(|v| v["message"] == "build cache pruned");
    let warned = logged.iter().any(|v| {
        v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("build_cache_max_size needs Docker 28"))
    });
    if env.engine == crate::support::EngineKind::Docker28 {
        let bytes = pruned.map(|v| v["bytes"].as_u64().unwrap());
        assert!(bytes.is_some_and(|b| b > 0), "{logged:#?}");
        assert!(!warned, "{logged:#?}");
        assert!(build_cache_records(&env) < before);
    } else {
        assert!(pruned.is_none(), "{logged:#?}");
        assert!(warned, "{logged:#?}");
        assert_eq!(build_cache_records(&env), before);
    }
    env.purge_images(&["stowage-local/buildkit:2".into()]);
}

/// A prune cycle that runs while a pull is fetching content the store already holds under
/// another name leaves that image alone: the daemon prunes side by side with its pulls, and the
/// image is what the pull is about to name.
#[test]
fn a_pull_in_flight_keeps_its_content_from_the_pruner() {
    let _lock = engine_lock();
    let env = env();
    // The store holds alpha:1 under the plain registry's name only, old: once nothing uses it,
    // the unused rule selects it. Until the pull is under way, a created container holds it.
    let local = env.plain_image("alpha:1");
    assert!(env.docker(&["pull", "-q", &local]).status.success());
    let id = env.image_id(&local).unwrap();
    let digest = env.repo_digests(&local)[0]
        .split_once('@')
        .unwrap()
        .1
        .to_owned();
    let holder = env.create_container(&local);
    // The config pins the same content under a slow registry's name: the engine fetches the
    // manifest at a trickle, finds the content present, and stowage then names it.
    let slow = crate::support::Throttle::start(&env.plain, 100);
    let wanted = format!("127.0.0.1:{}/stowage-test/alpha:1", slow.port);
    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let config = scratch.config(
        "schedule = \"0 0 1 1 *\"\ntimeout = \"5m\"",
        &[format!("{wanted}@{digest}")],
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nschedule = \"* * * * * *\"\npause = \"0s\"\nmin_age = \"0s\"\n\
           unused_max_age = \"1d\"\n";
    std::fs::write(&config, text).unwrap();
    let mut cmd = env.stowage(&config);
    cmd.args(["--log-level", "info,stowage=debug"]);
    let daemon = crate::support::Daemon::start(cmd, &["run"]);
    let limit = std::time::Duration::from_secs(180);

    let is_kept = |v: &Value, why: &str| {
        crate::support::is_event(v, "kept", Some(("image", &id))) && v["protection"] == why
    };
    daemon.wait_for("the pull", limit, |v| {
        crate::support::is_event(v, "pulling", None)
            && v["image"].as_str().is_some_and(|i| i.starts_with(&wanted))
    });
    daemon.wait_for("a cycle keeping it in use", limit, |v| is_kept(v, "in-use"));
    holder.remove();
    let finished = daemon.wait_for("the boot run", limit, |v| {
        crate::support::is_event(v, "run finished", Some(("trigger", "boot")))
    });
    assert_eq!(finished["pulled"], 1, "{finished:#}");
    // With the container gone, cycles ran during the pull and kept the image as part of it.
    let logs = daemon.logs();
    let boot_done = logs
        .iter()
        .position(|v| crate::support::is_event(v, "run finished", Some(("trigger", "boot"))))
        .unwrap();
    assert!(
        logs[..boot_done].iter().any(|v| is_kept(v, "in-flight")),
        "no cycle during the pull: {logs:#?}"
    );
    // Then as required: the pull named it.
    daemon.wait_for("a cycle after the pull", limit, |v| is_kept(v, "required"));
    let (code, logs) = daemon.terminate(std::time::Duration::from_secs(90));
    assert_eq!(code, 0);
    assert!(
        !logs
            .iter()
            .any(|v| crate::support::is_event(v, "removed", Some(("image", &id)))),
        "{logs:#?}"
    );
    assert_eq!(env.image_id(&wanted).as_deref(), Some(id.as_str()));
    env.purge_images(&[local, wanted]);
}

/// stowage run inside a container (as some operators deploy it, with the engine's socket
/// mounted) finds that container and keeps the image it runs from, whatever the rules say.
#[test]
fn its_own_image_is_kept_when_stowage_runs_in_a_container() {
    let _lock = engine_lock();
    let env = env();
    // The container's image: the runnable busybox, old and otherwise unused, so the unused
    // rule selects it. The stowage binary and the host's libraries are bind-mounted into it.
    let image = env.plain_image("busybox:1");
    assert!(env.docker(&["pull", "-q", &image]).status.success());
    let id = env.image_id(&image).unwrap();
    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nmin_age = \"0s\"\nunused_max_age = \"1d\"\nmax_removals = 100000\n";
    std::fs::write(&config, text).unwrap();
    // Outside a container, the rule selects it: the test can tell the protection apart.
    let (_, doc) = prune(&env, &config, &["--dry-run"]);
    assert!(ids(&doc, "remove").contains(&id), "{doc:#}");

    let socket = env.docker_host.strip_prefix("unix://").unwrap();
    // Copied beside the config: an engine chrooted in a root of its own (docker28, podman5)
    // sees the host's /tmp, not its build directory.
    let binary = scratch.dir.path().join("stowage");
    std::fs::copy(assert_cmd::cargo::cargo_bin!("stowage"), &binary).unwrap();
    let dir = scratch.dir.path().display().to_string();
    let mounts = [
        format!("{}:/stowage:ro", binary.display()),
        "/usr/lib:/usr/lib:ro".to_owned(),
        "/usr/lib:/lib:ro".to_owned(),
        "/usr/lib64:/lib64:ro".to_owned(),
        format!("{socket}:/run/docker.sock"),
        format!("{dir}:{dir}"),
    ];
    let mut args = vec!["run", "--rm", "--network", "none"];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    let config = config.display().to_string();
    args.extend([
        "-e",
        "DOCKER_HOST=unix:///run/docker.sock",
        "-e",
        "DOCKER_CONFIG=/nonexistent",
        &image,
        "/stowage",
        "--config",
        &config,
        "--log-format",
        "json",
        "prune",
        "--dry-run",
        "--json",
    ]);
    let out = env.docker(&args);
    let doc = crate::support::report(&out);
    assert_eq!(protection(&doc, &id), "own-image", "{doc:#}");
    env.purge_images(&[image]);
}

/// An image pulled through a mirror is named in two repositories: the mirror's by digest, and
/// the origin's by tag and by digest (stowage adds the origin's digest name after such a
/// pull). The containerd store refuses the DELETE of such an image's ID ("referenced in
/// multiple repositories"), which kept every image pulled through a mirror there forever. Once
/// policy allows, it is removed on every engine, and nothing else with it.
#[test]
fn an_image_named_by_a_mirror_and_its_origin_is_pruned() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("alpha:1");
    env.purge_images(std::slice::from_ref(&name));
    let origin_digest = env.plain_digest_name(&name).unwrap();
    let digest = origin_digest.split_once('@').unwrap().1;
    let mirrored = format!("{}/stowage-test/alpha@{digest}", env.mirror);
    for args in [
        vec!["pull", "-q", mirrored.as_str()],
        vec!["tag", mirrored.as_str(), name.as_str()],
        vec!["pull", "-q", origin_digest.as_str()],
    ] {
        let out = env.docker(&args);
        assert!(out.status.success(), "docker {args:?}: {out:?}");
    }
    let id = env.image_id(&name).unwrap();
    assert_eq!(env.image_id(&mirrored).as_deref(), Some(id.as_str()));
    // Another image with a tag, unused and old: it stays (kept by name), whatever happens to
    // the one pruned.
    let kept = env.plain_image("beta:1");
    assert!(env.docker(&["pull", "-q", &kept]).status.success());

    let scratch = Scratch::new();
    seasoned_state(&env, &scratch.dir.path().join("state.json"), 60);
    let config = scratch.config("", &[]);
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "[prune]\nmin_age = \"0s\"\nunused_max_age = \"1d\"\nmax_removals = 100\n\
             pause = \"0s\"\nkeep = [\"{kept}\"]\n"
        );
    std::fs::write(&config, text).unwrap();
    let (_, dry) = prune(&env, &config, &["--dry-run"]);
    assert!(ids(&dry, "remove").contains(&id), "{dry:#}");

    let (code, done) = prune(&env, &config, &[]);
    assert_eq!(code, 0, "{done:#}");
    let result = done["prune"]["results"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["id"] == id.as_str())
        .unwrap_or_else(|| panic!("no result for {id}: {done:#}"));
    assert_eq!(result["result"], "removed", "{result:#}");
    for n in [&name, &mirrored, &origin_digest] {
        assert!(env.image_id(n).is_none(), "{n} is left");
    }
    assert!(env.has_image(&kept), "{kept} was removed");
    env.purge_images(&[kept]);
}
