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
    assert!(
        out.status.success(),
        "lintian: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
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

    // Installed into a root of its own (scriptlets need a systemd host; they are shown above).
    let root = tempfile::tempdir().unwrap();
    let r = root.path().to_str().unwrap();
    run("rpm", &["--root", r, "--initdb"]);
    run("rpm", &["--root", r, "-i", "--nodeps", "--noscripts", rpm]);
    run("rpm", &["--root", r, "-V", "--nodeps", "stowage"]);
    check_installed_tree(root.path(), "usr/lib/systemd/system/stowage.service");
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
    // Whatever an earlier, interrupted run left.
    let _ = in_root(&root, &["dpkg", "--purge", "stowage"]);

    dpkg(&["-i", inside]);
    // Enabled by the maintainer scripts, as debhelper's would (no systemd runs to start it).
    let wants = root.join("etc/systemd/system/multi-user.target.wants/stowage.service");
    assert!(wants.is_symlink(), "not enabled: {}", wants.display());
    let check = in_root(
        &root,
        &["stowage", "--config", "/etc/stowage/config.toml", "check"],
    );
    assert!(check.status.success(), "{check:?}");

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
