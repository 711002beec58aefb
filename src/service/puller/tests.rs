//! The puller's orchestration against the fake engine and registry, under paused time:
//! retries and backoff, failures that are not retried, and a stop during a run.

use std::time::Duration;

use super::*;
use crate::decide::outcome::{Deferral, PullResult};
use crate::io::fake::{FakeEngine, FakeRegistry};
use crate::service::session::Session;

fn digest(c: char) -> String {
    format!("sha256:{}", c.to_string().repeat(64))
}

/// Whether `result` is a failure of `class`.
fn failed_with(result: &PullResult, class: FailureClass) -> bool {
    matches!(result, PullResult::Failed { class: c, .. } if *c == class)
}

fn network() -> Failure {
    Failure::new(FailureClass::Network, "connection refused")
}

/// A session over the fake registry for `images` (TOML `[[image]]` entries), with two retries
/// 1 s apart at first and one pull at a time.
struct Setup {
    _dir: tempfile::TempDir,
    session: Session,
    engine: FakeEngine,
    registry: FakeRegistry,
}

fn setup(images: &str) -> Setup {
    setup_with(1, images)
}

/// [`setup`], with `concurrency` pulls at once.
fn setup_with(concurrency: usize, images: &str) -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "[state]\nfile = \"state.json\"\n[pull]\nretries = 2\nbackoff = \"1s\"\n\
         backoff_max = \"4s\"\nconcurrency = {concurrency}\n{images}"
    );
    let config = Config::parse(&dir.path().join("config.toml"), &text).unwrap();
    let registry = FakeRegistry::default();
    let session =
        Session::with_registry(config, None, State::default(), Box::new(registry.clone())).unwrap();
    Setup {
        _dir: dir,
        session,
        engine: FakeEngine::default(),
        registry,
    }
}

const FOLLOW_A: &str = "[[image]]\nname = \"r.example/a:1\"\npin = \"follow\"\n";
const FOLLOW_B: &str = "[[image]]\nname = \"r.example/b:1\"\npin = \"follow\"\n";

impl Setup {
    /// Both images exist in the registry and can be pulled.
    fn publish(&self) {
        for (name, c) in [("r.example/a:1", 'a'), ("r.example/b:1", 'b')] {
            self.registry.set(name, &digest(c));
            self.engine.serve(&digest(c));
        }
    }

    /// A whole run by hand, not stopped.
    async fn run(&self) -> Vec<Outcome> {
        self.puller(Shutdown::new())
            .converge(&self.session.pinned)
            .await
            .unwrap()
    }

    fn puller(&self, stop: Shutdown) -> Puller<'_, FakeEngine> {
        self.session
            .puller(&self.engine, stop, InFlight::default(), PinUpkeep::Command)
    }

    /// The daemon's puller: windows and rate-limit shares apply.
    fn daemon(&self) -> Puller<'_, FakeEngine> {
        self.session.puller(
            &self.engine,
            Shutdown::new(),
            InFlight::default(),
            PinUpkeep::Daemon,
        )
    }

    /// `r.example/NAME:1` is present for each name, with older content than published.
    fn outdated(&self, names: &[&str]) {
        for name in names {
            self.engine.add(
                &format!("old-{name}"),
                &[&format!("r.example/{name}:1")],
                &[&format!("r.example/{name}@{}", digest('x'))],
            );
        }
    }
}

