//! Digest pinning against the real registries: moving tags, the lock file, tagging after a
//! digest pull, drift, mirrors, and how many requests a warm run makes.

use std::time::Duration;

use serde_json::Value;

use crate::support::{Env, Registry, Scratch, engine_lock, entry, env, free_port};

fn run_json(env: &Env, config: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let out = env.stowage(config).args(args).output().unwrap();
    let value = crate::support::report(&out);
    (out.status.code().unwrap_or(-1), value)
}

/// The manifest digest of a plain-registry image, as the registry serves it.
fn registry_digest(env: &Env, repo_tag: &str) -> String {
    let scratch = Scratch::new();
    let name = env.plain_image(repo_tag);
    let config = scratch.config("", std::slice::from_ref(&name));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("name = \"{name}\"\n"),
        &format!("name = \"{name}\"\npin = \"follow\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let (_, status) = run_json(env, &config, &["status", "--json"]);
    entry(&status, &name)["registry"]["digest"]
        .as_str()
        .unwrap_or_else(|| panic!("no registry digest: {status:#}"))
        .to_owned()
}

fn with_pin(config: &std::path::Path, name: &str, pin: &str) {
    let text = std::fs::read_to_string(config).unwrap().replace(
        &format!("name = \"{name}\"\n"),
        &format!("name = \"{name}\"\npin = \"{pin}\"\n"),
    );
    std::fs::write(config, text).unwrap();
}

#[test]
fn a_moved_tag_is_followed_by_follow_and_held_by_first_pull() {
    let _lock = engine_lock();
    let env = env();
    env.point_tag("moving-follow:1", "alpha:1");
    env.point_tag("moving-held:1", "alpha:1");
    let follow = env.plain_image("moving-follow:1");
    let held = env.plain_image("moving-held:1");
    env.remove_images(&[follow.clone(), held.clone()]);
    let d1 = registry_digest(&env, "alpha:1");
    let d2 = registry_digest(&env, "alpha:2");
    let scratch = Scratch::new();
    let config = scratch.config("", &[follow.clone(), held.clone()]);
    with_pin(&config, &follow, "follow");

    let (code, first) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(entry(&first, &follow)["digest"], d1.as_str());
    assert_eq!(entry(&first, &held)["pin"], "first-pull");
    assert_eq!(entry(&first, &held)["digest"], d1.as_str());

    // Both tags move in the registry.
    env.point_tag("moving-follow:1", "alpha:2");
    env.point_tag("moving-held:1", "alpha:2");
    let (code, second) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{second:#}");
    let f = entry(&second, &follow);
    assert_eq!(f["digest"], d2.as_str(), "{f:#}");
    // Pulled, or only re-tagged when pushing the moved tag left that content in the store.
    assert!(
        matches!(f["result"].as_str(), Some("pulled" | "tagged")),
        "{f:#}"
    );
    let h = entry(&second, &held);
    assert_eq!(
        (h["result"].as_str(), h["digest"].as_str()),
        (Some("kept"), Some(d1.as_str())),
        "{h:#}"
    );
    // Locally, each name points at what its mode says.
    assert!(
        env.repo_digests(&follow).iter().any(|d| d.ends_with(&d2)),
        "{:?}",
        env.repo_digests(&follow)
    );
    assert!(
        env.repo_digests(&held).iter().any(|d| d.ends_with(&d1)),
        "{:?}",
        env.repo_digests(&held)
    );
    // The first-pull pin is remembered, not re-derived: with the image gone, the next run
    // pulls d1 again, not the tag's d2.
    env.purge_images(std::slice::from_ref(&held));
    let (code, third) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{third:#}");
    let h = entry(&third, &held);
    assert_eq!(
        (h["result"].as_str(), h["digest"].as_str()),
        (Some("pulled"), Some(d1.as_str())),
        "{h:#}"
    );
    // status says the held tag moved in the registry while its pin holds.
    let out = env.stowage(&config).arg("status").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let note = text.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        note.contains("the tag moved in the registry; the pin holds"),
        "{text}"
    );
    env.remove_images(&[follow, held]);
}

#[test]
fn pin_writes_a_lock_that_pulls_follow_and_check_catches_staleness() {
    let _lock = engine_lock();
    let env = env();
    env.point_tag("locked:1", "beta:1");
    let name = env.plain_image("locked:1");
    env.remove_images(std::slice::from_ref(&name));
    let d1 = registry_digest(&env, "beta:1");
    let d2 = registry_digest(&env, "gamma:1");
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let lock_path = scratch.dir.path().join("stowage.lock");

    // No lock yet: --check says so and fails.
    let out = env
        .stowage(&config)
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!lock_path.exists(), "--check writes nothing");

    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lock = std::fs::read_to_string(&lock_path).unwrap();
    assert!(
        lock.contains(&format!("name = \"{name}\"\ndigest = \"{d1}\"")),
        "{lock}"
    );
    let out = env
        .stowage(&config)
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = env.stowage(&config).arg("check").output().unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("with 1 entry)"),
        "{out:?}"
    );

    // The tag moves: the lock is stale, and says how; nothing is rewritten by --check.
    env.point_tag("locked:1", "gamma:1");
    let out = env
        .stowage(&config)
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains(&format!(
            "moved: {name} is locked at {d1}, the registry has {d2}"
        )),
        "{stdout}"
    );
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), lock);

    // Hosts pull what the lock says, not what the tag says now.
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let e = entry(&report, &name);
    assert_eq!(
        (e["pin"].as_str(), e["digest"].as_str()),
        (Some("lock"), Some(d1.as_str())),
        "{e:#}"
    );
    let (_, status) = run_json(&env, &config, &["status", "--json"]);
    let s = entry(&status, &name);
    assert_eq!(s["digest"], d1.as_str());
    assert_eq!(s["local_digest"], d1.as_str());
    assert_eq!(s["registry"]["digest"], d2.as_str());
    assert_eq!(s["drift"], false);

    // A config that requires an image the lock lacks is refused, with its line.
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!("[[image]]\nname = \"{}\"\n", env.plain_image("alpha:1"));
    std::fs::write(&config, text).unwrap();
    let out = env.stowage(&config).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("is not in the lock file") && stderr.contains("run `stowage pin`"),
        "{stderr}"
    );
    // `pin` fixes it.
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(&format!("moved: {name}")),
        "{out:?}"
    );
    let out = env.stowage(&config).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    env.remove_images(&[name]);
}

