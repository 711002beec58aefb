//! The .deb and .rpm that `scripts/package.sh` builds into `target/packages/`: what they hold,
//! what lintian and rpm say of them, the shipped config and unit as installed, and the .deb's
//! install, upgrade, removal and purge in a Debian root of the test environment's own, its
//! maintainer scripts run for real by dpkg.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The package file ending in `ext`, built by `scripts/package.sh`.
fn package(ext: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/packages");
    std::fs::read_dir(&dir)
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .map(|e| e.path())
                .find(|p| p.to_string_lossy().ends_with(ext))
        })
        .unwrap_or_else(|| {
            panic!(
                "no *{ext} in {}: the packaging tests need `scripts/package.sh` first \
                 (scripts/test.sh runs it)",
                dir.display()
            )
        })
}

/// Runs `program args`, asserts success, returns standard output.
fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The packaged config is valid as shipped, and the packaged unit is the one in the tree.
/// The man page and the bash, zsh and fish completions, where each packaging puts them.
fn check_man_page_and_completions(root: &Path, zsh_dir: &str) {
    for file in [
        "usr/share/man/man1/stowage.1.gz",
        "usr/share/bash-completion/completions/stowage",
        "usr/share/fish/vendor_completions.d/stowage.fish",
    ] {
        assert!(root.join(file).is_file(), "{file} is not installed");
    }
    assert!(
        root.join(zsh_dir).join("_stowage").is_file(),
        "{zsh_dir}/_stowage"
    );
    // The page is what `man stowage` reads.
    let out = Command::new("zcat")
        .arg(root.join("usr/share/man/man1/stowage.1.gz"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("stowage"));
}

fn check_installed_tree(root: &Path, unit: &str) {
    let out = Command::new(root.join("usr/bin/stowage"))
        .arg("--config")
        .arg(root.join("etc/stowage/config.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the shipped config: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let shipped = std::fs::read_to_string(root.join(unit)).unwrap();
    let source = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/stowage.service"),
    )
    .unwrap();
    assert_eq!(shipped, source);
    // The alert rules, with their tests, as promtool reads them from the package.
    let rules = root.join("usr/share/stowage/prometheus");
    let out = Command::new("promtool")
        .args(["test", "rules", "alerts.test.yml"])
        .current_dir(&rules)
        .output()
        .expect("promtool runs");
    assert!(
        out.status.success(),
        "the packaged alert rules: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    for doc in ["config.example.toml", "README.md", "CHANGELOG.md"] {
        assert!(
            root.join("usr/share/doc/stowage").join(doc).is_file(),
            "{doc}"
        );
    }
    // Every link of the installed README leads somewhere in the installed docs.
    let docs = root.join("usr/share/doc/stowage");
    let readme = std::fs::read_to_string(docs.join("README.md")).unwrap();
    for link in readme
        .split("](")
        .skip(1)
        .filter_map(|l| l.split(')').next())
    {
        let path = link.split('#').next().unwrap_or_default();
        if path.is_empty() || link.contains("://") {
            continue;
        }
        assert!(
            docs.join(path).exists(),
            "README links to {link}, not installed"
        );
    }
}

#[test]
fn the_deb_installs_the_daemon_its_unit_and_a_kept_config() {
    let deb = package(".deb");
    let deb = deb.to_str().unwrap();
    let control = run("dpkg-deb", &["--info", deb, "control"]);
    for field in [
        "Package: stowage",
        "Section: admin",
        "Recommends: docker.io | docker-ce",
    ] {
        assert!(control.contains(field), "{field} in:\n{control}");
    }
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains("libc6")),
        "{control}"
    );
    // Without a CA bundle stowage reaches only plain-HTTP registries.
    assert!(
        control
            .lines()
            .any(|l| l.starts_with("Depends:") && l.contains("ca-certificates")),
        "{control}"
    );
    // The config is a conffile: an upgrade never overwrites the operator's changes.
    let conffiles = run("dpkg-deb", &["--info", deb, "conffiles"]);
    assert_eq!(conffiles.trim(), "/etc/stowage/config.toml");
    // The maintainer scripts enable, start, and restart after upgrades, as debhelper does.
    let postinst = run("dpkg-deb", &["--info", deb, "postinst"]);
    assert!(postinst.contains("deb-systemd-helper"), "{postinst}");
    assert!(postinst.contains("stowage.service"), "{postinst}");

    let root = tempfile::tempdir().unwrap();
    run("dpkg-deb", &["-x", deb, root.path().to_str().unwrap()]);
    let unit = [
        "lib/systemd/system/stowage.service",
        "usr/lib/systemd/system/stowage.service",
    ]
    .into_iter()
    .find(|u| root.path().join(u).is_file())
    .expect("the unit is installed");
    check_installed_tree(root.path(), unit);
    check_man_page_and_completions(root.path(), "usr/share/zsh/vendor-completions");
    assert!(
        root.path()
            .join("usr/share/doc/stowage/copyright")
            .is_file()
    );

    // Debian's own checker finds no error.
    let out = Command::new("lintian")
        .args(["--fail-on", "error", "--tag-display-limit", "0", deb])
        .output()
        .expect("lintian (Debian's lintian package) runs");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "lintian: {said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The man page is there, so lintian has no word about a missing one.
    assert!(!said.contains("no-manual-page"), "lintian: {said}");
}

