use super::*;
use proptest::prelude::*;

fn parse(text: &str) -> Result<Config, Vec<String>> {
    Config::parse(Path::new("/etc/stowage/config.toml"), text).map_err(|e| match e {
        ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
        ConfigError::Read { .. } => unreachable!("parse never reads"),
    })
}

#[test]
fn an_empty_file_is_valid_with_defaults() {
    let c = parse("").unwrap();
    assert!(c.images.is_empty());
    assert!(c.pull.on_boot);
    assert_eq!(c.pull.schedule.expr(), DEFAULT_SCHEDULE);
    assert_eq!(c.pull.concurrency, 4);
    assert_eq!(c.pull.timeout, Duration::from_secs(600));
    assert_eq!(c.pull.retry.retries, 3);
    assert_eq!(c.pull.splay, Duration::from_secs(300));
}

#[test]
fn images_are_normalised_and_policies_defaulted() {
    let c = parse(
        r#"
[[image]]
name = "nginx"

[[image]]
name = "127.0.0.1:5000/app:1.2"
platform = "linux/arm64/v8"
schedule = "*/10 * * * *"

[[image]]
name = "127.0.0.1:5000/tool:3"
pin = "follow"
"#,
    )
    .unwrap();
    let names: Vec<String> = c.images.iter().map(|i| i.reference.to_string()).collect();
    assert_eq!(
        names,
        [
            "docker.io/library/nginx:latest",
            "127.0.0.1:5000/app:1.2",
            "127.0.0.1:5000/tool:3"
        ]
    );
    assert_eq!(c.images[0].pin, None);
    assert_eq!(c.images[0].line, 3);
    assert_eq!(c.images[1].pin, None);
    assert_eq!(c.images[1].platform.as_deref(), Some("linux/arm64/v8"));
    assert_eq!(c.images[2].pin, Some(PinChoice::Follow));
    let on = |s: Option<&str>| {
        c.images
            .iter()
            .filter(|i| i.schedule.as_ref().map(Schedule::expr) == s)
            .count()
    };
    assert_eq!(on(None), 2);
    assert_eq!(on(Some("*/10 * * * *")), 1);
}

#[test]
fn metrics_and_readiness_settings() {
    let c = parse("").unwrap();
    assert_eq!(c.metrics, None, "no [metrics] table: nothing listens");
    assert_eq!(c.pull.ready_timeout, Duration::from_secs(300));
    let c = parse("[pull]\nready_timeout = \"0s\"\n[metrics]\n").unwrap();
    assert_eq!(c.metrics, Some(DEFAULT_METRICS_LISTEN.parse().unwrap()));
    assert_eq!(c.pull.ready_timeout, Duration::ZERO);
    let c = parse("[metrics]\nlisten = \"[::]:9500\"\n").unwrap();
    assert_eq!(c.metrics, Some("[::]:9500".parse().unwrap()));
    let errs = parse("[metrics]\nlisten = \"localhost\"\n").unwrap_err();
    assert_eq!(
        errs,
        [
            "/etc/stowage/config.toml:2:10: metrics.listen: \"localhost\" is not an address and \
          port such as \"127.0.0.1:9420\" or \"[::]:9420\""
        ]
    );
    let errs = parse("[metrics]\nport = 9420\n").unwrap_err();
    assert!(
        errs[0].starts_with("/etc/stowage/config.toml:2:1:"),
        "{errs:?}"
    );
}

#[test]
fn every_problem_is_listed_with_its_location_and_value() {
    let errs = parse(
        r#"[pull]
schedule = "0 3 * *"
timeout = "ten minutes"
concurrency = 0

[[image]]
name = "Nginx"

[[image]]
name = "ok:1"
platform = "Linux"
pin = "sometimes"
"#,
    )
    .unwrap_err();
    assert_eq!(errs.len(), 6, "{errs:#?}");
    assert!(
        errs[0].starts_with(
            "/etc/stowage/config.toml:2:12: pull.schedule: invalid cron expression \"0 3 * *\""
        ),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].starts_with(
            "/etc/stowage/config.toml:3:11: pull.timeout: invalid duration \"ten minutes\""
        ),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].starts_with("/etc/stowage/config.toml:4:15: pull.concurrency: 0 is out of range"),
        "{}",
        errs[2]
    );
    assert!(errs[3].contains(":7:8: image.name: invalid image reference \"Nginx\": repository names must be lowercase"), "{}", errs[3]);
    assert!(
        errs[4].contains(":11:12: image.platform: invalid platform \"Linux\""),
        "{}",
        errs[4]
    );
    assert!(
        errs[5].contains(":12:7: image.pin: unknown pin mode \"sometimes\""),
        "{}",
        errs[5]
    );
}