/// A lock naming a digest its registry no longer has (a tag pushed again, the old content
/// deleted): `status` says so before the run, and the run's failure names the digest, the
/// lock's line and `stowage pin`, never "does not exist" for a tag that does.
#[test]
fn a_locked_digest_the_registry_lost_names_the_digest_the_lock_line_and_pin() {
    let _lock = engine_lock();
    let env = env();
    env.point_tag("lost:1", "beta:1");
    let name = env.plain_image("lost:1");
    env.remove_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lock_path = scratch.dir.path().join("stowage.lock");
    let real = registry_digest(&env, "lost:1");
    let lost = format!("sha256:{}", "0".repeat(64));
    let text = std::fs::read_to_string(&lock_path).unwrap();
    let line = 1 + text
        .lines()
        .position(|l| l.starts_with("name = "))
        .expect("an entry");
    std::fs::write(&lock_path, text.replace(&real, &lost)).unwrap();
    let place = format!("{}:{line}", lock_path.display());

    let (code, status) = run_json(&env, &config, &["status", "--json"]);
    assert_eq!(code, 0, "{status:#}");
    let s = entry(&status, &name);
    assert_eq!(s["registry"]["digest"], real.as_str(), "{s:#}");
    assert_eq!(s["registry"]["has_pinned"], false, "{s:#}");
    let out = env.stowage(&config).arg("status").output().unwrap();
    // The note wraps within the table; its words, read across the lines, say it all.
    let table = String::from_utf8_lossy(&out.stdout);
    let note = table.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        note.contains(&lost) && note.contains(&place) && note.contains("run `stowage pin`"),
        "{table}"
    );

    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 1, "{report:#}");
    let e = entry(&report, &name);
    assert_eq!(e["class"], "not-found", "{e:#}");
    let message = e["message"].as_str().unwrap_or_default();
    assert!(
        message.contains(&lost)
            && message.contains(&place)
            && message.contains("run `stowage pin`")
            && !message.contains("does not exist"),
        "{message}"
    );

    // What the message says to do mends it; `pin --json` says what it found and did.
    let (code, doc) = run_json(&env, &config, &["pin", "--check", "--json"]);
    assert_eq!(code, 1, "{doc:#}");
    assert_eq!(doc["result"], "stale");
    assert_eq!(
        doc["changes"],
        serde_json::json!([{"change": "moved", "image": name, "locked": lost, "registry": real}])
    );
    let (code, doc) = run_json(&env, &config, &["pin", "--json"]);
    assert_eq!(
        (code, doc["result"].as_str()),
        (0, Some("written")),
        "{doc:#}"
    );
    let (code, doc) = run_json(&env, &config, &["pin", "--json"]);
    assert_eq!(
        (code, doc["result"].as_str()),
        (0, Some("up-to-date")),
        "{doc:#}"
    );
    assert_eq!(doc["changes"], serde_json::json!([]));
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(entry(&report, &name)["digest"], real.as_str());

    // An image no registry has: nothing is written, and the failure is in the document.
    let absent = env.plain_image("never-pushed:1");
    let text =
        std::fs::read_to_string(&config).unwrap() + &format!("[[image]]\nname = \"{absent}\"\n");
    std::fs::write(&config, text).unwrap();
    let before = std::fs::read_to_string(&lock_path).unwrap();
    let (code, doc) = run_json(&env, &config, &["pin", "--json"]);
    assert_eq!(
        (code, doc["result"].as_str()),
        (1, Some("failed")),
        "{doc:#}"
    );
    assert_eq!(doc["failures"][0]["image"], absent.as_str());
    assert_eq!(doc["failures"][0]["class"], "not-found");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), before);
    env.remove_images(&[name]);
}

