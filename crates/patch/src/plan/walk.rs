//! Walking a source tree for the files a rule's patterns match.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::ScanProgress;
use crate::error::PatchError;
use crate::rule::Rule;

/// Directories never descended into.
const SKIP_DIRS: &[&str] = &[".git", ".hg", ".svn"];

pub(super) struct Walked {
    /// Relative path → absolute path, for every regular file matched by some pattern.
    pub files: BTreeMap<String, PathBuf>,
    pub seen: usize,
}

pub(super) fn walk(
    rule: &Rule,
    source: &Path,
    progress: &mut dyn FnMut(ScanProgress),
) -> Result<Walked, PatchError> {
    let mut files = BTreeMap::new();
    let mut seen = 0;
    let walker = walkdir::WalkDir::new(source)
        .follow_links(false)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            !(e.depth() > 0
                && e.file_type().is_dir()
                && e.file_name()
                    .to_str()
                    .is_some_and(|n| SKIP_DIRS.contains(&n)))
        });
    for entry in walker {
        let entry = entry.map_err(|e| {
            let path = e.path().unwrap_or(source).to_path_buf();
            let io = e
                .into_io_error()
                .unwrap_or_else(|| std::io::Error::other("filesystem loop"));
            PatchError::io(path, io)
        })?;
        if !entry.file_type().is_file() {
            continue;
        }
        seen += 1;
        if seen % 256 == 0 {
            progress(ScanProgress {
                files_seen: seen,
                done: false,
            });
        }
        let Ok(rel) = entry.path().strip_prefix(source) else {
            continue;
        };
        let Some(rel) = rel.to_str() else {
            log::debug!("skipping non-UTF-8 path {}", entry.path().display());
            continue;
        };
        let wanted = rule
            .edits
            .iter()
            .flat_map(|e| e.files.iter())
            .chain(rule.not_applicable.iter().flat_map(|m| m.files.iter()))
            .any(|p| p.matches(rel));
        if wanted {
            files.insert(rel.to_string(), entry.path().to_path_buf());
        }
    }
    progress(ScanProgress {
        files_seen: seen,
        done: true,
    });
    Ok(Walked { files, seen })
}
