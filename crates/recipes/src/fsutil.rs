//! Careful file access under a root: symbolic links are followed only when a trusted user owns
//! them (and never out of the root), reads refuse directories and special files, and writes are
//! atomic (temporary file in the same directory, fsync, rename, fsync of the directory) and keep
//! the file's mode and owner.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// Whose symbolic links may be followed.
#[derive(Debug, Clone)]
pub struct Trust {
    /// The trusted owners (root, and in user scope the home's owner).
    pub uids: Vec<u32>,
}

impl Trust {
    fn describe(&self) -> String {
        self.uids
            .iter()
            .map(|&u| {
                if u == 0 {
                    "root".to_string()
                } else {
                    format!("uid {u}")
                }
            })
            .collect::<Vec<_>>()
            .join(" or ")
    }
}

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
}

/// Resolves `logical` (an absolute path inside the root) to a host path, following only
/// symbolic links owned by a trusted user, and keeping absolute link targets inside the root.
/// The last components may not exist.
pub fn resolve(root: &Path, logical: &Path, trust: &Trust) -> Result<PathBuf> {
    let mut pending: Vec<OsString> = components(logical);
    pending.reverse();
    let mut current = root.to_path_buf();
    let mut links = 0;
    while let Some(name) = pending.pop() {
        if name == ".." {
            if current != root {
                current.pop();
            }
            continue;
        }
        let next = current.join(&name);
        match std::fs::symlink_metadata(&next) {
            Ok(meta) if meta.file_type().is_symlink() => {
                if !trust.uids.contains(&meta.uid()) {
                    return Err(Error::UntrustedSymlink {
                        path: next,
                        uid: meta.uid(),
                        trusted: trust.describe(),
                    });
                }
                links += 1;
                if links > 40 {
                    return Err(Error::BadSymlink {
                        path: next,
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                let target = std::fs::read_link(&next).map_err(|e| Error::io(&next, e))?;
                let mut rest = components(&target);
                rest.reverse();
                pending.extend(rest);
                if target.is_absolute() {
                    current = root.to_path_buf();
                }
            }
            Ok(_) => current = next,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => current = next,
            Err(e) => return Err(Error::io(next, e)),
        }
    }
    Ok(current)
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

/// Reads a resolved file without following a symbolic link; `None` when it does not exist.
pub fn read(path: &Path) -> Result<Option<Existing>> {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(path, e)),
    };
    if meta.is_dir() {
        return Err(Error::IsDirectory { path: path.into() });
    }
    if !meta.is_file() {
        return Err(Error::NotRegularFile { path: path.into() });
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
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
    }))
}

/// The SHA-256 of some bytes, in hex.
pub fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Replaces (or creates) `path` atomically with `bytes`, mode and owner.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32, owner: (u32, u32)) -> Result<()> {
    let dir = parent(path);
    let name = path
        .file_name()
        .map(|n| n.as_bytes().to_vec())
        .unwrap_or_default();
    let tmp_name = format!(
        ".{}.hostkit-{}-{}",
        String::from_utf8_lossy(&name),
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let tmp = dir.join(tmp_name);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .open(&tmp)
            .map_err(|e| Error::io(&tmp, e))?;
        file.write_all(bytes).map_err(|e| Error::io(&tmp, e))?;
        set_owner(&file, &tmp, owner)?;
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(&tmp, e))?;
        file.sync_all().map_err(|e| Error::io(&tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Gives an open file (or directory) an owner, when it has another one.
pub fn set_owner(file: &File, path: &Path, (uid, gid): (u32, u32)) -> Result<()> {
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(uid), Some(gid)).map_err(|e| Error::io(path, e))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// fsyncs a directory so a rename or unlink in it is durable.
pub fn sync_dir(dir: &Path) -> Result<()> {
    let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
    file.sync_all().map_err(|e| Error::io(dir, e))
}

/// Removes a file (durably).
pub fn remove(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => sync_dir(parent(path)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Creates the missing parent directories of `path` with `mode` and `owner`; returns the ones
/// created, outermost first.
pub fn create_parents(path: &Path, mode: u32, owner: (u32, u32)) -> Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut dir = parent(path);
    loop {
        match std::fs::symlink_metadata(dir) {
            Ok(m) if m.is_dir() => break,
            Ok(_) => {
                return Err(Error::io(
                    dir,
                    std::io::Error::new(std::io::ErrorKind::NotADirectory, "not a directory"),
                ));
            }
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
    for dir in &missing {
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(dir)
            .map_err(|e| Error::io(dir, e))?;
        let file = File::open(dir).map_err(|e| Error::io(dir, e))?;
        set_owner(&file, dir, owner)?;
        sync_dir(parent(dir))?;
    }
    Ok(missing)
}

/// Removes directories that are empty, innermost first; keeps the others silently.
pub fn remove_empty_dirs(dirs: &[PathBuf]) {
    for dir in dirs.iter().rev() {
        if std::fs::remove_dir(dir).is_ok() {
            let _ = sync_dir(parent(dir));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trust_root() -> Trust {
        Trust { uids: vec![0] }
    }

    #[test]
    fn absolute_links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc/real", root.join("etc/link")).unwrap();
        let me = nix::unistd::geteuid().as_raw();
        let trust = Trust { uids: vec![0, me] };
        assert_eq!(
            resolve(root, Path::new("/etc/link"), &trust).unwrap(),
            root.join("etc/real")
        );
        std::os::unix::fs::symlink("../../../../x", root.join("etc/up")).unwrap();
        assert_eq!(
            resolve(root, Path::new("/etc/up"), &trust).unwrap(),
            root.join("x")
        );
        if me != 0 {
            assert!(matches!(
                resolve(root, Path::new("/etc/link"), &trust_root()),
                Err(Error::UntrustedSymlink { .. })
            ));
        }
    }

    #[test]
    fn atomic_write_keeps_mode() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let old = read(&path).unwrap().unwrap();
        write_atomic(&path, b"new", old.mode, (old.uid, old.gid)).unwrap();
        let new = read(&path).unwrap().unwrap();
        assert_eq!((new.bytes.as_slice(), new.mode), (&b"new"[..], 0o640));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        assert!(matches!(read(dir.path()), Err(Error::IsDirectory { .. })));
    }
}
