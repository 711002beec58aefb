//! Signature verification against the real thing: images signed by cosign itself in the test
//! registry, verified by stowage before they are pinned or pulled, on the engine under test.

use std::path::Path;

use serde_json::Value;

use crate::support::{Env, Scratch, Signer, engine_lock, entry, env};

/// Runs stowage with `args` and reads its JSON report.
fn run_json(env: &Env, config: &Path, args: &[&str]) -> (i32, Value, String) {
    let out = env.stowage(config).args(args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let value = crate::support::report(&out);
    (out.status.code().unwrap_or(-1), value, stderr)
}

/// A config requiring `images` (with `extra` lines after each name), whose plain-registry
/// images must be signed with `key` (a `.pub` file).
fn signed_config(
    scratch: &Scratch,
    env: &Env,
    key: &Path,
    images: &[(&str, &str)],
) -> std::path::PathBuf {
    let names: Vec<String> = images.iter().map(|(n, _)| (*n).to_owned()).collect();
    let path = scratch.config("", &names);
    let mut text = std::fs::read_to_string(&path).unwrap();
    for (name, extra) in images {
        text = text.replace(
            &format!("name = \"{name}\"\n"),
            &format!("name = \"{name}\"\n{extra}"),
        );
    }
    text.push_str(&format!(
        "[[verify]]\nmatch = \"{}/**\"\nkeys = [\"{}\"]\n",
        env.plain,
        key.display()
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// A fresh image of the plain registry, named by tag (`host/stowage-test/fresh-..:1`), with
/// its repository and digest.
fn fresh(env: &Env) -> (String, String, String) {
    let repo = env.fresh_image(1);
    let name = format!("{}/{repo}:1", env.plain);
    let digest = env
        .plain_digest_name(&name)
        .and_then(|n| n.split_once('@').map(|(_, d)| d.to_owned()))
        .unwrap_or_else(|| panic!("no digest for {name}"));
    (name, repo, digest)
}

#[test]
fn signed_images_are_pinned_and_pulled_and_then_cost_no_request() {
    let _lock = engine_lock();
    let env = env();
    // gamma:1 and the index multi:1 were signed by the environment; multi is pulled for this
    // host's platform, whose digest only the signed index vouches for.
    let single = env.plain_image("gamma:1");
    let index = env.plain_image("multi:1");
    assert!(
        env.cosign_verifies(Signer::Cosign2, &env.cosign_key, &single),
        "cosign itself verifies it"
    );
    env.remove_images(&[single.clone(), index.clone()]);
    let scratch = Scratch::new();
    let config = signed_config(
        &scratch,
        &env,
        &env.cosign_pub(),
        &[(&single, ""), (&index, "")],
    );
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lock = std::fs::read_to_string(scratch.dir.path().join("stowage.lock")).unwrap();
    assert_eq!(lock.matches("signed_by = \"sha256:").count(), 2, "{lock}");

    let (code, report, stderr) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    for name in [&single, &index] {
        let e = entry(&report, name);
        assert_eq!(e["result"], "pulled", "{e:#}");
        assert_eq!(e["signature"]["result"], "verified", "{e:#}");
        assert!(env.has_image(name), "{name}");
    }

    // Present, pinned and verified: neither stowage nor the engine asks the registry.
    let mark = env.plain_log_mark();
    let (code, report, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    for name in [&single, &index] {
        let e = entry(&report, name);
        assert_eq!(e["result"], "kept", "{e:#}");
        assert_eq!(e["signature"]["cached"], true, "{e:#}");
    }
    assert_eq!(env.plain_requests(mark), Vec::<String>::new());
    // `status` shows the verification the state file remembers.
    let (_, status, _) = run_json(&env, &config, &["status", "--json"]);
    assert_eq!(
        entry(&status, &single)["signature"]["result"],
        "verified",
        "{status:#}"
    );
    env.remove_images(&[single, index]);
}

#[test]
fn unsigned_images_and_images_signed_with_another_key_are_refused() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (unsigned, _, unsigned_digest) = fresh(&env);
    let (stranger, _, _) = fresh(&env);
    let other_key = env.cosign_key_pair(scratch.dir.path(), "other");
    env.cosign_sign(&other_key, &stranger);
    let first_pull = "pin = \"first-pull\"\n";
    let config = signed_config(
        &scratch,
        &env,
        &env.cosign_pub(),
        &[(&unsigned, first_pull), (&stranger, first_pull)],
    );
    let (code, report, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_ne!(code, 0, "{report:#}");
    let e = entry(&report, &unsigned);
    assert_eq!(
        (e["result"].as_str(), e["class"].as_str()),
        (Some("failed"), Some("signature")),
        "{e:#}"
    );
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains(&unsigned_digest),
        "names the digest: {message}"
    );
    assert!(
        message.contains("cosign.pub"),
        "names the keys tried: {message}"
    );
    assert!(
        message.contains("no signature"),
        "says what was found: {message}"
    );
    let e = entry(&report, &stranger);
    assert_eq!(e["class"], "signature", "{e:#}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("not made with any of these keys"),
        "{e:#}"
    );
    assert!(!env.has_image(&unsigned) && !env.has_image(&stranger));
    // Nothing was pinned, and `pin` refuses to lock them.
    let state: Value = serde_json::from_str(
        &std::fs::read_to_string(scratch.dir.path().join("state.json")).unwrap_or("{}".into()),
    )
    .unwrap();
    for kept in ["first_pull", "verified"] {
        assert!(
            state[kept]
                .as_object()
                .is_none_or(serde_json::Map::is_empty),
            "{kept}: {state:#}"
        );
    }
    let lockable = Scratch::new();
    let config = signed_config(
        &lockable,
        &env,
        &env.cosign_pub(),
        &[(&unsigned, ""), (&stranger, "")],
    );
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    // The tests' logs are JSON: each image's refusal is an error event of its own.
    let refusals = stderr
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| {
            v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("signature: "))
        })
        .count();
    assert_eq!(refusals, 2, "{stderr}");
    assert!(!lockable.dir.path().join("stowage.lock").exists());
}

#[test]
fn a_tag_moved_to_an_unsigned_digest_keeps_the_verified_image_under_follow() {
    for signer in [Signer::Cosign2, Signer::Cosign3] {
        a_tag_moved_to_an_unsigned_digest_keeps_the_verified_image(signer);
    }
}

fn a_tag_moved_to_an_unsigned_digest_keeps_the_verified_image(signer: Signer) {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (name, _, _) = fresh(&env);
    env.cosign_sign_as(signer, &env.cosign_key, &name);
    let config = signed_config(
        &scratch,
        &env,
        &env.cosign_pub(),
        &[(&name, "pin = \"follow\"\n")],
    );
    let (code, report, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        entry(&report, &name)["signature"]["result"],
        "verified",
        "{report:#}"
    );
    let verified = env.image_id(&name).expect("pulled");

    // The tag moves to new, unsigned content.
    let (other, _, _) = fresh(&env);
    env.publish(&other, &name);
    let (_, report, _) = run_json(&env, &config, &["pull", "--json"]);
    let e = entry(&report, &name);
    assert_eq!(e["result"], "kept", "{e:#}");
    assert_eq!(e["signature"]["result"], "refused", "{e:#}");
    assert_eq!(e["signature"]["found"], "no-signature", "{e:#}");
    assert_eq!(env.image_id(&name).as_deref(), Some(verified.as_str()));
    // The verified image, and the moved tag's content that publishing left behind.
    env.remove_images(std::slice::from_ref(&name));
    env.purge_images(&[verified]);
}

#[test]
fn a_lock_whose_digest_lost_its_signature_fails_pin_check() {
    for signer in [Signer::Cosign2, Signer::Cosign3, Signer::Cosign3Legacy] {
        a_lock_whose_digest_lost_its_signature_fails(signer);
    }
}

fn a_lock_whose_digest_lost_its_signature_fails(signer: Signer) {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (name, repo, digest) = fresh(&env);
    env.cosign_sign_as(signer, &env.cosign_key, &name);
    let config = signed_config(&scratch, &env, &env.cosign_pub(), &[(&name, "")]);
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let check = || {
        env.stowage(&config)
            .args(["pin", "--check"])
            .output()
            .unwrap()
    };
    let out = check();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    env.drop_signature(&repo, &digest);
    let out = check();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("signature:") && stderr.contains("no signature"),
        "{stderr}"
    );
    assert!(stderr.contains("cannot be checked"), "{stderr}");
}

/// The signature requests stowage sent for one new digest: the referrers API (404 on
/// distribution), the fallback tag, each listed artifact and its bundle, the `.sig` tag and
/// its payloads.
fn signature_requests(requests: &[String]) -> Vec<&String> {
    requests
        .iter()
        .filter(|r| {
            r.contains("/referrers/") || r.contains("/manifests/sha256") || r.contains("/blobs/")
        })
        .collect()
}

#[test]
fn cosign3_signatures_bundles_and_legacy_are_verified_and_then_cost_no_request() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (bundled, _, _) = fresh(&env);
    let (legacy, _, _) = fresh(&env);
    env.cosign_sign_as(Signer::Cosign3, &env.cosign_key, &bundled);
    env.cosign_sign_as(Signer::Cosign3Legacy, &env.cosign_key, &legacy);
    for name in [&bundled, &legacy] {
        assert!(
            env.cosign_verifies(Signer::Cosign3, &env.cosign_key, name),
            "cosign 3 itself verifies {name}"
        );
    }
    let config = signed_config(
        &scratch,
        &env,
        &env.cosign_pub(),
        &[(&bundled, ""), (&legacy, "")],
    );
    let mark = env.plain_log_mark();
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let lock = std::fs::read_to_string(scratch.dir.path().join("stowage.lock")).unwrap();
    assert_eq!(lock.matches("signed_by = \"sha256:").count(), 2, "{lock}");
    // A bundle: referrers API (404), fallback tag, its artifact, the bundle, the `.sig` tag
    // (404): 5. Legacy: referrers, fallback tag (404), `.sig` tag, its payload: 4.
    let requests = env.plain_requests_by_stowage(mark);
    assert_eq!(signature_requests(&requests).len(), 9, "{requests:#?}");

    let (code, report, stderr) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}\n{stderr}");
    for name in [&bundled, &legacy] {
        let e = entry(&report, name);
        assert_eq!(e["result"], "pulled", "{e:#}");
        assert_eq!(e["signature"]["result"], "verified", "{e:#}");
    }
    let mark = env.plain_log_mark();
    let (code, report, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_eq!(code, 0, "{report:#}");
    for name in [&bundled, &legacy] {
        assert_eq!(
            entry(&report, name)["signature"]["cached"],
            true,
            "{report:#}"
        );
    }
    assert_eq!(env.plain_requests(mark), Vec::<String>::new());
    env.remove_images(&[bundled, legacy]);
}

