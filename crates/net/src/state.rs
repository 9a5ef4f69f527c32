//! The run-state file of a tunnel: what `up` changed (its undo journal), who runs the relay, and
//! the relay's counters. `tun down` and `tun status` read it; a lock held by the running `up`
//! tells whether the relay is alive.
//!
//! The file lives in a checked run directory ([`RunDir`]) and is read only after the checks of
//! `trust.rs` (regular file, owned by root, opened without following links); its undo
//! entries are then checked against what `up` can have written before anything is undone.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use hostkit_core::atomic::{self, Dir, Owner};
use hostkit_core::lock::{self, Attempt, Lock, LockError};
use nix::fcntl::OFlag;
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::spec::TunnelSpec;
use crate::trust::{self, RunDir, TrustError};
use crate::undo::Undo;

/// The state-file format written by this version.
pub const STATE_VERSION: u32 = 2;

/// The default run directory.
pub const DEFAULT_RUN_DIR: &str = "/run/hostkit";

/// Counters of one relay direction, as stored.
pub use hostkit_tun::DirSnapshot as DirStats;

/// The stored state of one tunnel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TunnelState {
    /// File format version.
    pub version: u32,
    /// Process running the relay.
    pub pid: u32,
    /// The named namespace given with `--netns`, if any.
    pub netns: Option<String>,
    /// Inode of the network namespace.
    pub netns_inode: u64,
    /// The tunnel's settings.
    pub spec: TunnelSpec,
    /// The relay engine.
    pub engine: hostkit_tun::Engine,
    /// The offloads in force (`csum,tso4,…` or `none`).
    #[serde(default)]
    pub offloads: String,
    /// Unix time `up` started.
    pub started_unix: u64,
    /// What was changed, oldest first.
    pub undo: Vec<Undo>,
    /// Relay counters (updated while it runs).
    pub stats: Vec<DirStats>,
    /// The stages on the relay's path and their counters (updated while it runs).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub stages: Vec<hostkit_tun::pipeline::StageSnapshot>,
}

/// A state file and its lock.
pub struct StateFile {
    path: PathBuf,
    /// The run directory, opened once: every write is relative to it.
    dir: OwnedFd,
    lock: Lock,
}

/// Why the state file could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// Another `up` holds it.
    #[error(
        "a relay for {devs} is already running in this network namespace{pid}; stop it first (hostkit tun down)"
    )]
    Running {
        /// The device pair.
        devs: String,
        /// ` (pid N)` if known.
        pid: String,
    },
    /// A dead `up` left state behind.
    #[error(
        "a previous `hostkit tun up` for {devs} (pid {pid}) ended without cleaning up; run `hostkit tun down` first"
    )]
    Stale {
        /// The device pair.
        devs: String,
        /// Its pid.
        pid: u32,
    },
    /// The run directory or a file in it is not trusted.
    #[error(transparent)]
    Untrusted(#[from] TrustError),
    /// A state file that cannot be read as one.
    #[error(
        "state file {path} is damaged or not a hostkit state file: {reason}; it is kept as evidence (`hostkit tun down` says what can still be undone)"
    )]
    Corrupt {
        /// The file.
        path: String,
        /// The parser's (or the version check's) message.
        reason: String,
    },
    /// I/O on the run directory.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: String,
        /// The error.
        #[source]
        source: io::Error,
    },
}

