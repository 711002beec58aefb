//! Under systemd: readiness over a real `NOTIFY_SOCKET` (the protocol itself: a datagram socket
//! stowage writes `READY=1`, `STATUS=...` to), and the unit file as systemd reads it.

use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::support::{
    Daemon, Scratch, engine_lock, env, free_port, fresh_repo, http_get, is_event, poll,
};

const LIVENESS: Duration = Duration::from_secs(90);

/// What a service manager would receive: each datagram, as sent.
struct NotifySocket {
    messages: Arc<Mutex<Vec<String>>>,
}

impl NotifySocket {
    fn bind(path: &Path) -> NotifySocket {
        let socket = UnixDatagram::bind(path).expect("bind the notify socket");
        let messages = Arc::new(Mutex::new(Vec::new()));
        let sink = messages.clone();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                sink.lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        });
        NotifySocket { messages }
    }

    fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits for a datagram with a line satisfying `pred`; returns that datagram.
    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            if let Some(m) = self.messages().into_iter().find(|m| m.lines().any(&pred)) {
                return m;
            }
            assert!(
                start.elapsed() < LIVENESS,
                "no {what} within {LIVENESS:?}: {:#?}",
                self.messages()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn status(datagram: &str) -> &str {
    datagram
        .lines()
        .find_map(|l| l.strip_prefix("STATUS="))
        .unwrap_or("")
}

#[test]
fn ready_only_once_every_required_image_is_present() {
    let _lock = engine_lock();
    let env = env();
    // One image is there to pull; the other is not in the registry yet (a release still being
    // pushed), so the boot pass leaves it missing.
    let late_tag = format!("{}:1", fresh_repo("late"));
    let images = vec![env.plain_image("alpha:1"), env.plain_image(&late_tag)];
    env.remove_images(&images);
    let scratch = Scratch::new();
    let socket = NotifySocket::bind(&scratch.dir.path().join("notify.sock"));
    let config = scratch.config("schedule = \"0 0 1 1 *\"\nready_timeout = \"10m\"", &images);
    let mut cmd = env.stowage(&config);
    cmd.env("NOTIFY_SOCKET", scratch.dir.path().join("notify.sock"));
    let daemon = Daemon::start(cmd, &["run"]);

    daemon.wait_for("the boot run", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    let waiting = socket.wait_for("a waiting status", |l| l.starts_with("STATUS=waiting for"));
    assert_eq!(
        status(&waiting),
        format!("waiting for 1 of 2 images: {} (not-found)", images[1])
    );
    // Not ready, and the start timeout is being extended meanwhile.
    let before = socket.messages();
    assert!(!before.iter().any(|m| m.contains("READY=1")), "{before:#?}");
    assert!(
        before.iter().any(|m| m.starts_with("EXTEND_TIMEOUT_USEC=")),
        "{before:#?}"
    );

    // The release arrives; a retry pulls it, and only then is the daemon ready.
    env.point_tag(&late_tag, "beta:1");
    let ready = socket.wait_for("READY=1", |l| l == "READY=1");
    assert_eq!(status(&ready), "ready: all 2 required images present");
    for name in &images {
        assert!(env.has_image(name), "ready, but {name} is missing");
    }
    assert!(
        daemon.count(|v| is_event(v, "run finished", Some(("trigger", "retry")))) >= 1,
        "{:#?}",
        daemon.logs()
    );
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    socket.wait_for("STOPPING=1", |l| l == "STOPPING=1");
    env.remove_images(&images);
}

#[test]
fn ready_degraded_after_ready_timeout_and_still_retrying() {
    let _lock = engine_lock();
    let env = env();
    let never = env.plain_image(&format!("{}:1", fresh_repo("never")));
    let scratch = Scratch::new();
    let socket = NotifySocket::bind(&scratch.dir.path().join("notify.sock"));
    let config = scratch.config(
        "schedule = \"0 0 1 1 *\"\nready_timeout = \"2s\"",
        std::slice::from_ref(&never),
    );
    let mut cmd = env.stowage(&config);
    cmd.env("NOTIFY_SOCKET", scratch.dir.path().join("notify.sock"));
    let daemon = Daemon::start(cmd, &["run"]);
    let ready = socket.wait_for("READY=1", |l| l == "READY=1");
    // Degraded, with what is known when the timeout strikes: the missing image and why, or
    // "starting" on an engine too slow to finish the first pass within the 2 s.
    let waiting = format!("waiting for 1 of 1 images: {never} (not-found)");
    assert!(
        [
            format!("degraded: {waiting}"),
            "degraded: starting".to_owned()
        ]
        .contains(&status(&ready).to_owned()),
        "{ready}"
    );
    // Either way the status line names the missing image and why once the pass knows.
    socket.wait_for("the missing image in the status", |l| {
        l.strip_prefix("STATUS=")
            .is_some_and(|s| s.ends_with(&waiting))
    });
    // Degraded is not given up: the missing image is retried.
    daemon.wait_for("a retry", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "retry")))
    });
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
}