#[test]
fn cosign3_bundles_by_another_key_and_attestations_are_refused() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (stranger, _, _) = fresh(&env);
    let (attested, _, _) = fresh(&env);
    let other_key = env.cosign_key_pair(scratch.dir.path(), "other");
    env.cosign_sign_as(Signer::Cosign3, &other_key, &stranger);
    // Attested with the policy's own key: the same artifact type as a signature.
    env.cosign_attest(&env.cosign_key, &attested);
    let first_pull = "pin = \"first-pull\"\n";
    let config = signed_config(
        &scratch,
        &env,
        &env.cosign_pub(),
        &[(&stranger, first_pull), (&attested, first_pull)],
    );
    let (code, report, _) = run_json(&env, &config, &["pull", "--json"]);
    assert_ne!(code, 0, "{report:#}");
    let e = entry(&report, &stranger);
    assert_eq!(
        (e["class"].as_str(), e["signature"]["found"].as_str()),
        (Some("signature"), Some("wrong-key")),
        "{e:#}"
    );
    let e = entry(&report, &attested);
    assert_eq!(
        (e["class"].as_str(), e["signature"]["found"].as_str()),
        (Some("signature"), Some("bad-payload")),
        "{e:#}"
    );
    let message = e["message"].as_str().unwrap();
    assert!(
        message.contains("attestation") && message.contains("slsa"),
        "{message}"
    );
    assert!(!env.has_image(&stranger) && !env.has_image(&attested));
}

