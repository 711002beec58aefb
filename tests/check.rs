//! `stowage check` and command-line conventions; no engine needed.

use std::path::Path;

use assert_cmd::Command;

/// `stowage --config CONFIG ARGS`, run to its end.
fn run(config: &Path, args: &[&str]) -> std::process::Output {
    stowage()
        .arg("--config")
        .arg(config)
        .args(args)
        .output()
        .unwrap()
}

fn stowage() -> Command {
    let mut cmd = Command::new(assert_cmd::cargo::cargo_bin!("stowage"));
    cmd.env_remove("STOWAGE_CONFIG").env_remove("DOCKER_HOST");
    cmd
}

#[test]
fn a_valid_config_exits_zero() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let out = run(&example, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(
        stdout.contains("valid (4 images; no lock file)"),
        "{stdout}"
    );
}

#[test]
fn every_problem_is_listed_with_path_line_column_and_exit_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[pull]\nschedule = \"0 3 * *\"\nsplay = \"soon\"\n\n[[image]]\nname = \"Nginx\"\n",
    )
    .unwrap();
    let before = std::fs::read(&path).unwrap();
    let out = run(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    assert!(
        stderr.contains(&format!(
            "{p}:2:12: pull.schedule: invalid cron expression \"0 3 * *\""
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{p}:3:9: pull.splay: invalid duration \"soon\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "{p}:6:8: image.name: invalid image reference \"Nginx\""
        )),
        "{stderr}"
    );
    assert!(stderr.contains("3 problems"), "{stderr}");
    // `check` never changes the file.
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

/// One run lists the config's own problems and the cross-checks with its lock together:
/// fixing one never reveals the next.
#[test]
fn the_lock_cross_checks_are_listed_with_the_config_problems() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(
        &path,
        "[pull]\nschedual = \"@daily\"\nconcurrency = \"4\"\n\n[pin]\nrequire_lock = true\n\n\
         [[image]]\nname = \"r.example/a:1\"\n",
    )
    .unwrap();
    let out = run(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let p = path.display();
    for expected in [
        format!("{p}:2:1: unknown key \"schedual\" in [pull]: did you mean \"schedule\"?"),
        format!("{p}:3:15: pull.concurrency"),
        format!("{p}:6:1: pin.require_lock: the lock file"),
    ] {
        assert!(stderr.contains(&expected), "{expected}\n{stderr}");
    }
    assert!(stderr.contains("3 problems"), "{stderr}");

    // With a lock that lacks the image: the image's line says so, beside the config's
    // problems.
    std::fs::write(
        dir.path().join("stowage.lock"),
        "version = 1\n\n[[image]]\nname = \"r.example/other:1\"\ndigest = \"sha256:\
         0000000000000000000000000000000000000000000000000000000000000000\"\n",
    )
    .unwrap();
    let out = run(&path, &["check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("did you mean \"schedule\""), "{stderr}");
    assert!(
        stderr.contains(&format!("{p}:9:1: r.example/a:1 is not in the lock file")),
        "{stderr}"
    );
}

/// `check --json`: one document whether valid or not, held to its schema, with the exit code
/// of the text form.
#[test]
fn check_json_lists_every_problem_located_and_says_what_a_valid_config_holds() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[pull]\nschedual = \"@daily\"\n").unwrap();
    let out = run(&path, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    let doc = crate::support::report(&out);
    assert_eq!(doc["valid"], false);
    assert_eq!(doc["problems"][0]["line"], 2);
    assert_eq!(doc["problems"][0]["column"], 1);
    assert!(
        doc["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("did you mean \"schedule\""),
        "{doc:#}"
    );

    std::fs::write(&path, "[[image]]\nname = \"r.example/a:1\"\n").unwrap();
    let out = run(&path, &["check", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let doc = crate::support::report(&out);
    assert_eq!(
        (doc["valid"].as_bool(), doc["images"].as_u64()),
        (Some(true), Some(1))
    );
    assert!(doc["lock"].is_null() && doc["problems"] == serde_json::json!([]));

    let out = run(&dir.path().join("absent.toml"), &["check", "--json"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let doc = crate::support::report(&out);
    assert!(doc["problems"][0]["line"].is_null(), "{doc:#}");
    assert!(
        doc["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("No such file"),
        "{doc:#}"
    );
}

/// Standard error as systemd hands it to a unit: a stream whose device and inode are in
/// `JOURNAL_STREAM`. Returns what stowage wrote there.
fn under_journald(args: &[&str], config: &Path, matching: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("stderr");
    let file = std::fs::File::create(&log).unwrap();
    let meta = file.metadata().unwrap();
    let ino = if matching { meta.ino() } else { meta.ino() + 1 };
    let mut cmd = std::process::Command::new("timeout");
    cmd.args(["-s", "TERM", "3"])
        .arg(assert_cmd::cargo::cargo_bin!("stowage"))
        .arg("--config")
        .arg(config)
        .args(args)
        .env_remove("STOWAGE_LOG")
        .env("JOURNAL_STREAM", format!("{}:{ino}", meta.dev()))
        .env(
            "DOCKER_HOST",
            format!("unix://{}/absent.sock", dir.path().display()),
        )
        .stderr(file);
    cmd.status().unwrap();
    std::fs::read_to_string(&log).unwrap()
}

/// Under journald each line carries its syslog priority, so `journalctl -p warning` finds the
/// warnings and errors; a failed config is one event per problem. With another stream in
/// `JOURNAL_STREAM` (a redirected child), lines are plain.
#[test]
fn under_journald_every_line_carries_its_priority() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[state]\nfile = \"{}/state.json\"\n[[image]]\nname = \"127.0.0.1:1/a:1\"\n",
            dir.path().display()
        ),
    )
    .unwrap();
    // The daemon waits for an engine that is not there: warnings, then SIGTERM (info).
    let log = under_journald(&["run"], &config, true);
    let lines: Vec<&str> = log.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("<4>engine: cannot reach")),
        "{log}"
    );
    assert!(lines.iter().any(|l| l.starts_with("<6>")), "{log}");
    for line in &lines {
        let priority = line.strip_prefix('<').and_then(|l| l.split_once('>'));
        assert!(
            priority.is_some_and(|(p, _)| p.len() == 1 && p.as_bytes()[0].is_ascii_digit()),
            "a line without its priority: {line}\n{log}"
        );
    }
    // A config with two problems: two error events and the count, each on its line.
    std::fs::write(&config, "[pull]\nschedual = 1\nsplay = \"soon\"\n").unwrap();
    let log = under_journald(&["pull"], &config, true);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 3, "{log}");
    assert!(lines.iter().all(|l| l.starts_with("<3>")), "{log}");
    assert!(lines[0].contains(":2:1: unknown key \"schedual\""), "{log}");
    // Not the journal's stream: plain lines, as on any redirected standard error.
    let log = under_journald(&["pull"], &config, false);
    assert!(!log.contains("<3>") && log.contains("unknown key"), "{log}");
}