#[test]
fn unknown_keys_are_errors_with_a_location_and_the_key_meant() {
    let errs = parse("[pull]\nconcurency = 3\n").unwrap_err();
    assert_eq!(errs.len(), 1);
    assert_eq!(
        errs[0],
        "/etc/stowage/config.toml:2:1: unknown key \"concurency\" in [pull]: did you mean \
         \"concurrency\"?"
    );
    let errs = parse("[[image]]\nname = \"a\"\ntag = \"1\"\n").unwrap_err();
    assert!(
        errs[0].contains(":3:1: unknown key \"tag\" in [image] (known keys: name,"),
        "{}",
        errs[0]
    );
    let errs = parse("[puller]\n").unwrap_err();
    assert!(
        errs[0].contains(":1:2: unknown key \"puller\" at the top level: did you mean \"pull\"?"),
        "{}",
        errs[0]
    );
}

#[test]
fn every_shape_problem_and_every_value_problem_is_listed_in_one_run() {
    // The issue's file: an unknown key, a quoted number, then a bad value, each on its line.
    let errs = parse(
        "[pull]\nschedual = \"1h\"\nconcurrency = \"4\"\nretries = 99999\n\
         [[image]]\nname = 5\n[[image]]\nname = \"r.example/a:1\"\nplatform = [\"linux\"]\n\
         [prune]\nmax_removals = true\n",
    )
    .unwrap_err();
    let expected = [
        ":2:1: unknown key \"schedual\" in [pull]: did you mean \"schedule\"?",
        ":3:15: pull.concurrency: expected an integer (no quotes), found the string \"4\"",
        ":4:11: pull.retries: 99999 is out of range",
        ":6:8: image.name: expected a string (in quotes), found the integer 5",
        ":9:12: image.platform: expected a string (in quotes), found an array",
        ":11:16: prune.max_removals: expected an integer (no quotes), found true",
    ];
    assert_eq!(errs.len(), expected.len(), "{errs:#?}");
    for (err, at) in errs.iter().zip(expected) {
        assert!(err.contains(at), "{err}\nexpected {at}");
    }
}