#[test]
fn keyless_signatures_are_verified_by_identity_and_others_refused_with_the_reason() {
    use crate::support::sigstore::{LogEntry, SIGN_PREDICATE, TestSigstore, now, statement};
    const WORKFLOW: &str =
        "https://github.com/org/app/.github/workflows/release.yml@refs/heads/main";
    const ACTIONS: &str = "https://token.actions.githubusercontent.com";
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let sigstore = TestSigstore::new("fulcio");
    let root = scratch.dir.path().join("trusted_root.json");
    std::fs::write(&root, sigstore.trusted_root()).unwrap();
    let sign = |repo: &str, digest: &str, subject: &str, typed: bool| {
        let leaf = sigstore.fresh_leaf(subject, ACTIONS);
        let bundle = sigstore.bundle(
            &leaf,
            &statement(digest, SIGN_PREDICATE),
            now() - 60,
            LogEntry::Logged,
        );
        env.push_bundle(repo, digest, &bundle, typed);
    };
    let (ours, ours_repo, ours_digest) = fresh(&env);
    let (untyped, untyped_repo, untyped_digest) = fresh(&env);
    let (fork, fork_repo, fork_digest) = fresh(&env);
    sign(&ours_repo, &ours_digest, WORKFLOW, true);
    // The fallback index's entry without its artifact type (cosign #4641) is still read.
    sign(&untyped_repo, &untyped_digest, WORKFLOW, false);
    let forked = "https://github.com/fork/app/.github/workflows/release.yml@refs/heads/main";
    sign(&fork_repo, &fork_digest, forked, true);

    let path = scratch.config("", &[ours.clone(), untyped.clone(), fork.clone()]);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "[[verify]]\nmatch = \"{}/**\"\ntrust_root = \"{}\"\n\
         identities = [{{ issuer = \"{ACTIONS}\", subject = \"{WORKFLOW}\" }}]\n",
        env.plain,
        root.display()
    ));
    std::fs::write(&path, text).unwrap();

    let out = env.stowage(&path).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(forked) && stderr.contains("not one of these identities"),
        "{stderr}"
    );
    let (code, report, stderr) = run_json(&env, &path, &["pull", "--json"]);
    assert_ne!(code, 0, "{report:#}\n{stderr}");
    for name in [&ours, &untyped] {
        let e = entry(&report, name);
        assert_eq!(e["result"], "pulled", "{e:#}");
        assert_eq!(e["signature"]["identity"]["subject"], WORKFLOW, "{e:#}");
        assert_eq!(e["signature"]["identity"]["issuer"], ACTIONS, "{e:#}");
    }
    let e = entry(&report, &fork);
    assert_eq!(
        (e["class"].as_str(), e["signature"]["found"].as_str()),
        (Some("signature"), Some("untrusted")),
        "{e:#}"
    );
    assert!(!env.has_image(&fork));
    // Remembered by identity: no request on the next run.
    let mark = env.plain_log_mark();
    let (_, report, _) = run_json(&env, &path, &["pull", "--json"]);
    assert_eq!(
        entry(&report, &ours)["signature"]["cached"],
        true,
        "{report:#}"
    );
    assert!(
        env.plain_requests(mark)
            .iter()
            .all(|r| r.contains(&fork_repo)),
        "only the refused image is asked about again"
    );
    env.remove_images(&[ours, untyped]);
}

