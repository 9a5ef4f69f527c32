//! Careful file access under a root.
//!
//! hostkit runs as root on trees that ordinary users can write to (their homes, and images
//! whose homes belong to users). So every path is walked here one component at a time, with
//! the kernel's help:
//!
//! * [`resolve`] opens each component with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_SYMLINKS)`
//!   relative to the directory before it (so `..` and absolute link targets never leave the
//!   root, and magic links such as `/proc/self/root` are never followed), and follows a
//!   symbolic link only when root owns it or when its owner also owns what it points to (the
//!   kernel's `fs.protected_symlinks` rule): `~/.profile -> /etc/shadow` planted by a user is
//!   refused, `~/.config -> ~/dotfiles/config` is followed. The result names no link.
//! * Every later operation ([`read`], [`write_atomic`], [`remove`], [`create_parents`],
//!   [`remove_empty_dirs`]) opens the parent directory with `RESOLVE_NO_SYMLINKS` and works
//!   relative to that descriptor (`openat`, `renameat`, `unlinkat`, `mkdirat`), so a link
//!   swapped in after [`resolve`] makes the operation fail instead of redirecting it.
//! * Reads refuse directories and special files (a FIFO is opened with `O_NONBLOCK`, then
//!   refused), writes are atomic (temporary file created with `O_EXCL`, fsync, rename, fsync
//!   of the directory: [`hostkit_core::atomic`], relative to the parent opened here) and give
//!   the file its mode and owner.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use hostkit_core::atomic::{self, Owner};
use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag, OpenHow, ResolveFlag, openat, openat2, readlinkat};
use nix::sys::stat::{Mode, SFlag, fstat, mkdirat};
use nix::unistd::{UnlinkatFlags, unlinkat};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// A file that exists: where it really is, its bytes, mode and owner.
#[derive(Debug, Clone)]
pub struct Existing {
    /// The resolved path on the host.
    pub path: PathBuf,
    /// The contents.
    pub bytes: Vec<u8>,
    /// Permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Number of hard links.
    pub nlink: u64,
}

/// The most symbolic links one resolution follows (the kernel's own limit).
const MAX_LINKS: u32 = 40;

fn io_err(path: &Path, errno: Errno) -> Error {
    Error::io(path, std::io::Error::from(errno))
}

/// Opens `name` in `dir` without following a symbolic link anywhere (the final one included:
/// with `O_PATH | O_NOFOLLOW` a link is opened as itself).
fn open_beneath(dir: impl AsFd, name: &OsStr, flags: OFlag) -> nix::Result<OwnedFd> {
    openat2(
        dir,
        name,
        OpenHow::new()
            .flags(flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_SYMLINKS),
        // RESOLVE_NO_SYMLINKS implies RESOLVE_NO_MAGICLINKS.
    )
}

/// Opens a directory named by a path that must contain no symbolic link at all (a path
/// [`resolve`] returned, or one hostkit built from such a path).
fn open_dir(path: &Path) -> Result<OwnedFd> {
    openat2(
        nix::fcntl::AT_FDCWD,
        path,
        OpenHow::new()
            .flags(OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS),
    )
    .map_err(|e| match e {
        // ELOOP: a link on the way; ENOTDIR: the directory itself is now a link.
        Errno::ELOOP | Errno::ENOTDIR
            if e == Errno::ELOOP
                || std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Error::BadSymlink {
            path: path.into(),
                reason: "a symbolic link appeared on the way (changed while hostkit ran?); refusing to follow it".into(),
            }
        }
        e => io_err(path, e),
    })
}

/// Resolves `logical` (an absolute path inside the root) to a host path under `root`, one
/// component at a time (see the module documentation): a symbolic link is followed only when
/// root owns it or its owner owns what it points to; absolute targets and `..` stay inside the
/// root. The last components may not exist. `root` itself must name no symbolic link
/// (callers canonicalize it).
pub fn resolve(root: &Path, logical: &Path) -> Result<PathBuf> {
    let mut links = 0;
    resolve_counted(root, logical, &mut links)
}