#[test]
fn sighup_reloads_a_valid_config_and_refuses_an_invalid_one() {
    let _lock = engine_lock();
    let env = env();
    let first = env.plain_image("alpha:1");
    let added = env.plain_image("beta:1");
    env.remove_images(&[first.clone(), added.clone()]);
    let scratch = Scratch::new();
    let socket = NotifySocket::bind(&scratch.dir.path().join("notify.sock"));
    let config = scratch.config("schedule = \"0 0 1 1 *\"", std::slice::from_ref(&first));
    let mut cmd = env.stowage(&config);
    cmd.env("NOTIFY_SOCKET", scratch.dir.path().join("notify.sock"));
    let daemon = Daemon::start(cmd, &["run"]);
    socket.wait_for("READY=1", |l| l == "READY=1");
    assert!(!env.has_image(&added));

    // A new image in the config: the reload pulls it.
    scratch.config("schedule = \"0 0 1 1 *\"", &[first.clone(), added.clone()]);
    daemon.hangup();
    let run = daemon.wait_for("the reload run", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "reload")))
    });
    assert_eq!(run["pulled"], 1, "{run:#}");
    assert!(env.has_image(&added));
    socket.wait_for("RELOADING=1", |l| l == "RELOADING=1");
    let after = socket.wait_for("ready after the reload", |l| {
        l == "STATUS=reloaded; converging on the new config"
    });
    assert!(after.lines().any(|l| l == "READY=1"), "{after}");

    // A broken config: refused with its file and line; the running config stays.
    let text = std::fs::read_to_string(&config).unwrap();
    let broken = text.replace("schedule = ", "schedule = \"often\"\n#");
    std::fs::write(&config, &broken).unwrap();
    let line = broken.lines().position(|l| l.contains("often")).unwrap() + 1;
    daemon.hangup();
    let refused = socket.wait_for("the refusal", |l| l.starts_with("STATUS=reload failed"));
    assert!(
        status(&refused).contains(&format!("{}:{line}:12: pull.schedule", config.display()))
            && status(&refused).contains("\"often\""),
        "{refused}"
    );
    assert!(refused.lines().any(|l| l == "READY=1"), "{refused}");
    assert_eq!(
        daemon.count(|v| is_event(v, "run finished", Some(("trigger", "reload")))),
        1,
        "an invalid config must not restart anything"
    );
    // A reload is said as one, never as a new start.
    assert_eq!(daemon.count(|v| is_event(v, "stowage started", None)), 1);
    assert_eq!(daemon.count(|v| is_event(v, "config reloaded", None)), 1);
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(&[first, added]);
}

