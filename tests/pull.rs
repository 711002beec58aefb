//! `stowage pull` and `stowage plan` against the real engine and registries.

use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use crate::support::entry as by_image;
use crate::support::{Daemon, Registry, Scratch, engine_lock, env, free_port};

fn json(out: &std::process::Output) -> Value {
    crate::support::report(out)
}

#[test]
fn a_state_file_that_cannot_be_written_fails_the_pull_once_with_its_cause() {
    let _lock = engine_lock();
    let env = env();
    let image = env.plain_image("alpha:1");
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&image));
    // The state file's directory is a file.
    let blocker = config.with_file_name("blocker");
    std::fs::write(&blocker, "").unwrap();
    let text = std::fs::read_to_string(&config).unwrap();
    let state = config.with_file_name("state.json");
    let text = text.replace(
        &state.display().to_string(),
        &blocker.join("state.json").display().to_string(),
    );
    std::fs::write(&config, text).unwrap();
    let out = env.stowage(&config).arg("pull").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}{stderr}");
    assert!(stdout.contains("\n1 image: "), "{stdout}");
    let cause = format!("{} is a file, not a directory", blocker.display());
    assert!(
        stderr.contains(&format!("could not be written: {cause}")),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("cannot save the state file").count(),
        1,
        "{stderr}"
    );
    assert!(!stderr.contains("File exists"), "{stderr}");
}

#[test]
fn plan_changes_nothing_and_pull_converges() {
    let _lock = engine_lock();
    let env = env();
    let images = vec![env.plain_image("alpha:1"), env.plain_image("beta:1")];
    env.remove_images(&images);
    let scratch = Scratch::new();
    let config = scratch.config("", &images);

    let out = env
        .stowage(&config)
        .args(["plan", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let plan = json(&out);
    assert_eq!(by_image(&plan, &images[0])["state"], "missing");
    assert_eq!(by_image(&plan, &images[0])["action"], "pull");
    assert!(!env.has_image(&images[0]), "plan must not pull");
    // As scripts use them: something to do is exit 1 with --exit-code, and only then.
    let code = |args: &[&str]| {
        env.stowage(&config)
            .args(args)
            .output()
            .unwrap()
            .status
            .code()
    };
    assert_eq!(code(&["plan", "--exit-code"]), Some(1));
    assert_eq!(code(&["status", "--offline", "--exit-code"]), Some(1));
    assert_eq!(code(&["status", "--offline"]), Some(0));

    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let report = json(&out);
    for name in &images {
        let entry = by_image(&report, name);
        assert_eq!(entry["result"], "pulled", "{entry:#}");
        assert_eq!(entry["updated"], true);
        assert!(entry["digest"].as_str().unwrap().starts_with("sha256:"));
        assert!(env.has_image(name));
    }
    assert_eq!(report["summary"]["pulled"], 2);
    assert_eq!(code(&["plan", "--exit-code"]), Some(0));
    assert_eq!(code(&["status", "--exit-code"]), Some(0));

    // Second time: present at their first-pull pins, so left alone (no registry request).
    let out = env.stowage(&config).arg("pull").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains(&format!("kept        {}", images[0])),
        "{text}"
    );
    assert!(
        text.ends_with("2 images: 0 pulled, 0 up to date, 0 tagged, 2 kept, 0 failed\n"),
        "{text}"
    );

    let out = env.stowage(&config).arg("plan").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("0 to pull, 0 to tag, 2 to keep, 0 failing"),
        "{text}"
    );
    env.remove_images(&images);
}

#[test]
fn latest_follows_its_tag_and_an_unchanged_tag_is_kept() {
    let _lock = engine_lock();
    let env = env();
    // Make a `latest` tag in the registry from an existing image.
    let src = env.plain_image("gamma:1");
    let latest = format!("{}/stowage-test/gamma", env.plain);
    env.publish(&src, &latest);
    env.remove_images(&[src.clone(), latest.clone()]);
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&latest));
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let entry = by_image(&json(&out), &format!("{latest}:latest")).clone();
    assert_eq!(entry["pin"], "follow");
    assert_eq!(entry["result"], "pulled");
    // The tag has not moved: the next run checks it and pulls nothing.
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let entry = by_image(&json(&out), &format!("{latest}:latest")).clone();
    assert_eq!(entry["action"], "keep");
    assert_eq!(entry["result"], "kept");
    env.remove_images(&[src, latest]);
}