fn resolve_counted(root: &Path, logical: &Path, links: &mut u32) -> Result<PathBuf> {
    let root_fd = open_dir(root)?;
    let mut pending: Vec<OsString> = components(logical);
    pending.reverse();
    // The directories entered so far, with their descriptors; empty: the root.
    let mut stack: Vec<(OsString, OwnedFd)> = Vec::new();
    let here = |stack: &[(OsString, OwnedFd)]| {
        let mut p = root.to_path_buf();
        p.extend(stack.iter().map(|(n, _)| n));
        p
    };
    while let Some(name) = pending.pop() {
        if name == ".." {
            stack.pop();
            continue;
        }
        let dir = stack.last().map_or(root_fd.as_fd(), |(_, fd)| fd.as_fd());
        let next = here(&stack).join(&name);
        let fd = match open_beneath(dir, &name, OFlag::O_PATH) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => {
                // The rest does not exist yet: it is created (as directories and a file)
                // under the last existing directory; `..` there is lexical.
                let mut path = next;
                while let Some(rest) = pending.pop() {
                    if rest == ".." {
                        if path != here(&stack) {
                            path.pop();
                        }
                    } else {
                        path.push(rest);
                    }
                }
                return Ok(path);
            }
            Err(e) => return Err(io_err(&next, e)),
        };
        let st = fstat(&fd).map_err(|e| io_err(&next, e))?;
        let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
        if kind == SFlag::S_IFLNK {
            *links += 1;
            if *links > MAX_LINKS {
                return Err(Error::BadSymlink {
                    path: next,
                    reason: "too many levels of symbolic links".into(),
                });
            }
            let target = PathBuf::from(readlinkat(&fd, "").map_err(|e| io_err(&next, e))?);
            if st.st_uid != 0 {
                // The kernel's protected_symlinks rule: a link is trusted when its owner also
                // owns what it points to (or, for a target not yet there, the directory it
                // would be created in).
                let logical_dir = logical_of(root, &here(&stack));
                let target_logical = if target.is_absolute() {
                    target.clone()
                } else {
                    logical_dir.join(&target)
                };
                let resolved = resolve_counted(root, &target_logical, links)?;
                let owner = std::fs::symlink_metadata(&resolved)
                    .or_else(|_| std::fs::symlink_metadata(parent(&resolved)))
                    .map(|m| m.uid())
                    .map_err(|e| Error::io(&resolved, e))?;
                if owner != st.st_uid {
                    return Err(Error::UntrustedSymlink {
                        path: next,
                        uid: st.st_uid,
                        target: resolved,
                        target_uid: owner,
                    });
                }
            }
            let mut rest = components(&target);
            rest.reverse();
            pending.extend(rest);
            if target.is_absolute() {
                stack.clear();
            }
        } else if kind == SFlag::S_IFDIR {
            stack.push((name, fd));
        } else if pending.is_empty() {
            return Ok(next);
        } else {
            // Something other than a directory in the middle (`file/..` included, as the
            // kernel does).
            return Err(io_err(&next, Errno::ENOTDIR));
        }
    }
    Ok(here(&stack))
}

/// The logical (absolute, in-root) path of a host path under `root`.
fn logical_of(root: &Path, host: &Path) -> PathBuf {
    Path::new("/").join(host.strip_prefix(root).unwrap_or(Path::new("")))
}

fn components(path: &Path) -> Vec<OsString> {
    path.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// The parent directory's descriptor and the last component's name.
fn open_parent(path: &Path) -> Result<(OwnedFd, &OsStr)> {
    let name = path
        .file_name()
        .ok_or_else(|| io_err(path, Errno::EINVAL))?;
    Ok((open_dir(parent(path))?, name))
}

/// Reads a resolved file without following a symbolic link; `None` when it does not exist.
/// Directories, FIFOs, sockets and devices are refused (a FIFO never blocks the read).
pub fn read(path: &Path) -> Result<Option<Existing>> {
    let (dir, name) = match open_parent(path) {
        Ok(x) => x,
        Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return Ok(None);
        }
        Err(e) => return Err(e),
    };
    let fd = match openat(
        &dir,
        name,
        OFlag::O_RDONLY
            | OFlag::O_NOFOLLOW
            | OFlag::O_NONBLOCK
            | OFlag::O_CLOEXEC
            | OFlag::O_NOCTTY,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        Err(Errno::EISDIR) => return Err(Error::IsDirectory { path: path.into() }),
        Err(Errno::ELOOP) => {
            return Err(Error::BadSymlink {
                path: path.into(),
                reason: "is a symbolic link; hostkit does not follow it here".into(),
            });
        }
        Err(Errno::ENXIO) => return Err(Error::NotRegularFile { path: path.into() }),
        Err(e) => return Err(io_err(path, e)),
    };
    let mut file = File::from(fd);
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.is_dir() {
        return Err(Error::IsDirectory { path: path.into() });
    }
    if !meta.is_file() {
        return Err(Error::NotRegularFile { path: path.into() });
    }
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| Error::io(path, e))?;
    Ok(Some(Existing {
        path: path.into(),
        bytes,
        mode: meta.permissions().mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        nlink: meta.nlink(),
    }))
}

/// The SHA-256 of some bytes, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Replaces (or creates) `path` atomically with `bytes`, mode and owner: through
/// [`hostkit_core::atomic::replace`], relative to the parent opened here.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: (u32, u32)) -> Result<()> {
    let (dir, name) = open_parent(path)?;
    let dir = atomic::Dir::new(dir.as_fd(), parent(path));
    atomic::replace(dir, name, bytes, mode, Owner::Exactly(owner.0, owner.1))
        .map_err(|e| Error::io(e.path, e.cause))
}

