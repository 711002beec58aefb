//! The container image (`scripts/image.sh`, saved to `target/image/stowage.tar` by
//! `scripts/test.sh`), run the way operators run it on each engine: the engine's socket
//! mounted, a config directory and a state directory mounted, the engine's data root
//! mounted read-only for the watermarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::prune::seasoned_state;
use crate::support::{Env, Scratch, engine_lock, env, free_port, poll};

const LIVENESS: Duration = Duration::from_secs(90);

/// The archive `scripts/image.sh --save` writes.
fn archive() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("target/image/stowage.tar")
}

/// Loads the image into the engine under test; its ID.
fn load_image(env: &Env) -> String {
    let tar = archive();
    assert!(
        tar.exists(),
        "no {}: build it with `scripts/image.sh --save target/image/stowage.tar`",
        tar.display()
    );
    let out = env.docker(&["load", "-q", "-i", &tar.display().to_string()]);
    assert!(out.status.success(), "docker load: {out:?}");
    let tag = format!("stowage:{}", env!("CARGO_PKG_VERSION"));
    env.image_id(&tag)
        .unwrap_or_else(|| panic!("{tag} is not in the engine after the load: {out:?}"))
}

/// The engine's data root, as it reports it.
fn data_root(env: &Env) -> String {
    let out = env.docker(&["info", "--format", "{{.DockerRootDir}}"]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A container's state, as `docker inspect` formats `template`.
fn inspect(env: &Env, container: &str, template: &str) -> String {
    let out = env.docker(&["inspect", "--format", template, container]);
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The daemon in the container, with its config directory and state directory.
struct Running<'a> {
    env: &'a Env,
    name: String,
}

impl Running<'_> {
    fn logs(&self) -> String {
        let out = self.env.docker(&["logs", &self.name]);
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
    }
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        let _ = self.env.docker(&["rm", "-f", &self.name]);
    }
}

/// Starts the image as a daemon: host network (the registries are on the host's loopback),
/// the mounts of the README's `docker run`, a health check every second.
fn start<'a>(env: &'a Env, image: &str, etc: &Path, state: &Path) -> Running<'a> {
    let name = format!("stowage-under-test-{}", std::process::id());
    let _ = env.docker(&["rm", "-f", &name]);
    let socket = env.docker_host.strip_prefix("unix://").unwrap();
    let root = data_root(env);
    let mounts = [
        format!("{socket}:/var/run/docker.sock"),
        format!("{}:/etc/stowage:ro", etc.display()),
        format!("{}:/var/lib/stowage", state.display()),
        format!("{root}:{root}:ro"),
    ];
    let mut args = vec!["run", "-d", "--name", &name, "--network", "host"];
    for m in &mounts {
        args.extend(["-v", m.as_str()]);
    }
    // Podman runs health checks from systemd timers (none here; the test runs the check by
    // hand there), and Podman 5.8's compatible API refuses an interval without a command
    // rather than take the image's.
    if !env.engine.is_podman() {
        args.extend(["--health-interval", "1s"]);
    }
    args.extend([image, "--log-format", "json", "run"]);
    let out = env.docker(&args);
    assert!(out.status.success(), "docker run: {out:?}");
    Running { env, name }
}

