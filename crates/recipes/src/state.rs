//! The state directory: a lock, and per recipe a journal of applied changes with backups of
//! the files as they were before the first apply.
//!
//! Layout (`/var/lib/hostkit` in system scope, `$XDG_STATE_HOME/hostkit` in user scope, both
//! under `--root`):
//!
//! ```text
//! lock                    flock(2) held by apply and revert
//! created-dirs.json       every directory an apply created (parents of targets, ~/.local/state,
//!                         …), relative to the root: each revert removes those that are empty,
//!                         the last one the rest
//! RECIPE/journal.json     what was changed, with SHA-256 before and after
//! RECIPE/backups/N        the original bytes of each changed file
//! ```
//!
//! # Trust
//!
//! The state directory tells `revert` what to write where, so it is only believed when nobody
//! but the user running hostkit could have written it: the directory and everything in it must
//! be owned by that user (root, when hostkit runs as root) and not writable by group or others;
//! anything else is refused with [`Error::UntrustedState`], naming the file. hostkit creates the
//! directory itself (mode 0700, owned by whoever runs it), also in a user's home when root
//! applies a user-scope recipe there: the state stays with the home it describes (an image
//! copied or moved keeps it), while a file the user wrote there is refused rather than obeyed.
//!
//! What the journal holds is data, never an instruction: paths are relative to the scope's base
//! (the root in system scope, the home in user scope), must not be absolute or contain `..`,
//! and are resolved again under the root given *now*, by the same rules as a recipe's own
//! paths; backups are named by number only; no command is stored (revert rebuilds the
//! `dconf` and reload commands from the recipe); a restored file gets back the mode and owner
//! it had at apply time, which only this trusted state can say.

use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use hostkit_core::lock::{self, Attempt, Lock, LockError};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::pkg::Manager;
use crate::recipe::Scope;

/// The journal's format version (1: absolute paths and stored commands, read and converted).
const VERSION: u32 = 2;

/// A file hostkit wrote or removed (or a generated one): enough to put it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// The step.
    pub step: String,
    /// The path, relative to the scope's base (the root, or the home in user scope).
    pub path: PathBuf,
    /// SHA-256 before the first apply (`None`: it did not exist).
    pub before_sha: Option<String>,
    /// SHA-256 after the last apply (`None`: removed, or not yet known).
    pub after_sha: Option<String>,
    /// The backup's file name under `backups/` (`None`: it did not exist).
    pub backup: Option<String>,
    /// The original mode.
    pub mode: u32,
    /// The original owner.
    pub owner: (u32, u32),
    /// Directories apply created for it, outermost first, relative to the scope's base.
    pub created_dirs: Vec<PathBuf>,
    /// Version 1 only: the path relative to the root.
    #[serde(default, rename = "display", skip_serializing)]
    v1_display: Option<String>,
}

/// One applied change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A file.
    File(FileEntry),
    /// A file rebuilt by a command (the dconf database); the command comes from the recipe.
    Generated {
        /// The file.
        file: FileEntry,
    },
    /// A GSettings key set through `gsettings`.
    Gsettings {
        /// The step.
        step: String,
        /// The schema.
        schema: String,
        /// The key.
        key: String,
        /// The value apply set.
        value: String,
        /// The value before the first apply.
        previous: String,
        /// Whether that was the default (revert resets the key).
        previous_is_default: bool,
    },
    /// A step whose reload command (`udevadm control --reload`, from the recipe) revert runs
    /// again, on the live system, after the files are restored.
    Reload {
        /// The step.
        step: String,
    },
    /// Packages installed by the package manager.
    Packages {
        /// The step.
        step: String,
        /// The package manager.
        manager: Manager,
        /// The packages.
        packages: Vec<String>,
    },
}

impl Entry {
    /// The step that made the change.
    pub fn step(&self) -> &str {
        match self {
            Entry::File(f) | Entry::Generated { file: f } => &f.step,
            Entry::Gsettings { step, .. }
            | Entry::Packages { step, .. }
            | Entry::Reload { step } => step,
        }
    }

    /// The file entry, for file-like changes.
    pub fn file(&self) -> Option<&FileEntry> {
        match self {
            Entry::File(f) | Entry::Generated { file: f } => Some(f),
            _ => None,
        }
    }

    /// The file entry, mutably.
    pub fn file_mut(&mut self) -> Option<&mut FileEntry> {
        match self {
            Entry::File(f) | Entry::Generated { file: f } => Some(f),
            _ => None,
        }
    }
}