/// `[metrics] listen` on reload: added, moved, refused (the old listener serves on), removed.
#[test]
fn a_reload_moves_the_metrics_endpoint_and_a_failed_bind_keeps_the_old_one() {
    let _lock = engine_lock();
    let env = env();
    let image = env.plain_image("alpha:1");
    let scratch = Scratch::new();
    let pull = "schedule = \"0 0 1 1 *\"";
    let config = scratch.config(pull, std::slice::from_ref(&image));
    let with_metrics = |port: Option<u16>| {
        let text = scratch_text(&scratch, pull, &image);
        let text = match port {
            Some(port) => text + &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
            None => text,
        };
        std::fs::write(&config, text).unwrap();
    };
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("the boot run", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    let reloads = std::cell::Cell::new(0);
    let reload = || {
        daemon.hangup();
        reloads.set(reloads.get() + 1);
        let n = reloads.get();
        daemon.wait_for("the reload", LIVENESS, |_| {
            daemon.count(|v| is_event(v, "config reloaded", None)) >= n
        });
    };
    let serves = |port: u16| crate::support::try_http_get(port, "/metrics").map(|(s, _)| s);

    // Added: served without a restart.
    let first = free_port();
    with_metrics(Some(first));
    reload();
    assert_eq!(poll(LIVENESS, || serves(first)), Some(200));

    // Moved: the new address serves, the old one is closed.
    let second = free_port();
    with_metrics(Some(second));
    reload();
    assert_eq!(poll(LIVENESS, || serves(second)), Some(200));
    assert_eq!(serves(first), None, "the old address is closed");

    // An address that will not bind: the old listener serves on, and the log says why.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    with_metrics(Some(taken_port));
    reload();
    let warned = daemon.wait_for("the refused bind", LIVENESS, |v| {
        v["message"].as_str().is_some_and(|m| {
            m.starts_with(&format!("metrics.listen 127.0.0.1:{taken_port}: "))
                && m.ends_with(&format!(
                    "; the metrics endpoint stays on 127.0.0.1:{second}"
                ))
        })
    });
    assert_eq!(warned["level"], "WARN", "{warned:#}");
    assert_eq!(serves(second), Some(200));
    drop(taken);

    // Removed: closed.
    with_metrics(None);
    reload();
    assert_eq!(serves(second), None, "closed once [metrics] is gone");
    assert_eq!(daemon.count(|v| is_event(v, "stowage started", None)), 1);
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
}

/// The text `Scratch::config` writes for `pull` and `image`.
fn scratch_text(scratch: &Scratch, pull: &str, image: &str) -> String {
    let path = scratch.config(pull, &[image.to_owned()]);
    std::fs::read_to_string(path).unwrap()
}

/// The state file's lock, held by another process (this test's, as a `stowage pull` run by
/// hand would hold it) until dropped. No child process: one left behind would keep the test
/// runner's output pipe open.
struct HeldLock {
    _file: std::fs::File,
}

impl HeldLock {
    fn take(path: &Path) -> HeldLock {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .expect("the lock file");
        file.lock().expect("an exclusive lock");
        HeldLock { _file: file }
    }
}

/// Polls `GET path` until its status is `code`; returns the body.
fn wait_for_http(port: u16, path: &str, code: u16) -> String {
    let answer = || crate::support::try_http_get(port, path);
    poll(LIVENESS, || answer().filter(|(status, _)| *status == code))
        .map(|(_, body)| body)
        .unwrap_or_else(|| panic!("{path} never answered {code}: {:?}", answer()))
}

#[test]
fn a_wedged_loop_turns_healthz_to_503_and_starves_the_watchdog() {
    let _lock = engine_lock();
    let env = env();
    let image = env.plain_image("alpha:1");
    env.remove_images(std::slice::from_ref(&image));
    let scratch = Scratch::new();
    let socket = NotifySocket::bind(&scratch.dir.path().join("notify.sock"));
    let port = free_port();
    let config = scratch.config(
        "timeout = \"2s\"\nschedule = \"0 0 1 1 *\"\nready_timeout = \"10m\"",
        std::slice::from_ref(&image),
    );
    let text = std::fs::read_to_string(&config).unwrap()
        + &format!("pin = \"first-pull\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n");
    std::fs::write(&config, text).unwrap();
    // Another process holds the state file's lock: the boot pass pulls the image, then blocks
    // saving its first-pull pin. That wedges the pull loop.
    let held = HeldLock::take(&scratch.dir.path().join("state.json.lock"));
    let mut cmd = env.stowage(&config);
    cmd.env("NOTIFY_SOCKET", scratch.dir.path().join("notify.sock"))
        .env("WATCHDOG_USEC", "1000000");
    let daemon = Daemon::start(cmd, &["run"]);

    // Fed while healthy, at half the watchdog interval.
    socket.wait_for("WATCHDOG=1", |l| l == "WATCHDOG=1");
    assert_eq!(http_get(port, "/healthz"), (200, "ok\n".to_owned()));
    // Not ready: /readyz says what systemd's STATUS says.
    let waiting = (503, "pulling 1 required images\n".to_owned());
    poll(LIVENESS, || {
        crate::support::try_http_get(port, "/readyz").filter(|a| *a == waiting)
    })
    .unwrap_or_else(|| panic!("{:?}", http_get(port, "/readyz")));

    // Wedged for longer than an attempt (2 s) and the grace (10 s): unhealthy, and unfed.
    let body = wait_for_http(port, "/healthz", 503);
    assert!(
        body.starts_with("the pulls loop is stuck: pulling for "),
        "{body}"
    );
    let fed = |msgs: &[String]| {
        msgs.iter()
            .filter(|m| m.lines().any(|l| l == "WATCHDOG=1"))
            .count()
    };
    let before = fed(&socket.messages());
    std::thread::sleep(Duration::from_millis(2500));
    assert_eq!(fed(&socket.messages()), before, "fed while stuck");
    assert!(
        daemon.count(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.contains("no longer feeding the watchdog")))
            == 1,
        "{:#?}",
        daemon.logs()
    );

    // The lock is released: the loop moves on, and the daemon is healthy, fed and ready.
    drop(held);
    assert_eq!(
        wait_for_http(port, "/readyz", 200),
        "ready: the 1 required image is present\n"
    );
    wait_for_http(port, "/healthz", 200);
    let after = fed(&socket.messages());
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        fed(&socket.messages()) > after,
        "not fed again: {:#?}\n{:#?}",
        socket.messages(),
        daemon.logs()
    );
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(std::slice::from_ref(&image));
}