#[test]
fn a_wrong_type_in_a_later_image_is_found_too() {
    let errs = parse("[[image]]\nname = \"r.example/a:1\"\nplatform = [\"linux\"]\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
}

#[test]
fn a_syntax_error_is_located_and_stops_the_reading() {
    let errs = parse("[pull]\nschedule = \"1h\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:#?}");
    assert!(
        errs[0].starts_with("/etc/stowage/config.toml:2:"),
        "{}",
        errs[0]
    );
}

#[test]
fn syntax_and_type_errors_have_locations() {
    let errs = parse("[pull]\nconcurrency = \"four\"\n").unwrap_err();
    assert!(
        errs[0].starts_with("/etc/stowage/config.toml:2:15:"),
        "{}",
        errs[0]
    );
    let errs = parse("[pull\n").unwrap_err();
    assert!(
        errs[0].starts_with("/etc/stowage/config.toml:1:"),
        "{}",
        errs[0]
    );
}

#[test]
fn duplicates_name_the_first_declaration() {
    // As written, and as read when that differs.
    let errs = parse("[[image]]\nname = \"r.example/a:1\"\n[[image]]\nname = \"nginx\"\n[[image]]\nname = \"r.example/a:1\"\n[[image]]\nname = \"docker.io/library/nginx\"\n")
        .unwrap_err();
    assert!(
        errs[0].ends_with("image.name: \"r.example/a:1\" is required twice: first at line 2"),
        "{}",
        errs[0]
    );
    assert!(errs[1].ends_with("image.name: \"docker.io/library/nginx\" (docker.io/library/nginx:latest) is required twice: first at line 4"), "{}", errs[1]);
    let errs = parse(
        "[[image]]\nname = \"nginx\"\n[[image]]\nname = \"docker.io/library/nginx:latest\"\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains(":4:8:")
            && errs[0]
                .contains("\"docker.io/library/nginx:latest\" is required twice: first at line 2"),
        "{}",
        errs[0]
    );
    // Nor the same tag once with and once without a digest: the two would fight over it.
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let errs = parse(&format!(
        "[[image]]\nname = \"a:1\"\n[[image]]\nname = \"a:1@{d}\"\n"
    ))
    .unwrap_err();
    assert!(
        errs[0].contains("required twice: first at line 2"),
        "{}",
        errs[0]
    );
    // Not even for two platforms: one local tag cannot point at both.
    let errs = parse("[[image]]\nname = \"a:1\"\nplatform = \"linux/amd64\"\n[[image]]\nname = \"a:1\"\nplatform = \"linux/arm64\"\n").unwrap_err();
    assert!(
        errs[0].contains("required twice: first at line 2"),
        "{}",
        errs[0]
    );
}

#[test]
fn backoff_bounds_are_checked() {
    let errs = parse("[pull]\nbackoff = \"10s\"\nbackoff_max = \"1s\"\n").unwrap_err();
    assert!(
        errs[0].contains("pull.backoff_max: \"1s\" is shorter than pull.backoff (10s)"),
        "{}",
        errs[0]
    );
    let errs = parse("[pull]\ntimeout = \"0s\"\n").unwrap_err();
    assert!(errs[0].contains("must be more than zero"), "{}", errs[0]);
}

#[test]
fn registries_mirrors_and_files() {
    let c = parse(
        "[pin]\nlock_file = \"fleet.lock\"\n[state]\nfile = \"/var/tmp/s.json\"\n\
         [[registry]]\nhost = \"127.0.0.1:5101\"\n\
         mirrors = [\"127.0.0.1:5103\", \"harbor.example/dockerhub-proxy/\"]\n\
         [[registry]]\nhost = \"index.docker.io\"\ninsecure = true\n",
    )
    .unwrap();
    assert_eq!(c.lock_file, PathBuf::from("/etc/stowage/fleet.lock"));
    assert_eq!(c.state_file, PathBuf::from("/var/tmp/s.json"));
    let mirrors = &c.registry("127.0.0.1:5101").unwrap().mirrors;
    assert_eq!(
        mirrors.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["127.0.0.1:5103", "harbor.example/dockerhub-proxy"]
    );
    assert_eq!(mirrors[1].host, "harbor.example");
    assert_eq!(
        mirrors[1].name_of("library/nginx"),
        "harbor.example/dockerhub-proxy/library/nginx"
    );
    assert!(c.registry("docker.io").unwrap().insecure);
    assert_eq!(
        parse("").unwrap().lock_file,
        PathBuf::from("/etc/stowage/stowage.lock")
    );
    let errs =
        parse("[[registry]]\nhost = \"https://r.example\"\nmirrors = [\"m/x\"]\n").unwrap_err();
    assert_eq!(errs.len(), 2, "{errs:#?}");
    assert!(
        errs[0].contains(":2:8: registry.host: invalid registry \"https://r.example\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(":3:12: registry.mirrors: invalid mirror \"m/x\""),
        "{}",
        errs[1]
    );
}

#[test]
fn mirror_paths_follow_the_repository_grammar() {
    for bad in [
        "r.example/Proxy",
        "r.example//x",
        "r.example/",
        "r.example/x:1",
        "r.example/x@sha256:00",
        "https://r.example/x",
        "proxy/x",
    ] {
        let config = format!("[[registry]]\nhost = \"o.example\"\nmirrors = [\"{bad}\"]\n");
        let errs = parse(&config).unwrap_err();
        assert!(
            errs[0].contains(&format!(
                ":3:12: registry.mirrors: invalid mirror \"{bad}\""
            )),
            "{bad}: {errs:?}"
        );
    }
    let c = parse("[[registry]]\nhost = \"o.example\"\nmirrors = [\"localhost:5000/a/b-c/d_e\"]\n")
        .unwrap();
    assert_eq!(
        c.registry("o.example").unwrap().mirrors[0]
            .prefix
            .as_deref(),
        Some("a/b-c/d_e")
    );
}

#[test]
fn a_digest_name_takes_no_pin_mode() {
    let d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
    let errs = parse(&format!("[[image]]\nname = \"a@{d}\"\npin = \"follow\"\n")).unwrap_err();
    assert!(
        errs[0].contains(":3:7: image.pin: \"follow\" does not apply"),
        "{}",
        errs[0]
    );
}

#[test]
fn prune_settings() {
    let c = parse(
        "[prune]\nmin_age = \"2h\"\nunused_max_age = \"30d\"\nhigh_watermark = \"85%\"\n\
         low_watermark = \"80%\"\nmax_store_size = \"10GB\"\nkeep = [\"r/infra/*\"]\n\
         keep_labels = [\"tier=infra\", \"keep\"]\nkeep_newest = 2\n",
    )
    .unwrap();
    let p = c.prune.unwrap();
    assert_eq!(p.limits.min_age, 7200);
    assert_eq!(p.limits.unused_max_age, Some(30 * 86_400));
    assert_eq!(
        (p.limits.high_watermark, p.limits.low_watermark),
        (Some(85.0), Some(80.0))
    );
    assert_eq!(p.limits.max_store_size, Some(10_000_000_000));
    assert_eq!(
        p.keep.labels[0],
        ("tier".to_owned(), Some("infra".to_owned()))
    );
    assert_eq!(p.keep.newest_per_repository, 2);
    assert!(parse("").unwrap().prune.is_none());
    let errs = parse(
        "[prune]\nhigh_watermark = \"80%\"\nlow_watermark = \"90%\"\nkeep = [\"regex:(\"]\nmax_store_size = \"lots\"\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains(":3:17: prune.low_watermark: 90% must be below"),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(":4:9: prune.keep: invalid pattern \"regex:(\""),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains(":5:18: prune.max_store_size: invalid size \"lots\""),
        "{}",
        errs[2]
    );
}

