//! The tunnel's trust boundary.
//!
//! hostkit runs as root. Of everything the `tun` commands read, only two things come from the
//! file system rather than from the command line or the kernel: the **run directory**
//! (`/run/hostkit`, `--run-dir`, `HOSTKIT_RUN_DIR`) and the **state files** in it, whose undo
//! journal `tun down` replays. Whoever can write them could make root delete interfaces or
//! write files, so:
//!
//! - The run directory is used only if it, and every directory above it, could have been
//!   written by nobody but root (the user hostkit runs as): owned by root and not group- or
//!   world-writable (an ancestor may be world-writable only with the sticky bit, like `/tmp`).
//!   A symbolic link on the way is followed only when root owns it. A missing run directory is
//!   created (only its last component, mode 0700); a missing parent is an error.
//! - A state file (and its lock file) is opened with `O_NOFOLLOW | O_NONBLOCK` and checked with
//!   `fstat` on the open descriptor: a regular file, owned by root, not group- or
//!   world-writable. Anything else is refused, naming the path.
//! - Even a state file that passes is data, not a program: every undo entry is checked against
//!   what `up` can have written (the closed list of sysctl keys, the tunnel's own devices,
//!   addresses and table — [`crate::undo::check_entries`]), and each device or route is touched
//!   only if it is still the one recorded at creation (name, interface index and kind `tun`);
//!   anything else is reported and left alone.
//!
//! Files that a non-root user could have written are never read as instructions.

