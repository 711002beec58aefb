//! The container image (`scripts/image.sh`, saved to `target/image/stowage.tar` by
//! `scripts/test.sh`), run the way operators run it on each engine: the engine's socket
//! mounted, a config directory and a state directory mounted, the engine's data root
//! mounted read-only for the watermarks.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::prune::seasoned_state;
use crate::support::{EngineKind, Env, Scratch, engine_lock, env, free_port, poll};

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
    args.extend([
        "--health-interval",
        "1s",
        image,
        "--log-format",
        "json",
        "run",
    ]);
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

    // Healthy: the engine's own health check where it runs one (Podman runs them from systemd
    // timers, and there is no systemd here), else the same command run by hand.
    if env.engine == EngineKind::Podman {
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