#[test]
fn keep_patterns_are_read_like_image_names() {
    let c = parse("[prune]\nkeep = [\"alpine\", \"busybox:*\"]\n").unwrap();
    let keep = c.prune.unwrap().keep;
    let kept = |name: &str| keep.names.iter().find(|m| m.regex.is_match(name));
    let written = |name: &str| kept(name).map(|m| m.written.as_str());
    assert_eq!(written("docker.io/library/alpine:latest"), Some("alpine"));
    assert_eq!(written("docker.io/library/busybox:1.36"), Some("busybox:*"));
    assert_eq!(written("docker.io/library/nginx:latest"), None);
}

#[test]
fn keep_patterns_that_can_never_match_are_problems_at_their_line() {
    let errs = parse(
        "[prune]\nkeep = [\n  \"Alpine\",\n  \"someorg/**\",\n  \"nginx:\",\n  \"\",\n  \
         \"nginx@md5:00\", \"*\",\n]\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 5, "{errs:#?}");
    for (err, at) in errs.iter().zip([
        ":3:3: prune.keep: invalid pattern \"Alpine\": repository names are lowercase",
        ":5:3: prune.keep: invalid pattern \"nginx:\": the tag \"\" can never match",
        ":6:3: prune.keep: invalid pattern \"\": an empty pattern matches no image",
        ":7:3: prune.keep: invalid pattern \"nginx@md5:00\": the digest",
        ":7:19: prune.keep: invalid pattern \"*\": \"*\" matches within one path segment",
    ]) {
        assert!(err.contains(at), "{err}\nexpected {at}");
    }
}

#[test]
fn relative_credentials_are_beside_the_config_and_must_be_there() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("docker")).unwrap();
    let config = dir.path().join("config.toml");
    let text = "[pull]\ncredentials = \"docker/config.json\"\n";
    let errs = Config::parse(&config, text).unwrap_err().to_string();
    assert!(
        errs.contains(":2:15: pull.credentials: ") && errs.contains("config.json does not exist"),
        "{errs}"
    );
    let errs = Config::parse(&config, "[pull]\ncredentials = \"docker\"\n")
        .unwrap_err()
        .to_string();
    assert!(errs.contains("is a directory"), "{errs}");
    // One that does not parse would be read as no login at all.
    std::fs::write(dir.path().join("docker/config.json"), "{not json").unwrap();
    let errs = Config::parse(&config, text).unwrap_err().to_string();
    assert!(
        errs.contains(":2:15: pull.credentials: ") && errs.contains("is not valid JSON (key must"),
        "{errs}"
    );
    std::fs::write(dir.path().join("docker/config.json"), "{}").unwrap();
    let c = Config::parse(&config, text).unwrap();
    assert_eq!(
        c.pull.credentials.unwrap(),
        dir.path().join("docker/config.json")
    );
}

#[test]
fn a_platform_no_index_names_is_refused_with_the_one_meant() {
    let image = |p: &str| format!("[[image]]\nname = \"r.example/a:1\"\nplatform = \"{p}\"\n");
    let errs = parse(&image("linux/amd")).unwrap_err();
    assert!(
        errs[0].contains(
            ":3:12: image.platform: invalid platform \"linux/amd\": unknown architecture \"amd\": \
             did you mean amd64 or amd64p32?"
        ),
        "{}",
        errs[0]
    );
    let errs = parse(&image("linx/arm64")).unwrap_err();
    assert!(
        errs[0].contains("unknown operating system \"linx\": did you mean linux?"),
        "{}",
        errs[0]
    );
    for ok in [
        "linux/amd64",
        "linux/arm64/v8",
        "linux/arm/v7",
        "windows/amd64",
        "linux/s390x",
    ] {
        assert!(parse(&image(ok)).is_ok(), "{ok}");
    }
}

#[test]
fn the_example_config_is_valid() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.example.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(!c.images.is_empty());
}

proptest! {
    /// Whatever the input, parsing never panics, and a rejected file has at least one
    /// problem, each with a position inside the file.
    #[test]
    fn parse_never_panics(text in "[ -~\n]{0,200}") {
        if let Err(problems) = parse(&text) {
            prop_assert!(!problems.is_empty());
            let lines = text.split('\n').count();
            for p in problems {
                let rest = p.strip_prefix("/etc/stowage/config.toml:").unwrap();
                let mut parts = rest.splitn(3, ':');
                let line: usize = parts.next().unwrap().parse().unwrap();
                let column: usize = parts.next().unwrap().parse().unwrap();
                prop_assert!(line >= 1 && line <= lines, "{p}");
                let width = text.split('\n').nth(line - 1).unwrap().chars().count();
                prop_assert!(column >= 1 && column <= width + 1, "{p}");
            }
        }
    }

    /// Random settings in range are accepted and come back as written.
    #[test]
    fn settings_round_trip(concurrency in 1i64..=64, retries in 0i64..=100, secs in 1u64..100_000) {
        let text = format!("[pull]\nconcurrency = {concurrency}\nretries = {retries}\ntimeout = \"{secs}s\"\n");
        let c = parse(&text).unwrap();
        prop_assert_eq!(c.pull.concurrency as i64, concurrency);
        prop_assert_eq!(i64::from(c.pull.retry.retries), retries);
        prop_assert_eq!(c.pull.timeout, Duration::from_secs(secs));
    }
}