#[test]
fn the_rpm_installs_the_daemon_its_unit_and_a_kept_config() {
    let rpm = package(".rpm");
    let rpm = rpm.to_str().unwrap();
    assert_eq!(run("rpm", &["-qp", "--qf", "%{NAME}", rpm]), "stowage");
    let config = run("rpm", &["-qp", "--configfiles", rpm]);
    assert_eq!(config.trim(), "/etc/stowage/config.toml");
    // noreplace: an upgrade leaves a changed config in place (the new one as .rpmnew).
    let flags = run(
        "rpm",
        &["-qp", "--qf", "[%{FILENAMES} %{FILEFLAGS:fflags}\n]", rpm],
    );
    assert!(
        flags
            .lines()
            .any(|l| l.starts_with("/etc/stowage/config.toml ") && l.contains('n')),
        "{flags}"
    );
    let scripts = run("rpm", &["-qp", "--scripts", rpm]);
    assert!(
        scripts.contains("systemctl --no-reload preset stowage.service"),
        "{scripts}"
    );
    assert!(scripts.contains("try-restart stowage.service"), "{scripts}");
    let requires = run("rpm", &["-qp", "--requires", rpm]);
    assert!(requires.contains("libc.so.6"), "{requires}");
    assert!(
        requires.lines().any(|l| l.trim() == "ca-certificates"),
        "{requires}"
    );

    // Installed into a root of its own (scriptlets need a systemd host; they are shown above).
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    run("rpm", &["--root", r, "--initdb"]);
    run("rpm", &["--root", r, "-i", "--nodeps", "--noscripts", rpm]);
    run("rpm", &["--root", r, "-V", "--nodeps", "stowage"]);
    check_installed_tree(root.path(), "usr/lib/systemd/system/stowage.service");
    check_man_page_and_completions(root.path(), "usr/share/zsh/site-functions");
}

/// The test environment's Debian root is one dpkg database: one test at a time in it.
static DEBIAN_ROOT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn debian_root_lock() -> std::sync::MutexGuard<'static, ()> {
    DEBIAN_ROOT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// dpkg inside the test environment's Debian root.
fn in_root(root: &Path, args: &[&str]) -> std::process::Output {
    Command::new("chroot")
        .arg(root)
        .args(args)
        .output()
        .expect("chroot runs")
}

