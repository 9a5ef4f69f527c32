//! Atomic file replacement relative to an open directory: the one writer behind every file
//! hostkit replaces (a recipe's targets and its state, a patched source file, a tunnel's state).
//!
//! The caller opens the directory its own way (a recipe's target through a parent opened with
//! `RESOLVE_NO_SYMLINKS`, the tunnel's checked run directory, a source tree's directory) and
//! hands over the descriptor; from then on nothing is resolved by path again:
//!
//! * the temporary file is created *in that directory* with `openat(O_CREAT | O_EXCL |
//!   O_NOFOLLOW | O_CLOEXEC)`, mode 0600, under a name no one can have prepared (a prefix, the
//!   pid, a counter and 64 unpredictable bits; a name that exists — left over or planted, a
//!   symbolic link included — is never opened, and a few fresh names are tried);
//! * the bytes are written, then the owner is set (before the mode, so that a `chown` cannot
//!   clear set-id bits the mode asks for), then the mode, then the file is fsynced;
//! * [`Staged::commit`] renames it over the name with `renameat` in the same directory, and
//!   [`replace`] then fsyncs the directory;
//! * a temporary file that was not committed — an error on the way, or a [`Staged`] dropped —
//!   is unlinked (relative to the same descriptor).

use std::collections::hash_map::RandomState;
use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::hash::BuildHasher;
use std::io::Write;
use std::os::fd::BorrowedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use nix::errno::Errno;
use nix::fcntl::{OFlag, openat, renameat};
use nix::sys::stat::Mode;
use nix::unistd::{UnlinkatFlags, unlinkat};

/// How many fresh temporary names are tried before giving up (each one exists only if someone
/// prepared it, or a crashed run left it).
const ATTEMPTS: u32 = 16;

/// The longest part of the target's name a temporary name repeats (so that it stays under
/// `NAME_MAX`).
const NAME_PART: usize = 96;

/// The step of a write that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Creating the temporary file (the error names it).
    Create,
    /// Writing the bytes (names the temporary file).
    Write,
    /// Setting the owner (names the temporary file).
    Owner,
    /// Setting the mode (names the temporary file).
    Mode,
    /// Flushing the temporary file to disk (names it).
    Sync,
    /// Renaming it over the target (names the target).
    Rename,
    /// Flushing the directory (names the directory).
    SyncDir,
}

/// A failed write: the path concerned and the cause.
#[derive(Debug, thiserror::Error)]
#[error("{}: {cause}", path.display())]
pub struct WriteError {
    /// What failed.
    pub step: Step,
    /// The temporary file, the target or the directory (see [`Step`]).
    pub path: PathBuf,
    /// The cause (in the message, not repeated as a `source`).
    pub cause: std::io::Error,
}

impl WriteError {
    fn new(step: Step, path: PathBuf, cause: impl Into<std::io::Error>) -> WriteError {
        WriteError {
            step,
            path,
            cause: cause.into(),
        }
    }
}

/// Who owns the new file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// Whoever created it: the running user (and its group, or the directory's when it is
    /// set-group-id).
    Creator,
    /// This uid and gid; failing to set them fails the write.
    Exactly(u32, u32),
    /// This uid and gid when the running user may give them; otherwise the creator's, and
    /// [`Staged::owner_error`] says why.
    IfPermitted(u32, u32),
}

/// A directory the caller opened, and the path it was opened by (for messages only: nothing
/// is resolved by it).
#[derive(Debug, Clone, Copy)]
pub struct Dir<'d> {
    fd: BorrowedFd<'d>,
    path: &'d Path,
    prefix: &'static str,
}

