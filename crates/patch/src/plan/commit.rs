//! Writing a plan: all files or none, each staged as a temporary file in its own directory
//! (same mode and owner), fsynced, then renamed over the original.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use super::{ApplyReport, FileChange, PatchPlan, PlanStatus, encode};
use crate::error::PatchError;

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
        // 2. Stage every file.
        let mut staged = Vec::new();
        for c in &self.changes {
            staged.push(stage(&c.abs, &encode(&c.after, c.encoding))?);
        }
        // 3. Rename; on failure put back what was already replaced.
        let mut done: Vec<&FileChange> = Vec::new();
        for (c, tmp) in self.changes.iter().zip(staged) {
            if let Err(e) = tmp.persist(&c.abs) {
                for prev in done {
                    if let Ok(back) = stage(&prev.abs, &encode(&prev.before, prev.encoding)) {
                        let _ = back.persist(&prev.abs);
                    }
                }
                return Err(PatchError::io(&c.abs, e.error));
            }
            done.push(c);
        }
        let dirs: BTreeSet<&Path> = self.changes.iter().filter_map(|c| c.abs.parent()).collect();
        for dir in dirs {
            if let Ok(d) = std::fs::File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(ApplyReport {
            files: self.changes.iter().map(|c| c.path.clone()).collect(),
        })
    }
}

fn stage(target: &Path, contents: &[u8]) -> Result<tempfile::NamedTempFile, PatchError> {
    let dir = target.parent().unwrap_or(Path::new("."));
    let meta = std::fs::metadata(target).map_err(|e| PatchError::io(target, e))?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".hostkit-patch-")
        .tempfile_in(dir)
        .map_err(|e| PatchError::io(dir, e))?;
    let io = |e| PatchError::io(target, e);
    tmp.write_all(contents).map_err(io)?;
    let file = tmp.as_file();
    file.set_permissions(std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .map_err(io)?;
    let tmeta = file.metadata().map_err(io)?;
    if (tmeta.uid(), tmeta.gid()) != (meta.uid(), meta.gid())
        && let Err(e) = std::os::unix::fs::fchown(file, Some(meta.uid()), Some(meta.gid()))
    {
        log::warn!("{}: cannot keep the owner ({e})", target.display());
    }
    file.sync_all().map_err(io)?;
    Ok(tmp)
}