impl FileEntry {
    /// A new entry for a file at `path` (relative to the scope's base).
    pub fn new(step: &str, path: PathBuf, mode: u32, owner: (u32, u32)) -> FileEntry {
        FileEntry {
            step: step.to_string(),
            path,
            before_sha: None,
            after_sha: None,
            backup: None,
            mode,
            owner,
            created_dirs: Vec::new(),
            v1_display: None,
        }
    }
}

/// The journal of a recipe's applied changes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Journal {
    /// Format version.
    pub version: u32,
    /// The recipe.
    pub recipe: String,
    /// The scope it was applied in.
    pub scope: Scope,
    /// In user scope, the home it was applied to (as given by `HOME`, inside the root).
    #[serde(default)]
    pub home: Option<PathBuf>,
    /// The changes, in the order they were made.
    pub entries: Vec<Entry>,
}

impl Journal {
    /// The entry for a file path (relative to the scope's base).
    pub fn file_mut(&mut self, path: &Path) -> Option<&mut FileEntry> {
        self.entries
            .iter_mut()
            .filter_map(Entry::file_mut)
            .find(|f| f.path == path)
    }
}

/// A path read back from the journal: relative, with only plain components.
pub fn checked_relative(journal: &Path, rel: &Path) -> Result<()> {
    let plain =
        !rel.as_os_str().is_empty() && rel.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(())
    } else {
        Err(Error::Journal {
            path: journal.to_path_buf(),
            reason: format!(
                "entry path `{}` is absolute, empty or contains `..`; refusing to act on it",
                rel.display()
            ),
        })
    }
}

/// A backup name read back from the journal: digits only.
fn checked_backup(journal: &Path, name: &str) -> Result<()> {
    if !name.is_empty() && name.len() < 12 && name.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Error::Journal {
            path: journal.to_path_buf(),
            reason: format!("backup name `{name}` is not a number; refusing to read it"),
        })
    }
}

/// Checks that a state file or directory could only have been written by `runner`: owned by
/// it, not writable by group or others, of the expected type.
fn check_trusted(path: &Path, uid: u32, mode: u32, runner: u32) -> Result<()> {
    let who = |u: u32| {
        if u == 0 {
            "root".to_string()
        } else {
            format!("uid {u}")
        }
    };
    let reason = if uid != runner {
        Some(format!(
            "owned by {}, but hostkit runs as {}: it was not written by this hostkit (another user's, or planted); refusing to act on it. Revert as {} or remove it",
            who(uid),
            who(runner),
            who(uid)
        ))
    } else if mode & 0o022 != 0 {
        Some(format!(
            "mode {:o} lets group or others write it; refusing to act on state someone else could have changed (chmod go-w it if you trust its contents)",
            mode & 0o7777
        ))
    } else {
        None
    };
    match reason {
        Some(reason) => Err(Error::UntrustedState {
            path: path.to_path_buf(),
            reason,
        }),
        None => Ok(()),
    }
}