#[test]
fn the_image_pulls_prunes_keeps_itself_reports_health_and_stops_cleanly() {
    let _lock = engine_lock();
    let env = env();
    let image = load_image(&env);
    let size = inspect(&env, &image, "{{.Size}}");
    eprintln!("image {image}: {size} bytes");
    let wanted = env.plain_image("gamma:1");
    env.purge_images(std::slice::from_ref(&wanted));
    // Local-only and unused: what the prune rules below remove.
    let junk = env.build_image(
        "stowage-container-test/junk:1",
        "scratch",
        &format!("junk {}", std::process::id()),
        None,
    );

    let scratch = Scratch::new();
    let (etc, state) = (
        scratch.dir.path().join("etc"),
        scratch.dir.path().join("state"),
    );
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&state).unwrap();
    // Every image here, stowage's own included, has been unused for 60 days.
    seasoned_state(&env, &state.join("state.json"), 60);
    let port = free_port();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "[pull]\nsplay = \"0s\"\n[state]\nfile = \"/var/lib/stowage/state.json\"\n\
             [metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [prune]\nschedule = \"*/2 * * * * *\"\nmin_age = \"0s\"\nunused_max_age = \"1d\"\n\
             dangling_min_age = \"0s\"\nprune_local_only = true\npause = \"0s\"\n\
             high_watermark = \"99%\"\nlow_watermark = \"98%\"\n\
             keep = [\"127.0.0.1:*/**\"]\n\
             [[image]]\nname = \"{wanted}\"\n"
        ),
    )
    .unwrap();

    let started = Instant::now();
    let daemon = start(&env, &image, &etc, &state);
    let ready = poll(LIVENESS, || {
        crate::support::try_http_get(port, "/readyz").filter(|(status, _)| *status == 200)
    });
    assert!(ready.is_some(), "never ready: {}", daemon.logs());
    eprintln!("container start to ready: {:?}", started.elapsed());
    assert!(env.has_image(&wanted), "the required image was not pulled");

    // A prune cycle removes the junk, and never the image stowage runs from.
    let pruned = poll(LIVENESS, || env.image_id(&junk).is_none().then_some(()));
    assert!(
        pruned.is_some(),
        "the junk was never pruned: {}",
        daemon.logs()
    );
    assert_eq!(env.image_id(&image).as_deref(), Some(image.as_str()));
    assert!(env.has_image(&wanted));
    // The data root is mounted: the watermarks can measure its disk.
    let logs = daemon.logs();
    assert!(!logs.contains("watermarks cannot fire"), "{logs}");
    assert!(logs.contains("\"message\":\"prune scheduled\""), "{logs}");

    // Healthy: the engine's own health check where it runs one (Podman runs them from systemd
    // timers, and there is no systemd here), else the same command run by hand.
    if env.engine.is_podman() {
        let out = env.docker(&["exec", &daemon.name, "/usr/bin/stowage", "health"]);
        assert!(out.status.success(), "{out:?}");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
    } else {
        let healthy = poll(LIVENESS, || {
            (inspect(&env, &daemon.name, "{{.State.Health.Status}}") == "healthy").then_some(())
        });
        assert!(
            healthy.is_some(),
            "{}",
            inspect(&env, &daemon.name, "{{json .State.Health}}")
        );
    }

    // `docker stop`: SIGTERM, drained, exit 0 (Podman's compatible API kills at once
    // without a timeout, so one is given).
    let out = env.docker(&["stop", "-t", "20", &daemon.name]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(inspect(&env, &daemon.name, "{{.State.ExitCode}}"), "0");
    let logs = daemon.logs();
    assert!(logs.contains("\"message\":\"stopped\""), "{logs}");
    drop(daemon);
    env.purge_images(&[wanted]);
}

/// The examples' placeholder for the image, pinned by digest.
const EXAMPLE_IMAGE: &str = "registry.example.com/platform/stowage:0.1.0@sha256:\
                             0000000000000000000000000000000000000000000000000000000000000000";