impl<'d> Dir<'d> {
    /// The directory open as `fd`, known as `path`. Temporary files are named
    /// `.hostkit-NAME.PID-N-RANDOM`.
    pub fn new(fd: BorrowedFd<'d>, path: &'d Path) -> Dir<'d> {
        Dir {
            fd,
            path,
            prefix: "hostkit",
        }
    }

    /// The same directory, with temporary files named `.PREFIX-NAME.PID-N-RANDOM` (who left one
    /// behind after a crash).
    pub fn with_prefix(self, prefix: &'static str) -> Dir<'d> {
        Dir { prefix, ..self }
    }

    /// The path the directory was opened by.
    pub fn path(&self) -> &'d Path {
        self.path
    }

    /// Flushes the directory (its entries) to disk.
    pub fn sync(&self) -> Result<(), WriteError> {
        nix::unistd::fsync(self.fd).map_err(|e| WriteError::new(Step::SyncDir, self.path.into(), e))
    }
}

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A fresh temporary name for `name`: `.PREFIX-NAME.PID-N-RANDOM` (hidden, 64 unpredictable
/// bits).
fn temp_name(prefix: &str, name: &OsStr, attempt: u32) -> OsString {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let pid = std::process::id();
    // RandomState is seeded from the OS's randomness; hashing the time and the attempt with it
    // gives bits nobody can predict from the pid and counter.
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    let random = RandomState::new().hash_one((pid, n, attempt, nanos));
    let mut tmp = format!(".{prefix}-").into_bytes();
    let name = name.as_bytes();
    tmp.extend_from_slice(&name[..name.len().min(NAME_PART)]);
    // The name's own extension never ends the temporary name: a leftover `.x.conf…` must not
    // look like one more `*.conf` to whoever reads the directory.
    tmp.extend_from_slice(format!(".{pid}-{n}-{random:016x}").as_bytes());
    OsString::from_vec(tmp)
}

/// A temporary file written, given its owner and mode and flushed, not yet renamed over its
/// target; dropped uncommitted, it is unlinked.
#[derive(Debug)]
pub struct Staged<'d> {
    dir: Dir<'d>,
    temp: OsString,
    name: OsString,
    owner_error: Option<std::io::Error>,
    committed: bool,
}

impl<'d> Staged<'d> {
    /// Writes `bytes` to a new temporary file in `dir` for `name` (a single component), with
    /// `mode` and `owner`, and flushes it (see the module documentation).
    pub fn new(
        dir: Dir<'d>,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        owner: Owner,
    ) -> Result<Staged<'d>, WriteError> {
        Staged::new_with(dir, name, bytes, mode, owner, |attempt| {
            temp_name(dir.prefix, name, attempt)
        })
    }

    /// [`Staged::new`] with the temporary names given by `names` (tests plant some).
    fn new_with(
        dir: Dir<'d>,
        name: &OsStr,
        bytes: &[u8],
        mode: u32,
        owner: Owner,
        mut names: impl FnMut(u32) -> OsString,
    ) -> Result<Staged<'d>, WriteError> {
        let mut create = || {
            let mut temp = OsString::new();
            for attempt in 0..ATTEMPTS {
                temp = names(attempt);
                match openat(
                    dir.fd,
                    temp.as_os_str(),
                    OFlag::O_WRONLY
                        | OFlag::O_CREAT
                        | OFlag::O_EXCL
                        | OFlag::O_NOFOLLOW
                        | OFlag::O_CLOEXEC,
                    Mode::from_bits_truncate(0o600),
                ) {
                    Ok(fd) => return Ok((temp, File::from(fd))),
                    Err(Errno::EEXIST) => {}
                    Err(e) => return Err(WriteError::new(Step::Create, dir.path.join(&temp), e)),
                }
            }
            Err(WriteError::new(
                Step::Create,
                dir.path.join(&temp),
                Errno::EEXIST,
            ))
        };
        let (temp, mut file) = create()?;
        // From here on, dropping `staged` (an error) unlinks the temporary file.
        let mut staged = Staged {
            dir,
            temp,
            name: name.to_os_string(),
            owner_error: None,
            committed: false,
        };
        let path = staged.temp_path();
        let fail = |step, e| WriteError::new(step, path.clone(), e);
        file.write_all(bytes).map_err(|e| fail(Step::Write, e))?;
        match owner {
            Owner::Creator => {}
            Owner::Exactly(uid, gid) => {
                set_owner(&file, uid, gid).map_err(|e| fail(Step::Owner, e))?
            }
            Owner::IfPermitted(uid, gid) => staged.owner_error = set_owner(&file, uid, gid).err(),
        }
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| fail(Step::Mode, e))?;
        file.sync_all().map_err(|e| fail(Step::Sync, e))?;
        Ok(staged)
    }

    /// The temporary file's path (for messages).
    pub fn temp_path(&self) -> PathBuf {
        self.dir.path.join(&self.temp)
    }

    /// With [`Owner::IfPermitted`]: why the file kept its creator's owner, if it did.
    pub fn owner_error(&self) -> Option<&std::io::Error> {
        self.owner_error.as_ref()
    }

    /// Renames the temporary file over its target (in the same directory). The directory is
    /// not flushed: [`replace`] does that, and a caller committing several files does it once
    /// per directory with [`Dir::sync`]. On failure the temporary file is unlinked.
    pub fn commit(mut self) -> Result<(), WriteError> {
        renameat(
            self.dir.fd,
            self.temp.as_os_str(),
            self.dir.fd,
            self.name.as_os_str(),
        )
        .map_err(|e| WriteError::new(Step::Rename, self.dir.path.join(&self.name), e))?;
        self.committed = true;
        Ok(())
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = unlinkat(
                self.dir.fd,
                self.temp.as_os_str(),
                UnlinkatFlags::NoRemoveDir,
            );
        }
    }
}