#[test]
fn check_updates_is_an_interval_longer_than_zero() {
    assert_eq!(parse("").unwrap().check_updates, None);
    assert_eq!(
        parse("[pin]\ncheck_updates = \"6h\"\n")
            .unwrap()
            .check_updates,
        Some(Duration::from_secs(6 * 3600))
    );
    let errs = parse("[pin]\ncheck_updates = \"0s\"\n").unwrap_err();
    assert_eq!(
        errs,
        [
            "/etc/stowage/config.toml:2:17: pin.check_updates: must be longer than 0s (leave it out to never check)"
        ]
    );
    let errs = parse("[pin]\ncheck_updates = \"often\"\n").unwrap_err();
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with(
            "/etc/stowage/config.toml:2:17: pin.check_updates: invalid duration \"often\""
        ),
        "{errs:?}"
    );
}

#[test]
fn windows_are_read_with_their_zone_and_refused_with_their_line() {
    let c = parse(
        "[pull.window]\nstart = \"0 2 * * *\"\nduration = \"4h\"\ntime_zone = \"Europe/Berlin\"\n\
         [prune]\n[prune.window]\nstart = \"0 3 * * 6\"\nduration = \"90m\"\n",
    )
    .unwrap();
    let pull = c.pull.window.as_ref().unwrap();
    assert_eq!(pull.length, Duration::from_secs(4 * 3600));
    assert_eq!(pull.zone.to_string(), "Europe/Berlin");
    let prune = c.prune.as_ref().unwrap().window.as_ref().unwrap();
    assert_eq!(prune.zone.to_string(), "host");
    assert_eq!(prune.start.expr(), "0 3 * * 6");

    let errs = parse(
        "[pull.window]\nstart = \"0 25 * * *\"\nduration = \"0s\"\ntime_zone = \"Mars/Olympus\"\n",
    )
    .unwrap_err();
    assert_eq!(errs.len(), 3, "{errs:#?}");
    assert!(
        errs[0].contains(":2:9: pull.window.start: invalid cron expression \"0 25 * * *\""),
        "{}",
        errs[0]
    );
    assert!(
        errs[1].contains(":3:12: pull.window.duration: \"0s\" must be more than zero"),
        "{}",
        errs[1]
    );
    assert!(
        errs[2].contains(":4:13: pull.window.time_zone: unknown time zone \"Mars/Olympus\""),
        "{}",
        errs[2]
    );

    let errs = parse("[prune]\n[prune.window]\nstart = \"*/5 * * * *\"\nduration = \"10m\"\n")
        .unwrap_err();
    assert!(
        errs[0].contains(":3:9: prune.window: the window never closes"),
        "{}",
        errs[0]
    );
    let errs = parse("[pull.window]\nstart = \"0 2 * * *\"\n").unwrap_err();
    assert!(
        errs[0].contains(":1:1: pull.window: the key \"duration\" is missing"),
        "{}",
        errs[0]
    );
    let errs = parse("[pull.window]\nstart = \"0 2 * * *\"\nduration = \"1h\"\nzone = \"UTC\"\n")
        .unwrap_err();
    assert!(
        errs[0]
            .contains(":4:1: unknown key \"zone\" in [pull.window]: did you mean \"time_zone\"?"),
        "{}",
        errs[0]
    );
}

mod verify {
    use super::*;
    use crate::policy::signature::VerifyMode;
    use crate::policy::signature::test_keys::pem_pair;

    /// `text` as `config.toml` in a directory holding the keys `release.pub` and `team.pub`.
    fn parse_with_keys(text: &str) -> (Result<Config, Vec<String>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        for name in ["release.pub", "team.pub"] {
            std::fs::write(dir.path().join(name), pem_pair().1).unwrap();
        }
        std::fs::write(dir.path().join("not-a-key.pub"), "hello").unwrap();
        let result = Config::parse(&dir.path().join("config.toml"), text).map_err(|e| match e {
            ConfigError::Invalid { problems } => problems.iter().map(ToString::to_string).collect(),
            ConfigError::Read { .. } => unreachable!("parse never reads"),
        });
        (result, dir)
    }

