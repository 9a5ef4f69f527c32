//! The one walk over a journal that `revert` and `revert --dry-run` share: [`plan`] turns the
//! checked entries into the ordered list of what revert does, [`carry_out`] goes through that
//! list and builds the report. The real revert carries it out against the host ([`Act`]); the
//! preview against [`Look`], which changes nothing and only keeps track of which files and
//! directories the real run would have removed by then, so that a step that depends on them
//! (a database rebuilt only while its directory is there) is decided the same way.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use super::{Checked, CheckedFile, Restore, run, step_regenerate, step_reload};
use crate::context::Context;
use crate::error::Result;
use crate::fsutil;
use crate::host::{Cmd, Host};
use crate::recipe::Recipe;
use crate::report::{CommandReport, FileText, StepReport, StepStatus};
use crate::state::{self, Entry, FileEntry, State};
use crate::steps::StepKind;
use hostkit_core::diff;

/// One thing revert does, in the order it does it.
pub(super) enum Action<'j> {
    /// One journal entry (newest first): its step is listed, whatever it holds.
    Entry {
        /// The step.
        step: &'j str,
        /// Its kind (from the recipe; `file` when the recipe no longer has it).
        kind: StepKind,
        /// What to do for it.
        change: Change<'j>,
    },
    /// Once every file is put back: rebuild a generated database (and notify), unless its
    /// directory is gone by then.
    Rebuild {
        /// The command, from the recipe.
        cmd: Cmd,
        /// The database's directory.
        dir: PathBuf,
    },
    /// Once every file is put back: a step's reload command (run on the live system only).
    Reload {
        /// The command, from the recipe.
        cmd: Cmd,
    },
}

/// What revert does for one journal entry.
pub(super) enum Change<'j> {
    /// Put a file back (its backup, or remove it), then remove the empty directories apply
    /// created for it. A generated file (a binary database) shows no diff.
    File {
        /// The journal's entry.
        entry: &'j FileEntry,
        /// Where it is now.
        file: CheckedFile,
        /// A binary database.
        generated: bool,
    },
    /// A GSettings key set back (`gsettings set` or `reset`).
    Setting(Cmd),
    /// Nothing changes; the reason is shown.
    Note(String),
    /// Nothing to do (a file already as before, a reload done at the end).
    Nothing,
}

/// The ordered list of what revert does with a journal, every entry checked first: entries
/// newest first, then the rebuilds, then the reloads (each command once). Commands come from
/// the recipe, never from the journal.
pub(super) fn plan<'j>(
    recipe: &Recipe,
    ctx: &Context,
    checked: Vec<Checked<'j>>,
) -> Result<Vec<Action<'j>>> {
    let mut actions = Vec::new();
    let mut rebuilds = Vec::new();
    let mut reloads = Vec::new();
    for c in checked.into_iter().rev() {
        let step = c.entry.step();
        let kind = recipe
            .steps
            .iter()
            .find(|s| s.id == step)
            .map_or(StepKind::File, |s| s.spec.kind());
        let change = match (c.entry, c.file) {
            (Entry::File(f) | Entry::Generated { file: f }, Some(file)) => {
                let generated = matches!(c.entry, Entry::Generated { .. });
                if generated
                    && ctx.live
                    && let Some(regen) = step_regenerate(recipe, ctx, f)?
                    && !rebuilds
                        .iter()
                        .any(|a| matches!(a, Action::Rebuild { cmd, .. } if *cmd == regen.cmd))
                {
                    let dir = regen
                        .output
                        .parent()
                        .map(Path::to_path_buf)
                        .unwrap_or_default();
                    rebuilds.push(Action::Rebuild {
                        cmd: regen.cmd,
                        dir,
                    });
                }
                Change::File {
                    entry: f,
                    file,
                    generated,
                }
            }
            (
                Entry::Gsettings {
                    schema,
                    key,
                    previous,
                    previous_is_default,
                    ..
                },
                _,
            ) if c.restore => Change::Setting(if *previous_is_default {
                Cmd::new(["gsettings", "reset", schema, key])
            } else {
                Cmd::new(["gsettings", "set", schema, key, previous])
            }),
            (Entry::Reload { step }, _) => {
                if let Some(cmd) = step_reload(recipe, step)
                    && !reloads
                        .iter()
                        .any(|a| matches!(a, Action::Reload { cmd: c } if *c == cmd))
                {
                    reloads.push(Action::Reload { cmd });
                }
                Change::Nothing
            }
            (
                Entry::Packages {
                    manager, packages, ..
                },
                _,
            ) => Change::Note(format!(
                "packages installed by apply are left installed ({}: {})",
                manager.name(),
                packages.join(", ")
            )),
            (Entry::Gsettings { .. }, _) | (Entry::File(_) | Entry::Generated { .. }, None) => {
                Change::Nothing
            }
        };
        actions.push(Action::Entry { step, kind, change });
    }
    actions.extend(rebuilds);
    actions.extend(reloads);
    Ok(actions)
}