/// After a mirror's pull, the engine pulls the origin's `name@digest` too (the content is
/// there), so that name finds it; an origin that refuses leaves the pull a success.
#[tokio::test(start_paused = true)]
async fn a_mirror_pull_names_the_digest_under_the_origin_and_survives_its_refusal() {
    let mirrored = "[[registry]]\nhost = \"r.example\"\nmirrors = [\"m.example\"]\n";
    let s = setup(&format!("{mirrored}{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    let outcomes = s.run().await;
    let d = |c| digest(c);
    assert_eq!(
        s.engine.pulls(),
        vec![
            format!("m.example/a@{}", d('a')),
            format!("r.example/a@{}", d('a')),
            format!("m.example/b@{}", d('b')),
            format!("r.example/b@{}", d('b')),
        ]
    );
    assert!(
        outcomes
            .iter()
            .all(|o| matches!(o.result, PullResult::Pulled { .. }))
    );

    // The origin refuses the naming pull: the image is pulled all the same, once.
    let s = setup(&format!("{mirrored}{FOLLOW_A}"));
    s.publish();
    s.engine.fail_after_first([network()]);
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:#?}"
    );
    assert_eq!(s.engine.pulls().len(), 2, "{:?}", s.engine.pulls());
}

#[tokio::test(start_paused = true)]
async fn a_network_failure_is_retried_with_backoff_then_pulled() {
    let s = setup(FOLLOW_A);
    s.publish();
    s.engine.fail_next([network(), network()]);
    let started = tokio::time::Instant::now();
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0].attempts, 3);
    assert_eq!(s.engine.pulls().len(), 3);
    // Two backoff delays: at least half of 1 s, then half of 2 s (equal jitter).
    assert!(started.elapsed() >= Duration::from_millis(1500));
    assert!(s.engine.tagged("r.example/a:1").is_some());
}

#[tokio::test(start_paused = true)]
async fn failures_that_retries_cannot_fix_are_not_retried_and_the_attempts_run_out() {
    let s = setup(FOLLOW_A);
    s.publish();
    s.engine
        .fail_next([Failure::new(FailureClass::Auth, "unauthorized")]);
    let outcomes = s.run().await;
    assert!(
        failed_with(&outcomes[0].result, FailureClass::Auth),
        "{outcomes:?}"
    );
    assert_eq!((outcomes[0].attempts, s.engine.pulls().len()), (1, 1));
    s.engine.fail_next([network(), network(), network()]);
    let outcomes = s.run().await;
    assert!(
        failed_with(&outcomes[0].result, FailureClass::Network),
        "{outcomes:?}"
    );
    assert_eq!(
        outcomes[0].attempts, 3,
        "retries = 2: three attempts in all"
    );
    assert!(s.engine.tagged("r.example/a:1").is_none());
}

#[tokio::test(start_paused = true)]
async fn a_resolution_that_fails_is_retried_like_a_pull() {
    let s = setup(FOLLOW_A);
    s.publish();
    s.registry.fail_next([network()]);
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:?}"
    );
    assert_eq!(s.registry.asked(), 2);
}

#[tokio::test(start_paused = true)]
async fn an_unreachable_registry_retries_in_its_own_turn_and_holds_up_no_other_pull() {
    let down = "[[image]]\nname = \"down.example/c:1\"\npin = \"follow\"\n";
    let s = setup_with(2, &format!("{down}{FOLLOW_B}"));
    s.publish();
    s.registry.unreachable("down.example");
    let puller = s.puller(Shutdown::new());
    let run = puller.converge(&s.session.pinned);
    tokio::pin!(run);
    // b is pulled while c's registry is still being asked again: before this, every
    // resolution's retries came first.
    let asked_when_b_was_pulled = loop {
        tokio::select! {
            outcomes = &mut run => panic!("b was never pulled while c retried: {outcomes:?}"),
            () = tokio::time::sleep(Duration::from_millis(10)) => {}
        }
        if s.engine.tagged("r.example/b:1").is_some() {
            break s.registry.asked_unreachable("down.example");
        }
    };
    assert!(asked_when_b_was_pulled < 3, "{asked_when_b_was_pulled}");
    let outcomes = run.await.unwrap();
    assert!(
        failed_with(&outcomes[0].result, FailureClass::Network),
        "{outcomes:?}"
    );
    // Its attempts are the retry policy's, once each: planning's one and two more.
    assert_eq!(outcomes[0].decision.resolve_attempts, 3);
    assert_eq!(s.registry.asked_unreachable("down.example"), 3);
    assert!(matches!(outcomes[1].result, PullResult::Pulled { .. }));
}

