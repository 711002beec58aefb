//! `stowage run`: boot pull, scheduled pulls, and stopping on SIGTERM.

use std::time::Duration;

use crate::support::{Daemon, Scratch, Throttle, engine_lock, env, is_event};

const LIVENESS: Duration = Duration::from_secs(90);

/// Bytes a second of a registry too slow for any pull to finish within a test.
const CRAWL: usize = 20;

#[test]
fn boot_pull_then_clean_stop() {
    let _lock = engine_lock();
    let env = env();
    let images = vec![env.plain_image("alpha:1"), env.plain_image("busybox:1")];
    env.remove_images(&images);
    let scratch = Scratch::new();
    // A schedule that will not fire during the test: only the boot pull runs.
    let config = scratch.config("schedule = \"0 0 1 1 *\"", &images);
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    let finished = daemon.wait_for("boot run finished", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    assert_eq!(finished["pulled"], 2, "{finished:#}");
    assert_eq!(finished["failed"], 0);
    for name in &images {
        assert!(env.has_image(name), "{name}");
    }
    // The pre-pulled image runs without any implicit pull.
    let run = env.use_image(&images[1]);
    assert!(run.status.success(), "{run:?}");
    let (code, logs) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    assert!(
        logs.iter().any(|v| is_event(v, "stopped", None)),
        "{logs:#?}"
    );
    env.remove_images(&images);
}

#[test]
fn scheduled_runs_refresh_what_went_missing() {
    let _lock = engine_lock();
    let env = env();
    let images = vec![env.plain_image("gamma:1")];
    env.remove_images(&images);
    let scratch = Scratch::new();
    // Every two seconds (6-field cron with seconds), no boot pull: the schedule does the work.
    let config = scratch.config("on_boot = false\nschedule = \"*/2 * * * * *\"", &images);
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("scheduled run finished", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "schedule"))) && v["pulled"] == 1
    });
    assert!(env.has_image(&images[0]));
    assert_eq!(
        daemon.count(|v| is_event(v, "run finished", Some(("trigger", "boot")))),
        0
    );
    // Someone removes it; the next scheduled run brings it back. Runs are counted before the
    // removal, so a run that re-pulls right after it is still seen.
    let runs_before = daemon.count(|v| is_event(v, "run finished", None));
    env.remove_images(&images);
    let start = std::time::Instant::now();
    loop {
        let logs = daemon.logs();
        let later: Vec<_> = logs
            .iter()
            .filter(|v| is_event(v, "run finished", None))
            .skip(runs_before)
            .collect();
        if later.iter().any(|v| v["pulled"] == 1) {
            break;
        }
        assert!(
            start.elapsed() < LIVENESS,
            "no scheduled re-pull: {logs:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(env.has_image(&images[0]));
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(&images);
}

#[test]
fn sigterm_during_a_slow_pull_stops_within_the_grace_period() {
    let _lock = engine_lock();
    let env = env();
    // A proxy at 20 bytes a second: even the registry's first answer takes seconds, so the
    // pull is under way at SIGTERM whatever the engine already holds (Docker 26's containerd
    // store keeps the blobs of a removed image for a while).
    let throttle = Throttle::start(&env.plain, CRAWL);
    let slow = format!("127.0.0.1:{}/stowage-test/big:1", throttle.port);
    env.remove_images(std::slice::from_ref(&slow));
    let scratch = Scratch::new();
    let config = scratch.config(
        "shutdown_grace = \"1s\"\nschedule = \"0 0 1 1 *\"",
        std::slice::from_ref(&slow),
    );
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    daemon.wait_for("pulling the slow image", LIVENESS, |v| {
        is_event(v, "pulling", Some(("image", &slow)))
    });
    // Let the download start for real.
    std::thread::sleep(Duration::from_millis(1500));
    let (code, logs) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0, "{logs:#?}");
    let abandoned = logs
        .iter()
        .find(|v| {
            is_event(
                v,
                "abandoned in-flight pulls at the end of pull.shutdown_grace",
                None,
            )
        })
        .unwrap_or_else(|| panic!("no abandon report: {logs:#?}"));
    assert!(
        abandoned["abandoned"].as_str().unwrap().contains(&slow),
        "{abandoned:#}"
    );
    assert!(logs.iter().any(|v| is_event(v, "stopped", None)));
    assert!(
        !logs.iter().any(|v| is_event(v, "run finished", None)),
        "the pull cannot have finished"
    );
    drop(throttle);
    remove_big_images(&env);
}