#[test]
fn the_deb_installs_upgrades_keeps_the_config_and_purges_in_a_debian_root() {
    let _root_lock = debian_root_lock();
    let root = crate::support::env().debian_root;
    assert!(
        root.join("usr/bin/dpkg").is_file(),
        "no Debian root at {}: run `scripts/test-env.sh tools` (scripts/test.sh does)",
        root.display()
    );
    let deb = package(".deb");
    let inside = "/tmp/stowage.deb";
    std::fs::copy(&deb, root.join(inside.trim_start_matches('/'))).unwrap();
    let dpkg = |args: &[&str]| {
        let out = in_root(&root, &[&["dpkg"], args].concat());
        assert!(
            out.status.success(),
            "dpkg {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    // Whatever an earlier, interrupted run left, the files config management added included.
    let _ = in_root(&root, &["dpkg", "--purge", "stowage"]);
    let _ = std::fs::remove_dir_all(root.join("etc/stowage"));

    dpkg(&["-i", inside]);
    // Enabled by the maintainer scripts, as debhelper's would (no systemd runs to start it).
    let wants = root.join("etc/systemd/system/multi-user.target.wants/stowage.service");
    assert!(wants.is_symlink(), "not enabled: {}", wants.display());
    let check = in_root(
        &root,
        &["stowage", "--config", "/etc/stowage/config.toml", "check"],
    );
    assert!(check.status.success(), "{check:?}");
    // The system user the unit runs as, in the engine's group; it can read the config.
    let groups = in_root(&root, &["id", "-nG", "stowage"]);
    assert!(
        String::from_utf8_lossy(&groups.stdout)
            .split_whitespace()
            .any(|g| g == "docker"),
        "{groups:?}"
    );
    let check = Command::new("chroot")
        .arg("--userspec=stowage:stowage")
        .arg(&root)
        .args(["stowage", "--config", "/etc/stowage/config.toml", "check"])
        .output()
        .unwrap();
    assert!(check.status.success(), "as stowage: {check:?}");

    // The operator's config survives an upgrade (here a reinstall of the same version).
    let config = root.join("etc/stowage/config.toml");
    let edited = std::fs::read_to_string(&config).unwrap()
        + "\n[[image]]\nname = \"registry.example.com/app:1\"\n";
    std::fs::write(&config, &edited).unwrap();
    dpkg(&["-i", inside]);
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);

    // Removal keeps the config; purge takes it and the enablement.
    dpkg(&["--remove", "stowage"]);
    assert!(!root.join("usr/bin/stowage").exists());
    assert_eq!(std::fs::read_to_string(&config).unwrap(), edited);
    dpkg(&["--purge", "stowage"]);
    assert!(!root.join("etc/stowage").exists());
    assert!(!wants.exists() && !wants.is_symlink());
}

/// A lock for `images`, written by `stowage pin` (as config management's side would).
fn lock_for(env: &crate::support::Env, dir: &Path, images: &[String]) -> PathBuf {
    let scratch = dir.join(format!("pin-{}", images.len()));
    std::fs::create_dir_all(&scratch).unwrap();
    let mut text = String::new();
    for i in images {
        text.push_str(&format!("[[image]]\nname = \"{i}\"\n"));
    }
    std::fs::write(scratch.join("config.toml"), text).unwrap();
    let out = env
        .stowage(&scratch.join("config.toml"))
        .arg("pin")
        .output()
        .unwrap();
    assert!(out.status.success(), "stowage pin: {out:?}");
    scratch.join("stowage.lock")
}

/// `ansible-playbook -c local` with the example playbook and `vars` (JSON).
fn playbook(vars: &serde_json::Value) -> std::process::Output {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/ansible");
    Command::new("ansible-playbook")
        .args(["-c", "local", "-i", "localhost,", "playbook.yml", "-e"])
        .arg(vars.to_string())
        .current_dir(dir)
        .env("ANSIBLE_NOCOLOR", "1")
        .env("ANSIBLE_HOST_KEY_CHECKING", "0")
        .output()
        .expect("ansible-playbook (Debian's ansible-core) runs")
}

#[test]
fn the_ansible_example_installs_validates_ships_and_reloads() {
    use crate::support::{Daemon, engine_lock, env, is_event};
    let _root_lock = debian_root_lock();
    let _engine = engine_lock();
    let env = env();
    let root = env.debian_root.clone();
    let deb = package(".deb");
    let first = env.plain_image("alpha:1");
    let added = env.plain_image("beta:1");
    env.remove_images(&[first.clone(), added.clone()]);
    let work = tempfile::tempdir().unwrap();
    let lock_one = lock_for(&env, work.path(), std::slice::from_ref(&first));
    let lock_two = lock_for(&env, work.path(), &[first.clone(), added.clone()]);
    let clean = || {
        let _ = in_root(&root, &["dpkg", "--purge", "stowage"]);
        // The lock and the state are not the package's: config management and the daemon
        // put them there.
        let _ = std::fs::remove_dir_all(root.join("etc/stowage"));
        let _ = std::fs::remove_dir_all(root.join("var/lib/stowage"));
    };
    clean();
    std::fs::create_dir_all(root.join("var/lib/stowage")).unwrap();
    let port = crate::support::free_port();
    let vars = |images: &[&str], lock: &Path, reload: &str| {
        serde_json::json!({
            "stowage_root": root,
            "stowage_package": deb,
            "stowage_lock": lock,
            "stowage_images": images.iter().map(|n| serde_json::json!({"name": n})).collect::<Vec<_>>(),
            "stowage_pull_schedule": "0 0 1 1 *",
            "stowage_metrics_listen": format!("127.0.0.1:{port}"),
            "stowage_reload_command": reload,
            // The tests run as root, and the machine has no sudo.
            "ansible_become": false,
        })
    };
    let ok = |out: &std::process::Output| {
        assert!(
            out.status.success(),
            "ansible-playbook: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };

    // First run: the package lands in the root, with the lock and a config requiring one image.
    ok(&playbook(&vars(&[&first], &lock_one, "true")));
    assert!(root.join("usr/bin/stowage").is_file());
    let config = root.join("etc/stowage/config.toml");
    assert!(std::fs::read_to_string(&config).unwrap().contains(&first));

    // The daemon, as the unit would run it: the installed binary on the installed config.
    let mut cmd = Command::new(root.join("usr/bin/stowage"));
    cmd.arg("--config")
        .arg(&config)
        .args(["--log-format", "json"])
        .env("DOCKER_HOST", &env.docker_host)
        .env(
            "DOCKER_CONFIG",
            std::env::temp_dir().join("stowage-tests-nocreds"),
        );
    let daemon = Daemon::start(cmd, &["run"]);
    daemon.wait_for("ready", std::time::Duration::from_secs(90), |v| {
        is_event(v, "ready", None)
    });
    assert!(env.has_image(&first));
    let hup = format!("kill -HUP {}", daemon.pid());

    // A broken config (a name that cannot be an image reference) is refused by `validate`:
    // the file stays, and the daemon hears nothing.
    let before = std::fs::read_to_string(&config).unwrap();
    let out = playbook(&vars(&[&first, "Not A Valid Name"], &lock_one, &hup));
    assert!(!out.status.success(), "a broken config was accepted");
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains("failed to validate"), "{said}");
    assert_eq!(std::fs::read_to_string(&config).unwrap(), before);
    assert_eq!(
        daemon.count(|v| is_event(v, "reloading the config and the lock", None)),
        0
    );

    // A good one with a new lock lands; the handler reloads the daemon, which pulls the image.
    ok(&playbook(&vars(&[&first, &added], &lock_two, &hup)));
    daemon.wait_for("the reload", std::time::Duration::from_secs(90), |v| {
        is_event(v, "config reloaded", None)
    });
    daemon.wait_for("the new image", std::time::Duration::from_secs(90), |v| {
        is_event(v, "run finished", Some(("trigger", "reload")))
    });
    assert!(env.has_image(&added), "the reload did not pull {added}");
    let (code, _) = daemon.terminate(std::time::Duration::from_secs(60));
    assert_eq!(code, 0);
    clean();
    env.remove_images(&[first, added]);
}