fn example(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples/container")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// `from` replaced by `to` in `text`, which must hold it: the example still says it.
fn substitute(text: &str, from: &str, to: &str) -> String {
    assert!(
        text.contains(from),
        "the example no longer has {from:?}:\n{text}"
    );
    text.replace(from, to)
}

/// The image pushed to the plain registry, as an operator pushes it to theirs: its
/// `name:tag@digest`.
fn push_image(env: &Env, image: &str) -> String {
    let pushed = format!(
        "{}/stowage-test/stowage:{}",
        env.plain,
        env!("CARGO_PKG_VERSION")
    );
    assert!(env.docker(&["tag", image, &pushed]).status.success());
    let out = env.docker(&["push", &pushed]);
    assert!(out.status.success(), "docker push: {out:?}");
    let repo = pushed.rsplit_once(':').unwrap().0;
    let digest = env
        .repo_digests(&pushed)
        .into_iter()
        .find_map(|d| d.strip_prefix(&format!("{repo}@")).map(str::to_owned))
        .unwrap_or_else(|| panic!("no digest for {pushed}"));
    // Only the digest names it from now on: the engine must pull it by that.
    let _ = env.docker(&["image", "rm", &pushed]);
    format!("{pushed}@{digest}")
}

/// examples/container/compose.yaml as written, with this machine's paths and a digest the
/// test pushed: `docker-compose up` pulls the pinned image and runs stowage healthy, and
/// `docker-compose stop` ends it cleanly.
#[test]
fn the_compose_example_runs_the_pinned_image_healthy() {
    let _lock = engine_lock();
    let env = env();
    crate::skip_on!(
        env,
        Podman | Podman5 | Podman58,
        "compose is Docker's; Podman's example is the quadlet"
    );
    let image = load_image(&env);
    let pinned = push_image(&env, &image);
    let wanted = env.plain_image("alpha:1");
    env.purge_images(std::slice::from_ref(&wanted));

    let scratch = Scratch::new();
    let etc = scratch.dir.path().join("etc");
    std::fs::create_dir_all(&etc).unwrap();
    let port = free_port();
    std::fs::write(
        etc.join("config.toml"),
        format!(
            "[pull]\nsplay = \"0s\"\n[metrics]\nlisten = \"127.0.0.1:{port}\"\n\
             [[image]]\nname = \"{wanted}\"\n"
        ),
    )
    .unwrap();
    let socket = env.docker_host.strip_prefix("unix://").unwrap();
    let root = data_root(&env);
    let mut compose = example("compose.yaml");
    for (from, to) in [
        (EXAMPLE_IMAGE.to_owned(), pinned.clone()),
        (
            "/var/run/docker.sock:/var/run/docker.sock".to_owned(),
            format!("{socket}:/var/run/docker.sock"),
        ),
        (
            "./stowage:/etc/stowage:ro".to_owned(),
            format!("{}:/etc/stowage:ro", etc.display()),
        ),
        (
            "/var/lib/docker:/var/lib/docker:ro".to_owned(),
            format!("{root}:{root}:ro"),
        ),
    ] {
        compose = substitute(&compose, &from, &to);
    }
    let file = scratch.write("compose.yaml", &compose);
    let project = format!("stowage-compose-{}", std::process::id());
    let compose_cmd = |args: &[&str]| {
        std::process::Command::new("docker-compose")
            .args(["--project-name", &project, "--file"])
            .arg(&file)
            .args(args)
            .env("DOCKER_HOST", &env.docker_host)
            .output()
            .expect("docker-compose (Debian's docker-compose) runs")
    };

    let out = compose_cmd(&["up", "-d"]);
    assert!(out.status.success(), "docker-compose up: {out:?}");
    let id = String::from_utf8_lossy(&compose_cmd(&["ps", "-q", "stowage"]).stdout)
        .trim()
        .to_owned();
    assert!(!id.is_empty(), "no stowage container");
    let healthy = poll(LIVENESS, || {
        (inspect(&env, &id, "{{.State.Health.Status}}") == "healthy").then_some(())
    });
    assert!(
        healthy.is_some(),
        "{}",
        inspect(&env, &id, "{{json .State}}")
    );
    // The container runs the pinned content.
    assert_eq!(inspect(&env, &id, "{{.Config.Image}}"), pinned);
    assert!(env.has_image(&wanted), "the required image was not pulled");

    let out = compose_cmd(&["stop"]);
    assert!(out.status.success(), "docker-compose stop: {out:?}");
    assert_eq!(inspect(&env, &id, "{{.State.ExitCode}}"), "0");
    let out = compose_cmd(&["down", "--volumes"]);
    assert!(out.status.success(), "docker-compose down: {out:?}");
    let _ = env.docker(&["image", "rm", &pinned]);
    env.purge_images(&[wanted]);
}

/// examples/container/stowage.container through Podman 5's own quadlet generator: accepted
/// whole (no key it does not know), and the unit it makes is one systemd accepts, running the
/// pinned image with the socket, config, state and storage mounts and the health check.
#[test]
fn the_quadlet_example_makes_the_unit_podman_would_run() {
    let env = env();
    let scratch = Scratch::new();
    let units = scratch.dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    std::fs::write(
        units.join("stowage.container"),
        example("stowage.container"),
    )
    .unwrap();
    let out = std::process::Command::new(&env.quadlet)
        .arg("-dryrun")
        .env("QUADLET_UNIT_DIRS", &units)
        .output()
        .expect("Podman's quadlet (scripts/test-env.sh fetches it) runs");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.to_ascii_lowercase().contains("unsupported") && !stderr.contains("error"),
        "{stderr}"
    );
    let unit = stdout
        .split_once("---stowage.service---\n")
        .map(|(_, unit)| unit)
        .unwrap_or_else(|| panic!("no stowage.service in:\n{stdout}"));
    let exec = unit
        .lines()
        .find_map(|l| l.strip_prefix("ExecStart="))
        .unwrap_or_else(|| panic!("no ExecStart in:\n{unit}"));
    for part in [
        "--network host",
        "-v /run/podman/podman.sock:/var/run/docker.sock",
        "-v /etc/stowage:/etc/stowage:ro",
        "-v stowage-state:/var/lib/stowage",
        "-v /var/lib/containers/storage:/var/lib/containers/storage:ro",
        "--health-cmd \"/usr/bin/stowage --config /etc/stowage/config.toml health\"",
        "--stop-timeout 30",
    ] {
        assert!(exec.contains(part), "{part} not in {exec}");
    }
    assert!(
        exec.ends_with(EXAMPLE_IMAGE),
        "not the pinned image: {exec}"
    );
    let path = scratch.write("stowage.service", unit);
    let out = std::process::Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .output()
        .expect("systemd-analyze runs");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
}
