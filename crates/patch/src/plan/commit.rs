//! Writing a plan: all files or none, each staged as a temporary file in its own directory
//! (same mode and owner), fsynced, then renamed over the original — through
//! [`hostkit_core::atomic`], relative to each directory opened once.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use hostkit_core::atomic::{Dir, Owner, Staged, Step};

use super::{ApplyReport, FileChange, PatchPlan, PlanStatus, encode};
use crate::error::PatchError;

/// What a staged file keeps of the original: its mode and owner.
struct Keep {
    mode: u32,
    owner: (u32, u32),
}

impl PatchPlan {
    /// Writes the changes: all files or none. Each file is staged as a temporary file in its
    /// own directory (same mode and owner), fsynced, then renamed over the original; files that
    /// changed since planning stop everything before any rename.
    pub fn apply(&self) -> Result<ApplyReport, PatchError> {
        if self.status != PlanStatus::Pending {
            return Ok(ApplyReport { files: Vec::new() });
        }
        // 1. Nothing changed under our feet.
        for c in &self.changes {
            let now = std::fs::read(&c.abs).map_err(|e| PatchError::io(&c.abs, e))?;
            if now != encode(&c.before, c.encoding) {
                return Err(PatchError::ChangedSincePlan {
                    path: c.abs.clone(),
                });
            }
        }
        // 2. Stage every file, in its directory (each opened once).
        let mut keep = Vec::new();
        for c in &self.changes {
            let meta = std::fs::metadata(&c.abs).map_err(|e| PatchError::io(&c.abs, e))?;
            keep.push(Keep {
                mode: meta.mode() & 0o7777,
                owner: (meta.uid(), meta.gid()),
            });
        }
        let mut opened: BTreeMap<&Path, File> = BTreeMap::new();
        for c in &self.changes {
            let dir = parent(&c.abs);
            if !opened.contains_key(dir) {
                let file = File::open(dir).map_err(|e| PatchError::io(dir, e))?;
                opened.insert(dir, file);
            }
        }
        let dir_of = |c: &FileChange| {
            let (path, file) = opened
                .get_key_value(parent(&c.abs))
                .expect("every directory was opened");
            Dir::new(file.as_fd(), path).with_prefix("hostkit-patch")
        };
        let mut staged = Vec::new();
        for (c, k) in self.changes.iter().zip(&keep) {
            staged.push(stage(dir_of(c), c, k, &encode(&c.after, c.encoding))?);
        }
        // 3. Rename; on failure put back what was already replaced.
        let mut done: Vec<(&FileChange, &Keep)> = Vec::new();
        for ((c, k), tmp) in self.changes.iter().zip(&keep).zip(staged) {
            if let Err(e) = tmp.commit() {
                for (prev, pk) in done {
                    let before = encode(&prev.before, prev.encoding);
                    if let Ok(back) = stage(dir_of(prev), prev, pk, &before) {
                        let _ = back.commit();
                    }
                }
                return Err(PatchError::io(&c.abs, e.cause));
            }
            done.push((c, k));
        }
        for (path, file) in &opened {
            let _ = Dir::new(file.as_fd(), path).sync();
        }
        Ok(ApplyReport {
            files: self.changes.iter().map(|c| c.path.clone()).collect(),
        })
    }
}

fn parent(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Stages `contents` for a change's file, with the original's mode and (when allowed) owner.
fn stage<'d>(
    dir: Dir<'d>,
    change: &FileChange,
    keep: &Keep,
    contents: &[u8],
) -> Result<Staged<'d>, PatchError> {
    let target = &change.abs;
    let name = target.file_name().ok_or_else(|| {
        PatchError::io(
            target,
            std::io::Error::from(std::io::ErrorKind::InvalidInput),
        )
    })?;
    let (uid, gid) = keep.owner;
    let staged = Staged::new(dir, name, contents, keep.mode, Owner::IfPermitted(uid, gid))
        .map_err(|e| match e.step {
            Step::Create => PatchError::io(dir.path(), e.cause),
            _ => PatchError::io(target, e.cause),
        })?;
    if let Some(e) = staged.owner_error() {
        log::warn!("{}: cannot keep the owner ({e})", target.display());
    }
    Ok(staged)
}