    fn keys(c: &Config, i: usize) -> Vec<String> {
        c.images[i].verify.as_ref().map_or_else(Vec::new, |p| {
            p.keys
                .iter()
                .map(|k| k.path.file_name().unwrap().to_string_lossy().into_owned())
                .collect()
        })
    }

    #[test]
    fn the_first_matching_pattern_applies_and_an_image_overrides_it() {
        let (c, _dir) = parse_with_keys(
            r#"
[[verify]]
match = "r.example/team/**"
keys = ["team.pub"]
mode = "warn"

[[verify]]
match = "r.example/**"
keys = ["release.pub"]

[[image]]
name = "r.example/team/app:1"

[[image]]
name = "r.example/base:1"

[[image]]
name = "r.example/base:2"
verify = { keys = ["release.pub", "team.pub"] }

[[image]]
name = "r.example/team/tool:1"
verify = { mode = "off" }

[[image]]
name = "other.example/x:1"
"#,
        );
        let c = c.unwrap();
        assert_eq!(keys(&c, 0), ["team.pub"]);
        assert_eq!(c.images[0].verify.as_ref().unwrap().mode, VerifyMode::Warn);
        assert_eq!(keys(&c, 1), ["release.pub"]);
        assert_eq!(
            c.images[1].verify.as_ref().unwrap().mode,
            VerifyMode::Enforce
        );
        assert_eq!(keys(&c, 2), ["release.pub", "team.pub"]);
        assert!(c.images[3].verify.is_none(), "off");
        assert!(c.images[4].verify.is_none(), "no pattern matches");
        // One key file, one read: both policies hold the same key.
        let a = &c.images[1].verify.as_ref().unwrap().keys[0];
        let b = &c.images[2].verify.as_ref().unwrap().keys[0];
        assert!(std::sync::Arc::ptr_eq(a, b));
    }

    #[test]
    fn a_cooldown_comes_from_the_image_or_its_verify_entry_and_needs_no_keys() {
        let (c, _dir) = parse_with_keys(
            r#"
[[verify]]
match = "r.example/team/**"
keys = ["team.pub"]
min_digest_age = "24h"

[[verify]]
match = "r.example/**"
min_digest_age = "2h"

[[image]]
name = "r.example/team/app:1"

[[image]]
name = "r.example/base:1"

[[image]]
name = "r.example/team/tool:1"
min_digest_age = "0s"

[[image]]
name = "other.example/x:1"
min_digest_age = "30m"
"#,
        );
        let c = c.unwrap();
        let ages: Vec<Option<u64>> = c
            .images
            .iter()
            .map(|i| i.min_digest_age.map(|d| d.as_secs()))
            .collect();
        assert_eq!(ages, [Some(86_400), Some(7_200), None, Some(1_800)]);
        assert_eq!(keys(&c, 0), ["team.pub"]);
        assert!(
            c.images[1].verify.is_none(),
            "a cooldown alone verifies nothing"
        );
        let (c, _dir) = parse_with_keys(
            "[[verify]]\nmatch = \"r.example/**\"\nmin_digest_age = \"a day\"\n\n\
             [[verify]]\nmatch = \"q.example/**\"\nmode = \"enforce\"\nmin_digest_age = \"1h\"\n",
        );
        let problems = c.unwrap_err();
        assert!(
            problems[0].contains("config.toml:3:")
                && problems[0].contains("verify.min_digest_age: invalid duration \"a day\""),
            "{problems:?}"
        );
        assert!(problems[1].contains("verify: no keys"), "{problems:?}");
    }

    #[test]
    fn a_cooldown_entry_and_a_keys_entry_both_apply_in_either_order() {
        // An entry that sets only a cooldown says nothing of signatures: it must never switch
        // verification off for the images it matches first, nor hide a later cooldown.
        let (c, _dir) = parse_with_keys(
            r#"
[[verify]]
match = "r.example/**"
min_digest_age = "1h"

[[verify]]
match = "r.example/team/**"
keys = ["team.pub"]

[[verify]]
match = "q.example/quick/**"
keys = ["release.pub"]
min_digest_age = "0s"

[[verify]]
match = "q.example/**"
keys = ["release.pub"]

[[verify]]
match = "q.example/**"
min_digest_age = "2h"

[[image]]
name = "r.example/team/app:1"

[[image]]
name = "q.example/app:1"

[[image]]
name = "q.example/quick/app:1"
"#,
        );
        let c = c.unwrap();
        assert_eq!(keys(&c, 0), ["team.pub"]);
        assert_eq!(c.images[0].min_digest_age, Some(Duration::from_secs(3600)));
        assert_eq!(keys(&c, 1), ["release.pub"]);
        assert_eq!(c.images[1].min_digest_age, Some(Duration::from_secs(7200)));
        // "0s" on a narrower entry exempts from a broader cooldown.
        assert_eq!(keys(&c, 2), ["release.pub"]);
        assert_eq!(c.images[2].min_digest_age, None);
    }

