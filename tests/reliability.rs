//! Faults, scripted and repeatable: a registry outage, the engine going away, `kill -9` at
//! random points, a full state directory, prune cycles under container churn, and removals
//! racing `docker create`. Each scenario prints its figures as one `RELIABILITY {json}` line.
//!
//! Ignored by a plain `cargo test`: `scripts/reliability.sh [short|long]` runs them against an
//! engine profile (CI runs the short profile on every change; the long one is for releases).

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rand::Rng;
use serde_json::{Value, json};

use crate::support::{Daemon, Env, Registry, Scratch, engine_lock, env, free_port};

/// How much of each scenario a profile runs.
struct Profile {
    name: &'static str,
    kills: usize,
    churn_cycles: usize,
    race_tries: usize,
    outage_runs: usize,
}

fn profile() -> Profile {
    match std::env::var("STOWAGE_RELIABILITY").as_deref() {
        Ok("long") => Profile {
            name: "long",
            kills: 1000,
            churn_cycles: 1000,
            race_tries: 200,
            outage_runs: 10,
        },
        _ => Profile {
            name: "short",
            kills: 100,
            churn_cycles: 100,
            race_tries: 40,
            outage_runs: 3,
        },
    }
}

/// Prints a scenario's figures for scripts/reliability.sh to collect.
fn figures(scenario: &str, env: &Env, mut fields: Value) {
    fields["scenario"] = json!(scenario);
    fields["engine"] = json!(format!("{:?}", env.engine).to_lowercase());
    fields["profile"] = json!(profile().name);
    println!("RELIABILITY {fields}");
}

/// The temp files writers left in `dir` (`.NAME.PID.*.tmp`).
fn temp_files(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with('.') && n.ends_with(".tmp"))
        .collect()
}

/// Whether the state and lock files in `dir` load as what they claim to be (or are absent).
fn files_load(dir: &Path) -> Result<(), String> {
    let state = dir.join("state.json");
    if let Ok(bytes) = std::fs::read(&state) {
        serde_json::from_slice::<Value>(&bytes).map_err(|e| format!("{}: {e}", state.display()))?;
    }
    stowage::LockFile::load(&dir.join("stowage.lock"))
        .map(|_| ())
        .map_err(|p| format!("{p:?}"))
}

fn kill_9(child: &mut std::process::Child) {
    let _ = child.kill(); // SIGKILL
    let _ = child.wait();
}

#[test]
#[ignore = "reliability suite: scripts/reliability.sh"]
fn kill_9_at_random_points_leaves_loadable_files_and_the_next_run_converges() {
    let _lock = engine_lock();
    let env = env();
    let p = profile();
    let names: Vec<String> = ["alpha:1", "alpha:2", "beta:1", "gamma:1", "big:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    env.remove_images(&names);
    let scratch = Scratch::new();
    let config = scratch.config("concurrency = 2\nschedule = \"0 0 1 1 *\"", &names);
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nmin_age = \"0s\"\ndangling_min_age = \"0s\"\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let dir = scratch.dir.path();
    let mut rng = rand::rng();
    let ops = ["pull", "pin", "prune", "reload"];
    let mut per_op: HashMap<&str, usize> = HashMap::new();
    let mut orphans_seen = 0;
    for i in 0..p.kills {
        let op = ops[i % ops.len()];
        if op == "pull" && i % 8 == 0 {
            // Give the pulls something to do.
            env.remove_images(&names[i / 8 % names.len()..][..1]);
        }
        let mut cmd = env.stowage(&config);
        cmd.arg(if op == "reload" { "run" } else { op })
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = cmd.spawn().unwrap();
        if op == "reload" {
            std::thread::sleep(Duration::from_millis(rng.random_range(50..400)));
            let _ = Command::new("kill")
                .args(["-HUP", &child.id().to_string()])
                .status();
        }
        std::thread::sleep(Duration::from_millis(rng.random_range(0..400)));
        kill_9(&mut child);
        *per_op.entry(op).or_default() += 1;
        if let Err(e) = files_load(dir) {
            panic!("after kill {i} during {op}: {e}");
        }
        orphans_seen += temp_files(dir).len();
    }
    // The next run converges, and leaves no temp file behind.
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    let doc = crate::support::report(&out);
    let missing: Vec<&String> = names.iter().filter(|n| !env.has_image(n)).collect();
    let left = temp_files(dir);
    figures(
        "kill-9",
        &env,
        json!({"kills": p.kills, "per_operation": per_op, "temp_files_seen_after_kills": orphans_seen,
               "temp_files_left": left.len(), "converged": out.status.success(),
               "images_missing_after": missing.len()}),
    );
    assert_eq!(out.status.code(), Some(0), "{doc:#}");
    assert!(
        missing.is_empty(),
        "missing after the converging run: {missing:?}"
    );
    assert!(left.is_empty(), "temp files left: {left:?}");
    env.remove_images(&names);
}

/// The IDs of every container and the ID of the image each uses.
async fn containers(engine: &stowage::DockerEngine) -> HashMap<String, String> {
    let options = bollard::query_parameters::ListContainersOptionsBuilder::new()
        .all(true)
        .build();
    engine
        .client()
        .list_containers(Some(options))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| Some((c.id?, c.image_id?)))
        .collect()
}

