//! The state directory: a lock, and per recipe a journal of applied changes with backups of
//! the files as they were before the first apply.
//!
//! Layout (`/var/lib/hostkit` in system scope, `$XDG_STATE_HOME/hostkit` in user scope, both
//! under `--root`):
//!
//! ```text
//! lock                    flock(2) held by apply and revert
//! created-dirs.json       every directory an apply created (parents of targets, ~/.local/state,
//!                         …): each revert removes those that are empty, the last one the rest
//! RECIPE/journal.json     what was changed, with SHA-256 before and after
//! RECIPE/backups/N        the original bytes of each changed file
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::Cmd;
use crate::pkg::Manager;
use crate::recipe::Scope;

/// The journal's format version.
const VERSION: u32 = 1;

/// A file hostkit wrote or removed (or a generated one): enough to put it back.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FileEntry {
    /// The step.
    pub step: String,
    /// The resolved host path.
    pub path: PathBuf,
    /// The path relative to the root.
    pub display: String,
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
    /// Directories apply created for it, outermost first.
    pub created_dirs: Vec<PathBuf>,
}

/// One applied change.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Entry {
    /// A file.
    File(FileEntry),
    /// A file rebuilt by a command (the dconf database).
    Generated {
        /// The file.
        file: FileEntry,
        /// The command that rebuilt it.
        cmd: Cmd,
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
    /// A command that makes a service re-read files (`udevadm control --reload`): revert runs
    /// it again, on the live system, after the files are restored.
    Reload {
        /// The step.
        step: String,
        /// The command.
        cmd: Cmd,
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
            Entry::File(f) | Entry::Generated { file: f, .. } => &f.step,
            Entry::Gsettings { step, .. }
            | Entry::Packages { step, .. }
            | Entry::Reload { step, .. } => step,
        }
    }

    /// The file entry, for file-like changes.
    pub fn file(&self) -> Option<&FileEntry> {
        match self {
            Entry::File(f) | Entry::Generated { file: f, .. } => Some(f),
            _ => None,
        }
    }

    /// The file entry, mutably.
    pub fn file_mut(&mut self) -> Option<&mut FileEntry> {
        match self {
            Entry::File(f) | Entry::Generated { file: f, .. } => Some(f),
            _ => None,
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
    /// The changes, in the order they were made.
    pub entries: Vec<Entry>,
}

impl Journal {
    /// The entry for a file path.
    pub fn file_mut(&mut self, path: &Path) -> Option<&mut FileEntry> {
        self.entries
            .iter_mut()
            .filter_map(Entry::file_mut)
            .find(|f| f.path == path)
    }
}

/// The locked state directory of one recipe.
pub struct State {
    root_dir: PathBuf,
    dir: PathBuf,
    owner: (u32, u32),
    _lock: Flock<File>,
}

/// The file recording the directories created above the recipes' own.
const CREATED_DIRS: &str = "created-dirs.json";

/// Where a recipe's journal lives.
pub fn journal_path(ctx: &Context) -> PathBuf {
    ctx.state_dir.join(&ctx.recipe).join("journal.json")
}

/// Reads a journal (no lock); `None` when the recipe was never applied.
pub fn load(ctx: &Context) -> Result<Option<Journal>> {
    let path = journal_path(ctx);
    let Some(existing) = fsutil::read(&path)? else {
        return Ok(None);
    };
    let journal: Journal = serde_json::from_slice(&existing.bytes).map_err(|e| Error::Journal {
        path: path.clone(),
        reason: e.to_string(),
    })?;
    if journal.version != VERSION {
        return Err(Error::Journal {
            path,
            reason: format!(
                "version {} (this hostkit reads version {VERSION})",
                journal.version
            ),
        });
    }
    Ok(Some(journal))
}

impl State {
    /// Creates the state directory if needed and takes the lock (failing if it is held).
    pub fn open(ctx: &Context) -> Result<State> {
        let dir = ctx.state_dir.join(&ctx.recipe);
        let created = fsutil::create_parents(&dir.join("backups").join("x"), 0o700, ctx.owner)?;
        let lock_path = ctx.state_dir.join("lock");
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .custom_flags_nofollow()
            .open(&lock_path)
            .map_err(|e| Error::io(&lock_path, e))?;
        fsutil::set_owner(&file, &lock_path, ctx.owner)?;
        let lock =
            Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(
                |(_, errno)| match errno {
                    nix::errno::Errno::EWOULDBLOCK => Error::Locked {
                        path: lock_path.clone(),
                    },
                    other => Error::io(&lock_path, other.into()),
                },
            )?;
        let state = State {
            root_dir: ctx.state_dir.clone(),
            dir,
            owner: ctx.owner,
            _lock: lock,
        };
        state.record_dirs(&created)?;
        Ok(state)
    }

    /// A new, empty journal.
    pub fn new_journal(&self, ctx: &Context) -> Journal {
        Journal {
            version: VERSION,
            recipe: ctx.recipe.clone(),
            scope: ctx.scope,
            entries: Vec::new(),
        }
    }

    /// Writes the journal atomically.
    pub fn save(&self, journal: &Journal) -> Result<()> {
        let path = self.dir.join("journal.json");
        let mut bytes = serde_json::to_vec_pretty(journal).map_err(|e| Error::Journal {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        bytes.push(b'\n');
        fsutil::write_atomic(&path, &bytes, 0o600, self.owner)
    }

    /// Stores a backup; returns its name.
    pub fn backup(&self, journal: &Journal, bytes: &[u8]) -> Result<String> {
        let name = format!("{}", journal.entries.len());
        fsutil::write_atomic(
            &self.dir.join("backups").join(&name),
            bytes,
            0o600,
            self.owner,
        )?;
        Ok(name)
    }

    /// Reads a backup.
    pub fn read_backup(&self, name: &str) -> Result<Vec<u8>> {
        let path = self.dir.join("backups").join(name);
        fsutil::read(&path)?
            .map(|e| e.bytes)
            .ok_or_else(|| Error::Journal {
                path,
                reason: "the backup is missing".into(),
            })
    }

    fn created_dirs(&self) -> Result<Vec<PathBuf>> {
        let path = self.root_dir.join(CREATED_DIRS);
        match fsutil::read(&path)? {
            None => Ok(Vec::new()),
            Some(e) => serde_json::from_slice(&e.bytes).map_err(|e| Error::Journal {
                path,
                reason: e.to_string(),
            }),
        }
    }

    fn save_created_dirs(&self, dirs: &[PathBuf]) -> Result<()> {
        let path = self.root_dir.join(CREATED_DIRS);
        if dirs.is_empty() {
            return fsutil::remove(&path);
        }
        let bytes = serde_json::to_vec_pretty(dirs).map_err(|e| Error::Journal {
            path: path.clone(),
            reason: e.to_string(),
        })?;
        fsutil::write_atomic(&path, &bytes, 0o600, self.owner)
    }

    /// Records directories an apply created, so that a revert can remove them once empty
    /// (whichever recipe's revert comes last).
    pub fn record_dirs(&self, dirs: &[PathBuf]) -> Result<()> {
        if dirs.is_empty() {
            return Ok(());
        }
        let mut all = self.created_dirs()?;
        for d in dirs {
            if !all.contains(d) {
                all.push(d.clone());
            }
        }
        self.save_created_dirs(&all)
    }

    /// After a revert: removes the journal, the backups and the recipe's directory, then every
    /// recorded directory that is now empty; when no other recipe is applied, also the lock.
    pub fn finish(self) -> Result<()> {
        let backups = self.dir.join("backups");
        if let Ok(entries) = std::fs::read_dir(&backups) {
            for entry in entries.flatten() {
                fsutil::remove(&entry.path())?;
            }
        }
        fsutil::remove(&self.dir.join("journal.json"))?;
        fsutil::remove_empty_dirs(&[self.dir.clone(), backups]);
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
        // Outermost first, so that removal goes innermost first.
        created.sort_by_key(|d| d.components().count());
        fsutil::remove_empty_dirs(&created);
        if others {
            created.retain(|d| d.exists());
            self.save_created_dirs(&created)?;
        }
        Ok(())
    }
}

trait NoFollow {
    fn custom_flags_nofollow(&mut self) -> &mut Self;
}

impl NoFollow for std::fs::OpenOptions {
    fn custom_flags_nofollow(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
            .mode(0o600)
    }
}