    #[test]
    fn identities_need_a_trust_root_and_say_what_is_wrong_at_their_line() {
        let dir = tempfile::tempdir().unwrap();
        let sigstore = crate::decide::signature::test_sigstore();
        std::fs::write(dir.path().join("root.json"), sigstore).unwrap();
        std::fs::write(dir.path().join("junk.json"), "{}").unwrap();
        let parse_in = |text: &str| {
            Config::parse(&dir.path().join("config.toml"), text).map_err(|e| match e {
                ConfigError::Invalid { problems } => {
                    problems.iter().map(ToString::to_string).collect::<Vec<_>>()
                }
                ConfigError::Read { .. } => unreachable!("parse never reads"),
            })
        };
        let c = parse_in(
            r#"
[[verify]]
match = "ghcr.io/org/**"
trust_root = "root.json"
identities = [
  { issuer = "https://token.actions.githubusercontent.com", subject_regex = "^https://github.com/org/" },
]

[[image]]
name = "ghcr.io/org/app:1"

[[image]]
name = "ghcr.io/org/tool:1"
verify = { identities = [{ issuer = "https://accounts.example", subject = "ci@example.org" }] }
"#,
        )
        .unwrap();
        let keyless = |i: usize| {
            c.images[i]
                .verify
                .as_ref()
                .unwrap()
                .keyless
                .clone()
                .unwrap()
        };
        assert!(keyless(0).require_tlog);
        assert!(keyless(0).identities[0].matches(
            "https://github.com/org/app/.github/workflows/r.yml@refs/heads/main",
            "https://token.actions.githubusercontent.com"
        ));
        // The image's own identities, over the entry's trust root.
        assert!(keyless(1).identities[0].matches("ci@example.org", "https://accounts.example"));
        assert!(!keyless(1).identities[0].matches("ci@example.org", "https://other.example"));

        let problems = parse_in(
            "[[verify]]\nmatch = \"a.example/**\"\nidentities = [{ issuer = \"https://i\", subject = \"s\" }]\n\n\
             [[verify]]\nmatch = \"b.example/**\"\ntrust_root = \"junk.json\"\n\
             identities = [{ issuer = \"https://i\", subject = \"s\" }]\n\n\
             [[verify]]\nmatch = \"c.example/**\"\ntrust_root = \"root.json\"\n\
             identities = [{ issuer = \"https://i\" }, { issuer = \"https://i\", subject_regex = \"(\" }]\n\n\
             [[verify]]\nmatch = \"d.example/**\"\ntrust_root = \"root.json\"\n",
        )
        .unwrap_err();
        let all = problems.join("\n");
        assert!(
            all.contains(":2:9: verify.identities: no trust_root"),
            "{all}"
        );
        assert!(
            all.contains(":7:14: verify.trust_root: ")
                && all.contains("junk.json\": not a Sigstore trusted_root.json"),
            "{all}"
        );
        assert!(
            all.contains(":13:15: verify.identities: write one of `subject`"),
            "{all}"
        );
        assert!(
            all.contains("verify.identities: invalid subject_regex \"(\""),
            "{all}"
        );
        assert!(
            all.contains(":16:9: verify.trust_root: no identities"),
            "{all}"
        );
    }

    #[test]
    fn patterns_are_read_as_image_names_and_a_tag_is_refused() {
        let (c, _dir) = parse_with_keys(
            "[[verify]]\nmatch = \"someorg/**\"\nkeys = [\"team.pub\"]\n\n\
             [[verify]]\nmatch = \"alpine\"\nkeys = [\"release.pub\"]\n\n\
             [[image]]\nname = \"someorg/app:1\"\n\n[[image]]\nname = \"alpine:3.20\"\n",
        );
        let c = c.unwrap();
        assert_eq!(keys(&c, 0), ["team.pub"]);
        assert_eq!(keys(&c, 1), ["release.pub"]);
        let (c, _dir) = parse_with_keys(
            "[[verify]]\nmatch = \"r.example/app:1.*\"\nkeys = [\"team.pub\"]\n\n\
             [[verify]]\nmatch = \"Someorg/**\"\nkeys = [\"team.pub\"]\n",
        );
        let problems = c.unwrap_err();
        assert_eq!(problems.len(), 2, "{problems:#?}");
        assert!(
            problems[0].contains(
                ":2:9: verify.match: invalid pattern \"r.example/app:1.*\": it is matched \
                 against registry/repository, where a tag or digest never appears: write \
                 \"r.example/app\""
            ),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].contains(
                ":6:9: verify.match: invalid pattern \"Someorg/**\": repository names are lowercase"
            ),
            "{}",
            problems[1]
        );
    }

    #[test]
    fn bad_keys_and_modes_are_refused_at_their_line_with_the_value() {
        let (c, dir) = parse_with_keys(
            r#"[[verify]]
match = "r.example/**"
keys = ["missing.pub", "not-a-key.pub"]

[[verify]]
match = "s.example/**"
keys = ["release.pub"]
mode = "strict"

[[image]]
name = "t.example/a:1"
verify = { mode = "warn" }
"#,
        );
        let problems = c.unwrap_err();
        let dir = dir.path().display();
        assert_eq!(problems.len(), 4, "{problems:#?}");
        assert!(
            problems[0].starts_with(&format!(
                "{dir}/config.toml:3:9: verify.keys: \"{dir}/missing.pub\": cannot read it"
            )),
            "{}",
            problems[0]
        );
        assert!(
            problems[1].starts_with(&format!(
                "{dir}/config.toml:3:24: verify.keys: \"{dir}/not-a-key.pub\": no PEM"
            )),
            "{}",
            problems[1]
        );
        assert!(
            problems[2].contains(":8:8: verify.mode: unknown mode \"strict\""),
            "{}",
            problems[2]
        );
        assert!(
            problems[3].contains(":12:10: image.verify: no keys or identities for t.example/a:1"),
            "{}",
            problems[3]
        );
    }
}