/// Checks a state directory that exists; `Ok(false)` when it does not.
fn check_dir(path: &Path, runner: u32) -> Result<bool> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            check_trusted(path, m.uid(), m.mode(), runner)?;
            Ok(true)
        }
        Ok(_) => Err(Error::UntrustedState {
            path: path.to_path_buf(),
            reason: "not a directory (a symbolic link or a file where hostkit keeps its state); refusing to use it".into(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// Reads a state file, checking it is trusted; `None` when it does not exist.
pub(crate) fn read_trusted(path: &Path, runner: u32) -> Result<Option<Vec<u8>>> {
    match fsutil::read(path)? {
        None => Ok(None),
        Some(e) => {
            check_trusted(path, e.uid, e.mode, runner)?;
            Ok(Some(e.bytes))
        }
    }
}

/// The locked state directory of one recipe.
pub struct State {
    root: PathBuf,
    root_dir: PathBuf,
    dir: PathBuf,
    runner: (u32, u32),
    /// Who may own a directory apply created (and revert may remove).
    dir_owners: Vec<u32>,
    _lock: Lock,
}

/// The file recording the directories created above the recipes' own.
const CREATED_DIRS: &str = "created-dirs.json";
/// `created-dirs-PID.json`: directories a process created before it had the lock; merged into
/// [`CREATED_DIRS`] by the next one that has it.
const PENDING_DIRS: &str = "created-dirs-";

/// Who may own a directory apply created (and revert may remove): the owner of new files and
/// whoever runs hostkit.
pub fn dir_owners(ctx: &Context) -> Vec<u32> {
    let mut owners = vec![ctx.owner.0, ctx.runner.0];
    owners.dedup();
    owners
}

/// Where a recipe's journal lives.
pub fn journal_path(ctx: &Context) -> PathBuf {
    ctx.state_dir.join(&ctx.recipe).join("journal.json")
}

/// Reads a backup without the lock, for a preview that changes nothing: the same trust checks
/// as [`State::read_backup`].
pub fn read_backup_unlocked(ctx: &Context, name: &str) -> Result<Vec<u8>> {
    read_backup_at(&ctx.state_dir.join(&ctx.recipe), name, ctx.runner.0)
}

fn read_backup_at(dir: &Path, name: &str, runner: u32) -> Result<Vec<u8>> {
    let path = dir.join("backups").join(name);
    read_trusted(&path, runner)?.ok_or_else(|| Error::Journal {
        path,
        reason: "the backup is missing".into(),
    })
}

/// Reads a journal (no lock); `None` when the recipe was never applied. The state directory
/// and the journal must be trusted (see the module documentation), the journal must be for
/// this recipe, scope and home, and every path in it plain and relative.
pub fn load(ctx: &Context) -> Result<Option<Journal>> {
    let path = journal_path(ctx);
    let runner = ctx.runner.0;
    if !check_dir(&ctx.state_dir, runner)? || !check_dir(&ctx.state_dir.join(&ctx.recipe), runner)?
    {
        return Ok(None);
    }
    let Some(bytes) = read_trusted(&path, runner)? else {
        return Ok(None);
    };
    let bad = |reason: String| Error::Journal {
        path: path.clone(),
        reason,
    };
    let mut journal: Journal = serde_json::from_slice(&bytes).map_err(|e| bad(e.to_string()))?;
    match journal.version {
        VERSION => {}
        1 => convert_v1(ctx, &mut journal).map_err(bad)?,
        v => {
            return Err(bad(format!(
                "version {v} (this hostkit reads versions 1 and {VERSION})"
            )));
        }
    }
    if journal.recipe != ctx.recipe || journal.scope != ctx.scope {
        return Err(bad(format!(
            "written for recipe {} in {} scope, not {} in {} scope",
            journal.recipe,
            journal.scope.as_str(),
            ctx.recipe,
            ctx.scope.as_str()
        )));
    }
    let home = ctx.home.as_ref().map(|h| h.logical.clone());
    if journal.home != home {
        let show = |h: &Option<PathBuf>| {
            h.as_deref()
                .map_or("(none)".into(), |h| h.display().to_string())
        };
        return Err(bad(format!(
            "written for the home {}, but HOME is now {}; run with the HOME it was applied to",
            show(&journal.home),
            show(&home)
        )));
    }
    for f in journal.entries.iter().filter_map(Entry::file) {
        checked_relative(&path, &f.path)?;
        for d in &f.created_dirs {
            checked_relative(&path, d)?;
            if !f.path.starts_with(d) {
                return Err(bad(format!(
                    "created directory `{}` is not a parent of `{}`",
                    d.display(),
                    f.path.display()
                )));
            }
        }
        if let Some(b) = &f.backup {
            checked_backup(&path, b)?;
        }
    }
    Ok(Some(journal))
}

/// Converts a version-1 journal (absolute host paths, commands stored) to version 2: paths
/// come from its root-relative `display`, commands are dropped (revert takes them from the
/// recipe).
fn convert_v1(ctx: &Context, journal: &mut Journal) -> std::result::Result<(), String> {
    let base = ctx
        .base()
        .strip_prefix("/")
        .unwrap_or(ctx.base())
        .to_path_buf();
    for f in journal.entries.iter_mut().filter_map(Entry::file_mut) {
        let display = f
            .v1_display
            .take()
            .ok_or("a version-1 entry without `display`")?;
        let old_root = f
            .path
            .to_str()
            .and_then(|p| p.strip_suffix(display.as_str()))
            .map(PathBuf::from)
            .ok_or("a version-1 entry whose path does not end with its display path")?;
        let rel = |root_rel: &Path| {
            root_rel
                .strip_prefix(&base)
                .map(Path::to_path_buf)
                .map_err(|_| format!("{} is outside {}", root_rel.display(), base.display()))
        };
        f.path = rel(Path::new(&display))?;
        f.created_dirs = f
            .created_dirs
            .iter()
            .map(|d| rel(d.strip_prefix(&old_root).unwrap_or(d)))
            .collect::<std::result::Result<_, _>>()?;
    }
    journal.home = ctx.home.as_ref().map(|h| h.logical.clone());
    journal.version = VERSION;
    Ok(())
}

impl State {
    /// Creates the state directory if needed (owned by whoever runs hostkit, mode 0700) and
    /// takes the lock (failing if it is held); refuses a state directory hostkit did not
    /// create (see the module documentation). With `wait`, waits for another apply or revert
    /// holding the lock instead of failing.
    pub fn open(ctx: &Context, wait: bool) -> Result<State> {
        let runner = ctx.runner;
        let root_dir = ctx.state_dir.clone();
        let dir = root_dir.join(&ctx.recipe);
        let mut created = Vec::new();
        if !check_dir(&root_dir, runner.0)? {
            // The parents (~/.local/state) are the user's; the state directory is hostkit's.
            if let Some(parent) = root_dir.parent() {
                created = fsutil::create_dirs(parent, ctx.dir_mode, ctx.owner)?;
            }
            created.extend(fsutil::create_dirs(&root_dir, 0o700, runner)?);
            check_dir(&root_dir, runner.0)?;
        }
        for d in [dir.clone(), dir.join("backups")] {
            if !check_dir(&d, runner.0)? {
                fsutil::create_dirs(&d, 0o700, runner)?;
                check_dir(&d, runner.0)?;
            }
        }
        // Recorded before the lock is taken: two first applies at once each create some of
        // the directories, and the one that then finds the lock held must not lose its part.
        let rel = |d: &PathBuf| d.strip_prefix(&ctx.root).ok().map(Path::to_path_buf);
        let created: Vec<PathBuf> = created.iter().filter_map(rel).collect();
        if !created.is_empty() {
            save_dirs(
                &root_dir.join(format!("{PENDING_DIRS}{}.json", std::process::id())),
                &created,
                runner,
            )?;
        }
        let lock = take_lock(&root_dir.join("lock"), runner, wait)?;
        let dir_owners = dir_owners(ctx);
        let state = State {
            root: ctx.root.clone(),
            root_dir,
            dir,
            runner,
            dir_owners,
            _lock: lock,
        };
        state.merge_pending_dirs()?;
        Ok(state)
    }

    /// Moves the directories recorded by processes that had no lock into `created-dirs.json`.
    fn merge_pending_dirs(&self) -> Result<()> {
        let Ok(entries) = std::fs::read_dir(&self.root_dir) else {
            return Ok(());
        };
        let mut pending: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(PENDING_DIRS) && n.ends_with(".json"))
            })
            .collect();
        pending.sort();
        let mut all = self.created_dirs()?;
        for path in &pending {
            for d in read_dirs(path, self.runner.0)? {
                if !all.contains(&d) {
                    all.push(d);
                }
            }
        }
        self.save_created_dirs(&all)?;
        for path in &pending {
            fsutil::remove(path)?;
        }
        Ok(())
    }

    /// A new, empty journal.
    pub fn new_journal(&self, ctx: &Context) -> Journal {
        Journal {
            version: VERSION,
            recipe: ctx.recipe.clone(),
            scope: ctx.scope,
            home: ctx.home.as_ref().map(|h| h.logical.clone()),
            entries: Vec::new(),
        }
    }

    /// Who may own a directory apply created (and that revert may remove).
    pub fn dir_owners(&self) -> &[u32] {
        &self.dir_owners
    }

    /// Writes the journal atomically.
    pub fn save(&self, journal: &Journal) -> Result<()> {
        let path = self.dir.join("journal.json");
        let mut bytes = serde_json::to_vec_pretty(journal).map_err(|e| Error::Journal {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(&path, &bytes, 0o600, self.runner)
    }

    /// Stores a backup; returns its name.
    pub fn backup(&self, journal: &Journal, bytes: &[u8]) -> Result<String> {
        let name = format!("{}", journal.entries.len());
        fsutil::write_atomic(
            &self.dir.join("backups").join(&name),
            bytes,
            0o600,
            self.runner,
        )?;
        Ok(name)
    }

    /// Reads a backup (its name was checked when the journal was loaded).
    pub fn read_backup(&self, name: &str) -> Result<Vec<u8>> {
        read_backup_at(&self.dir, name, self.runner.0)
    }

    fn created_dirs(&self) -> Result<Vec<PathBuf>> {
        let path = self.root_dir.join(CREATED_DIRS);
        let mut dirs = read_dirs(&path, self.runner.0)?;
        // Version 1 stored host paths: keep those inside this root, relative to it.
        dirs.retain_mut(|d| {
            if let Ok(rel) = d.strip_prefix(&self.root) {
                *d = rel.to_path_buf();
            }
            d.is_relative()
        });
        for d in &dirs {
            checked_relative(&path, d)?;
        }
        Ok(dirs)
    }

    fn save_created_dirs(&self, dirs: &[PathBuf]) -> Result<()> {
        save_dirs(&self.root_dir.join(CREATED_DIRS), dirs, self.runner)
    }

    /// Records directories (host paths under the root) an apply created, so that a revert can
    /// remove them once empty (whichever recipe's revert comes last).
    pub fn record_dirs(&self, dirs: &[PathBuf]) -> Result<()> {
        self.merge_pending_dirs()?;
        if dirs.is_empty() {
            return Ok(());
        }
        let mut all = self.created_dirs()?;
        for d in dirs {
            let Ok(rel) = d.strip_prefix(&self.root) else {
                continue;
            };
            if !all.iter().any(|a| a == rel) {
                all.push(rel.to_path_buf());
            }
        }
        self.save_created_dirs(&all)
    }

    /// After a revert: removes the journal, the backups and the recipe's directory, then every
    /// recorded directory that is now empty; when no other recipe is applied, also the lock.
    pub fn finish(self) -> Result<()> {
        self.merge_pending_dirs()?;
        let backups = self.dir.join("backups");
        if let Ok(entries) = std::fs::read_dir(&backups) {
            for entry in entries.flatten() {
                fsutil::remove(&entry.path())?;
            }
        }
        fsutil::remove(&self.dir.join("journal.json"))?;
        let mine = [self.runner.0];
        fsutil::remove_empty_dirs(&[self.dir.clone(), backups], &mine);
        let others = std::fs::read_dir(&self.root_dir)
            .map(|d| {
                d.flatten()
                    .any(|e| e.file_name() != "lock" && e.file_name() != CREATED_DIRS)
            })
            .unwrap_or(true);
        let mut created = self.created_dirs()?;
        if !others {
            fsutil::remove(&self.root_dir.join(CREATED_DIRS))?;
            fsutil::remove(&self.root_dir.join("lock"))?;
        }
        // Outermost first, so that removal goes innermost first. Each is resolved again under
        // this root, by the same rules as a recipe's paths.
        created.sort_by_key(|d| d.components().count());
        let host: Vec<PathBuf> = created
            .iter()
            .filter_map(|d| fsutil::resolve(&self.root, &Path::new("/").join(d)).ok())
            .collect();
        fsutil::remove_empty_dirs(&host, &self.dir_owners);
        if others {
            created.retain(|d| self.root.join(d).exists());
            self.save_created_dirs(&created)?;
        }
        Ok(())
    }
}

/// Reads a list of directories (relative to the root); empty when the file does not exist.
pub(crate) fn read_dirs(path: &Path, runner: u32) -> Result<Vec<PathBuf>> {
    let Some(bytes) = read_trusted(path, runner)? else {
        return Ok(Vec::new());
    };
    serde_json::from_slice(&bytes).map_err(|e| Error::Journal {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })
}

/// Writes a list of directories (removes the file when it is empty).
pub(crate) fn save_dirs(path: &Path, dirs: &[PathBuf], runner: (u32, u32)) -> Result<()> {
    if dirs.is_empty() {
        return fsutil::remove(path);
    }
    let bytes = serde_json::to_vec_pretty(dirs).map_err(|e| Error::Journal {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    fsutil::write_atomic(path, &bytes, 0o600, runner)
}

/// Takes the lock file's `flock` (the lock writes our pid into it, for the next one's message).
fn take_lock(path: &Path, runner: (u32, u32), wait: bool) -> Result<Lock> {
    let io = |e: LockError| match e {
        LockError::Held { path, holder } => Error::Locked {
            path,
            holder: holder.to_string(),
        },
        LockError::Io { path, cause } => Error::io(path, cause),
    };
    let file = lock::open(path).map_err(io)?;
    let meta = file.metadata().map_err(|e| Error::io(path, e))?;
    check_trusted(path, meta.uid(), meta.mode(), runner.0)?;
    match Lock::attempt(file, path).map_err(io)? {
        Attempt::Taken(lock) => Ok(lock),
        Attempt::Busy(busy) if wait => {
            log::info!(
                "{}: waiting for {} to finish",
                path.display(),
                busy.holder()
            );
            busy.wait().map_err(io)
        }
        Attempt::Busy(busy) => Err(io(busy.into_error())),
    }
}