#[test]
fn a_digest_pull_is_named_runs_with_pull_never_and_survives_image_prune() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("busybox:1");
    env.remove_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let digest = entry(&report, &name)["digest"].as_str().unwrap().to_owned();
    // The engine fetched the manifest by digest, never by tag (the tag was only HEADed).
    let requests = env.plain_requests(mark);
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with(&format!("GET /v2/stowage-test/busybox/manifests/{digest}"))),
        "{requests:#?}"
    );
    assert!(
        !requests
            .iter()
            .any(|r| r.starts_with("GET /v2/stowage-test/busybox/manifests/1 ")),
        "{requests:#?}"
    );
    // Pulled by digest, then named: the tag is there and points at the pinned content.
    assert!(env.repo_digests(&name).iter().any(|d| d.ends_with(&digest)));
    let run = env.use_image(&name);
    assert!(run.status.success(), "{run:?}");
    // Not dangling, so a plain prune leaves it alone.
    let prune = env.docker(&["image", "prune", "-f"]);
    assert!(prune.status.success(), "{prune:?}");
    assert!(
        env.has_image(&name),
        "docker image prune removed the pinned image"
    );
    env.remove_images(&[name]);
}

#[test]
fn drift_is_shown_and_repaired_without_asking_the_registry() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("alpha:1");
    let other = env.plain_image("alpha:2");
    env.remove_images(&[name.clone(), other.clone()]);
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let (code, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0);
    // Someone points the name at other content.
    assert!(env.docker(&["pull", &other]).status.success());
    assert!(env.docker(&["tag", &other, &name]).status.success());
    let (_, status) = run_json(&env, &config, &["status", "--json", "--offline"]);
    let s = entry(&status, &name);
    assert_eq!(s["drift"], true, "{s:#}");
    assert_eq!(s["action"], "tag");
    let text = String::from_utf8(
        env.stowage(&config)
            .args(["status", "--offline"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert!(text.contains("DRIFT"), "{text}");

    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let e = entry(&report, &name);
    assert_eq!(e["result"], "tagged", "{e:#}");
    let pinned = e["digest"].as_str().unwrap();
    assert!(env.repo_digests(&name).iter().any(|d| d.ends_with(pinned)));
    assert_eq!(
        env.plain_requests(mark),
        Vec::<String>::new(),
        "the repair asked the registry"
    );
    env.remove_images(&[name, other]);
}

#[test]
fn a_warm_pinned_run_makes_no_request_and_following_costs_one_head() {
    let _lock = engine_lock();
    let env = env();
    // Repositories of this test's own: the registry's log is shared with tests that do not
    // use the engine, and a request of theirs must not count here.
    env.point_tag("warm-pinned:1", "gamma:1");
    env.point_tag("warm-followed:1", "beta:1");
    let pinned = env.plain_image("warm-pinned:1");
    let followed = env.plain_image("warm-followed:1");
    env.remove_images(&[pinned.clone(), followed.clone()]);
    let scratch = Scratch::new();
    let config = scratch.config("", &[pinned.clone(), followed.clone()]);
    with_pin(&config, &followed, "follow");
    let (code, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0);

    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(report["summary"]["kept"], 2, "{report:#}");
    let requests: Vec<String> = env
        .plain_requests(mark)
        .into_iter()
        .filter(|r| r.contains("/warm-") || r == "GET /v2/ HTTP/1.1")
        .collect();
    assert!(
        !requests.iter().any(|r| r.contains("/warm-pinned/")),
        "pinned image asked for: {requests:#?}"
    );
    // One HEAD, and no ping before it: the registry needs no credentials.
    assert_eq!(requests.len(), 1, "{requests:#?}");
    assert!(
        requests[0].starts_with("HEAD /v2/stowage-test/warm-followed/manifests/1"),
        "{requests:#?}"
    );
    env.remove_images(&[pinned, followed]);
}

/// A cold pull of a tag with no lock costs the registry one request of stowage's own (a HEAD,
/// no ping), on top of the engine's pull by digest; lock-pinned, none. What the engines send
/// themselves differs (docs/benchmarks.md): Docker 20.10 pulling by digest sends as many as
/// `docker pull` of the tag, the containerd store one HEAD more.
#[test]
fn a_cold_pull_costs_one_head_of_its_own_and_none_when_locked() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    env.remove_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    with_pin(&config, &name, "first-pull");
    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let ours = env.plain_requests_by_stowage(mark);
    assert_eq!(
        ours,
        ["HEAD /v2/stowage-test/beta/manifests/1 HTTP/1.1"],
        "{:#?}",
        env.plain_requests(mark)
    );

    // Locked: the lock names the digest, and only the engine asks the registry.
    env.remove_images(std::slice::from_ref(&name));
    let locked = scratch.config("", std::slice::from_ref(&name));
    let out = env.stowage(&locked).arg("pin").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &locked, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    assert!(!env.plain_requests(mark).is_empty(), "the engine pulled");
    assert_eq!(env.plain_requests_by_stowage(mark), Vec::<String>::new());
    env.remove_images(&[name]);
}

#[test]
fn pulls_by_digest_come_from_a_mirror_first_and_the_origin_when_it_is_down() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("beta:1");
    env.remove_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    // A pull-through mirror of the plain registry, for this test only.
    let port = free_port();
    let mirror = Registry::start(
        scratch.dir.path(),
        port,
        &scratch.dir.path().join("mirror-data"),
        Some(&env.plain),
        true,
    );
    let log_path = mirror.log.clone();
    let config = scratch.config("", std::slice::from_ref(&name));
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!(
            "[[registry]]\nhost = \"{}\"\nmirrors = [\"127.0.0.1:{port}\"]\n",
            env.plain
        );
    std::fs::write(&config, text).unwrap();

    let mark = env.plain_log_mark();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let e = entry(&report, &name);
    assert_eq!(e["from"], format!("127.0.0.1:{port}"), "{e:#}");
    let origin = env.plain_requests(mark);
    assert!(
        origin
            .iter()
            .any(|r| r.starts_with("HEAD /v2/stowage-test/beta/manifests/1 ")),
        "{origin:#?}"
    );
    let digest = e["digest"].as_str().unwrap().to_owned();
    // The registry logs a request when its response is complete; wait for the manifest's line
    // rather than for a fixed time (a busy CI host once took longer than 300 ms).
    let manifest_line = format!("/v2/stowage-test/beta/manifests/{digest}");
    let mirror_log = wait_for_log(&log_path, &manifest_line);
    // Only content comes from the mirror: the tag is resolved at the origin, never the mirror.
    assert!(
        !mirror_log.contains("/v2/stowage-test/beta/manifests/1 "),
        "the mirror was asked for the tag: {mirror_log}"
    );
    // The mirror served the content: the manifest by digest and the blobs. Docker 20.10 was
    // seen twice in CI fetching only the blobs there, with no manifest request in the mirror's
    // log (cause not found; the pull came from the mirror all the same), so the manifest line
    // is not required, only content by digest.
    let requests = request_lines(&mirror_log);
    assert!(
        requests.iter().any(|r| r.contains(&manifest_line)
            || r.starts_with("GET /v2/stowage-test/beta/blobs/sha256:")),
        "no content of beta in the mirror's requests: {requests:#?}"
    );
    // The local name is the origin's, pointing at the pinned content.
    assert!(env.has_image(&name));
    // And so is the digest reference: a workload that names the image by digest under its
    // origin's name (`docker run origin/repo@sha256:...`) finds it here.
    let by_digest = format!("{}/stowage-test/beta@{digest}", env.plain);
    assert_eq!(
        env.image_id(&by_digest),
        env.image_id(&name),
        "{by_digest} does not name the pulled image"
    );
    // What that cost at the origin: the engine sent no manifest GET (which Docker Hub counts
    // as a pull) and fetched no blob; Docker's stores send a HEAD, Podman nothing.
    let engine = env.plain_requests_by_engine(mark);
    assert!(
        engine
            .iter()
            .all(|r| r.starts_with("HEAD ") || r == "GET /v2/ HTTP/1.1"),
        "{engine:#?}"
    );
    eprintln!("origin requests by the engine after a mirror pull: {engine:?}");

    // The mirror goes away: the origin serves the same digest.
    drop(mirror);
    // Gone under every name, the mirror's digest name included.
    env.purge_images(std::slice::from_ref(&name));
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = crate::support::report(&out);
    let e = entry(&report, &name);
    assert_eq!(e["from"], env.plain.as_str(), "{e:#}");
    assert_eq!(e["digest"], digest.as_str());
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("mirror failed, trying the next source"),
        "{stderr}"
    );
    env.remove_images(&[name]);
}

