//! Writing files so that a reader (or a crash) never sees half of one.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

/// Writes `contents` to `path` atomically: a temp file in the same directory, flushed to disk,
/// renamed over the target, and the directory synced so the rename survives a power cut. On any
/// error the previous file is untouched. The file ends up world-readable (0644): lock and state
/// files hold digests, never secrets.
pub(crate) fn write(path: &Path, contents: &[u8]) -> std::io::Result<()> {
    let dir = dir_of(path);
    create_dir(dir)?;
    remove_orphans(path);
    let mut tmp = tempfile::Builder::new()
        .prefix(&temp_prefix(path, std::process::id()))
        .suffix(TEMP_SUFFIX)
        .tempfile_in(dir)
        .map_err(|e| in_dir(e, dir))?;
    tmp.write_all(contents)?;
    tmp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(0o644))?;
    tmp.as_file().sync_all()?;
    tmp.persist(path).map_err(|e| e.error)?;
    std::fs::File::open(dir)?.sync_all()
}

/// A failure to create the temp file, said of the directory: tempfile names the random temp
/// path (`at path "/etc/stowage/.stowage.lock.12599.4SCya1.tmp"`), which the operator never
/// asked for and which does not exist.
fn in_dir(e: std::io::Error, dir: &Path) -> std::io::Error {
    let cause = e
        .get_ref()
        .and_then(|inner| inner.source())
        .map_or_else(|| e.kind().to_string(), ToString::to_string);
    std::io::Error::new(
        e.kind(),
        format!("cannot create a file in {}: {cause}", dir.display()),
    )
}

/// Creates directory `dir` and its parents. Where one of them is a file, says so: the OS says
/// only "File exists", which reads as if the file being written were in the way.
pub(crate) fn create_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        let file = dir
            .ancestors()
            .find(|a| std::fs::metadata(a).is_ok_and(|m| !m.is_dir()));
        match file {
            Some(file) => std::io::Error::new(
                std::io::ErrorKind::NotADirectory,
                format!("{} is a file, not a directory", file.display()),
            ),
            None => e,
        }
    })
}

/// Temp files end so, after `.NAME.PID.` and a random part.
const TEMP_SUFFIX: &str = ".tmp";

fn dir_of(path: &Path) -> &Path {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    }
}

/// `.NAME.PID.`: the writer's process ID in the temp file's name says whether it is still
/// writing it.
fn temp_prefix(path: &Path, pid: u32) -> String {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    format!(".{name}.{pid}.")
}

/// Removes temp files that writers of `path` left when they were killed between creating and
/// renaming them (a `kill -9`, a power cut). A temp file whose writer still runs is left
/// alone: it is about to be renamed. Errors are ignored: an orphan only wastes a little space.
pub(crate) fn remove_orphans(path: &Path) {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let prefix = format!(".{name}.");
    let Ok(entries) = std::fs::read_dir(dir_of(path)) else {
        return;
    };
    for entry in entries.flatten() {
        let file = entry.file_name();
        let file = file.to_string_lossy();
        let Some(rest) = file
            .strip_prefix(&prefix)
            .filter(|r| r.ends_with(TEMP_SUFFIX))
        else {
            continue;
        };
        let pid = rest.split('.').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_where_a_directory_should_be_is_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("afile"), b"").unwrap();
        let e = write(&dir.path().join("afile/sub/state.json"), b"x").unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::NotADirectory);
        assert_eq!(
            e.to_string(),
            format!("{}/afile is a file, not a directory", dir.path().display())
        );
    }

    #[test]
    fn replaces_whole_files_and_leaves_no_temp_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        write(&path, b"first").unwrap();
        write(&path, b"second").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"second");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("state.json")]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn temp_files_of_killed_writers_are_removed_and_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        // PID 0 is never a process's: its writer is gone. Ours is alive.
        let dead = dir.path().join(format!("{}abc.tmp", temp_prefix(&path, 0)));
        let live = dir
            .path()
            .join(format!("{}abc.tmp", temp_prefix(&path, std::process::id())));
        let other = dir.path().join(".other.json.0.abc.tmp");
        for f in [&dead, &live, &other] {
            std::fs::write(f, b"half").unwrap();
        }
        write(&path, b"whole").unwrap();
        assert!(!dead.exists(), "an orphan of state.json stayed");
        assert!(live.exists(), "a live writer's temp file was removed");
        assert!(other.exists(), "another file's temp file was removed");
        assert_eq!(std::fs::read(&path).unwrap(), b"whole");
    }

    #[test]
    fn a_temp_file_that_cannot_be_made_is_said_of_its_directory() {
        /// As tempfile wraps the OS's error: its words name the random temp path.
        #[derive(Debug)]
        struct AtPath(std::io::Error);
        impl std::fmt::Display for AtPath {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(
                    f,
                    "{} at path \"/etc/stowage/.stowage.lock.1.x.tmp\"",
                    self.0
                )
            }
        }
        impl std::error::Error for AtPath {
            fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
                Some(&self.0)
            }
        }
        let os = std::io::Error::from_raw_os_error(13);
        let wrapped = std::io::Error::new(os.kind(), AtPath(os));
        let e = in_dir(wrapped, Path::new("/etc/stowage"));
        assert_eq!(
            e.to_string(),
            "cannot create a file in /etc/stowage: Permission denied (os error 13)"
        );
        assert_eq!(e.kind(), std::io::ErrorKind::PermissionDenied);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        write(&path, b"old").unwrap();
        // The target is a directory now: the rename fails, and nothing else changes.
        let blocked = dir.path().join("blocked");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"").unwrap();
        assert!(write(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
    }
}
