//! Network namespaces: entering a named one, creating a private one, identifying the current one.

use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

use nix::sched::{CloneFlags, setns, unshare};

/// Where `ip netns` keeps named namespaces.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Moves the calling thread into the named namespace (`ip netns exec NAME` without the mount
/// tricks). Call it before starting threads or runtimes that should live there.
pub fn enter(name: &str) -> io::Result<()> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("invalid network namespace name {name:?}"),
        ));
    }
    let path = PathBuf::from(NETNS_RUN_DIR).join(name);
    let file = std::fs::File::open(&path).map_err(|e| {
        if e.kind() == io::ErrorKind::NotFound {
            io::Error::new(
                e.kind(),
                format!(
                    "network namespace {name:?} does not exist ({} is missing; create it with `ip netns add {name}`)",
                    path.display()
                ),
            )
        } else {
            io::Error::new(e.kind(), format!("open {}: {e}", path.display()))
        }
    })?;
    setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("enter network namespace {name:?}: {e} (needs CAP_SYS_ADMIN)"),
        )
    })
}

/// Moves the calling thread into a new, private network namespace (gone when the last thread
/// in it exits). Call it before starting threads.
pub fn unshare_private() -> io::Result<()> {
    unshare(CloneFlags::CLONE_NEWNET).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("create a private network namespace: {e} (needs CAP_SYS_ADMIN: run as root)"),
        )
    })
}

/// The inode number of the calling thread's network namespace (what `ip netns identify` and
/// `readlink /proc/self/ns/net` show).
pub fn current_inode() -> io::Result<u64> {
    Ok(std::fs::metadata("/proc/thread-self/ns/net")?.ino())
}