/// Gives an open file (or directory) an owner, when it has another one.
pub fn set_owner(file: &File, path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    atomic::set_owner(file, uid, gid).map_err(|e| Error::io(path, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Removes a file (durably); nothing when it is already gone.
pub fn remove(path: &Path) -> Result<()> {
    let (dir, name) = match open_parent(path) {
        Ok(x) => x,
        Err(Error::Io { cause, .. }) if cause.kind() == std::io::ErrorKind::NotFound => {
            return Ok(());
        }
        Err(e) => return Err(e),
    };
    match unlinkat(&dir, name, UnlinkatFlags::NoRemoveDir) {
        Ok(()) => File::from(dir).sync_all().map_err(|e| Error::io(path, e)),
        Err(Errno::ENOENT) => Ok(()),
        Err(e) => Err(io_err(path, e)),
    }
}

/// Creates the missing parent directories of `path` with `mode` and `owner`; returns the ones
/// created, outermost first.
pub fn create_parents(path: &Path, mode: u32, owner: (u32, u32)) -> Result<Vec<PathBuf>> {
    create_dirs(parent(path), mode, owner)
}

/// Creates `dir` and its missing parents with `mode` and `owner`; returns the ones created,
/// outermost first.
pub fn create_dirs(dir: &Path, mode: u32, owner: (u32, u32)) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut dir = dir;
    loop {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => return Err(io_err(dir, Errno::ENOTDIR)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                missing.push(dir.to_path_buf());
                match dir.parent() {
                    Some(p) => dir = p,
                    None => break,
                }
            }
            Err(e) => return Err(Error::io(dir, e)),
        }
    }
    missing.reverse();
    let mut created = Vec::new();
    for dir in &missing {
        let (parent_fd, name) = open_parent(dir)?;
        match mkdirat(&parent_fd, name, Mode::from_bits_truncate(0o700)) {
            Ok(()) => {}
            // Another process made it in between (two applies at once): theirs, not ours.
            Err(Errno::EEXIST)
                if nix::sys::stat::fstatat(&parent_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
                    .is_ok_and(|st| {
                        SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    }) =>
            {
                continue;
            }
            Err(e) => return Err(io_err(dir, e)),
        }
        created.push(dir.clone());
        let fd = openat(
            &parent_fd,
            name,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io_err(dir, e))?;
        let file = File::from(fd);
        set_owner(&file, dir, owner)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(dir, e))?;
        File::from(parent_fd)
            .sync_all()
            .map_err(|e| Error::io(dir, e))?;
    }
    Ok(created)
}

/// Removes the directories that are empty and owned by one of `owners`, innermost first;
/// keeps the others silently.
pub fn remove_empty_dirs(dirs: &[PathBuf], owners: &[u32]) {
    for dir in dirs.iter().rev() {
        let Ok((parent_fd, name)) = open_parent(dir) else {
            continue;
        };
        let owned = nix::sys::stat::fstatat(&parent_fd, name, AtFlags::AT_SYMLINK_NOFOLLOW)
            .is_ok_and(|st| {
                SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFDIR
                    && owners.contains(&st.st_uid)
            });
        if owned && unlinkat(&parent_fd, name, UnlinkatFlags::RemoveDir).is_ok() {
            let _ = File::from(parent_fd).sync_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_links_and_dotdot_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/real", root.join("etc/link")).unwrap();
        // Links the test user owns, pointing at directories it owns: followed.
        assert_eq!(
            resolve(&root, Path::new("/etc/link")).unwrap(),
            root.join("etc/real")
        );
        std::os::unix::fs::symlink("../../../../x", root.join("etc/up")).unwrap();
        assert_eq!(
            resolve(&root, Path::new("/etc/up")).unwrap(),
            root.join("x")
        );
        assert_eq!(
            resolve(&root, Path::new("/../../etc/../etc/new/file")).unwrap(),
            root.join("etc/new/file")
        );
        std::os::unix::fs::symlink("loop", root.join("etc/loop")).unwrap();
        assert!(matches!(
            resolve(&root, Path::new("/etc/loop")),
            Err(Error::BadSymlink { .. })
        ));
        std::fs::write(root.join("etc/file"), "x").unwrap();
        assert!(resolve(&root, Path::new("/etc/file/more")).is_err());
    }

    #[test]
    fn atomic_write_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("f");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let old = read(&path).unwrap().unwrap();
        write_atomic(&path, b"new", old.mode, (old.uid, old.gid)).unwrap();
        let new = read(&path).unwrap().unwrap();
        assert_eq!((new.bytes.as_slice(), new.mode), (&b"new"[..], 0o640));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(read(dir.path()), Err(Error::IsDirectory { .. })));
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("fifo");
        nix::unistd::mkfifo(&path, Mode::from_bits_truncate(0o600)).unwrap();
        assert!(matches!(read(&path), Err(Error::NotRegularFile { .. })));
    }

    #[test]
    fn a_link_swapped_in_after_resolution_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        std::fs::create_dir_all(root.join("home/u")).unwrap();
        std::fs::create_dir_all(root.join("elsewhere")).unwrap();
        let target = resolve(&root, Path::new("/home/u/.profile")).unwrap();
        std::fs::rename(root.join("home/u"), root.join("home/old")).unwrap();
        std::os::unix::fs::symlink(root.join("elsewhere"), root.join("home/u")).unwrap();
        let r = write_atomic(&target, b"x", 0o644, (0, 0));
        assert!(matches!(r, Err(Error::BadSymlink { .. })), "{r:?}");
        assert_eq!(
            std::fs::read_dir(root.join("elsewhere")).unwrap().count(),
            0
        );
    }
}