fn io_err(path: &Path, source: io::Error) -> StateError {
    StateError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// The state-file path of a device pair in a namespace.
pub fn state_path(run_dir: &RunDir, netns_inode: u64, devs: [&str; 2]) -> PathBuf {
    run_dir.join(format!("tun-{netns_inode}-{}-{}.json", devs[0], devs[1]))
}

fn lock_path(state: &Path) -> PathBuf {
    state.with_extension("lock")
}

fn open_lock_file(lock_path: &Path) -> Result<File, StateError> {
    Ok(trust::open_lock(lock_path)?)
}

/// Tries to take the lock of a state file; `None`: a running `up` holds it.
fn try_lock(lock_path: &Path) -> Result<Option<Lock>, StateError> {
    let file = open_lock_file(lock_path)?;
    match Lock::attempt(file, lock_path) {
        Ok(Attempt::Taken(lock)) => Ok(Some(lock)),
        Ok(Attempt::Busy(_)) => Ok(None),
        Err(LockError::Io { path, cause }) => Err(io_err(&path, cause)),
        // `attempt` reports a held lock as `Busy`, never as this.
        Err(LockError::Held { path, .. }) => Err(io_err(&path, io::ErrorKind::WouldBlock.into())),
    }
}

/// Opens the directory of a state file (the checked run directory), not following a link.
fn open_dir(state: &Path) -> Result<OwnedFd, StateError> {
    let dir = parent(state);
    nix::fcntl::open(
        dir,
        OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err(dir, e.into()))
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Reads a state file (after the trust checks: a regular file, owned by root, opened without
/// following links).
pub fn read(path: &Path) -> Result<TunnelState, StateError> {
    let mut file = trust::open_trusted(path)?.ok_or_else(|| {
        io_err(
            path,
            io::Error::new(io::ErrorKind::NotFound, "no such file"),
        )
    })?;
    let mut text = String::new();
    file.read_to_string(&mut text)
        .map_err(|e| io_err(path, e))?;
    parse(path, &text)
}

fn parse(path: &Path, text: &str) -> Result<TunnelState, StateError> {
    let corrupt = |reason: String| StateError::Corrupt {
        path: path.display().to_string(),
        reason,
    };
    let version: serde_json::Value =
        serde_json::from_str(text).map_err(|e| corrupt(e.to_string()))?;
    match version.get("version").and_then(|v| v.as_u64()) {
        Some(v) if v == u64::from(STATE_VERSION) => {}
        Some(v) => {
            return Err(corrupt(format!(
                "format version {v}, this hostkit reads version {STATE_VERSION}"
            )));
        }
        None => return Err(corrupt("no format version".into())),
    }
    serde_json::from_value(version).map_err(|e| corrupt(e.to_string()))
}

/// One state file of a namespace: its tunnel, or why it cannot be read as one.
#[derive(Debug)]
pub struct Record {
    /// The file.
    pub path: PathBuf,
    /// The recorded tunnel, or why the file is damaged (the reason).
    pub state: Result<TunnelState, String>,
    /// Whether a running `up` holds its lock.
    pub running: bool,
}

impl Record {
    /// The device pair: recorded, or — for a damaged file — whatever can still be read (the
    /// JSON's `spec`, else an unambiguous file name).
    pub fn devs(&self) -> Option<[String; 2]> {
        match &self.state {
            Ok(s) => Some([s.spec.ends[0].dev.clone(), s.spec.ends[1].dev.clone()]),
            Err(_) => salvage(&self.path).map(|(devs, _)| devs),
        }
    }

    /// The routing table: recorded, or salvaged from a damaged file.
    pub fn table(&self) -> Option<u32> {
        match &self.state {
            Ok(s) => Some(s.spec.table),
            Err(_) => salvage(&self.path).and_then(|(_, t)| t),
        }
    }

    /// A short description: `tun0 <-> tun1 (pid 42, running)`.
    pub fn describe(&self) -> String {
        let devs = self
            .devs()
            .map(|d| format!("{} <-> {}", d[0], d[1]))
            .unwrap_or_else(|| "an unknown pair".into());
        match &self.state {
            Ok(s) => format!(
                "{devs} (pid {}, {}; {})",
                s.pid,
                if self.running {
                    "running"
                } else {
                    "not running"
                },
                self.path.display()
            ),
            Err(_) => format!("{devs} (damaged record {})", self.path.display()),
        }
    }
}

/// What a damaged state file still tells: its devices and table, from the JSON's `spec` if it
/// parses that far, else from the file name when that is unambiguous.
fn salvage(path: &Path) -> Option<([String; 2], Option<u32>)> {
    let from_json = trust::open_trusted(path).ok().flatten().and_then(|mut f| {
        let mut text = String::new();
        f.read_to_string(&mut text).ok()?;
        let v: serde_json::Value = serde_json::from_str(&text).ok()?;
        let dev = |i: usize| v["spec"]["ends"][i]["dev"].as_str().map(str::to_string);
        // A reserved table (main, local, default, unspec) is never the tunnel's: not salvaged.
        let table = v["spec"]["table"]
            .as_u64()
            .and_then(|t| u32::try_from(t).ok())
            .filter(|t| !matches!(t, 0 | 253..=255));
        Some(([dev(0)?, dev(1)?], table))
    });
    let valid = |d: &str| hostkit_tun::validate_name(d).is_ok();
    if let Some((devs, table)) = from_json
        && devs.iter().all(|d| valid(d))
    {
        return Some((devs, table));
    }
    let name = path.file_name()?.to_str()?.strip_suffix(".json")?;
    // tun-INODE-DEV0-DEV1
    let (_inode, pair) = name.strip_prefix("tun-")?.split_once('-')?;
    let pair: Vec<&str> = pair.split('-').collect();
    match pair.as_slice() {
        [a, b] if valid(a) && valid(b) => Some(([a.to_string(), b.to_string()], None)),
        _ => None,
    }
}

/// Every state file of a namespace, each read on its own: a damaged one is reported in its
/// [`Record`], not fatal. A file that fails the trust checks is still an error.
pub fn records(run_dir: &RunDir, netns_inode: u64) -> Result<Vec<Record>, StateError> {
    let prefix = format!("tun-{netns_inode}-");
    let entries = match std::fs::read_dir(run_dir.path()) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io_err(run_dir.path(), e)),
    };
    let mut out = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && name.ends_with(".json") {
            let path = entry.path();
            let state = match read(&path) {
                Ok(s) => Ok(s),
                Err(StateError::Corrupt { reason, .. }) => Err(reason),
                Err(e) => return Err(e),
            };
            let running = is_locked(&path);
            out.push(Record {
                path,
                state,
                running,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Moves a damaged state file aside as `NAME.corrupt` (or `NAME.corrupt.N`), never deleting
/// it; returns the new path.
pub fn move_aside(path: &Path) -> io::Result<PathBuf> {
    let base = path.as_os_str().to_string_lossy().into_owned();
    for n in 0..100u32 {
        let target = if n == 0 {
            PathBuf::from(format!("{base}.corrupt"))
        } else {
            PathBuf::from(format!("{base}.corrupt.{n}"))
        };
        if std::fs::symlink_metadata(&target).is_err() {
            std::fs::rename(path, &target)?;
            let _ = std::fs::remove_file(lock_path(path));
            return Ok(target);
        }
    }
    Err(io::Error::other("too many .corrupt files"))
}

/// Whether a running `up` holds the state file's lock.
pub fn is_locked(state: &Path) -> bool {
    let Ok(Some(file)) = trust::open_trusted(&lock_path(state)) else {
        return false;
    };
    lock::is_held(file).unwrap_or(false)
}

/// The pids holding the `flock` of a state file's lock, from `/proc/locks` (the kernel's own
/// account, not the state file's claim): the relay `down` may signal.
pub fn lock_holders(state: &Path) -> io::Result<Vec<u32>> {
    lock::holders(&lock_path(state))
}

impl StateFile {
    /// Takes the state file of a device pair: refuses while another `up` runs, or while a dead
    /// one's state is still there.
    pub fn acquire(
        run_dir: &RunDir,
        netns_inode: u64,
        devs: [&str; 2],
    ) -> Result<StateFile, StateError> {
        let path = state_path(run_dir, netns_inode, devs);
        let lock_path = lock_path(&path);
        let pair = format!("{} and {}", devs[0], devs[1]);
        let Some(lock) = try_lock(&lock_path)? else {
            let pid = read(&path)
                .map(|s| format!(" (pid {})", s.pid))
                .unwrap_or_default();
            return Err(StateError::Running { devs: pair, pid });
        };
        // A dead run's record is evidence: never replaced silently, whatever its shape.
        match read(&path) {
            Ok(old) if !old.undo.is_empty() => {
                return Err(StateError::Stale {
                    devs: pair,
                    pid: old.pid,
                });
            }
            Ok(_) => {}
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        Ok(StateFile {
            dir: open_dir(&path)?,
            path,
            lock,
        })
    }

    /// Takes the lock of an existing state file (for `down`), or `None` if a relay holds it.
    pub fn take_existing(path: &Path) -> Result<Option<StateFile>, StateError> {
        let Some(lock) = try_lock(&lock_path(path))? else {
            return Ok(None);
        };
        Ok(Some(StateFile {
            dir: open_dir(path)?,
            path: path.to_path_buf(),
            lock,
        }))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces the file atomically, relative to the run directory opened when the file was
    /// taken ([`hostkit_core::atomic::replace`]: a new temporary file `O_EXCL | O_NOFOLLOW`
    /// with an unpredictable name, mode 0600, fsync, rename over the file, fsync the
    /// directory).
    pub fn write(&self, state: &TunnelState) -> io::Result<()> {
        let bytes = serde_json::to_string_pretty(state)?;
        let name = self
            .path
            .file_name()
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let dir = Dir::new(self.dir.as_fd(), parent(&self.path));
        atomic::replace(dir, name, bytes.as_bytes(), 0o600, Owner::Creator).map_err(|e| e.cause)
    }

    /// Removes the state and lock files (the tunnel is gone).
    pub fn remove(self) -> io::Result<()> {
        match std::fs::remove_file(&self.path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let _ = std::fs::remove_file(self.lock.path());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_record_still_names_its_devices_when_it_can() {
        let t = tempfile::tempdir().unwrap();
        let rec = |name: &str, text: &str| {
            let path = t.path().join(name);
            std::fs::write(&path, text).unwrap();
            Record {
                state: Err("damaged".into()),
                path,
                running: false,
            }
        };
        let r = rec("tun-7-tun0-tun1.json", "{ half a docu");
        assert_eq!(r.devs(), Some(["tun0".to_string(), "tun1".to_string()]));
        assert_eq!(r.table(), None);
        let r = rec(
            "tun-7-a-b-c.json",
            r#"{"version": 9, "spec": {"ends": [{"dev": "a-b"}, {"dev": "c"}], "table": 42}}"#,
        );
        assert_eq!(r.devs(), Some(["a-b".to_string(), "c".to_string()]));
        assert_eq!(r.table(), Some(42));
        // Ambiguous name, unreadable content: nothing is guessed.
        assert_eq!(rec("tun-7-a-b-c-d.json", "garbage").devs(), None);
    }
}