#[test]
fn good_images_are_pulled_and_each_bad_one_is_classified() {
    let _lock = engine_lock();
    let env = env();
    let good = env.plain_image("alpha:2");
    let missing = env.plain_image("does-not-exist:1");
    let private = format!("{}/stowage-test/private:1", env.auth);
    let down = format!("127.0.0.1:{}/stowage-test/alpha:1", free_port());
    let images = vec![good.clone(), missing.clone(), private.clone(), down.clone()];
    env.remove_images(&images);
    let scratch = Scratch::new();
    let config = scratch.config("concurrency = 2", &images);

    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out);
    assert_eq!(by_image(&report, &good)["result"], "pulled");
    assert!(env.has_image(&good));

    let nf = by_image(&report, &missing);
    assert_eq!(nf["result"], "failed");
    assert_eq!(nf["class"], "not-found");
    assert_eq!(nf["attempts"], 1, "not-found is not retried");
    assert!(
        nf["message"]
            .as_str()
            .unwrap()
            .starts_with(&format!("not found: {missing}"))
    );

    let auth = by_image(&report, &private);
    assert_eq!(auth["class"], "auth");
    assert_eq!(auth["attempts"], 1, "auth is not retried");
    assert!(
        auth["message"]
            .as_str()
            .unwrap()
            .contains(&format!("docker login {}", env.auth))
    );
    // The registry client's own words are in the JSON, not in the sentence.
    assert!(
        auth["detail"].as_str().is_some_and(|d| !d.is_empty()),
        "{auth:#}"
    );

    let net = by_image(&report, &down);
    assert_eq!(net["class"], "network");
    assert_eq!(
        net["attempts"], 2,
        "network failures are retried (retries = 1)"
    );
    assert_eq!(report["summary"]["failed"], 3);

    // The text form says the same, each failure's sentence under its image, within 80
    // columns (a pipe has no terminal width).
    let out = env.stowage(&config).arg("pull").output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    let sentence = |image: &str| {
        let mut lines = text
            .lines()
            .skip_while(|l| *l != format!("FAILED      {image}"));
        assert!(lines.next().is_some(), "no FAILED line for {image}: {text}");
        lines
            .take_while(|l| l.starts_with("            "))
            .map(str::trim)
            .collect::<Vec<_>>()
            .join(" ")
    };
    let auth = sentence(&private);
    assert!(
        auth.starts_with(&format!("auth: registry {}", env.auth)),
        "{auth}"
    );
    // The advice, not the registry client's raw words (those are in --json's detail). Run
    // here as root, by hand: the advice is to run as the daemon's user, or log in for it.
    assert!(
        auth.contains(&format!("docker login {}", env.auth)) && !auth.contains("Not authorized"),
        "{auth}"
    );
    assert!(sentence(&down).starts_with("network:"), "{text}");
    assert!(text.lines().all(|l| l.len() <= 80), "{text}");
    // Commands that only show ask once: no retries, no backoff to wait through.
    for cmd in ["status", "plan"] {
        let out = env.stowage(&config).arg(cmd).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("will retry"), "{cmd}: {stderr}");
    }
    env.remove_images(&[good]);
}

/// A host without CA certificates (a minimal root, a distroless image): reqwest cannot build
/// its default client there, and oci-client panics. Simulated by pointing the certificate
/// search at files that do not exist, which is all the verifier then reads.
#[test]
fn a_host_without_ca_certificates_pulls_from_plain_registries_and_names_the_missing_bundle() {
    let _lock = engine_lock();
    let env = env();
    let good = env.plain_image("alpha:2");
    let missing = env.plain_image("does-not-exist:1");
    let private = format!("{}/stowage-test/private:1", env.auth);
    let https = "registry.invalid/team/app:1".to_owned();
    let images = vec![
        good.clone(),
        missing.clone(),
        private.clone(),
        https.clone(),
    ];
    env.remove_images(&images);
    let scratch = Scratch::new();
    let config = scratch.config("", &images);
    let nowhere = scratch.dir.path().join("no-ca-certificates.crt");

    let out = env
        .stowage(&config)
        .env("SSL_CERT_FILE", &nowhere)
        .env("SSL_CERT_DIR", &nowhere)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report = json(&out);
    assert_eq!(by_image(&report, &good)["result"], "pulled", "{report:#}");
    assert!(env.has_image(&good));
    // Plain-HTTP answers are classified as with certificates.
    assert_eq!(by_image(&report, &missing)["class"], "not-found");
    assert_eq!(by_image(&report, &private)["class"], "auth");
    let tls = by_image(&report, &https);
    assert_eq!(tls["class"], "network");
    assert_eq!(
        tls["attempts"], 1,
        "a missing bundle is not retried: {tls:#}"
    );
    let message = tls["message"].as_str().unwrap();
    assert_eq!(
        message,
        format!(
            "network: cannot talk to registry registry.invalid for {https}: no CA \
             certificates found at {}; install ca-certificates (registry registry.invalid is \
             spoken to over HTTPS); not retried",
            nowhere.display()
        )
    );
    assert!(!message.contains("insecure"), "{message}");
    env.remove_images(&[good]);
}