/// What carrying out a revert does to the host: [`Act`] does it, [`Look`] only keeps track.
pub(super) trait Effects {
    /// A backup's bytes.
    fn read_backup(&self, name: &str) -> Result<Vec<u8>>;
    /// Writes `bytes` to `path` (mode and owner from the journal), or removes it (`None`).
    fn put(
        &mut self,
        path: &Path,
        bytes: Option<&[u8]>,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<()>;
    /// Removes the directories that are empty and may be removed, innermost first.
    fn remove_empty_dirs(&mut self, dirs: &[PathBuf]);
    /// Whether `dir` is a directory (at this point of the revert).
    fn is_dir(&self, dir: &Path) -> bool;
    /// Runs a command.
    fn run(&mut self, cmd: &Cmd) -> Result<()>;
}

/// The real revert: changes the host.
pub(super) struct Act<'a> {
    pub(super) state: &'a State,
    pub(super) host: &'a dyn Host,
}

impl Effects for Act<'_> {
    fn read_backup(&self, name: &str) -> Result<Vec<u8>> {
        self.state.read_backup(name)
    }

    fn put(
        &mut self,
        path: &Path,
        bytes: Option<&[u8]>,
        mode: u32,
        owner: (u32, u32),
    ) -> Result<()> {
        match bytes {
            Some(bytes) => fsutil::write_atomic(path, bytes, mode, owner),
            None => fsutil::remove(path),
        }
    }

    fn remove_empty_dirs(&mut self, dirs: &[PathBuf]) {
        fsutil::remove_empty_dirs(dirs, self.state.dir_owners());
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir()
    }

    fn run(&mut self, cmd: &Cmd) -> Result<()> {
        run(self.host, cmd)
    }
}

/// The preview: changes nothing, reads backups without the lock (same trust checks), and keeps
/// track of the paths the real revert would have written or removed so far.
pub(super) struct Look<'a> {
    ctx: &'a Context,
    owners: Vec<u32>,
    removed: BTreeSet<PathBuf>,
    written: BTreeSet<PathBuf>,
}

impl<'a> Look<'a> {
    pub(super) fn new(ctx: &'a Context) -> Look<'a> {
        Look {
            ctx,
            owners: state::dir_owners(ctx),
            removed: BTreeSet::new(),
            written: BTreeSet::new(),
        }
    }

    /// Whether `path` (or a directory above it) would have been removed by now.
    fn gone(&self, path: &Path) -> bool {
        path.ancestors().any(|p| self.removed.contains(p))
    }

    /// Whether `dir` would be empty by now.
    fn empty(&self, dir: &Path) -> bool {
        let Ok(children) = std::fs::read_dir(dir) else {
            return false;
        };
        let mut children = children.flatten().map(|e| e.path());
        !children.any(|p| !self.gone(&p))
            && !self
                .written
                .iter()
                .any(|w| w.parent() == Some(dir) && !self.gone(w))
    }
}

impl Effects for Look<'_> {
    fn read_backup(&self, name: &str) -> Result<Vec<u8>> {
        state::read_backup_unlocked(self.ctx, name)
    }

    fn put(&mut self, path: &Path, bytes: Option<&[u8]>, _: u32, _: (u32, u32)) -> Result<()> {
        if bytes.is_some() {
            self.removed.remove(path);
            self.written.insert(path.to_path_buf());
        } else {
            self.written.remove(path);
            self.removed.insert(path.to_path_buf());
        }
        Ok(())
    }