/// Replaces (or creates) `name` in `dir` with `bytes`, `mode` and `owner`: staged, renamed
/// over it, and the directory flushed (see the module documentation).
pub fn replace(
    dir: Dir<'_>,
    name: &OsStr,
    bytes: &[u8],
    mode: u32,
    owner: Owner,
) -> Result<(), WriteError> {
    Staged::new(dir, name, bytes, mode, owner)?.commit()?;
    dir.sync()
}

/// Gives an open file (or directory) an owner and group, when it has others.
pub fn set_owner(file: &File, uid: u32, gid: u32) -> std::io::Result<()> {
    let meta = file.metadata()?;
    if meta.uid() == uid && meta.gid() == gid {
        return Ok(());
    }
    std::os::unix::fs::fchown(file, Some(uid), Some(gid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn open_dir(path: &Path) -> std::os::fd::OwnedFd {
        nix::fcntl::open(
            path,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .unwrap()
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn mode_of(path: &Path) -> u32 {
        std::fs::symlink_metadata(path).unwrap().mode() & 0o7777
    }

    #[test]
    fn replace_writes_bytes_mode_and_owner_and_leaves_nothing_else() {
        let t = tempfile::tempdir().unwrap();
        let fd = open_dir(t.path());
        let dir = Dir::new(fd.as_fd(), t.path());
        std::fs::write(t.path().join("f"), "old").unwrap();
        // Root gives the file to nobody; anyone else can give it to itself.
        let (uid, gid) = if nix::unistd::geteuid().is_root() {
            (65534, 65534)
        } else {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        };
        replace(
            dir,
            OsStr::new("f"),
            b"new",
            0o640,
            Owner::Exactly(uid, gid),
        )
        .unwrap();
        let path = t.path().join("f");
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o640);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!((meta.uid(), meta.gid()), (uid, gid));
        // Set-id bits survive the owner change (owner first, then mode).
        replace(dir, OsStr::new("g"), b"x", 0o2755, Owner::Exactly(uid, gid)).unwrap();
        assert_eq!(mode_of(&t.path().join("g")), 0o2755);
        replace(dir, OsStr::new("h"), b"", 0o600, Owner::Creator).unwrap();
        assert_eq!(entries(t.path()), ["f", "g", "h"]);
    }

    #[test]
    fn a_failed_or_dropped_write_leaves_no_temporary_file() {
        let t = tempfile::tempdir().unwrap();
        let fd = open_dir(t.path());
        let dir = Dir::new(fd.as_fd(), t.path());
        // A directory where the file goes: the rename fails, naming the target.
        std::fs::create_dir(t.path().join("d")).unwrap();
        std::fs::write(t.path().join("d/x"), "").unwrap();
        let err = replace(dir, OsStr::new("d"), b"x", 0o644, Owner::Creator).unwrap_err();
        assert_eq!(err.step, Step::Rename);
        assert_eq!(err.path, t.path().join("d"));
        assert!(
            err.to_string()
                .starts_with(&format!("{}: ", t.path().join("d").display()))
        );
        assert_eq!(entries(t.path()), ["d"]);
        // Staged, then dropped.
        let staged = Staged::new(dir, OsStr::new("f"), b"x", 0o644, Owner::Creator).unwrap();
        let temp = staged.temp_path();
        assert!(temp.exists());
        assert_eq!(mode_of(&temp), 0o644);
        drop(staged);
        assert_eq!(entries(t.path()), ["d"]);
        // An owner that cannot be given (not root): the write fails, nothing is left.
        if !nix::unistd::geteuid().is_root() {
            let err = replace(dir, OsStr::new("f"), b"x", 0o644, Owner::Exactly(0, 0)).unwrap_err();
            assert_eq!(err.step, Step::Owner);
            assert_eq!(entries(t.path()), ["d"]);
            let staged =
                Staged::new(dir, OsStr::new("f"), b"x", 0o644, Owner::IfPermitted(0, 0)).unwrap();
            assert!(staged.owner_error().is_some());
            staged.commit().unwrap();
            assert_eq!(entries(t.path()), ["d", "f"]);
        }
    }

    #[test]
    fn a_prepared_temporary_name_is_never_opened_and_tries_are_bounded() {
        let t = tempfile::tempdir().unwrap();
        let fd = open_dir(t.path());
        let dir = Dir::new(fd.as_fd(), t.path());
        let secret = t.path().join("secret");
        std::fs::write(&secret, "keep").unwrap();
        // The first two names are taken: a link to another file, and a plain file.
        std::os::unix::fs::symlink(&secret, t.path().join("t0")).unwrap();
        std::fs::write(t.path().join("t1"), "planted").unwrap();
        let names = |i: u32| OsString::from(format!("t{i}"));
        let staged =
            Staged::new_with(dir, OsStr::new("f"), b"new", 0o600, Owner::Creator, names).unwrap();
        assert_eq!(staged.temp_path(), t.path().join("t2"));
        staged.commit().unwrap();
        assert_eq!(std::fs::read(&secret).unwrap(), b"keep");
        assert_eq!(std::fs::read(t.path().join("t1")).unwrap(), b"planted");
        assert_eq!(std::fs::read(t.path().join("f")).unwrap(), b"new");
        // Every name taken: EEXIST after a bounded number of tries.
        let mut tries = 0;
        let err = Staged::new_with(dir, OsStr::new("f"), b"x", 0o600, Owner::Creator, |_| {
            tries += 1;
            OsString::from("t1")
        })
        .unwrap_err();
        assert_eq!(
            (err.step, err.cause.raw_os_error()),
            (Step::Create, Some(Errno::EEXIST as i32))
        );
        assert_eq!(tries, ATTEMPTS);
    }

    #[test]
    fn temporary_names_are_fresh_hidden_and_bounded() {
        let long = "n".repeat(250);
        let a = temp_name("hostkit-patch", OsStr::new(&long), 0);
        let b = temp_name("hostkit-patch", OsStr::new(&long), 0);
        assert_ne!(a, b);
        assert!(a.to_string_lossy().starts_with(".hostkit-patch-nnn"));
        assert!(a.len() < 200, "{}", a.len());
        let c = temp_name("hostkit", OsStr::new("x.conf"), 0);
        assert!(c.to_string_lossy().starts_with(".hostkit-x.conf."), "{c:?}");
        assert_ne!(Path::new(&c).extension(), Some(OsStr::new("conf")));
        let fd = open_dir(Path::new("/"));
        let dir = Dir::new(fd.as_fd(), Path::new("/")).with_prefix("x");
        assert_eq!(dir.prefix, "x");
    }
}