#[test]
fn credentials_from_a_config_json_are_used_and_never_printed() {
    let _lock = engine_lock();
    let env = env();
    let private = format!("{}/stowage-test/private:1", env.auth);
    env.remove_images(std::slice::from_ref(&private));
    let scratch = Scratch::new();
    let basic = |user: &str, pass: &str| {
        use std::io::Write;
        let mut enc = Vec::new();
        // base64 of "user:pass" via the coreutils tool, to stay independent of our code.
        let mut child = std::process::Command::new("base64")
            .arg("-w0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(format!("{user}:{pass}").as_bytes())
            .unwrap();
        enc.extend(child.wait_with_output().unwrap().stdout);
        String::from_utf8(enc).unwrap()
    };

    // Wrong password: auth failure, not retried, password nowhere in the output.
    scratch.write(
        "docker.json",
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            env.auth,
            basic(&env.user, "wrong-pass-xyz")
        ),
    );
    let config = scratch.config(
        "credentials = \"docker.json\"",
        std::slice::from_ref(&private),
    );
    let out = env
        .stowage(&config)
        // Trace level: a dependency that starts logging request headers is caught too.
        .args(["--log-level", "trace", "pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert_eq!(by_image(&json(&out), &private)["class"], "auth");
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains("wrong-pass-xyz"), "{all}");
    assert!(!all.contains(&basic(&env.user, "wrong-pass-xyz")), "{all}");

    // Right password: pulled.
    scratch.write(
        "docker.json",
        &format!(
            r#"{{"auths":{{"{}":{{"auth":"{}"}}}}}}"#,
            env.auth,
            basic(&env.user, &env.password)
        ),
    );
    let out = env
        .stowage(&config)
        // Trace level: a dependency that starts logging request headers is caught too.
        .args(["--log-level", "trace", "pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(env.has_image(&private));
    let all = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!all.contains(&env.password), "{all}");
    assert!(!all.contains(&basic(&env.user, &env.password)), "{all}");

    // Nor anywhere else: every report, at trace level, the state and lock files, and the
    // daemon's logs and metrics.
    let secrets = [env.password.clone(), basic(&env.user, &env.password)];
    let mut seen = String::new();
    for args in [
        &["plan", "--json"][..],
        &["status", "--json"],
        &["pin"],
        &["pin", "--check"],
        &["prune", "--dry-run", "--json"],
        &["check"],
    ] {
        let out = env
            .stowage(&config)
            .args(["--log-level", "trace"])
            .args(args)
            .output()
            .unwrap();
        seen += &format!(
            "{args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    for file in ["state.json", "stowage.lock"] {
        seen += &std::fs::read_to_string(scratch.dir.path().join(file)).unwrap_or_default();
    }
    let metrics_port = crate::support::free_port();
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!("[metrics]\nlisten = \"127.0.0.1:{metrics_port}\"\n");
    std::fs::write(&config, text).unwrap();
    let mut cmd = env.stowage(&config);
    cmd.args(["--log-level", "trace"]);
    let daemon = Daemon::start(cmd, &["run"]);
    daemon.wait_for("ready", std::time::Duration::from_secs(60), |v| {
        crate::support::is_event(v, "ready", None)
    });
    seen += &crate::support::http_get(metrics_port, "/metrics").1;
    let (_, logs) = daemon.terminate(std::time::Duration::from_secs(60));
    seen += &format!("{logs:?}");
    assert!(seen.contains("stowage_"), "the metrics were read");
    for secret in &secrets {
        assert!(
            !seen.contains(secret.as_str()),
            "a credential leaked: {seen}"
        );
    }
    env.remove_images(&[private]);
}

#[test]
fn a_registry_that_comes_back_is_retried_and_recovers() {
    let _lock = engine_lock();
    let env = env();
    let port = free_port();
    let name = format!("127.0.0.1:{port}/stowage-test/beta:1");
    env.remove_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    let config = scratch.config(
        "retries = 30\nbackoff = \"200ms\"\nbackoff_max = \"400ms\"",
        std::slice::from_ref(&name),
    );
    let pull = Daemon::start(env.stowage(&config), &["pull", "--json"]);
    // The registry is down for the first attempts; once one has failed and been scheduled for
    // retry, a registry serving the plain one's storage comes up on that port.
    let retry = pull.wait_for("a retry", Duration::from_secs(90), |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("resolve failed, will retry"))
    });
    assert_eq!(retry["class"], "network", "{retry:#}");
    let registry = Registry::start(scratch.dir.path(), port, &env.plain_storage, None, false);
    let (code, _logs, stdout) = pull.wait(Duration::from_secs(90));
    drop(registry);
    assert_eq!(code, 0, "{stdout}");
    let out: Value = serde_json::from_str(&stdout).unwrap();
    let entry = by_image(&out, &name).clone();
    assert_eq!(entry["result"], "pulled");
    assert!(env.has_image(&name));
    env.remove_images(&[name]);
}

#[test]
fn an_engine_that_is_down_is_a_clear_error() {
    let env = env();
    let scratch = Scratch::new();
    let config = scratch.config("", &[env.plain_image("alpha:1")]);
    for cmd in ["pull", "plan"] {
        let out = env
            .stowage(&config)
            .args(["--docker-host", "unix:///nonexistent/docker.sock", cmd])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{cmd}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains(
                "\"message\":\"engine: cannot reach the Docker engine at unix:///nonexistent/docker.sock"
            ),
            "{cmd}: {stderr}"
        );
    }
}