/// Whether the engine has the image with this ID.
async fn image_exists(engine: &stowage::DockerEngine, id: &str) -> bool {
    engine.client().inspect_image(id).await.is_ok()
}

/// Sets the flag when dropped.
struct StopOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// How many containers the churn keeps at most.
const CHURN_CONTAINERS: usize = 6;

/// Creates, starts, stops and removes containers from `images` until `stop`: what a busy host
/// does while stowage prunes. Returns how many operations it made.
/// The name prefix of the churn's containers.
const CHURN_PREFIX: &str = "stowage-churn-";

/// Removes the churn's containers an interrupted earlier run left behind: one whose image was
/// lost then would count as lost in every cycle of this run.
fn remove_left_churn(env: &Env) {
    let filter = format!("name={CHURN_PREFIX}");
    let out = env.docker(&["ps", "-aq", "--filter", &filter]);
    for id in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        let _ = env.docker(&["rm", "-f", id]);
    }
}

fn churn(env: &Env, images: &[String], stop: &std::sync::atomic::AtomicBool) -> usize {
    use std::sync::atomic::Ordering;
    let mut rng = rand::rng();
    let mut mine: Vec<String> = Vec::new();
    let mut ops = 0;
    while !stop.load(Ordering::Relaxed) {
        ops += 1;
        let roll = rng.random_range(0..10);
        // At most a few containers of its own at once, as a steady workload has.
        if mine.len() < CHURN_CONTAINERS && (roll < 4 || mine.is_empty()) {
            let image = &images[rng.random_range(0..images.len())];
            // Named, so that a `create` that failed but left its container behind (Docker
            // 20.10 does, when the image goes mid-create) is removed like the others; never
            // left for a later run to find without its image.
            let name = format!("{CHURN_PREFIX}{}", rng.random::<u64>());
            // `create` pulls what is missing, as a host's `docker run` does.
            let out = env.docker(&[
                "create",
                "--name",
                &name,
                "--network",
                "none",
                image,
                "/bin/busybox",
                "sleep",
                "1",
            ]);
            if out.status.success() {
                mine.push(String::from_utf8_lossy(&out.stdout).trim().to_owned());
            } else {
                let _ = env.docker(&["rm", "-f", &name]);
            }
        } else if roll < 6 && !env.engine.is_podman() {
            let id = &mine[rng.random_range(0..mine.len())];
            // Only the runnable image has a binary; others fail to start, which is fine.
            let _ = env.docker(&["start", id]);
            let _ = env.docker(&["stop", "-t", "0", id]);
        } else {
            let id = mine.swap_remove(rng.random_range(0..mine.len()));
            let _ = env.docker(&["rm", "-f", &id]);
        }
    }
    for id in mine {
        let _ = env.docker(&["rm", "-f", &id]);
    }
    remove_left_churn(env);
    ops
}

/// The most builds the churn labels to be kept (about the short profile's 100 cycles' worth).
const KEPT_MOST: usize = 30;