#[tokio::test(start_paused = true)]
async fn a_run_stopped_before_it_plans_asks_no_registry() {
    let s = setup(&format!("{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    let stop = Shutdown::new();
    stop.trigger();
    let outcomes = s.puller(stop).converge(&s.session.pinned).await.unwrap();
    assert_eq!(s.registry.asked(), 0, "{outcomes:?}");
    assert!(s.engine.pulls().is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_resolution_that_failed_while_planning_is_decided_again_once_it_answers() {
    let s = setup(&format!("{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    s.outdated(&["a"]);
    // a's planning resolution fails; its retry in its turn answers, and a is refreshed
    // rather than kept as it was.
    s.registry.fail_next([network()]);
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[0].decision.resolve_attempts, 0);
    assert!(outcomes[0].decision.failure.is_none());
    assert!(matches!(outcomes[1].result, PullResult::Pulled { .. }));
    assert_eq!(s.registry.asked(), 3, "a twice, b once");
}

#[tokio::test(start_paused = true)]
async fn a_stop_lets_the_pull_under_way_finish_and_starts_no_other() {
    let s = setup(&format!("{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    s.engine.set_pull_time(Duration::from_secs(10));
    let stop = Shutdown::new();
    let in_flight = InFlight::default();
    let puller = s.session.puller(
        &s.engine,
        stop.clone(),
        in_flight.clone(),
        PinUpkeep::Command,
    );
    let stopper = async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(in_flight.snapshot(), ["r.example/a:1"], "a is being pulled");
        stop.trigger();
    };
    let (outcomes, ()) = tokio::join!(puller.converge(&s.session.pinned), stopper);
    let outcomes = outcomes.unwrap();
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:?}"
    );
    assert_eq!(outcomes[1].result, PullResult::Skipped);
    assert_eq!(s.engine.pulls().len(), 1);
    assert!(in_flight.snapshot().is_empty(), "nothing stays in flight");
}

#[tokio::test(start_paused = true)]
async fn a_stop_during_the_backoff_reports_the_failure_and_tries_no_more() {
    let s = setup(FOLLOW_A);
    s.publish();
    s.engine.fail_next([network()]);
    let stop = Shutdown::new();
    let puller = s.puller(stop.clone());
    let stopper = async {
        // The first retry waits at least half a second.
        tokio::time::sleep(Duration::from_millis(400)).await;
        stop.trigger();
    };
    let (outcomes, ()) = tokio::join!(puller.converge(&s.session.pinned), stopper);
    let outcomes = outcomes.unwrap();
    assert!(
        failed_with(&outcomes[0].result, FailureClass::Network),
        "the last failure, not a skip: {outcomes:?}"
    );
    assert_eq!((outcomes[0].attempts, s.engine.pulls().len()), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn a_first_pull_pin_is_saved_and_the_next_run_asks_no_registry() {
    let s = setup("[[image]]\nname = \"r.example/a:1\"\npin = \"first-pull\"\n");
    s.publish();
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{outcomes:?}"
    );
    assert_eq!(s.registry.asked(), 1);
    // The tag moves; the pin holds, and nothing is asked.
    s.registry.set("r.example/a:1", &digest('b'));
    let outcomes = s.run().await;
    assert_eq!(outcomes[0].result, PullResult::Kept);
    assert_eq!(s.registry.asked(), 1);
    let saved = State::load(&s.session.config.state_file);
    assert_eq!(
        saved.first_pull.values().collect::<Vec<_>>(),
        [&digest('a')]
    );
}

#[tokio::test(start_paused = true)]
async fn two_names_of_one_content_are_pulled_one_after_the_other_and_others_at_once() {
    let a2 = "[[image]]\nname = \"r.example/a2:1\"\npin = \"follow\"\n";
    let s = setup_with(4, &format!("{FOLLOW_A}{a2}{FOLLOW_B}"));
    s.publish();
    s.registry.set("r.example/a2:1", &digest('a'));
    let engine = &s.engine;
    engine.set_pull_time(Duration::from_secs(10));
    let outcomes = s.run().await;
    assert!(outcomes.iter().all(Outcome::is_ok), "{outcomes:?}");
    // a and a2 share their content: never at once; b goes beside them.
    assert_eq!(engine.most_at_once(), 2);
    assert_eq!(
        engine.tagged("r.example/a:1"),
        engine.tagged("r.example/a2:1")
    );
}

/// A `[pull.window]` opening daily at `from_now` from now (UTC), for `length`.
fn window_from_now(from_now: chrono::Duration, length: &str) -> String {
    use chrono::Timelike;
    let at = crate::service::clock::now().with_timezone(&chrono::Utc) + from_now;
    format!(
        "[pull.window]\nstart = \"{} {} * * *\"\nduration = \"{length}\"\ntime_zone = \"UTC\"\n",
        at.minute(),
        at.hour()
    )
}

#[tokio::test(start_paused = true)]
async fn outside_the_pull_window_the_daemon_pulls_only_what_is_missing() {
    let window = window_from_now(chrono::Duration::hours(2), "1h");
    let s = setup(&format!("{window}{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    // a is present with older content; b is missing.
    s.outdated(&["a"]);
    let outcomes = s.daemon().converge(&s.session.pinned).await.unwrap();
    match &outcomes[0].result {
        PullResult::Deferred {
            why: Deferral::Window { opens: Some(opens) },
        } => {
            let opens = chrono::DateTime::parse_from_rfc3339(opens).unwrap();
            let wait = opens.with_timezone(&chrono::Utc)
                - crate::service::clock::now().with_timezone(&chrono::Utc);
            assert!(
                wait > chrono::Duration::minutes(118) && wait <= chrono::Duration::hours(2),
                "{wait}"
            );
        }
        other => panic!("a refresh outside the window: {other:?}"),
    }
    assert!(
        matches!(outcomes[1].result, PullResult::Pulled { .. }),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(s.engine.pulls().len(), 1, "only the missing image");
    // A run by hand is meant to happen now.
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{:?}",
        outcomes[0]
    );
}

#[tokio::test(start_paused = true)]
async fn a_window_that_closes_mid_run_lets_the_pull_under_way_finish_and_starts_no_other() {
    // Opened a minute ago, closes in a minute; each pull takes 90 s, one at a time.
    let window = window_from_now(chrono::Duration::minutes(-1), "2m");
    let s = setup(&format!("{window}{FOLLOW_A}{FOLLOW_B}"));
    s.publish();
    s.engine.set_pull_time(Duration::from_secs(90));
    s.outdated(&["a", "b"]);
    let outcomes = s.daemon().converge(&s.session.pinned).await.unwrap();
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{:?}",
        outcomes[0]
    );
    assert!(
        matches!(outcomes[1].result, PullResult::Deferred { .. }),
        "{:?}",
        outcomes[1]
    );
    assert_eq!(s.engine.pulls().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn the_daemon_holds_back_refreshes_past_its_share_of_a_rate_limit() {
    let s = setup(&format!(
        "[[registry]]\nhost = \"r.example\"\nlimit_shared_by = 4\n{FOLLOW_A}{FOLLOW_B}"
    ));
    s.publish();
    s.outdated(&["a", "b"]);
    // 7 left for 4 hosts: one refresh for this one.
    s.registry.set_budget(
        "r.example",
        crate::model::rate_limit::Budget {
            limit: 100,
            remaining: 7,
            window_secs: Some(21600),
        },
    );
    let outcomes = s.daemon().converge(&s.session.pinned).await.unwrap();
    assert!(
        matches!(outcomes[0].result, PullResult::Pulled { .. }),
        "{:?}",
        outcomes[0]
    );
    assert_eq!(
        outcomes[1].result,
        PullResult::Deferred {
            why: Deferral::RateLimit {
                registry: "r.example".into(),
                remaining: 7,
                shared_by: 4
            }
        }
    );
    // A run by hand spends what it needs.
    let outcomes = s.run().await;
    assert!(
        matches!(outcomes[1].result, PullResult::Pulled { .. }),
        "{:?}",
        outcomes[1]
    );
}

#[tokio::test(start_paused = true)]
async fn a_pull_refused_for_the_rate_limit_spends_no_retry_and_the_registry_is_left_alone() {
    let s = setup(FOLLOW_A);
    s.publish();
    s.engine.fail_next([Failure::new(
        FailureClass::RateLimited,
        "toomanyrequests: You have reached your pull rate limit",
    )]);
    let rate_limited = |o: &Outcome| {
        matches!(
            o.result,
            PullResult::Failed {
                class: FailureClass::RateLimited,
                ..
            }
        )
    };
    let outcomes = s.run().await;
    assert!(rate_limited(&outcomes[0]), "{:?}", outcomes[0]);
    assert_eq!(s.engine.pulls().len(), 1, "not retried");
    // The next run asks the engine for nothing from that registry.
    let outcomes = s.run().await;
    assert!(rate_limited(&outcomes[0]), "{:?}", outcomes[0]);
    assert_eq!(s.engine.pulls().len(), 1, "the registry is left alone");
}

mod signatures {
    //! Signature policy in the puller: verified before a pin or a pull, remembered, refused
    //! without touching what is in place.

    use super::*;
    use crate::model::signature::{Check, Finding, Signature, SignatureLayer};
    use crate::policy::signature::test_keys::{payload, pem_pair, sign};
    use aws_lc_rs::signature::EcdsaKeyPair;

    /// A setup whose images must be signed with the key in `cosign.pub` (`mode` as given).
    fn signed_setup(mode: &str, images: &str) -> (Setup, EcdsaKeyPair) {
        let dir = tempfile::tempdir().unwrap();
        let (pair, pem) = pem_pair();
        std::fs::write(dir.path().join("cosign.pub"), pem).unwrap();
        let text = format!(
            "[state]\nfile = \"state.json\"\n[pull]\nretries = 0\n\
             [[verify]]\nmatch = \"r.example/**\"\nkeys = [\"cosign.pub\"]\nmode = \"{mode}\"\n\
             {images}"
        );
        let config = Config::parse(&dir.path().join("config.toml"), &text).unwrap();
        let registry = FakeRegistry::default();
        let session =
            Session::with_registry(config, None, State::default(), Box::new(registry.clone()))
                .unwrap();
        let s = Setup {
            _dir: dir,
            session,
            engine: FakeEngine::default(),
            registry,
        };
        (s, pair)
    }

    impl Setup {
        /// `name:1` names `digest`, which the registry serves, signed by `pair` if given.
        fn publish_one(&self, name: &str, c: char, pair: Option<&EcdsaKeyPair>) {
            self.registry.set(&format!("{name}:1"), &digest(c));
            self.engine.serve(&digest(c));
            if let Some(pair) = pair {
                let p = payload(&digest(c));
                let layer = Signature::Legacy(SignatureLayer {
                    signature: Some(sign(pair, &p)),
                    payload: p,
                });
                self.registry
                    .sign(&format!("{name}@{}", digest(c)), vec![layer]);
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_signed_digest_is_pulled_and_remembered_and_then_costs_nothing() {
        let (s, pair) = signed_setup("enforce", FOLLOW_A);
        s.publish_one("r.example/a", 'a', Some(&pair));
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].result, PullResult::Pulled { .. }),
            "{outcomes:?}"
        );
        assert!(matches!(
            outcomes[0].decision.signature,
            Some(Check::Verified { cached: false, .. })
        ));
        assert_eq!(s.registry.signatures_asked(), 1);
        let saved = State::load(&s.session.config.state_file);
        assert!(saved.verified.contains_key(&digest('a')), "{saved:?}");
        // The next run: the tag has not moved, the image is present, the check is known.
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].result, PullResult::Kept),
            "{outcomes:?}"
        );
        assert!(matches!(
            outcomes[0].decision.signature,
            Some(Check::Verified { cached: true, .. })
        ));
        assert_eq!(s.registry.signatures_asked(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_signed_platform_manifest_never_vouches_for_its_unsigned_index() {
        // One index lists a signed manifest for this host and an unsigned one for arm64. The
        // signed one verifies on its own; that must not make the index count as verified,
        // or the index would vouch for the unsigned arm64 manifest next.
        let images = "[[image]]\nname = \"r.example/a:1\"\npin = \"follow\"\n\
                      [[image]]\nname = \"r.example/b:1\"\npin = \"follow\"\n\
                      platform = \"linux/arm64\"\n";
        let (s, pair) = signed_setup("enforce", images);
        let index = digest('f');
        let (da, db) = (digest('a'), digest('b'));
        let platforms = [("linux/amd64", da.as_str()), ("linux/arm64", db.as_str())];
        for name in ["r.example/a:1", "r.example/b:1"] {
            s.registry.set_index(name, &index, &platforms);
        }
        for c in ['a', 'b'] {
            s.engine.serve(&digest(c));
        }
        let p = payload(&digest('a'));
        let signed = Signature::Legacy(SignatureLayer {
            signature: Some(sign(&pair, &p)),
            payload: p,
        });
        s.registry
            .sign(&format!("r.example/a@{}", digest('a')), vec![signed]);
        for _ in 0..2 {
            let outcomes = s.run().await;
            assert!(
                matches!(outcomes[0].decision.signature, Some(Check::Verified { .. })),
                "{outcomes:#?}"
            );
            assert!(
                matches!(outcomes[1].decision.signature, Some(Check::Refused { .. })),
                "{outcomes:#?}"
            );
            assert!(failed_with(&outcomes[1].result, FailureClass::Signature));
        }
        let saved = State::load(&s.session.config.state_file);
        assert!(saved.verified.contains_key(&digest('a')), "{saved:?}");
        assert!(!saved.verified.contains_key(&index), "{saved:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_mirror_serving_junk_signatures_cannot_refuse_what_the_origin_signed() {
        let images = "[[registry]]\nhost = \"r.example\"\nmirrors = [\"m.example\"]\n\
                      [[image]]\nname = \"r.example/a:1\"\npin = \"follow\"\n";
        let (s, pair) = signed_setup("enforce", images);
        s.publish_one("r.example/a", 'a', Some(&pair));
        let (stranger, _) = pem_pair();
        let p = payload(&digest('a'));
        let junk = Signature::Legacy(SignatureLayer {
            signature: Some(sign(&stranger, &p)),
            payload: p,
        });
        s.registry
            .sign(&format!("m.example/a@{}", digest('a')), vec![junk]);
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].decision.signature, Some(Check::Verified { .. })),
            "{outcomes:#?}"
        );
        // The mirror, then the origin.
        assert_eq!(s.registry.signatures_asked(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_plan_checks_signatures_but_saves_nothing() {
        let (s, pair) = signed_setup("enforce", FOLLOW_A);
        s.publish_one("r.example/a", 'a', Some(&pair));
        let (plan, _) = s
            .puller(Shutdown::new())
            .plan(&s.session.pinned)
            .await
            .unwrap();
        assert!(matches!(
            plan[0].signature,
            Some(Check::Verified { cached: false, .. })
        ));
        assert!(
            !s.session.config.state_file.exists(),
            "a plan writes no state file"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_unsigned_digest_is_never_pulled_or_pinned() {
        let first_pull = "[[image]]\nname = \"r.example/a:1\"\npin = \"first-pull\"\n";
        let (s, _) = signed_setup("enforce", first_pull);
        s.publish_one("r.example/a", 'a', None);
        let outcomes = s.run().await;
        match &outcomes[0].result {
            PullResult::Failed { class, message, .. } => {
                assert_eq!(*class, FailureClass::Signature);
                assert!(message.contains("r.example/a@sha256:aaaa"), "{message}");
                assert!(message.contains("cosign.pub"), "{message}");
                assert!(message.contains("no signature"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        assert!(s.engine.pulls().is_empty());
        assert!(
            State::load(&s.session.config.state_file)
                .first_pull
                .is_empty()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_tag_moved_to_an_unsigned_digest_keeps_the_verified_image() {
        let (s, pair) = signed_setup("enforce", FOLLOW_A);
        s.publish_one("r.example/a", 'a', Some(&pair));
        s.run().await;
        let verified = s.engine.tagged("r.example/a:1");
        let (stranger, _) = pem_pair();
        s.publish_one("r.example/a", 'b', Some(&stranger));
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].result, PullResult::Kept),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[0].decision.signature,
            Some(Check::Refused {
                finding: Finding::WrongKey { signatures: 1 }
            })
        );
        assert_eq!(
            s.engine.pulls().len(),
            1,
            "only the signed digest was pulled"
        );
        assert_eq!(s.engine.tagged("r.example/a:1"), verified);
    }

    #[tokio::test(start_paused = true)]
    async fn warn_mode_pulls_an_unsigned_digest_and_says_so() {
        let (s, _) = signed_setup("warn", FOLLOW_A);
        s.publish_one("r.example/a", 'a', None);
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].result, PullResult::Pulled { .. }),
            "{outcomes:?}"
        );
        assert_eq!(
            outcomes[0].decision.signature,
            Some(Check::Warned {
                finding: Finding::NoSignature
            })
        );
    }
}

mod cooldown {
    //! `min_digest_age`: a moved tag is adopted only once it has named the new digest that
    //! long; a missing image is pulled at once.

    use super::*;

    const COOLED: &str = "[[image]]\nname = \"r.example/a:1\"\npin = \"follow\"\n\
                          min_digest_age = \"1h\"\n[[image]]\nname = \"r.example/b:1\"\n\
                          pin = \"first-pull\"\nmin_digest_age = \"1h\"\n";

    fn saved_sightings(s: &Setup) -> BTreeMap<String, Sighting> {
        State::load(&s.session.config.state_file).sightings
    }

    #[tokio::test(start_paused = true)]
    async fn a_moved_tag_is_adopted_after_the_minimum_age_and_a_missing_image_at_once() {
        let s = setup(COOLED);
        s.publish();
        s.outdated(&["a"]);
        let outcomes = s.run().await;
        assert_eq!(outcomes[0].result, PullResult::Kept, "{outcomes:#?}");
        let cooling = outcomes[0].decision.cooldown.clone().expect("cooling");
        assert_eq!(cooling.digest, digest('a'));
        assert_eq!(cooling.eligible_at - cooling.seen_since, 3600);
        assert!(
            outcomes[0].decision.reason.contains("min_digest_age"),
            "{}",
            outcomes[0].decision.reason
        );
        assert_eq!(s.engine.tagged("r.example/a:1").as_deref(), Some("old-a"));
        // Missing: pulled at once, cooldown or not, and pinned.
        assert!(
            matches!(outcomes[1].result, PullResult::Pulled { .. }),
            "{outcomes:#?}"
        );
        assert_eq!(outcomes[1].decision.cooldown, None);
        // The sighting is saved: a restart does not start the wait over.
        assert_eq!(
            saved_sightings(&s)["r.example/a:1"].since,
            cooling.seen_since
        );

        tokio::time::advance(Duration::from_secs(3599)).await;
        let outcomes = s.run().await;
        assert_eq!(outcomes[0].result, PullResult::Kept);
        assert_eq!(outcomes[0].decision.cooldown, Some(cooling));

        tokio::time::advance(Duration::from_secs(1)).await;
        let outcomes = s.run().await;
        assert!(
            matches!(outcomes[0].result, PullResult::Pulled { .. }),
            "{outcomes:#?}"
        );
        assert_ne!(s.engine.tagged("r.example/a:1").as_deref(), Some("old-a"));
    }

    #[tokio::test(start_paused = true)]
    async fn a_tag_that_moves_on_during_the_wait_starts_it_over() {
        let s = setup(COOLED);
        s.publish();
        s.outdated(&["a"]);
        let first = s.run().await[0].decision.cooldown.clone().expect("cooling");
        tokio::time::advance(Duration::from_secs(3000)).await;
        s.registry.set("r.example/a:1", &digest('c'));
        s.engine.serve(&digest('c'));
        let second = s.run().await[0].decision.cooldown.clone().expect("cooling");
        assert_eq!(second.digest, digest('c'));
        assert_eq!(second.seen_since, first.seen_since + 3000);
        // Past the first digest's time, the new one still waits its own hour.
        tokio::time::advance(Duration::from_secs(1000)).await;
        let outcomes = s.run().await;
        assert_eq!(outcomes[0].result, PullResult::Kept, "{outcomes:#?}");
        tokio::time::advance(Duration::from_secs(2600)).await;
        assert!(matches!(s.run().await[0].result, PullResult::Pulled { .. }));
    }
}