/// The OS's reason an engine cannot be reached is kept, with what to do about it: nothing
/// listening (a socket left by a stopped engine, a closed port), or a socket this user may not
/// use (the `docker` group).
#[test]
fn an_unreachable_engine_says_why_and_what_to_do() {
    let env = env();
    let scratch = Scratch::new();
    let config = scratch.config("", &[env.plain_image("alpha:1")]);
    let stale = scratch.dir.path().join("stale.sock");
    drop(std::os::unix::net::UnixListener::bind(&stale).unwrap());
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    for host in [
        format!("unix://{}", stale.display()),
        format!("tcp://127.0.0.1:{closed}"),
    ] {
        let out = env
            .stowage(&config)
            .args(["--docker-host", &host, "status"])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("Connection refused") && stderr.contains("nothing listens there"),
            "{host}: {stderr}"
        );
        // The OS's reason, without the HTTP client's layers above it.
        assert!(!stderr.contains("hyper"), "{host}: {stderr}");
    }
    // `host:port` without a scheme is TCP, as the docker CLI reads it.
    let out = env
        .stowage(&config)
        .args(["--docker-host", &format!("127.0.0.1:{closed}"), "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains(&format!("tcp://127.0.0.1:{closed}")),
        "{out:?}"
    );

    // As a user outside the socket's group (root passes any permission check).
    let runuser = std::path::Path::new("/usr/sbin/runuser");
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !is_root || !runuser.exists() {
        eprintln!("skipped the permission case: needs root and runuser");
        return;
    }
    let private = scratch.dir.path().join("private.sock");
    let _listener = std::os::unix::net::UnixListener::bind(&private).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o660)).unwrap();
    for dir in [scratch.dir.path(), config.as_path()] {
        let mode = if dir.is_dir() { 0o755 } else { 0o644 };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let out = std::process::Command::new(runuser)
        .args(["-u", "nobody", "--"])
        .arg(assert_cmd::cargo::cargo_bin!("stowage"))
        .arg("--config")
        .arg(&config)
        .args([
            "--docker-host",
            &format!("unix://{}", private.display()),
            "status",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("Permission denied") && stderr.contains("usermod -aG docker"),
        "{stderr}"
    );
}

#[test]
fn unqualified_names_are_shown_fully_qualified_with_a_hint() {
    let _lock = engine_lock();
    let env = env();
    let scratch = Scratch::new();
    // No Docker Hub here: the name resolves to docker.io and fails; the message must say so.
    let config = scratch.config("retries = 0", &["stowage-no-such-image".to_string()]);
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = json(&out);
    let entry = by_image(&report, "docker.io/library/stowage-no-such-image:latest");
    let message = entry["message"].as_str().unwrap();
    assert!(
        message.contains("docker.io/library/stowage-no-such-image:latest")
            && message.contains("a name without a registry means Docker Hub"),
        "{message}"
    );
    // Written with its registry, the same image gets no such note.
    let config = scratch.config(
        "retries = 0",
        &["docker.io/library/stowage-no-such-image:1".to_string()],
    );
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    let report = json(&out);
    let entry = by_image(&report, "docker.io/library/stowage-no-such-image:1");
    let message = entry["message"].as_str().unwrap();
    assert!(!message.contains("means Docker Hub"), "{message}");
}

/// `stowage ARGS` on a terminal of its own (`script` from util-linux), with the test engine;
/// everything the terminal showed.
fn on_a_terminal(env: &crate::support::Env, config: &std::path::Path, args: &str) -> String {
    let line = format!(
        "{} --config {} {args}",
        assert_cmd::cargo::cargo_bin!("stowage").display(),
        config.display()
    );
    let out = std::process::Command::new("script")
        .args(["-qec", &line, "/dev/null"])
        .env("DOCKER_HOST", &env.docker_host)
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("stowage-tests-nocreds"),
        )
        .env_remove("JOURNAL_STREAM")
        .env_remove("STOWAGE_LOG")
        .output()
        .expect("script (util-linux) runs");
    assert!(out.status.success(), "{out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_pull_on_a_terminal_shows_progress_and_json_logs_never_do() {
    let _lock = engine_lock();
    let env = env();
    let image = env.plain_image("alpha:1");
    let scratch = Scratch::new();
    let config = scratch.config("", std::slice::from_ref(&image));
    env.remove_images(std::slice::from_ref(&image));
    let shown = on_a_terminal(&env, &config, "pull");
    assert!(shown.contains("images ["), "no progress bar: {shown}");
    assert!(shown.contains("1 image: 1 pulled"), "{shown}");
    // JSON logs are for machines, even on a terminal.
    env.remove_images(std::slice::from_ref(&image));
    let shown = on_a_terminal(&env, &config, "--log-format json pull");
    assert!(
        !shown.contains("images ["),
        "a bar among JSON logs: {shown}"
    );
    assert!(shown.contains("1 image: 1 pulled"), "{shown}");
    env.remove_images(&[image]);
}

#[test]
fn an_unreachable_registry_holds_up_no_other_image() {
    let _lock = engine_lock();
    let env = env();
    let good = env.plain_image("alpha:2");
    let down = format!("127.0.0.1:{}/stowage-test/alpha:1", free_port());
    env.remove_images(&[good.clone(), down.clone()]);
    let scratch = Scratch::new();
    // Down first: the other image must not wait for its retries (at least 5 s here).
    let config = scratch.config(
        "concurrency = 2\nretries = 1\nbackoff = \"10s\"\nbackoff_max = \"10s\"",
        &[down.clone(), good.clone()],
    );
    let pull = Daemon::start(env.stowage(&config), &["pull", "--json"]);
    let of = |v: &Value, image: &str| v["image"].as_str() == Some(image);
    let limit = Duration::from_secs(90);
    pull.wait_for("down's first failure", limit, |v| {
        of(v, &down)
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("resolve failed, will retry"))
    });
    pull.wait_for("the other image pulled", limit, |v| {
        of(v, &good) && v["message"] == "pulled"
    });
    // Down's retry is still waiting: its failure is the end of its turn, not of the plan.
    let ended = pull.count(|v| {
        of(v, &down)
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("resolve failed: network:"))
    });
    assert_eq!(ended, 0, "{:#?}", pull.logs());
    let (code, logs, stdout) = pull.wait(limit);
    assert_eq!(code, 1, "{stdout}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(by_image(&report, &good)["result"], "pulled");
    assert_eq!(by_image(&report, &down)["attempts"], 2, "{report:#}");
    // Said once per attempt: the first failure, then the last.
    let failures: Vec<&str> = logs
        .iter()
        .filter(|v| of(v, &down))
        .filter_map(|v| v["message"].as_str())
        .collect();
    assert_eq!(failures.len(), 2, "{failures:?}");
    env.remove_images(&[good]);
}