#[test]
fn the_unit_file_passes_systemd_analyze_verify() {
    let unit = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stowage.service"),
    )
    .unwrap();
    // systemd checks that ExecStart's binary exists: point it at the one just built.
    let binary = assert_cmd::cargo::cargo_bin!("stowage");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stowage.service");
    std::fs::write(
        &path,
        unit.replace("/usr/bin/stowage", &binary.display().to_string()),
    )
    .unwrap();
    let verify = |path: &Path| {
        let out = std::process::Command::new("systemd-analyze")
            .arg("verify")
            .arg(path)
            .output()
            .expect("systemd-analyze (Debian's systemd package) runs");
        assert!(
            out.status.success() && out.stderr.is_empty(),
            "{}: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    verify(&path);
    // With the Podman drop-in's settings merged in, as systemd merges a drop-in.
    let dropin =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/podman.conf"))
            .unwrap();
    assert!(dropin.contains("DOCKER_HOST=unix:///run/podman/podman.sock"));
    let merged = dir.path().join("stowage-podman.service");
    std::fs::write(&merged, std::fs::read_to_string(&path).unwrap() + &dropin).unwrap();
    verify(&merged);
    assert!(unit.contains("WatchdogSec="), "the daemon feeds a watchdog");
    assert!(unit.contains("\nUser=stowage\n"), "not root");

    // systemd's own exposure score, recorded in docs/security.md: keep it there.
    let out = std::process::Command::new("systemd-analyze")
        .args(["security", "--offline=yes", "--no-pager"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("Overall exposure level for").nth(1))
        .and_then(|rest| rest.split(": ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no score: {text}"));
    assert!(score <= 1.3, "exposure {score}:\n{text}");
    assert!(unit.contains("Type=notify"), "stowage reports readiness");
}