/// No library's raw words: each message names the key, the value, what is wrong with it in
/// the operator's terms, and what is accepted.
#[test]
fn durations_sizes_and_cron_fields_are_refused_in_words() {
    let errs = parse(
        "[pull]\nschedule = \"0 25 * * *\"\nsplay = \"soon\"\ntimeout = \"10 parsecs\"\n\
         backoff = \"5s later\"\nready_timeout = \"5h30\"\n[prune]\n\
         max_store_size = \"10 gigs\"\nschedule = \"0 0 * 13 MON\"\n\
         keep = [\"regex:[unclosed\"]\n",
    )
    .unwrap_err();
    let all = errs.join("\n");
    for expected in [
        "pull.schedule: invalid cron expression \"0 25 * * *\": the hour field \"25\" is not valid (0-23",
        "pull.splay: invalid duration \"soon\": it must start with a number; write e.g. \"30s\"",
        "pull.timeout: invalid duration \"10 parsecs\": unknown unit \"parsecs\"",
        "pull.backoff: invalid duration \"5s later\": a number is expected before \"later\"",
        "prune.max_store_size: invalid size \"10 gigs\": write a number and a unit, B, KB",
        "prune.schedule: invalid cron expression \"0 0 * 13 MON\": the month field \"13\" is not valid (1-12",
        "pull.ready_timeout: invalid duration \"5h30\": a number needs a unit",
        "prune.keep: invalid pattern \"regex:[unclosed\": regex parse error:",
    ] {
        assert!(all.contains(expected), "{expected}\n{all}");
    }
    for raw in [
        "Component error",
        "expected number at",
        "SI unit",
        "Failed to parse",
        "unit \"\"",
    ] {
        assert!(!all.contains(raw), "{raw}\n{all}");
    }
    // One problem, one line.
    assert!(errs.iter().all(|e| !e.contains('\n')), "{all}");
}

#[test]
fn a_name_without_a_registry_is_known_to_mean_docker_hub() {
    let c = parse(
        "[[image]]\nname = \"nginx\"\n[[image]]\nname = \"org/app:1\"\n[[image]]\nname = \"docker.io/library/redis:7\"\n[[image]]\nname = \"localhost/app:1\"\n[[image]]\nname = \"r.example:5000/app:1\"\n",
    )
    .unwrap();
    let implied: Vec<bool> = c.images.iter().map(|i| i.hub_implied).collect();
    assert_eq!(implied, [true, true, false, false, false]);
}

#[test]
fn a_watermark_without_its_percent_sign_is_refused_with_what_was_meant() {
    let text = parse("[prune]\nhigh_watermark = \"0.85\"\nlow_watermark = \"80\"\n").unwrap_err();
    assert!(
        text[0].ends_with(
            ":2:18: prune.high_watermark: \"0.85\" has no % sign; write \"85%\" for 85 percent, \
             or \"0.85%\" if you mean 0.85 percent"
        ),
        "{text:?}"
    );
    assert!(
        text[1].ends_with(":3:17: prune.low_watermark: \"80\" has no % sign; write e.g. \"85%\""),
        "{text:?}"
    );
}

#[test]
fn a_bare_value_says_to_quote_it_not_the_grammar() {
    let errs = parse("[state]\nfile = /var/lib/stowage/state.json\n").unwrap_err();
    assert!(
        errs[0].contains(":2:8: string values must be quoted: write key = \"value\""),
        "{errs:?}"
    );
    assert!(!errs[0].contains("literal string"), "{errs:?}");
}