    fn remove_empty_dirs(&mut self, dirs: &[PathBuf]) {
        // As `fsutil::remove_empty_dirs`: a directory (not a link to one), owned by one of the
        // owners, and empty.
        for dir in dirs.iter().rev() {
            let owned = std::fs::symlink_metadata(dir).is_ok_and(|m| {
                use std::os::unix::fs::MetadataExt;
                m.is_dir() && self.owners.contains(&m.uid())
            });
            if owned && !self.gone(dir) && self.empty(dir) {
                self.removed.insert(dir.clone());
            }
        }
    }

    fn is_dir(&self, dir: &Path) -> bool {
        dir.is_dir() && !self.gone(dir)
    }

    fn run(&mut self, _: &Cmd) -> Result<()> {
        Ok(())
    }
}

/// Goes through `plan` in order, through `fx`, and reports it: one step per journal step
/// (oldest first), with the commands run at the end listed under the newest one. `status` is
/// what each step says (`reverted`, or `would change` for the preview).
pub(super) fn carry_out(
    ctx: &Context,
    plan: Vec<Action<'_>>,
    fx: &mut dyn Effects,
    status: StepStatus,
) -> Result<Vec<StepReport>> {
    let mut steps: Vec<StepReport> = Vec::new();
    let mut after: Vec<CommandReport> = Vec::new();
    for action in plan {
        let (step, kind, change) = match action {
            Action::Entry { step, kind, change } => (step, kind, change),
            Action::Rebuild { cmd, dir } => {
                if fx.is_dir(&dir) {
                    fx.run(&cmd)?;
                    after.push(CommandReport {
                        command: cmd.display(),
                        run: true,
                    });
                }
                continue;
            }
            Action::Reload { cmd } => {
                if ctx.live {
                    fx.run(&cmd)?;
                }
                after.push(CommandReport {
                    command: cmd.display(),
                    run: ctx.live,
                });
                continue;
            }
        };
        let mut done = StepReport {
            id: step.to_string(),
            kind,
            summary: String::new(),
            why: String::new(),
            status,
            reason: None,
            files: Vec::new(),
            commands: Vec::new(),
            diff: String::new(),
            texts: Vec::new(),
        };
        match change {
            Change::File {
                entry,
                file,
                generated,
            } => {
                restore_file(ctx, fx, entry, &file, &mut done)?;
                if generated {
                    // A binary database: no diff.
                    done.diff.clear();
                    done.texts.clear();
                }
            }
            Change::Setting(cmd) => {
                if ctx.live {
                    fx.run(&cmd)?;
                }
                done.commands.push(CommandReport {
                    command: cmd.display(),
                    run: ctx.live,
                });
            }
            Change::Note(reason) => done.reason = Some(reason),
            Change::Nothing => {}
        }
        match steps.iter_mut().find(|s| s.id == done.id) {
            Some(s) => {
                s.files.extend(done.files);
                s.commands.extend(done.commands);
                s.diff.push_str(&done.diff);
                s.texts.extend(done.texts);
                s.reason = s.reason.take().or(done.reason);
            }
            None => steps.push(done),
        }
    }
    if let Some(step) = steps.first_mut() {
        step.commands.extend(after);
    }
    steps.reverse();
    Ok(steps)
}

/// Puts one file back (its backup, or removes it) and removes the directories apply created
/// for it, when they are empty.
fn restore_file(
    ctx: &Context,
    fx: &mut dyn Effects,
    f: &FileEntry,
    file: &CheckedFile,
    done: &mut StepReport,
) -> Result<()> {
    if let Restore::No = file.decision {
        return Ok(());
    }
    let original = match &f.backup {
        Some(name) => Some(fx.read_backup(name)?),
        None => None,
    };
    // Mode and owner are the file's own at apply time, from state only this user could
    // have written (checked when the journal was loaded).
    fx.put(&file.path, original.as_deref(), f.mode & 0o7777, f.owner)?;
    let dirs = f
        .created_dirs
        .iter()
        .map(|d| ctx.from_journal(d))
        .collect::<Result<Vec<_>>>()?;
    fx.remove_empty_dirs(&dirs);
    let display = ctx.display(&file.path);
    let text = |b: &Option<Vec<u8>>| b.as_ref().map(|b| String::from_utf8_lossy(b).into_owned());
    let (before, after) = (text(&file.current), text(&original));
    done.diff = diff::unified(&display, before.as_deref(), after.as_deref());
    done.texts.push(FileText {
        path: display.clone(),
        before,
        after,
    });
    done.files.push(display);
    Ok(())
}
