//! Facts about the host stowage runs on: the disk under the engine's data root, and the
//! container stowage itself may run in.

use crate::model::image::Disk;

/// The ID of the container this process runs in, from `/proc/self/mountinfo`: the engine
/// bind-mounts `/etc/hostname` and friends from `.../containers/<id>/`. `None` on a host.
///
/// Only the mounts at those paths count: on a host, the mount table lists the engine's own
/// mounts of its containers' directories too (Podman's `.../overlay-containers/<id>/userdata/shm`,
/// Docker's `.../containers/<id>/mounts/shm`), and taking one of those for stowage's own
/// container kept that container's image from every prune.
pub(crate) fn own_container_id(mountinfo: &str) -> Option<String> {
    const BOUND_BY_THE_ENGINE: [&str; 3] = ["/etc/hostname", "/etc/hosts", "/etc/resolv.conf"];
    mountinfo.lines().find_map(|line| {
        // Fields: ID, parent ID, major:minor, root (the source path), mount point, ...
        let mut fields = line.split_whitespace().skip(3);
        let (root, mount_point) = (fields.next()?, fields.next()?);
        BOUND_BY_THE_ENGINE
            .contains(&mount_point)
            .then(|| container_in(root))
            .flatten()
    })
}

/// The container ID in a path of the engine's: Docker's `<data root>/containers/<id>/...`,
/// Podman's `<run root>/overlay-containers/<id>/userdata/...` (`vfs-containers` and so on for
/// other storage drivers).
fn container_in(path: &str) -> Option<String> {
    path.match_indices("containers/").find_map(|(at, _)| {
        let before = path[..at].chars().last()?;
        let rest = &path[at + "containers/".len()..];
        let id: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
        let whole = id.len() == 64 && rest[64..].starts_with('/');
        (whole && matches!(before, '/' | '-')).then_some(id)
    })
}

/// Use of the filesystem at `path`.
pub(crate) fn disk_of(path: &std::path::Path) -> Option<Disk> {
    disk_at(path).ok()
}

/// Use of the filesystem at `path`, or why it cannot be measured from here.
pub(crate) fn disk_at(path: &std::path::Path) -> std::io::Result<Disk> {
    let s = rustix::fs::statvfs(path)?;
    let total = s.f_blocks.saturating_mul(s.f_frsize);
    let free = s.f_bfree.saturating_mul(s.f_frsize);
    Ok(Disk {
        total,
        used: total.saturating_sub(free),
    })
}

/// The ID of the container this process runs in, if any (read from `/proc/self/mountinfo`).
pub(crate) fn own_container() -> Option<String> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    own_container_id(&mountinfo)
}

/// Hands the heap's free pages back to the kernel (glibc's `malloc_trim`). glibc keeps what is
/// freed for reuse: a prune cycle over a 10,000-image store left some 25 MiB behind an idle
/// daemon, growing over cycles. Called after each pull run and prune cycle, so the idle
/// footprint does not follow the store's size (docs/benchmarks.md).
#[allow(unsafe_code)]
pub(crate) fn give_back_memory() {
    // SAFETY: malloc_trim takes a padding size and has no preconditions; it only releases free
    // pages of glibc's own arenas, under their locks.
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_container_is_found_in_mountinfo() {
        let id = "a".repeat(64);
        let inside = format!(
            "1 0 0:1 / / rw - overlay overlay rw\n\
             2 1 8:1 /var/lib/docker/containers/{id}/hostname /etc/hostname rw - ext4 /dev/sda1 rw\n"
        );
        assert_eq!(own_container_id(&inside), Some(id.clone()));
        let podman = format!(
            "369 362 254:0 /run/containers/storage/overlay-containers/{id}/userdata/hostname \
             /etc/hostname rw,relatime - ext4 /dev/vda rw\n"
        );
        assert_eq!(own_container_id(&podman), Some(id.clone()));
        // A path that merely ends in "containers" is not a container's.
        let other =
            format!("1 0 8:1 /srv/mycontainers/{id}/x /etc/hostname rw - ext4 /dev/sda1 rw\n");
        assert_eq!(own_container_id(&other), None);
        // On a host: the engines' own mounts of their containers' directories.
        let host = format!(
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             90 1 0:50 / /var/lib/containers/storage/overlay-containers/{id}/userdata/shm \
             rw - tmpfs shm rw\n\
             91 1 0:51 / /var/lib/docker/containers/{id}/mounts/shm rw - tmpfs shm rw\n"
        );
        assert_eq!(own_container_id(&host), None);
        assert_eq!(
            own_container_id("1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"),
            None
        );
    }
}