#[test]
fn a_hostile_referrer_listing_costs_a_bounded_number_of_requests_and_no_memory() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    let (name, repo, digest) = fresh(&env);
    // A real signature by the policy's key, pushed first by cosign 3 itself...
    env.cosign_sign_as(Signer::Cosign3, &env.cosign_key, &name);
    let tag = env
        .plain_storage
        .join("docker/registry/v2/repositories")
        .join(&repo)
        .join("_manifests/tags")
        .join(format!("sha256-{}", digest.trim_start_matches("sha256:")))
        .join("current/link");
    let signed_index = std::fs::read_to_string(&tag).unwrap();
    // ...then a hostile artifact: 8 MiB behind a descriptor that says 100 bytes, and one
    // bundle as 500 layers, listed 40 times; it replaces the fallback index.
    let huge = vec![0u8; 8 * 1024 * 1024];
    let junk = br#"{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json"}"#;
    let mut layers: Vec<(&[u8], Option<u64>)> = vec![(&huge, Some(100))];
    layers.extend(std::iter::repeat_n((&junk[..], None), 500));
    env.push_referrer(&repo, &digest, &layers, 40, true);
    let config = signed_config(&scratch, &env, &env.cosign_pub(), &[(&name, "")]);
    let mark = env.plain_log_mark();
    let out = env.stowage(&config).arg("pin").output().unwrap();
    // Refused (the real bundle is no longer listed), after a few requests.
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let requests = env.plain_requests_by_stowage(mark);
    assert!(requests.len() <= 8, "{requests:#?}");
    // The real index listed again beside it: verified, the hostile one costs nothing more.
    std::fs::write(&tag, signed_index).unwrap();
    let out = env.stowage(&config).arg("pin").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}
