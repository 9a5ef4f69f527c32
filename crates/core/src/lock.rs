//! The one lock: an exclusive `flock(2)` on a lock file, held for as long as a [`Lock`] lives,
//! with the holder's pid written into the file so that the next one can say who it waits for.
//!
//! Callers open (or check) the lock file their own way — [`open`] creates it mode 0600 without
//! following a symbolic link — and map [`LockError`] to their own messages. Who *really* holds
//! a lock is the kernel's to say ([`holders`], from `/proc/locks`); the pid in the file is what
//! the holder claims, good for a message, never for a signal.

use std::fmt;
use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// Who holds a lock, as its file says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Holder {
    /// The pid the holder wrote.
    Pid(u32),
    /// The file names no pid (an older hostkit, or a holder that has not written it yet).
    Unknown,
}

impl fmt::Display for Holder {
    /// `pid N`, or `another process`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Holder::Pid(pid) => write!(f, "pid {pid}"),
            Holder::Unknown => f.write_str("another process"),
        }
    }
}

/// Why a lock was not taken.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Someone else holds it (and the caller did not wait).
    #[error("{}: locked by {holder}", path.display())]
    Held {
        /// The lock file.
        path: PathBuf,
        /// Who, as the file says.
        holder: Holder,
    },
    /// Opening, locking or writing the file failed.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The cause (in the message, not repeated as a `source`).
        cause: std::io::Error,
    },
}

fn io_err(path: &Path, cause: impl Into<std::io::Error>) -> LockError {
    LockError::Io {
        path: path.to_path_buf(),
        cause: cause.into(),
    }
}

/// Opens a lock file for reading and writing, creating it (mode 0600) if needed, without
/// following a symbolic link (`O_NOFOLLOW | O_CLOEXEC`).
pub fn open(path: &Path) -> Result<File, LockError> {
    std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io_err(path, e))
}

/// Whether to wait for a lock someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fail at once ([`LockError::Held`]).
    No,
    /// Block until it is released.
    Yes,
}

/// A held lock: released when dropped (or when the process ends).
#[derive(Debug)]
pub struct Lock {
    /// Held, not read: dropping it releases the lock.
    _flock: Flock<File>,
    path: PathBuf,
}

/// What [`Lock::attempt`] found.
#[derive(Debug)]
pub enum Attempt {
    /// The lock is ours.
    Taken(Lock),
    /// Someone else holds it.
    Busy(Busy),
}

/// A lock someone else holds: say who, then wait for it or give up.
#[derive(Debug)]
pub struct Busy {
    file: File,
    path: PathBuf,
    holder: Holder,
}

impl Busy {
    /// Who holds it, as the file says.
    pub fn holder(&self) -> Holder {
        self.holder
    }

    /// Blocks until the holder releases it, then takes it.
    pub fn wait(self) -> Result<Lock, LockError> {
        let flock = Flock::lock(self.file, FlockArg::LockExclusive)
            .map_err(|(_, e)| io_err(&self.path, e))?;
        Lock::taken(flock, self.path)
    }

    /// The error that says it is held.
    pub fn into_error(self) -> LockError {
        LockError::Held {
            path: self.path,
            holder: self.holder,
        }
    }
}

impl Lock {
    /// Tries to take the lock of a file the caller opened (readable, to name a holder, and
    /// writable, to name itself) without blocking; `path` is the file's name in messages.
    pub fn attempt(file: File, path: &Path) -> Result<Attempt, LockError> {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(flock) => Ok(Attempt::Taken(Lock::taken(flock, path.to_path_buf())?)),
            Err((file, Errno::EWOULDBLOCK)) => {
                let holder = read_holder(&file);
                Ok(Attempt::Busy(Busy {
                    file,
                    path: path.to_path_buf(),
                    holder,
                }))
            }
            Err((_, e)) => Err(io_err(path, e)),
        }
    }

    /// Takes the lock of an opened file: at once, or (with [`Wait::Yes`]) once its holder
    /// releases it.
    pub fn on(file: File, path: &Path, wait: Wait) -> Result<Lock, LockError> {
        match Lock::attempt(file, path)? {
            Attempt::Taken(lock) => Ok(lock),
            Attempt::Busy(busy) if wait == Wait::Yes => busy.wait(),
            Attempt::Busy(busy) => Err(busy.into_error()),
        }
    }

    /// Opens (see [`open`]) and takes the lock file at `path`.
    pub fn take(path: &Path, wait: Wait) -> Result<Lock, LockError> {
        Lock::on(open(path)?, path, wait)
    }

    /// Writes our pid into a lock just taken.
    fn taken(mut flock: Flock<File>, path: PathBuf) -> Result<Lock, LockError> {
        let pid = format!("{}\n", std::process::id());
        flock
            .set_len(0)
            .and_then(|()| flock.rewind())
            .and_then(|()| flock.write_all(pid.as_bytes()))
            .map_err(|e| io_err(&path, e))?;
        Ok(Lock {
            _flock: flock,
            path,
        })
    }

    /// The lock file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The holder of a lock we could not take: the pid it wrote. A holder writes its pid right
