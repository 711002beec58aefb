//! Registry rate limits against a real registry behind a proxy that states a budget and
//! answers 429 on demand ([`LimitProxy`]): the budget as metrics, 429 as its own failure class
//! that spends no retries, and refreshes held back past this host's share.

use std::time::{Duration, Instant};

use crate::support::{
    Daemon, LimitProxy, Scratch, engine_lock, entry, env, free_port, http_get, is_event, poll,
};

const LIVENESS: Duration = Duration::from_secs(90);

/// `name` on the plain registry, seen through `proxy`.
fn through(proxy: &LimitProxy, repo_tag: &str) -> String {
    format!("127.0.0.1:{}/stowage-test/{repo_tag}", proxy.port)
}

#[test]
fn a_429_is_rate_limited_spends_no_retry_and_holds_off_the_registry() {
    let _lock = engine_lock();
    let env = env();
    let proxy = LimitProxy::start(&env.plain, 100, 100);
    let name = through(&proxy, "alpha:1");
    env.purge_images(std::slice::from_ref(&name));
    let scratch = Scratch::new();
    // Retries allowed: a 429 must not spend them.
    let config = scratch.config("retries = 3", std::slice::from_ref(&name));
    let followed = std::fs::read_to_string(&config).unwrap().replace(
        &format!("name = \"{name}\"\n"),
        &format!("name = \"{name}\"\npin = \"follow\"\n"),
    );
    std::fs::write(&config, followed).unwrap();
    proxy.refuse(Some(120));
    let out = env
        .stowage(&config)
        .args(["pull", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let report = crate::support::report(&out);
    let e = entry(&report, &name);
    assert_eq!(e["result"], "failed", "{e:#}");
    assert_eq!(e["class"], "rate-limited", "{e:#}");
    assert!(
        e["message"]
            .as_str()
            .unwrap()
            .contains("nothing is sent to it for 2m"),
        "{e:#}"
    );
    let manifests = proxy
        .requests()
        .iter()
        .filter(|r| r.contains("/manifests/"))
        .count();
    assert_eq!(
        manifests,
        1,
        "one request, no retry: {:#?}",
        proxy.requests()
    );
    assert!(!env.has_image(&name));
}

#[test]
fn the_daemon_exports_the_budget_and_holds_back_refreshes_past_its_share() {
    let _lock = engine_lock();
    let env = env();
    env.point_tag("limited:1", "beta:1");
    let proxy = LimitProxy::start(&env.plain, 100, 100);
    let moving = through(&proxy, "limited:1");
    let missing = through(&proxy, "alpha:1");
    env.purge_images(&[moving.clone(), missing.clone()]);
    let scratch = Scratch::new();
    let port = free_port();
    let config = scratch.config("", &[moving.clone(), missing.clone()]);
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace(
            &format!("name = \"{moving}\"\n"),
            &format!("name = \"{moving}\"\npin = \"follow\"\n"),
        )
        .replace(
            &format!("name = \"{missing}\"\n"),
            &format!("name = \"{missing}\"\npin = \"follow\"\n"),
        );
    // The moving image is present; then its tag moves, and the budget shrinks below this
    // host's share: 15 left for 20 hosts.
    std::fs::write(&config, &text).unwrap();
    let out = env.stowage(&config).arg("pull").output().unwrap();
    assert!(out.status.success(), "{out:?}");
    env.purge_images(std::slice::from_ref(&missing));
    let before = env.image_id(&moving).unwrap();
    env.point_tag("limited:1", "gamma:1");
    proxy.set_remaining(15);
    let text = text
        + &format!(
            "[[registry]]\nhost = \"127.0.0.1:{}\"\nlimit_shared_by = 20\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n",
            proxy.port
        );
    std::fs::write(&config, text).unwrap();

    let daemon = Daemon::start(env.stowage(&config), &["run"]);
    let boot = daemon.wait_for("the boot run", LIVENESS, |v| {
        is_event(v, "run finished", Some(("trigger", "boot")))
    });
    assert_eq!(
        (boot["pulled"].as_u64(), boot["deferred"].as_u64()),
        (Some(1), Some(1)),
        "the missing image is pulled, the refresh held back: {boot:#}"
    );
    assert!(env.has_image(&missing));
    assert_eq!(env.image_id(&moving).as_deref(), Some(before.as_str()));
    assert!(
        daemon.logs().iter().any(|v| v["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("held back: "))),
        "{:#?}",
        daemon.logs()
    );
    let series = format!(
        "stowage_registry_rate_limit_remaining{{registry=\"127.0.0.1:{}\"}}",
        proxy.port
    );
    let start = Instant::now();
    let seen = poll(LIVENESS, || {
        let (_, body) = http_get(port, "/metrics");
        body.lines()
            .find(|l| l.starts_with(&series))
            .map(|l| l[series.len()..].trim().to_owned())
    });
    // The engine's own manifest GET for the missing image spent one more.
    assert!(
        matches!(seen.as_deref(), Some("14") | Some("15")),
        "{seen:?} after {:?}",
        start.elapsed()
    );
    let (code, _) = daemon.terminate(LIVENESS);
    assert_eq!(code, 0);
    env.purge_images(&[moving, missing]);
}
