//! Records the commit the binary is built from, for `stowage --version` and the
//! `stowage_build_info` metric. A build outside a git checkout (a source tarball) can set
//! `STOWAGE_COMMIT` itself; otherwise the commit reads "unknown".

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=STOWAGE_COMMIT");
    // A new commit or a checkout changes HEAD or the ref it points at.
    for path in [".git/HEAD", ".git/refs/heads", ".git/packed-refs"] {
        if std::path::Path::new(path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    let commit = std::env::var("STOWAGE_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(git_commit)
        .unwrap_or_else(|| "unknown".to_owned());
    println!("cargo:rustc-env=STOWAGE_COMMIT={commit}");
}

/// The checkout's short commit, with `-dirty` when the tree has changes.
fn git_commit() -> Option<String> {
    let run = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
    };
    let commit = run(&["rev-parse", "--short=12", "HEAD"])?;
    let dirty =
        run(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty {
        format!("{commit}-dirty")
    } else {
        commit
    })
}