/// after taking the lock, so an empty file is read again for a few milliseconds before the
/// holder is called unknown (one that never writes stays "another process").
fn read_holder(file: &File) -> Holder {
    for _ in 0..20 {
        if let holder @ Holder::Pid(_) = read_pid(file) {
            return holder;
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    read_pid(file)
}

/// The holder's pid as its lock file says (read from the start, whatever the offset).
fn read_pid(mut file: &File) -> Holder {
    let mut text = String::new();
    let read = file
        .rewind()
        .and_then(|()| file.take(32).read_to_string(&mut text));
    match read.map(|_| text.trim().parse::<u32>()) {
        Ok(Ok(pid)) => Holder::Pid(pid),
        _ => Holder::Unknown,
    }
}

/// Whether someone holds an exclusive lock on an opened file (probed with a shared,
/// non-blocking `flock`, released at once).
pub fn is_held(file: File) -> std::io::Result<bool> {
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_) => Ok(false),
        Err((_, Errno::EWOULDBLOCK)) => Ok(true),
        Err((_, e)) => Err(e.into()),
    }
}

/// The pids holding a `flock` on the file at `path`, from `/proc/locks`: the kernel's own
/// account, not what the file claims.
pub fn holders(path: &Path) -> std::io::Result<Vec<u32>> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)?;
    let dev = meta.dev();
    let want = (
        nix::sys::stat::major(dev),
        nix::sys::stat::minor(dev),
        meta.ino(),
    );
    let locks = std::fs::read_to_string("/proc/locks")?;
    Ok(locks
        .lines()
        .filter_map(|line| {
            // `1: FLOCK  ADVISORY  WRITE 1234 00:1a:5678 0 EOF`; waiters (`1: -> FLOCK …`) are
            // not holders.
            let f: Vec<&str> = line.split_whitespace().collect();
            if f.get(1) != Some(&"FLOCK") {
                return None;
            }
            let pid: u32 = f.get(4)?.parse().ok()?;
            let mut id = f.get(5)?.split(':');
            let major = u64::from_str_radix(id.next()?, 16).ok()?;
            let minor = u64::from_str_radix(id.next()?, 16).ok()?;
            let ino: u64 = id.next()?.parse().ok()?;
            (want == (major, minor, ino)).then_some(pid)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    fn own() -> Holder {
        Holder::Pid(std::process::id())
    }

    #[test]
    fn a_taken_lock_names_its_holder_to_the_next_one() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        let lock = Lock::take(&path, Wait::No).unwrap();
        assert_eq!(lock.path(), path);
        let meta = std::fs::metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o7777, 0o600);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("{}\n", std::process::id())
        );
        // flock is per open file: a second open in this process contends.
        let err = Lock::take(&path, Wait::No).unwrap_err();
        assert!(matches!(err, LockError::Held { holder, .. } if holder == own()));
        assert_eq!(
            err.to_string(),
            format!("{}: locked by pid {}", path.display(), std::process::id())
        );
        match Lock::attempt(open(&path).unwrap(), &path).unwrap() {
            Attempt::Busy(busy) => assert_eq!(
                busy.holder().to_string(),
                format!("pid {}", std::process::id())
            ),
            Attempt::Taken(_) => panic!("taken twice"),
        }
        assert!(is_held(open(&path).unwrap()).unwrap());
        drop(lock);
        assert!(!is_held(open(&path).unwrap()).unwrap());
        let _again = Lock::take(&path, Wait::No).unwrap();
    }

    #[test]
    fn a_holder_that_wrote_nothing_is_another_process() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        std::fs::write(&path, "").unwrap();
        let _held = Flock::lock(File::open(&path).unwrap(), FlockArg::LockExclusiveNonblock)
            .map_err(|(_, e)| e)
            .unwrap();
        let err = Lock::take(&path, Wait::No).unwrap_err();
        assert!(
            err.to_string().ends_with(": locked by another process"),
            "{err}"
        );
    }

    #[test]
    fn a_link_is_not_followed() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("target");
        std::fs::write(&target, "keep").unwrap();
        let link = t.path().join("lock");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = Lock::take(&link, Wait::No).unwrap_err();
        assert!(
            matches!(&err, LockError::Io { cause, .. } if cause.raw_os_error() == Some(Errno::ELOOP as i32)),
            "{err}"
        );
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    }

    #[test]
    fn waiting_takes_the_lock_once_the_holder_lets_go() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        let held = Lock::take(&path, Wait::No).unwrap();
        let (tx, rx) = mpsc::channel();
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let lock = Lock::take(&path, Wait::Yes);
                let _ = tx.send((lock.map(|_| ()).map_err(|e| e.to_string()), start.elapsed()));
            })
        };
        // Still waiting while the lock is held.
        assert!(rx.recv_timeout(Duration::from_millis(300)).is_err());
        drop(held);
        let (taken, waited) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the waiter never got the lock");
        taken.unwrap();
        assert!(waited >= Duration::from_millis(300), "{waited:?}");
        waiter.join().unwrap();
    }

    #[test]
    fn the_kernel_names_the_holders() {
        let t = tempfile::tempdir().unwrap();
        let path = t.path().join("lock");
        let lock = Lock::take(&path, Wait::No).unwrap();
        let pids = match holders(&path) {
            Ok(pids) => pids,
            Err(e) => {
                hostkit_testutil::skip(&format!("/proc/locks: {e}"));
                return;
            }
        };
        assert_eq!(pids, [std::process::id()]);
        drop(lock);
        assert_eq!(holders(&path).unwrap(), Vec::<u32>::new());
    }
}