/// A mirror that serves its origin under a path (a Harbor proxy-cache project): the content
/// comes from `<mirror>/<path>/<repository>@<digest>` while the origin is down, and the image
/// is named by its origin name. Here the plain registry's `stowage-test/` plays the mirror's
/// path for an origin where nothing listens.
#[test]
fn a_path_prefixed_mirror_serves_the_pinned_digest_under_the_origin_name() {
    let _lock = engine_lock();
    let env = env();
    let digest = registry_digest(&env, "beta:1");
    let origin = format!("127.0.0.1:{}", free_port());
    let name = format!("{origin}/beta:1");
    env.purge_images(&[name.clone(), env.plain_image("beta:1")]);
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let mirror = format!("{}/stowage-test", env.plain);
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!("[[registry]]\nhost = \"{origin}\"\nmirrors = [\"{mirror}\"]\n");
    std::fs::write(&config, text).unwrap();
    scratch.write(
        "stowage.lock",
        &format!("version = 1\n\n[[image]]\nname = \"{name}\"\ndigest = \"{digest}\"\n"),
    );

    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let e = entry(&report, &name);
    assert_eq!(e["from"], mirror.as_str(), "{e:#}");
    assert_eq!(e["digest"], digest.as_str(), "{e:#}");
    assert!(env.has_image(&name), "named by its origin name");
    let (_, status) = run_json(&env, &config, &["status", "--json"]);
    assert_eq!(
        entry(&status, &name)["local_digest"],
        digest.as_str(),
        "{status:#}"
    );

    // Present under the mirror's name with the pinned digest: nothing to pull again.
    let (code, plan) = run_json(&env, &config, &["plan", "--json"]);
    assert_eq!(code, 0, "{plan:#}");
    assert_eq!(entry(&plan, &name)["action"], "keep", "{plan:#}");
    env.purge_images(&[name]);
}

