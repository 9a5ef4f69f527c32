//! Reading the files a user names on the command line that hostkit then *acts on*: recipe
//! files (`--recipes DIR`), patch rules (`--rules DIR`) and tunnel configurations
//! (`tun up --config FILE`).
//!
//! A recipe says which files to write and which commands to run, so it is an instruction, and
//! hostkit often runs as root. A source is therefore read only when nobody but root or the user
//! running hostkit could have written it:
//!
//! * the directory and the file must be owned by root or by the running user, and not be
//!   writable by group or others (a file another user may rewrite between `check` and `apply`
//!   is refused, not obeyed);
//! * the file must be a regular file: it is opened with `O_NONBLOCK` and checked with `fstat`
//!   *after* opening, so a FIFO never makes hostkit wait, and a device or socket is refused;
//! * its text must be UTF-8.
//!
//! Every refusal names the path and says why; the binary exits 2.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// Why a source was not read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// It could not be opened or read.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The cause (in the message, not repeated as a `source`).
        cause: std::io::Error,
    },
    /// It is not a regular file (a FIFO, a socket, a device, a directory).
    #[error("{}: not a regular file ({kind}); refusing to read it", path.display())]
    NotRegular {
        /// The file.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// A directory was expected.
    #[error("{}: not a directory", path.display())]
    NotADirectory {
        /// The path.
        path: PathBuf,
    },
    /// Someone hostkit does not take instructions from could have written it.
    #[error("{}: {reason}", path.display())]
    Untrusted {
        /// The file or directory.
        path: PathBuf,
        /// Who owns it or who may write it.
        reason: String,
    },
    /// Its text is not UTF-8.
    #[error("{}: not UTF-8 text", path.display())]
    NotText {
        /// The file.
        path: PathBuf,
    },
}

/// The running user (the effective uid).
fn runner() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// Checks the owner and mode of a source (file or directory) the running user acts on.
pub fn check_trusted(path: &Path, meta: &std::fs::Metadata) -> Result<(), SourceError> {
    let me = runner();
    let uid = meta.uid();
    let reason = if !trusted_owner(uid) {
        Some(format!(
            "owned by uid {uid}; hostkit takes instructions only from files owned by root{}",
            if me == 0 {
                String::new()
            } else {
                format!(" or uid {me} (you)")
            }
        ))
    } else if meta.mode() & 0o022 != 0 {
        Some(format!(
            "mode {:o} lets group or others change it; hostkit takes no instructions from such a file (chmod go-w it)",
            meta.mode() & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(SourceError::Untrusted {
            path: path.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a directory of sources; returns its entries named `*.EXT`, sorted.
pub fn list_dir(dir: &Path, ext: &str) -> Result<Vec<PathBuf>, SourceError> {
    let io = |e| SourceError::Io {
        path: dir.to_path_buf(),
        cause: e,
    };
    let meta = std::fs::metadata(dir).map_err(io)?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    check_trusted(dir, &meta)?;
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == ext) {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

/// Reads a source file as text (see the crate documentation).
pub fn read_text(path: &Path) -> Result<String, SourceError> {
    let io = |e| SourceError::Io {
        path: path.to_path_buf(),
        cause: e,
    };
    let mut file = File::options()
        .read(true)
        .custom_flags(libc_flags())
        .open(path)
        .map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    let ft = meta.file_type();
    if !ft.is_file() {
        use std::os::unix::fs::FileTypeExt;
        let kind = if ft.is_dir() {
            "a directory"
        } else if ft.is_fifo() {
            "a FIFO"
        } else if ft.is_socket() {
            "a socket"
        } else {
            "a device"
        };
        return Err(SourceError::NotRegular {
            path: path.to_path_buf(),
            kind,
        });
    }
    check_trusted(path, &meta)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes).map_err(io)?;
    String::from_utf8(bytes).map_err(|_| SourceError::NotText {
        path: path.to_path_buf(),
    })
}

/// Reads one source file named on its own (`--config FILE`) as text: the file as
/// [`read_text`] checks it, and the directory it is in — owned by root or the running user, and
/// not writable by group or others unless sticky (like `/tmp`, where nobody may rename or
/// remove another's file), so that nobody else can put another file in its place.
pub fn read_file(path: &Path) -> Result<String, SourceError> {
    check_parent(path)?;
    read_text(path)
}

/// Checks a program hostkit is asked to run (`--processor-exec`) as [`read_file`] checks a
/// source: the file it resolves to (links followed) owned by root or the running user and not
/// writable by group or others, and so is the directory it is in (or that directory is sticky),
/// so that nobody else can change or replace what runs with hostkit's privileges.
pub fn check_program(path: &Path) -> Result<(), SourceError> {
    let io = |cause| SourceError::Io {
        path: path.to_path_buf(),
        cause,
    };
    let real = std::fs::canonicalize(path).map_err(io)?;
    let meta = std::fs::metadata(&real).map_err(io)?;
    check_trusted(&real, &meta)?;
    check_parent(&real)
}

/// The directory `path` is in: owned by root or the running user, and not writable by group
/// or others unless sticky.
fn check_parent(path: &Path) -> Result<(), SourceError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let meta = std::fs::metadata(dir).map_err(|e| SourceError::Io {
        path: dir.to_path_buf(),
        cause: e,
    })?;
    if !meta.is_dir() {
        return Err(SourceError::NotADirectory {
            path: dir.to_path_buf(),
        });
    }
    let sticky = meta.mode() & 0o1000 != 0;
    match check_trusted(dir, &meta) {
        Err(SourceError::Untrusted { .. }) if sticky && trusted_owner(meta.uid()) => Ok(()),
        other => other,
    }
}

fn trusted_owner(uid: u32) -> bool {
    uid == 0 || uid == runner()
}

fn libc_flags() -> i32 {
    (nix::fcntl::OFlag::O_NONBLOCK | nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NOCTTY)
        .bits()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("x.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let r = read_text(&fifo);
        assert!(
            matches!(r, Err(SourceError::NotRegular { kind: "a FIFO", .. })),
            "{r:?}"
        );
    }

    #[test]
    fn read_file_checks_the_directory_too() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.toml");
        std::fs::write(&file, "x = 1\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
        assert_eq!(read_file(&file).unwrap(), "x = 1\n");
        // Anyone may put another file there: refused.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let r = read_file(&file);
        assert!(matches!(r, Err(SourceError::Untrusted { .. })), "{r:?}");
        // Sticky, like /tmp: nobody may replace another's file.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert_eq!(read_file(&file).unwrap(), "x = 1\n");
        // The file itself is still checked.
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let r = read_file(&file);
        assert!(matches!(r, Err(SourceError::Untrusted { .. })), "{r:?}");
    }
}