use std::fs::{File, Metadata};
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Why a run directory or a state file is not trusted.
#[derive(Debug, thiserror::Error)]
pub enum TrustError {
    /// The run directory is refused.
    #[error("refusing run directory {path}: {reason}")]
    RunDir {
        /// The path as given.
        path: String,
        /// Why.
        reason: String,
    },
    /// A file in the run directory is refused.
    #[error("refusing {path}: {reason}")]
    File {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Whether `uid` is one hostkit takes instructions from: root, or the user it runs as.
pub fn trusted_uid(uid: u32) -> bool {
    uid == 0 || uid == nix::unistd::geteuid().as_raw()
}

/// Why metadata of a directory or file is not trusted (owner, write bits), if it is not.
fn untrusted_because(meta: &Metadata, allow_sticky: bool) -> Option<String> {
    if !trusted_uid(meta.uid()) {
        return Some(format!(
            "it is owned by uid {}, not by root (uid {})",
            meta.uid(),
            nix::unistd::geteuid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !(allow_sticky && sticky) {
        return Some(format!(
            "it is {} (mode {mode:04o})",
            if mode & 0o002 != 0 {
                "world-writable"
            } else {
                "group-writable"
            }
        ));
    }
    None
}

fn kind_of(meta: &Metadata) -> &'static str {
    let ft = meta.file_type();
    use std::os::unix::fs::FileTypeExt;
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() || ft.is_char_device() {
        "a device node"
    } else {
        "not a regular file"
    }
}

/// A run directory that passed the checks: its canonical path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Checks `given` (see the module documentation); creates its last component (mode 0700)
    /// when missing and `create` is set. `Ok(None)`: missing and not to be created.
    pub fn open(given: &Path, create: bool) -> Result<Option<RunDir>, TrustError> {
        let refuse = |reason: String| TrustError::RunDir {
            path: given.display().to_string(),
            reason,
        };
        // Every symbolic link on the given path must be root's: another user could retarget it.
        let Some(abs) = walk_trusted_links(given, &refuse, |prefix, last| {
            if !last {
                return Err(refuse(format!(
                    "{} does not exist (hostkit creates only the last component of the run directory)",
                    prefix.display()
                )));
            }
            if !create {
                return Ok(false);
            }
            // Only the last component: a missing parent is the caller's mistake.
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(prefix)
                .map_err(|e| {
                    refuse(format!(
                        "cannot create it (hostkit creates only the last component, mode 0700): {e}"
                    ))
                })?;
            Ok(true)
        })?
        else {
            return Ok(None);
        };
        let canonical = std::fs::canonicalize(&abs).map_err(|e| refuse(e.to_string()))?;
        let meta = std::fs::metadata(&canonical).map_err(|e| refuse(e.to_string()))?;
        if !meta.is_dir() {
            return Err(refuse(format!(
                "it exists and is not a directory (it is {})",
                kind_of(&meta)
            )));
        }
        if let Some(why) = untrusted_because(&meta, false) {
            return Err(refuse(format!(
                "{why}; the run directory must be owned by root and not group- or world-writable"
            )));
        }
        // Every directory above it: another user who can rename entries there could swap it.
        check_ancestors(&canonical, &refuse, |anc, why| {
            format!(
                "the directory above it, {}, could be changed by another user: {why}",
                anc.display()
            )
        })?;
        Ok(Some(RunDir { path: canonical }))
    }

    /// The directory's canonical path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in the directory.
    pub fn join(&self, name: impl AsRef<Path>) -> PathBuf {
        self.path.join(name)
    }
}

/// Checks a Unix socket hostkit is to connect to and trust with the traffic (`tun up
/// --processor-socket`): whoever listens on it sees every packet and decides its fate, so it
/// must be a socket that only root could have put there — the socket itself owned by root (the
/// user hostkit runs as), every symbolic link on the way root's, and its directory and every
/// directory above it owned by root and not group- or world-writable (world-writable only with
/// the sticky bit, like `/tmp`: there nobody else can remove or rename root's socket).
/// Returns the path to connect to.
pub fn check_socket(given: &Path) -> Result<PathBuf, TrustError> {
    let refuse = |reason: String| TrustError::File {
        path: given.display().to_string(),
        reason,
    };
    let abs = walk_trusted_links(given, &refuse, |prefix, _| {
        Err(refuse(format!(
            "{} does not exist (start the processor first)",
            prefix.display()
        )))
    })?
    .ok_or_else(|| refuse("it does not exist".into()))?;
    let canonical = std::fs::canonicalize(&abs).map_err(|e| refuse(e.to_string()))?;
    let meta = std::fs::symlink_metadata(&canonical).map_err(|e| refuse(e.to_string()))?;
    use std::os::unix::fs::FileTypeExt;
    if !meta.file_type().is_socket() {
        return Err(refuse(format!("it is {}, not a socket", kind_of(&meta))));
    }
    if !trusted_uid(meta.uid()) {
        return Err(refuse(format!(
            "the socket is owned by uid {}, not by root (uid {}): another user could be listening on it",
            meta.uid(),
            nix::unistd::geteuid()
        )));
    }
    check_ancestors(&canonical, &refuse, |anc, why| {
        format!(
            "the directory {} could be changed by another user (who could put their own socket there): {why}",
            anc.display()
        )
    })?;
    Ok(canonical)
}

/// Makes `given` absolute and walks it a component at a time: every symbolic link on the way
/// must be root's (another user could retarget it). A component that does not exist goes to
/// `missing(prefix, is_last)`: `Ok(true)` when it now exists (created), `Ok(false)` to stop
/// (the walk returns `None`), or its refusal.
fn walk_trusted_links(
    given: &Path,
    refuse: &dyn Fn(String) -> TrustError,
    mut missing: impl FnMut(&Path, bool) -> Result<bool, TrustError>,
) -> Result<Option<PathBuf>, TrustError> {
    let abs = if given.is_absolute() {
        given.to_path_buf()
    } else {
        std::env::current_dir()
            .map_err(|e| refuse(format!("cannot resolve a relative path: {e}")))?
            .join(given)
    };
    let mut prefix = PathBuf::new();
    let comps: Vec<Component> = abs.components().collect();
    for (i, comp) in comps.iter().enumerate() {
        prefix.push(comp);
        if matches!(comp, Component::RootDir | Component::CurDir) {
            continue;
        }
        match std::fs::symlink_metadata(&prefix) {
            Ok(meta) if meta.file_type().is_symlink() && !trusted_uid(meta.uid()) => {
                return Err(refuse(format!(
                    "{} is a symbolic link owned by uid {}, which could redirect it",
                    prefix.display(),
                    meta.uid()
                )));
            }
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                if !missing(&prefix, i + 1 == comps.len())? {
                    return Ok(None);
                }
            }
            Err(e) => return Err(refuse(format!("{}: {e}", prefix.display()))),
        }
    }
    Ok(Some(abs))
}

/// Every directory above `canonical` must be root's and not writable by others (unless
/// sticky): someone who can rename entries there could swap what hostkit checked.
fn check_ancestors(
    canonical: &Path,
    refuse: &dyn Fn(String) -> TrustError,
    explain: impl Fn(&Path, &str) -> String,
) -> Result<(), TrustError> {
    for anc in canonical.ancestors().skip(1) {
        let meta = std::fs::symlink_metadata(anc).map_err(|e| refuse(e.to_string()))?;
        if let Some(why) = untrusted_because(&meta, true) {
            return Err(refuse(explain(anc, &why)));
        }
    }
    Ok(())
}

/// Checks an open file: a regular file owned by root, not group- or world-writable.
pub(crate) fn check_open_file(file: &File, path: &Path) -> Result<(), TrustError> {
    let refuse = |reason: String| TrustError::File {
        path: path.display().to_string(),
        reason,
    };
    let meta = file.metadata().map_err(|e| refuse(e.to_string()))?;
    if !meta.is_file() {
        return Err(refuse(format!(
            "it is {}, not a regular file",
            kind_of(&meta)
        )));
    }
    if let Some(why) = untrusted_because(&meta, false) {
        return Err(refuse(why));
    }
    Ok(())
}

fn open_error(path: &Path, e: io::Error) -> TrustError {
    let reason = if e.raw_os_error() == Some(libc::ELOOP) {
        "it is a symbolic link (state files are never followed through links)".to_string()
    } else {
        e.to_string()
    };
    TrustError::File {
        path: path.display().to_string(),
        reason,
    }
}

/// Opens an existing file of the run directory for reading: `O_NOFOLLOW | O_NONBLOCK`, then
/// [`check_open_file`]. A missing file is `Ok(None)`.
pub(crate) fn open_trusted(path: &Path) -> Result<Option<File>, TrustError> {
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(open_error(path, e)),
    };
    check_open_file(&file, path)?;
    Ok(Some(file))
}

/// Opens (creating, mode 0600) a lock file of the run directory for reading and writing (the
/// lock records its holder's pid in it): `O_NOFOLLOW | O_NONBLOCK`, then [`check_open_file`].
pub(crate) fn open_lock(path: &Path) -> Result<File, TrustError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| open_error(path, e))?;
    check_open_file(&file, path)?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp() -> tempfile::TempDir {
        tempfile::Builder::new()
            .prefix("hostkit-trust-")
            .tempdir()
            .unwrap()
    }

    #[test]
    fn a_socket_is_trusted_only_if_only_root_could_have_put_it_there() {
        let t = tmp();
        let dir = t.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        let sock = dir.join("p.sock");
        let _listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        assert_eq!(check_socket(&sock).unwrap(), sock.canonicalize().unwrap());
        let file = dir.join("file");
        std::fs::write(&file, "").unwrap();
        let err = check_socket(&file).unwrap_err().to_string();
        assert!(err.contains("a regular file, not a socket"), "{err}");
        let err = check_socket(&dir.join("none")).unwrap_err().to_string();
        assert!(err.contains("does not exist"), "{err}");
        // A directory others can write to (no sticky bit): anyone could have put it there.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = check_socket(&sock).unwrap_err().to_string();
        assert!(
            err.contains("could be changed by another user") && err.contains("world-writable"),
            "{err}"
        );
        // With the sticky bit (like /tmp) a root-owned socket is safe.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o1777)).unwrap();
        check_socket(&sock).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        if nix::unistd::geteuid().is_root() {
            nix::unistd::chown(&sock, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
            let err = check_socket(&sock).unwrap_err().to_string();
            assert!(err.contains("owned by uid 65534, not by root"), "{err}");
        } else {
            hostkit_testutil::skip("a socket owned by another user: chown needs root");
        }
    }

    #[test]
    fn a_missing_run_dir_is_created_0700_and_only_its_last_component() {
        let t = tmp();
        let dir = t.path().join("run");
        assert_eq!(RunDir::open(&dir, false).unwrap(), None);
        assert!(!dir.exists());
        let rd = RunDir::open(&dir, true).unwrap().unwrap();
        let mode = std::fs::metadata(rd.path()).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o700);
        let err = RunDir::open(&t.path().join("a/b"), true).unwrap_err();
        assert!(err.to_string().contains("only the last component"), "{err}");
    }

    #[test]
    fn a_file_or_a_writable_dir_is_refused_with_the_reason() {
        let t = tmp();
        let f = t.path().join("file");
        std::fs::write(&f, "x").unwrap();
        let err = RunDir::open(&f, true).unwrap_err().to_string();
        assert!(
            err.contains("not a directory (it is a regular file)"),
            "{err}"
        );
        let d = t.path().join("open");
        std::fs::create_dir(&d).unwrap();
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = RunDir::open(&d, true).unwrap_err().to_string();
        assert!(err.contains("world-writable (mode 0777)"), "{err}");
    }
}