/// With `--log-format json`, every line is a JSON object, a command's final error included.
#[test]
fn json_logs_hold_the_final_error_too() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[pull]\nschedual = 1\n").unwrap();
    let out = run(&config, &["--log-format", "json", "check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    let events: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    assert_eq!(events.len(), 2, "{stderr}");
    assert_eq!(events[0]["level"], "ERROR");
    assert_eq!(
        (events[0]["line"].as_u64(), events[0]["column"].as_u64()),
        (Some(2), Some(1))
    );
    assert!(
        events[1]["message"].as_str().unwrap().contains("1 problem"),
        "{stderr}"
    );

    let out = run(
        &dir.path().join("absent.toml"),
        &["--log-format", "json", "pin", "--check"],
    );
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let line = String::from_utf8(out.stderr).unwrap();
    let event: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    assert!(
        event["message"].as_str().unwrap().contains("cannot read"),
        "{event}"
    );
}

/// A `pull.credentials` file the user running `check` cannot read is a problem: the unit runs
/// `check` as the daemon's user before it starts and reloads.
#[test]
fn a_credentials_file_the_user_cannot_read_is_a_problem() {
    use std::os::unix::fs::PermissionsExt;
    let runuser = Path::new("/usr/sbin/runuser");
    let is_root = std::fs::metadata("/proc/self").is_ok_and(|m| {
        use std::os::unix::fs::MetadataExt;
        m.uid() == 0
    });
    if !is_root || !runuser.exists() {
        eprintln!("skipped: needs root and runuser");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let secret = dir.path().join("docker.json");
    std::fs::write(&secret, "{\"auths\": {}}").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(&config, "[pull]\ncredentials = \"docker.json\"\n").unwrap();
    std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o644)).unwrap();
    // Root reads it.
    let out = run(&config, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = std::process::Command::new(runuser)
        .args(["-u", "nobody", "--"])
        .arg(assert_cmd::cargo::cargo_bin!("stowage"))
        .arg("--config")
        .arg(&config)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("pull.credentials:") && stderr.contains("cannot be read by this user"),
        "{stderr}"
    );
}

#[test]
fn the_config_path_comes_from_the_environment_too() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[[image]]\nname = \"nginx\"\n").unwrap();
    let out = stowage()
        .env("STOWAGE_CONFIG", &path)
        .arg("check")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
}