#[test]
fn sigterm_during_a_one_shot_pull_reports_the_abandoned_image() {
    let _lock = engine_lock();
    let env = env();
    let throttle = Throttle::start(&env.plain, CRAWL);
    let slow = format!("127.0.0.1:{}/stowage-test/big:1", throttle.port);
    remove_big_images(&env);
    let scratch = Scratch::new();
    let config = scratch.config("shutdown_grace = \"1s\"", std::slice::from_ref(&slow));
    let pull = Daemon::start(env.stowage(&config), &["pull"]);
    pull.wait_for("pulling the slow image", LIVENESS, |v| {
        is_event(v, "pulling", Some(("image", &slow)))
    });
    let (code, logs) = pull.terminate(LIVENESS);
    assert_eq!(code, 1, "{logs:#?}");
    // The final error is a JSON event like the logs before it.
    let expected = format!("stopped: abandoned in-flight pulls of {slow}");
    assert!(
        logs.iter()
            .any(|v| v["level"] == "ERROR" && v["message"].as_str() == Some(expected.as_str())),
        "{logs:#?}"
    );
    drop(throttle);
    remove_big_images(&env);
}

/// Removes every copy of the big test image, under whatever proxy port an earlier (perhaps
/// aborted) run pulled it: a leftover copy would make the next slow pull fast.
fn remove_big_images(env: &crate::support::Env) {
    let out = env.docker(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    let names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("/stowage-test/big:"))
        .map(str::to_owned)
        .collect();
    env.remove_images(&names);
}

#[test]
fn an_engine_that_is_down_at_boot_is_waited_for_not_fatal() {
    let env = env();
    let scratch = Scratch::new();
    let config = scratch.config("", &[env.plain_image("alpha:1")]);
    let mut cmd = env.stowage(&config);
    cmd.args(["--docker-host", "unix:///nonexistent/docker.sock"]);
    let daemon = Daemon::start(cmd, &["run"]);
    let line = daemon.wait_for("an engine warning", LIVENESS, |v| {
        v["level"] == "WARN"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("engine: cannot reach the Docker engine"))
    });
    assert!(line["retry_in_ms"].as_u64().is_some(), "{line:#}");
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
}

/// `[pull.window]`: at boot the missing image is pulled at once and the present one whose
/// tag moved waits; once the window opens, the scheduled run refreshes it.
#[test]
fn a_pull_window_holds_refreshes_until_it_opens_but_never_a_missing_image() {
    use chrono::Timelike;
    let _lock = engine_lock();
    let env = env();
    env.point_tag("window:1", "beta:1");
    let moving = env.plain_image("window:1");
    let missing = env.plain_image("alpha:1");
    env.remove_images(&[moving.clone(), missing.clone()]);
    let scratch = Scratch::new();
    let config = scratch.config(
        "schedule = \"*/2 * * * * *\"",
        &[moving.clone(), missing.clone()],
    );
    let followed = std::fs::read_to_string(&config).unwrap().replace(
        &format!("name = \"{moving}\"\n"),
        &format!("name = \"{moving}\"\npin = \"follow\"\n"),
    );
    std::fs::write(&config, &followed).unwrap();
    // The moving image is present at beta's content; then its tag moves to gamma's.
    let out = env.stowage(&config).arg("pull").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    env.remove_images(std::slice::from_ref(&missing));
    let before = env.image_id(&moving).unwrap();
    env.point_tag("window:1", "gamma:1");

    // The window opens 25 s from now (a 6-field cron, in UTC) and stays open an hour.
    let opens = (chrono::Utc::now() + chrono::Duration::seconds(25))
        .with_nanosecond(0)
        .unwrap();
    let text = followed
        + &format!(
            "[pull.window]\nstart = \"{} {} {} * * *\"\nduration = \"1h\"\ntime_zone = \"UTC\"\n",
            opens.second(),
            opens.minute(),
            opens.hour()
        );
    std::fs::write(&config, text).unwrap();
    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    let boot = daemon.wait_for("boot run finished", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    assert!(
        chrono::Utc::now() < opens,
        "the boot run took too long to test the window"
    );
    assert_eq!(
        (boot["pulled"].as_u64(), boot["deferred"].as_u64()),
        (Some(1), Some(1)),
        "{boot:#}"
    );
    assert!(env.has_image(&missing), "a missing image never waits");
    assert_eq!(
        env.image_id(&moving).as_deref(),
        Some(before.as_str()),
        "the refresh waits"
    );
    let status = env
        .stowage(&config)
        .args(["status", "--json", "--offline"])
        .output()
        .unwrap();
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["windows"]["pull"]["open"], false, "{status:#}");

    // Pulled, or only tagged where the engine under test seeded the registry itself and so
    // holds gamma's content already (Docker 20.10).
    let refreshed = daemon.wait_for("a scheduled run in the window", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "schedule")))
            && (v["pulled"] == 1 || v["tagged"] == 1)
    });
    assert!(
        chrono::Utc::now() >= opens,
        "refreshed before the window opened: {refreshed:#}"
    );
    assert_ne!(env.image_id(&moving).as_deref(), Some(before.as_str()));
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.remove_images(&[moving, missing]);
}