/// Until `stop`: rebuilds and re-tags `repo:v0` and `repo:v1` as CI and `docker pull` do, three
/// builds in ten (at most KEPT_MOST) with a label the prune's keep rule keeps. Returns its operations; the IDs of the
/// kept images it built go to `gold`: none of them may ever go, tagged or not.
fn rebuild_churn(
    env: &Env,
    repo: &str,
    stop: &std::sync::atomic::AtomicBool,
    gold: &std::sync::Mutex<Vec<String>>,
    most: usize,
) -> usize {
    use std::sync::atomic::Ordering;
    let mut rng = rand::rng();
    let (mut ops, mut built) = (0, Vec::<String>::new());
    // At most `most` (one per cycle): every kept build stays in the store, and the containerd
    // store's listing slows with each (4-6 s at 400 images), which slows the cycles, which let
    // more builds in: unbounded, the short profile took 7 to 18 minutes on Docker 26 from run
    // to run, and over 20 on Podman.
    while !stop.load(Ordering::Relaxed) && ops < most {
        ops += 1;
        // About as often as a busy CI host: each change makes the next removal list the store
        // again, which the containerd store pays dearly for (its engine's CPU, not stowage's).
        std::thread::sleep(Duration::from_millis(400));
        let tag = format!("{repo}:v{}", rng.random_range(0..2));
        let roll = rng.random_range(0..10);
        if roll < 6 || built.is_empty() {
            // Kept builds stay in the store for good, and every cycle lists them: at most
            // KEPT_MOST, so the long profile's 1,000 cycles see the short profile's store
            // (unbounded, Docker 28's listing grew to 277 images and 1,000 cycles took hours).
            let kept = roll < 3 && gold.lock().unwrap().len() < KEPT_MOST;
            let label = kept.then_some("tier=gold");
            // The cycles (min_age 0s) may take a build's intermediate image from under it.
            let Ok(id) = env.try_build_image(&tag, "scratch", &format!("build {ops}"), label)
            else {
                continue;
            };
            if kept {
                gold.lock().unwrap().push(id.clone());
            }
            built.push(id);
        } else {
            // A tag moves back to an earlier build (gone already, if the prune took it).
            let _ = env.docker(&["tag", &built[rng.random_range(0..built.len())], &tag]);
        }
    }
    ops
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability.sh"]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn prune_cycles_under_container_churn_lose_nothing_in_use() {
    use std::sync::atomic::{AtomicBool, Ordering};
    let _lock = engine_lock();
    let env = env();
    let p = profile();
    let required: Vec<String> = ["alpha:1", "beta:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    let busy: Vec<String> = ["alpha:2", "gamma:1", "busybox:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    remove_left_churn(&env);
    // Pulled afresh: an image an earlier run lost in a race on the containerd store can be
    // left named but without its layers (Docker 28), which a pull calls up to date and which
    // every container of this run would count as lost.
    let all: Vec<String> = required.iter().chain(&busy).cloned().collect();
    env.purge_images(&all);
    for n in &all {
        assert!(env.docker(&["pull", "-q", n]).status.success());
    }
    let scratch = Scratch::new();
    // Everything unprotected is a candidate in every cycle: a one-byte store cap.
    let (engine, session, settings) = prune_session(
        &env,
        &scratch,
        &required,
        "min_age = \"0s\"\nmax_store_size = \"1B\"\nmax_removals = 100\npause = \"0s\"\n\
         prune_local_only = true\nkeep_labels = [\"tier=gold\"]\n",
    )
    .await;
    // Pin the required images (first pull) so the pruner knows their digests.
    pin_required(&engine, &session).await;

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    // Stops the churn however the test ends: a panicking test must not leave it running.
    let _stop_churn = StopOnDrop(stop.clone());
    let worker = {
        let (stop, busy) = (stop.clone(), busy.clone());
        tokio::task::spawn_blocking(move || churn(&crate::support::env(), &busy, &stop))
    };
    // Tags moved and rebuilt under the cycles, onto images a keep rule keeps and others.
    let gold = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut kept_removed = Vec::new();
    let builder = {
        let stop = stop.clone();
        let repo = format!(
            "{}/stowage-test/{}",
            env.plain,
            crate::support::fresh_repo("rebuilt")
        );
        let (gold, cycles) = (gold.clone(), p.churn_cycles);
        tokio::task::spawn_blocking(move || {
            rebuild_churn(&crate::support::env(), &repo, &stop, &gold, cycles)
        })
    };
    let (mut removed, mut healed, mut lost_races, mut against_plan) = (0, 0, 0, 0);
    let mut healed_late = 0;
    let (mut lost_in_use, mut lost_required) = (Vec::new(), Vec::new());
    // Why a race could not be healed: what the assertion below says when one was lost (a CI
    // run lost one on Docker 20.10 once, its cause unknown).
    let mut race_errors = Vec::new();
    // The images of races reported lost, and the cycle that reported each: a container of
    // such a race that lives on into the next cycles is that one reported loss, not a new one.
    let mut reported_lost = HashMap::new();
    for cycle in 0..p.churn_cycles {
        let before = containers(&engine).await;
        let pruner = session.pruner(
            &engine,
            &settings,
            stowage::InFlight::default(),
            stowage::Shutdown::new(),
        );
        let done = pruner.cycle(false).await.unwrap();
        for r in &done.removals {
            removed += usize::from(r.result == stowage::RemovalResult::Removed);
            match &r.race {
                Some(stowage::Race::Healed) => healed += 1,
                Some(stowage::Race::Lost { error }) => {
                    lost_races += 1;
                    reported_lost.entry(r.candidate.id.clone()).or_insert(cycle);
                    let names = r.candidate.names.join(", ");
                    race_errors.push(format!(
                        "cycle {cycle}: {} ({names}): {error}",
                        r.candidate.id
                    ));
                }
                None => {}
            }
            against_plan += r.against_plan.len();
            // What this removal deleted that a keep rule kept, if anything: said precisely.
            let kept = gold.lock().unwrap().clone();
            let deleted = (r.result == stowage::RemovalResult::Removed)
                .then_some(&r.candidate.id)
                .into_iter()
                .chain(&r.steps_removed)
                .chain(r.against_plan.iter().filter_map(|a| a.taken.image.as_ref()));
            for id in deleted.filter(|id| kept.contains(id)) {
                kept_removed.push(format!("cycle {cycle}: {id} by {r:?}"));
            }
        }
        // A container whose creation registered after an earlier cycle's last look, found by
        // this one: healed, or reported lost once, as a race found in its own cycle.
        for late in &done.late_races {
            match &late.outcome {
                stowage::Race::Healed => healed_late += 1,
                stowage::Race::Lost { error } => {
                    lost_races += 1;
                    reported_lost.entry(late.id.clone()).or_insert(cycle);
                    race_errors.push(format!("cycle {cycle}: {} (late): {error}", late.id));
                }
            }
        }
        for n in required.iter().filter(|n| !env.has_image(n)) {
            lost_required.push(format!("cycle {cycle}: {n}"));
        }
        let after = containers(&engine).await;
        for (container, image) in &before {
            if after.contains_key(container)
                && reported_lost.get(image).is_none_or(|&c| c >= cycle)
                && !image_exists(&engine, image).await
            {
                lost_in_use.push(format!("cycle {cycle}: {container} lost {image}"));
            }
        }
        // The long profile's 1,000 cycles take over an hour on the containerd store: say how
        // far it got, for a run stopped before the end.
        if (cycle + 1) % 100 == 0 {
            eprintln!(
                "churn: {} cycles, {removed} removed, {healed} races healed ({healed_late} \
                 found late), {lost_races} lost, {} required and {} in use lost so far",
                cycle + 1,
                lost_required.len(),
                lost_in_use.len()
            );
        }
    }
    stop.store(true, Ordering::Relaxed);
    let churn_ops = worker.await.unwrap();
    let rebuild_ops = builder.await.unwrap();
    let gold = gold.lock().unwrap().clone();
    let mut lost_kept = Vec::new();
    for id in &gold {
        if !image_exists(&engine, id).await {
            lost_kept.push(id.clone());
        }
    }
    figures(
        "churn",
        &env,
        json!({"cycles": p.churn_cycles, "churn_operations": churn_ops, "removed": removed,
               "rebuilds_and_tag_moves": rebuild_ops, "kept_builds": gold.len(),
               "races_healed": healed, "races_healed_late": healed_late,
               "races_lost": lost_races, "against_plan": against_plan,
               "required_lost": lost_required.len(), "in_use_lost": lost_in_use.len(),
               "kept_lost": lost_kept.len(), "kept_removed_by_stowage": kept_removed.len()}),
    );
    // The kept builds go first, whatever the verdict: later tests count what a prune removes.
    for id in &gold {
        let _ = env.docker(&["image", "rm", "-f", id]);
    }
    assert!(lost_required.is_empty(), "{lost_required:#?}");
    assert!(
        lost_in_use.is_empty(),
        "{lost_in_use:#?}\nraces that could not be healed: {race_errors:#?}"
    );
    assert!(
        kept_removed.is_empty(),
        "stowage removed images a keep rule kept: {kept_removed:#?}"
    );
    // A race lost is reported, never silent (the in-use check above); and there is none at
    // all (on Docker 28 the image is loaded whole from its registry, as in the race scenario).
    assert_eq!(lost_races, 0, "races lost: {race_errors:#?}");
    // Docker 26 lost a kept image now and then in this scenario (1 of 50 to 60 kept builds, in
    // 2 of 3 runs, 6 December 2026), and Docker 28 too (1 of 34), with no removal of stowage's
    // and no answer of the engine's naming it: the containerd store's tag race
    // (scripts/engine-tag-race.sh, docs/reliability.md), so counted in the figures and said
    // here rather than asserted. The classic store and Podman must lose none.
    if matches!(
        env.engine,
        crate::support::EngineKind::Docker26 | crate::support::EngineKind::Docker28
    ) {
        if !lost_kept.is_empty() {
            eprintln!("OPEN: kept images gone on Docker 26, not by stowage: {lost_kept:#?}");
        }
    } else {
        assert!(
            lost_kept.is_empty(),
            "images a keep rule kept are gone: {lost_kept:#?}"
        );
    }
    env.remove_images(&required);
    env.remove_images(&busy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability.sh"]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn removals_racing_docker_create_are_healed() {
    let _lock = engine_lock();
    let env = env();
    let p = profile();
    let scratch = Scratch::new();
    let (engine, session, settings) = prune_session(
        &env,
        &scratch,
        &[],
        "min_age = \"0s\"\nmax_store_size = \"1B\"\npause = \"0s\"\n",
    )
    .await;
    let mut rng = rand::rng();
    let (mut created, mut seen, mut healed, mut lost) = (0, 0, 0, 0);
    // Containers left without their image that stowage did not report as a race lost.
    let mut unreported = 0;
    let mut victims = Vec::new();
    // A new image each try: a race lost on one image must not be counted again in every later
    // try (before the load from the registry, Docker 28's containerd store kept such an image
    // without its layers for good).
    for _ in 0..p.race_tries {
        let victim = format!("{}/{}:1", env.plain, env.fresh_image(0));
        victims.push(victim.clone());
        assert!(env.docker(&["pull", "-q", &victim]).status.success());
        let id = env.image_id(&victim).unwrap();
        let pruner = session.pruner(
            &engine,
            &settings,
            stowage::InFlight::default(),
            stowage::Shutdown::new(),
        );
        let delay = Duration::from_millis(rng.random_range(0..60));
        let create = {
            let victim = victim.clone();
            let host = env.docker_host.clone();
            let cli = env.docker_cli.clone();
            std::thread::spawn(move || {
                std::thread::sleep(delay);
                Command::new(cli)
                    .args([
                        "create",
                        "--pull=never",
                        "--network",
                        "none",
                        &victim,
                        "true",
                    ])
                    .env("DOCKER_HOST", host)
                    .output()
                    .unwrap()
            })
        };
        let cycle = pruner.cycle(false).await.unwrap();
        let out = create.join().unwrap();
        for r in cycle.removals.iter().filter(|r| r.candidate.id == id) {
            match &r.race {
                Some(stowage::Race::Healed) => (seen, healed) = (seen + 1, healed + 1),
                Some(stowage::Race::Lost { error }) => {
                    seen += 1;
                    eprintln!("race lost: {error}");
                }
                None => {}
            }
        }
        if out.status.success() {
            created += 1;
            let container = String::from_utf8_lossy(&out.stdout).trim().to_owned();
            // The container exists: its image must too, however the race went.
            if !image_exists(&engine, &id).await {
                lost += 1;
                let removal = cycle.removals.iter().find(|r| r.candidate.id == id);
                if !removal.is_some_and(|r| matches!(r.race, Some(stowage::Race::Lost { .. }))) {
                    unreported += 1;
                }
                eprintln!("lost: container {container}, removal {removal:?}");
            }
            let _ = env.docker(&["rm", "-f", &container]);
        }
    }
    figures(
        "create-remove-race",
        &env,
        json!({"tries": p.race_tries, "containers_created": created, "races_seen": seen,
               "races_healed": healed, "images_lost": lost, "lost_unreported": unreported}),
    );
    env.remove_images(&victims);
    // Never silently: a container left without its image is a race stowage reports as lost.
    assert_eq!(
        unreported, 0,
        "containers left without their image, unreported"
    );
    // And none at all: on Docker 28, whose containerd store pulls such an image back without
    // its layers, stowage loads it whole from its registry (docs/reliability.md).
    assert_eq!(lost, 0, "containers left without their image");
}

/// A connection to the engine under test and a session over a config that requires `images`
/// and prunes by `prune` (the `[prune]` table's lines), with the config's prune settings.
async fn prune_session(
    env: &Env,
    scratch: &Scratch,
    images: &[String],
    prune: &str,
) -> (
    stowage::DockerEngine,
    stowage::Session,
    stowage::PruneSettings,
) {
    let (config, settings) = scratch.prune_config(images, prune);
    let engine = stowage::DockerEngine::connect(Some(&env.docker_host))
        .await
        .unwrap();
    let session = stowage::Session::new(config, None, &engine).await.unwrap();
    (engine, session, settings)
}

/// Pulls the session's required images (first-pull pins), so the pruner knows their digests.
async fn pin_required(engine: &stowage::DockerEngine, session: &stowage::Session) {
    let puller = session.puller(
        engine,
        stowage::Shutdown::new(),
        stowage::InFlight::default(),
        stowage::PinUpkeep::Command,
    );
    puller.converge(&session.pinned).await.unwrap();
}

/// Runs the test environment script for the engine under test.
fn test_env(command: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-env.sh");
    let status = Command::new("bash")
        .arg(script)
        .arg(command)
        .env("STOWAGE_TEST_ENGINE", crate::support::engine_name())
        .status()
        .unwrap();
    assert!(status.success(), "test-env.sh {command}");
}

#[test]
#[ignore = "reliability suite: scripts/reliability.sh"]
fn the_engine_going_away_mid_pull_loses_nothing_and_repeats_nothing() {
    let _lock = engine_lock();
    let env = env();
    // A pull that takes several seconds: a new 8 MiB image through a 1 MiB/s proxy.
    let throttle = crate::support::Throttle::start(&env.plain, 1024 * 1024);
    let slow = format!("127.0.0.1:{}/{}:1", throttle.port, env.fresh_image(8));
    let quick = env.plain_image("busybox:1"); // runnable: used after the restart
    env.remove_images(&[slow.clone(), quick.clone()]);
    let scratch = Scratch::new();
    let config = scratch.config(
        "schedule = \"0 0 1 1 *\"\nretries = 5\nbackoff = \"1s\"\nbackoff_max = \"2s\"",
        &[slow.clone(), quick.clone()],
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + "[prune]\nschedule = \"*/2 * * * * *\"\nmin_age = \"0s\"\ndangling_min_age = \"0s\"\npause = \"0s\"\n";
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("the slow pull", Duration::from_secs(60), |v| {
        crate::support::is_event(v, "pulling", Some(("image", &slow)))
    });
    std::thread::sleep(Duration::from_secs(2));
    let t0 = Instant::now();
    test_env("stop-engine");
    let down_for = Duration::from_secs(3);
    std::thread::sleep(down_for);
    test_env("start-engine");
    let restart = t0.elapsed();
    // Both images arrive, each pulled to completion once.
    let ready = daemon.wait_for("ready", Duration::from_secs(180), |v| {
        crate::support::is_event(v, "ready", None)
    });
    let pulled = |image: &str| {
        daemon.count(|v| crate::support::is_event(v, "pulled", Some(("image", image))))
    };
    // The prune cycles go on once the engine is back, and take nothing required.
    let cycles_before = daemon.count(|v| crate::support::is_event(v, "prune cycle finished", None));
    daemon.wait_for(
        "a prune cycle after the restart",
        Duration::from_secs(60),
        |_| {
            daemon.count(|v| crate::support::is_event(v, "prune cycle finished", None))
                > cycles_before
        },
    );
    let missing: Vec<&String> = [&slow, &quick]
        .into_iter()
        .filter(|n| !env.has_image(n))
        .collect();
    let pulls = [pulled(&slow), pulled(&quick)];
    let failed_pull_attempts = daemon.count(|v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("pull failed, will retry"))
    });
    // The container event stream was opened again: a use after the restart is recorded (in
    // the state file at the latest when the daemon stops).
    let used_at = chrono::Utc::now().timestamp();
    let quick_id = env.image_id(&quick).unwrap_or_default();
    let used = env.use_image(&quick);
    assert!(used.status.success(), "{used:?}");
    std::thread::sleep(Duration::from_secs(2));
    let logs = daemon.logs();
    let (code, _) = daemon.terminate(Duration::from_secs(60));
    let state: Value =
        serde_json::from_slice(&std::fs::read(scratch.dir.path().join("state.json")).unwrap())
            .unwrap();
    let use_recorded = state["last_used"][&quick_id]
        .as_i64()
        .is_some_and(|t| t >= used_at - 1);
    figures(
        "engine-restart",
        &env,
        json!({"restart_ms": restart.as_millis(), "failed_attempts_during_restart": failed_pull_attempts,
               "completed_pulls_per_image": pulls, "images_missing": missing.len(),
               "use_recorded_after_restart": use_recorded, "ready": ready["status"]}),
    );
    assert!(use_recorded, "no use recorded after the restart: {state:#}");
    assert!(
        missing.is_empty(),
        "missing after the engine came back: {missing:?}"
    );
    // Each image pulled to completion once: no work lost, none done twice.
    assert_eq!(pulls, [1, 1], "{logs:#?}");
    assert_eq!(code, 0);
    env.remove_images(&[slow, quick]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reliability suite: scripts/reliability.sh"]
#[allow(clippy::await_holding_lock)] // the engine lock only serialises tests
async fn the_engine_going_away_mid_prune_cycle_removes_nothing_protected() {
    let _lock = engine_lock();
    let env = env();
    let required = env.plain_image("alpha:1");
    let used = env.plain_image("busybox:1");
    let candidates: Vec<String> = ["alpha:2", "beta:1", "gamma:1", "big:1"]
        .iter()
        .map(|n| env.plain_image(n))
        .collect();
    for n in candidates.iter().chain([&required, &used]) {
        assert!(env.docker(&["pull", "-q", n]).status.success());
    }
    let created = env.docker(&["create", "--network", "none", &used, "/bin/busybox", "true"]);
    assert!(created.status.success(), "{created:?}");
    let container = String::from_utf8_lossy(&created.stdout).trim().to_owned();
    let scratch = Scratch::new();
    // Everything unprotected goes, slowly: the engine stops between two removals.
    let (engine, session, settings) = prune_session(
        &env,
        &scratch,
        std::slice::from_ref(&required),
        "min_age = \"0s\"\nmax_store_size = \"1B\"\npause = \"1500ms\"\n",
    )
    .await;
    pin_required(&engine, &session).await;
    let pruner = session.pruner(
        &engine,
        &settings,
        stowage::InFlight::default(),
        stowage::Shutdown::new(),
    );
    let restart = tokio::task::spawn_blocking(|| {
        std::thread::sleep(Duration::from_millis(2000));
        test_env("stop-engine");
        std::thread::sleep(Duration::from_secs(3));
        test_env("start-engine");
    });
    let first = pruner.cycle(false).await.unwrap();
    restart.await.unwrap();
    let count = |c: &stowage::Cycle, result: &str| {
        c.removals
            .iter()
            .filter(|r| r.result.as_str() == result)
            .count()
    };
    let (removed_first, failed_first) = (count(&first, "removed"), count(&first, "failed"));
    // The next cycle finishes the work; nothing is removed twice.
    let second = pruner.cycle(false).await.unwrap();
    let removed_twice = second
        .removals
        .iter()
        .filter(|r| {
            r.result == stowage::RemovalResult::Removed
                && first.removals.iter().any(|f| {
                    f.result == stowage::RemovalResult::Removed && f.candidate.id == r.candidate.id
                })
        })
        .count();
    let protected_lost: Vec<&String> = [&required, &used]
        .into_iter()
        .filter(|n| !env.has_image(n))
        .collect();
    let candidates_left: Vec<&String> = candidates.iter().filter(|n| env.has_image(n)).collect();
    figures(
        "engine-restart-mid-prune",
        &env,
        json!({"removed_before_and_during_the_restart": removed_first, "failed_while_down": failed_first,
               "removed_after": count(&second, "removed"), "removed_twice": removed_twice,
               "protected_lost": protected_lost.len(), "candidates_left": candidates_left.len()}),
    );
    assert!(
        failed_first > 0,
        "the engine was not down during the cycle: {first:#?}"
    );
    assert!(protected_lost.is_empty(), "{protected_lost:?}");
    assert!(candidates_left.is_empty(), "{candidates_left:?}");
    assert_eq!(removed_twice, 0);
    let _ = env.docker(&["rm", "-f", &container]);
    env.remove_images(&[required, used]);
}

#[test]
#[ignore = "reliability suite: scripts/reliability.sh"]
fn a_registry_outage_keeps_what_is_present_and_recovers_within_one_backoff() {
    let _lock = engine_lock();
    let env = env();
    let p = profile();
    let port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let registry = Registry::start(dir.path(), port, &env.plain_storage, None, true);
    let present = format!("127.0.0.1:{port}/stowage-test/alpha:1");
    let later = format!("127.0.0.1:{port}/stowage-test/beta:1");
    env.remove_images(&[present.clone(), later.clone()]);
    assert!(env.docker(&["pull", "-q", &present]).status.success());
    let scratch = Scratch::new();
    let metrics_port = crate::support::free_port();
    let config = scratch.config(
        "schedule = \"*/2 * * * * *\"\nretries = 1\nbackoff = \"500ms\"\nbackoff_max = \"1s\"",
        std::slice::from_ref(&present),
    );
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("name = \"{present}\"\n"),
        &format!("name = \"{present}\"\npin = \"follow\"\n"),
    ) + &format!(
        "[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n[[image]]\nname = \"{later}\"\n"
    );
    std::fs::write(&config, text).unwrap();
    env.remove_images(std::slice::from_ref(&later));
    drop(registry); // down before the daemon starts: boot and every scheduled run fail
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    let failed_runs = |d: &Daemon| {
        d.count(|v| {
            crate::support::is_event(v, "run finished", None) && v["failed"].as_u64() > Some(0)
        })
    };
    let t0 = Instant::now();
    while failed_runs(&daemon) < p.outage_runs {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "{:#?}",
            daemon.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The present image stays, and metrics and status say what is failing.
    let present_kept = env.has_image(&present);
    assert!(present_kept);
    let (_, metrics) = crate::support::http_get(metrics_port, "/metrics");
    assert!(
        metrics.contains("stowage_pull_failures_total{class=\"network\"}"),
        "{metrics}"
    );
    let status = env
        .stowage(&config)
        .args(["status", "--json"])
        .output()
        .unwrap();
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    assert!(status.to_string().contains("network"), "{status:#}");
    // Back up: the missing image arrives within one backoff of the next attempt.
    let _registry = Registry::start(dir.path(), port, &env.plain_storage, None, true);
    let back = Instant::now();
    daemon.wait_for("the missing image", Duration::from_secs(60), |v| {
        crate::support::is_event(v, "pulled", Some(("image", &later)))
    });
    let recovered = back.elapsed();
    let failed = failed_runs(&daemon);
    let (code, _) = daemon.terminate(Duration::from_secs(60));
    figures(
        "registry-outage",
        &env,
        json!({"failed_runs": failed, "recovered_ms": recovered.as_millis(),
               "backoff_max_ms": 1000, "present_kept": present_kept,
               "missing_pulled": env.has_image(&later)}),
    );
    assert!(present_kept && env.has_image(&later) && env.has_image(&present));
    assert_eq!(code, 0);
    env.remove_images(&[present, later]);
}

#[test]
#[ignore = "reliability suite: scripts/reliability.sh"]
fn a_full_state_directory_is_reported_and_the_old_state_kept() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let state_dir = scratch.dir.path().join("state");
    std::fs::create_dir(&state_dir).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=64k", "stowage-full"])
        .arg(&state_dir)
        .status()
        .is_ok_and(|s| s.success());
    if !mounted {
        eprintln!("SKIPPED: cannot mount a tmpfs here (needs root)");
        return;
    }
    let unmount = Unmount(state_dir.clone());
    let first = env.plain_image("alpha:1");
    let second = env.plain_image("beta:1");
    env.remove_images(&[first.clone(), second.clone()]);
    let config = scratch.config("", std::slice::from_ref(&first));
    let state_file = state_dir.join("state.json");
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &scratch.dir.path().join("state.json").display().to_string(),
        &state_file.display().to_string(),
    );
    std::fs::write(&config, &text).unwrap();
    let out = env.stowage(&config).arg("pull").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let before = std::fs::read(&state_file).unwrap();
    // Fill the filesystem, then ask for a new first-pull pin.
    let _ = Command::new("dd")
        .args(["if=/dev/zero", "bs=4k", "count=1000"])
        .arg(format!("of={}", state_dir.join("filler").display()))
        .stderr(Stdio::null())
        .status();
    std::fs::write(&config, format!("{text}[[image]]\nname = \"{second}\"\n")).unwrap();
    let out = env.stowage(&config).arg("pull").output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let reported =
        stderr.contains("cannot save the state file") && stderr.contains("No space left");
    let intact_after_pull = std::fs::read(&state_file).unwrap() == before;
    let temp_left = temp_files(&state_dir).len();
    // The daemon goes on with a full state directory: it gets ready and keeps running.
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("ready", Duration::from_secs(60), |v| {
        crate::support::is_event(v, "ready", None)
    });
    let (code, _) = daemon.terminate(Duration::from_secs(60));
    let intact_after_daemon = std::fs::read(&state_file).unwrap() == before;
    figures(
        "full-disk",
        &env,
        json!({"pull_exit": out.status.code(), "error_reported": reported,
               "old_state_intact": intact_after_pull && intact_after_daemon,
               "temp_files_left": temp_left, "daemon_exit": code}),
    );
    // The image arrived, but a pull whose state could not be saved exits 1: the
    // pin it made is not remembered, and a script must know.
    assert!(env.has_image(&second), "the pull itself worked: {out:?}");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(reported, "{stderr}");
    assert!(
        intact_after_pull && intact_after_daemon,
        "the old state changed"
    );
    assert_eq!(temp_left, 0, "a half-written temp file stayed");
    assert_eq!(code, 0);
    drop(unmount);
    env.remove_images(&[first, second]);
}

/// Unmounts a test's tmpfs, whatever the test's outcome.
struct Unmount(std::path::PathBuf);

impl Drop for Unmount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}