#[test]
fn a_missing_config_is_a_config_error() {
    let out = stowage()
        .args(["--config", "/nonexistent/stowage.toml", "check"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(
        stderr.contains("/nonexistent/stowage.toml: cannot read the configuration"),
        "{stderr}"
    );
    // pull, plan and run refuse the same way, before touching any engine.
    for cmd in ["pull", "plan", "run"] {
        let out = stowage()
            .args(["--config", "/nonexistent/stowage.toml", cmd])
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{cmd}");
    }
}

/// A log level is read as a level in any usual spelling, and an unknown one is refused with
/// exit 2: never a silent log (`EnvFilter` alone reads `warning` as a target's name).
#[test]
fn log_levels_are_read_or_refused_never_silenced() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "[[image]]\nname = \"x:1\"\n").unwrap();
    let out = run(&path, &["--log-level", "verbose", "check"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert!(stderr.contains("invalid log level \"verbose\""), "{stderr}");
    for level in ["warning", "WARN", "notice", "err"] {
        let out = stowage()
            .arg("--config")
            .arg(&path)
            .env("STOWAGE_LOG", level)
            .arg("check")
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{level}: {out:?}");
    }
}

#[test]
fn usage_errors_follow_clap() {
    let out = stowage().arg("frobnicate").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    // Under JSON logs a usage error is one JSON error event, like any other final error.
    for args in [
        &["--log-format", "json", "frobnicate"][..],
        &["pull", "--log-format=json", "--bogus"],
    ] {
        let out = stowage().args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        let line: serde_json::Value = serde_json::from_str(stderr.trim()).unwrap();
        assert_eq!(line["level"], "ERROR");
        assert!(
            line["message"]
                .as_str()
                .is_some_and(|m| m.ends_with("see `stowage --help`")),
            "{line}"
        );
    }
    let out = stowage().arg("--help").output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    let help = String::from_utf8(out.stdout).unwrap();
    for cmd in ["run", "check", "plan", "pull"] {
        assert!(help.contains(cmd), "{help}");
    }
    // A command's own options come first; the global ones under their own heading.
    let out = stowage().args(["check", "--help"]).output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    let own = help.find("--json").unwrap();
    let global = help.find("Global options:").unwrap();
    assert!(
        own < global && global < help.find("--config").unwrap(),
        "{help}"
    );
    // An address bollard cannot use is a usage error, not something to retry.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("c.toml");
    std::fs::write(&path, "").unwrap();
    for cmd in ["pull", "plan", "run"] {
        let out = run(&path, &["--docker-host", "ftp://engine", cmd]);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {out:?}");
        let stderr = String::from_utf8(out.stderr).unwrap();
        assert!(
            stderr.contains("invalid Docker engine address \"ftp://engine\""),
            "{stderr}"
        );
    }
    // Later parts add these; until then they do not exist rather than pretend.
    for cmd in ["prune", "pin", "status"] {
        assert_eq!(
            stowage().arg(cmd).output().unwrap().status.code(),
            Some(2),
            "{cmd}"
        );
    }
}

#[test]
fn version_names_the_commit_it_was_built_from() {
    let out = stowage().arg("--version").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let head = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let head = String::from_utf8(head.stdout).unwrap();
    let expected = format!("stowage {} ({}", env!("CARGO_PKG_VERSION"), head.trim());
    assert!(text.starts_with(&expected), "{text:?} vs {expected:?}");
}

#[test]
fn generate_writes_a_man_page_and_completions_from_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let out = stowage().arg("generate").arg(dir.path()).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let page = std::fs::read_to_string(dir.path().join("stowage.1")).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH stowage"),
        "{page}"
    );
    for command in ["run", "check", "plan", "pull", "prune", "pin", "status"] {
        assert!(page.contains(command), "the man page misses {command}");
    }
    assert!(
        !page.contains("generate"),
        "the hidden command is not documented"
    );
    // One page, with what a reader looks for at its end, and no pages it cannot find.
    assert!(!page.contains("stowage-run(1)"), "{page}");
    for section in [
        "COMMANDS",
        "EXIT STATUS",
        "ENVIRONMENT",
        "FILES",
        "EXAMPLES",
    ] {
        assert!(
            page.contains(&format!(".SH \"{section}\""))
                || page.contains(&format!(".SH {section}")),
            "no {section}:\n{page}"
        );
    }
    assert!(
        page.contains("\\-\\-exit\\-code") || page.contains("--exit-code"),
        "{page}"
    );
    let bash = dir.path().join("stowage.bash");
    assert!(
        std::fs::read_to_string(&bash)
            .unwrap()
            .contains("--dry-run")
    );
    // bash parses the completion script.
    let parsed = std::process::Command::new("bash")
        .arg("-n")
        .arg(&bash)
        .status()
        .unwrap();
    assert!(parsed.success());
    for file in ["_stowage", "stowage.fish"] {
        let text = std::fs::read_to_string(dir.path().join(file)).unwrap();
        assert!(text.contains("offline"), "{file}: {text}");
    }
}