#[test]
fn a_multi_platform_image_is_pulled_for_the_platform_asked() {
    let _lock = engine_lock();
    let env = env();
    let name = env.plain_image("multi:1");
    env.purge_images(std::slice::from_ref(&name));
    let arm64 = registry_digest(&env, "multi-arm64:1");
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    let text = std::fs::read_to_string(&config).unwrap().replace(
        &format!("name = \"{name}\"\n"),
        &format!("name = \"{name}\"\nplatform = \"linux/arm64\"\n"),
    );
    std::fs::write(&config, text).unwrap();
    let (code, report) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    let e = entry(&report, &name);
    // The platform's manifest digest, never the index's: the same digest the engine records.
    assert_eq!(e["digest"], arm64.as_str(), "{e:#}");
    assert!(
        env.repo_digests(&name).iter().any(|d| d.ends_with(&arm64)),
        "{:?}",
        env.repo_digests(&name)
    );
    // And a second run finds it pinned and present: no drift, nothing to do.
    let (_, status) = run_json(&env, &config, &["status", "--json"]);
    let s = entry(&status, &name);
    assert_eq!(
        (s["drift"].as_bool(), s["action"].as_str()),
        (Some(false), Some("keep")),
        "{s:#}"
    );
    assert_eq!(s["registry"]["digest"], arm64.as_str());
    env.purge_images(&[name]);
}

#[test]
fn a_registry_that_cannot_be_asked_leaves_the_present_image_alone() {
    let _lock = engine_lock();
    let env = env();
    // A registry of our own, serving the plain one's content, that the test can stop.
    let port = free_port();
    let scratch = Scratch::new();
    let registry = Registry::start(scratch.dir.path(), port, &env.plain_storage, None, true);
    let name = format!("127.0.0.1:{port}/stowage-test/gamma:1");
    let config = scratch.config("retries = 0", std::slice::from_ref(&name));
    with_pin(&config, &name, "follow");
    let (code, first) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{first:#}");
    let id = env.image_id(&name).expect("pulled");
    drop(registry);

    // The tag cannot be checked: the image stays as it is, and the run still succeeds.
    let (code, second) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{second:#}");
    let e = entry(&second, &name);
    assert_eq!(
        (e["action"].as_str(), e["result"].as_str()),
        (Some("keep"), Some("kept")),
        "{e:#}"
    );
    assert!(
        e["reason"]
            .as_str()
            .unwrap()
            .contains("keeping the present image"),
        "{e:#}"
    );
    assert_eq!(env.image_id(&name).as_deref(), Some(id.as_str()));
    // `pin` cannot resolve it either, and changes nothing: an existing lock, which also
    // locks an image that does resolve, stays byte for byte.
    let good = env.plain_image("alpha:1");
    let lock_path = scratch.dir.path().join("stowage.lock");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("pin = \"follow\"\n", "")
        + &format!("[[image]]\nname = \"{good}\"\n");
    std::fs::write(&config, text).unwrap();
    let before = format!(
        "version = 1\n\n[[image]]\nname = \"{good}\"\ndigest = \"sha256:{}\"\n\n[[image]]\nname = \"{name}\"\ndigest = \"sha256:{}\"\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    std::fs::write(&lock_path, &before).unwrap();
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(std::fs::read_to_string(&lock_path).unwrap(), before);
    // With `require_lock`, a missing lock is an error rather than a quiet change of pin modes.
    std::fs::remove_file(&lock_path).unwrap();
    let text = std::fs::read_to_string(&config).unwrap().replacen(
        "[pull]\n",
        "[pin]\nrequire_lock = true\n[pull]\n",
        1,
    );
    std::fs::write(&config, text).unwrap();
    let out = env.stowage(&config).arg("check").output().unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("pin.require_lock: the lock file"),
        "{out:?}"
    );
    env.purge_images(&[name]);
}

/// The text of the registry log at `path` once it holds `needle`, or after 10 s.
fn wait_for_log(path: &std::path::Path, needle: &str) -> String {
    let read = || std::fs::read_to_string(path).unwrap_or_default();
    crate::support::poll(Duration::from_secs(10), || {
        Some(read()).filter(|text| text.contains(needle))
    })
    .unwrap_or_else(read)
}

/// A registry log's requests, one `METHOD uri` per line, for failure messages.
fn request_lines(log: &str) -> Vec<String> {
    let field = |line: &str, key: &str| {
        line.split(key)
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .map(|v| v.trim_matches('"').to_owned())
    };
    log.lines()
        .filter_map(|l| {
            Some(format!(
                "{} {}",
                field(l, "http.request.method=")?,
                field(l, "http.request.uri=")?
            ))
        })
        .collect()
}

#[test]
fn a_moved_tag_is_adopted_only_after_min_digest_age() {
    let _lock = engine_lock();
    let env = env();
    env.point_tag("moving-cooled:1", "alpha:1");
    let name = env.plain_image("moving-cooled:1");
    env.remove_images(std::slice::from_ref(&name));
    let d1 = registry_digest(&env, "alpha:1");
    let d2 = registry_digest(&env, "alpha:2");
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&name));
    with_pin(&config, &name, "follow");
    let text = std::fs::read_to_string(&config).unwrap();
    let age = "min_digest_age = \"1h\"\n";
    std::fs::write(
        &config,
        text.replace("pin = \"follow\"\n", &format!("pin = \"follow\"\n{age}")),
    )
    .unwrap();
    // Missing: pulled at once.
    let (code, first) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{first:#}");
    assert_eq!(entry(&first, &name)["digest"], d1.as_str());

    env.point_tag("moving-cooled:1", "alpha:2");
    let (code, second) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{second:#}");
    let e = entry(&second, &name);
    assert_eq!(e["result"], "kept", "{e:#}");
    assert_eq!(e["cooldown"]["digest"], d2.as_str(), "{e:#}");
    assert!(env.repo_digests(&name).iter().any(|d| d.ends_with(&d1)));
    // `status` says when the new digest is adopted.
    let (_, status) = run_json(&env, &config, &["status", "--json"]);
    assert_eq!(
        entry(&status, &name)["cooldown"]["eligible_at"],
        e["cooldown"]["eligible_at"],
        "{status:#}"
    );
    let out = env.stowage(&config).arg("status").output().unwrap();
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(table.contains("min_digest_age"), "{table}");

    // An hour later, as the saved sighting says (moved back by an hour here, rather than
    // waited for): the sighting counts across runs, and the digest is adopted.
    let state_path = scratch.dir.path().join("state.json");
    let mut state: Value =
        serde_json::from_str(&std::fs::read_to_string(&state_path).unwrap()).unwrap();
    let since = state["sightings"][&name]["since"]
        .as_i64()
        .expect("a saved sighting");
    state["sightings"][&name]["since"] = (since - 3600).into();
    std::fs::write(&state_path, state.to_string()).unwrap();
    let (code, third) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{third:#}");
    let e = entry(&third, &name);
    assert!(
        matches!(e["result"].as_str(), Some("pulled" | "tagged")),
        "{e:#}"
    );
    assert!(env.repo_digests(&name).iter().any(|d| d.ends_with(&d2)));
    env.remove_images(&[name]);
}
