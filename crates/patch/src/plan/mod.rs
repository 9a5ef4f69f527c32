//! Planning a rule on a source tree (pure: reads the tree, computes each file's new text) and
//! the plan's diff; [`walk`] finds the files, [`edit`] runs the edits on their text,
//! [`commit`] writes the result atomically.

mod commit;
mod edit;
mod walk;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::error::{Mismatch, PatchError};
use crate::params::Params;
use crate::rule::{Require, Rule};

use edit::{first_match_line, is_crlf, run_edit};
use walk::{Walked, walk};

/// Progress of a scan, reported to the caller's callback while walking the tree.
#[derive(Debug, Clone, Copy)]
pub struct ScanProgress {
    /// Files looked at so far.
    pub files_seen: usize,
    /// Whether the walk is over.
    pub done: bool,
}

/// What a plan found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PlanStatus {
    /// Changes to make (see [`PatchPlan::changes`]).
    Pending,
    /// Every edit's replacement is already in place.
    AlreadyApplied,
    /// The code the rule edits is absent because the problem is solved differently here.
    NotApplicable {
        /// Why, from the rule.
        reason: String,
        /// The file (relative) where the evidence is.
        file: String,
        /// Its 1-based line.
        line: usize,
    },
}

/// The text encoding a file was read in: UTF-8, or (when not valid UTF-8) Latin-1, which maps
/// each byte to one character and so round-trips any byte exactly.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Encoding {
    Utf8,
    Latin1,
}

fn decode(bytes: Vec<u8>) -> (String, Encoding) {
    match String::from_utf8(bytes) {
        Ok(s) => (s, Encoding::Utf8),
        Err(e) => (
            e.into_bytes().iter().map(|&b| b as char).collect(),
            Encoding::Latin1,
        ),
    }
}

fn encode(text: &str, enc: Encoding) -> Vec<u8> {
    match enc {
        Encoding::Utf8 => text.as_bytes().to_vec(),
        // Every char came from one byte or from a template; templates are checked to be
        // Latin-1 representable before a plan is returned.
        Encoding::Latin1 => text.chars().map(|c| c as u32 as u8).collect(),
    }
}

/// One file's change: its text before and after.
#[derive(Debug, Clone)]
pub struct FileChange {
    path: String,
    abs: PathBuf,
    before: String,
    after: String,
    encoding: Encoding,
}

impl FileChange {
    /// The path relative to the source directory, `/`-separated.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The text before the change.
    pub fn before(&self) -> &str {
        &self.before
    }

    /// The text after the change.
    pub fn after(&self) -> &str {
        &self.after
    }

    /// This file's unified diff (`--- a/PATH`, `+++ b/PATH`, 3 lines of context).
    pub fn unified_diff(&self) -> String {
        hostkit_core::diff::unified(&self.path, Some(&self.before), Some(&self.after))
    }
}

/// The outcome of planning a rule on a source tree: nothing has been written yet.
#[derive(Debug, Clone)]
pub struct PatchPlan {
    rule: String,
    source_dir: PathBuf,
    status: PlanStatus,
    changes: Vec<FileChange>,
    warnings: Vec<String>,
    files_seen: usize,
    skipped_edits: Vec<String>,
}

/// What [`PatchPlan::apply`] wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApplyReport {
    /// The files replaced, relative to the source directory.
    pub files: Vec<String>,
}

impl PatchPlan {
    /// The rule's name.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    /// The source directory the plan is for.
    pub fn source_dir(&self) -> &Path {
        &self.source_dir
    }

    /// Pending, already applied, or not applicable.
    pub fn status(&self) -> &PlanStatus {
        &self.status
    }

    /// The files that would change, in path order (empty unless pending).
    pub fn changes(&self) -> &[FileChange] {
        &self.changes
    }

    /// The rule's warnings that hold for the parameters used and the edits that change
    /// something (none unless changes are pending).
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// How many files the scan looked at.
    pub fn files_seen(&self) -> usize {
        self.files_seen
    }

    /// Edits whose files do not exist in this tree (e.g. the C-library edit in a kernel tree).
    pub fn skipped_edits(&self) -> &[String] {
        &self.skipped_edits
    }

    /// The whole change as one unified diff, relative to the source directory, which
    /// `patch -p1` applies from inside it. Empty when nothing is pending.
    pub fn unified_diff(&self) -> String {
        self.changes.iter().map(|c| c.unified_diff()).collect()
    }

    /// The diff as bytes, each file in its own encoding (for writing to a patch file).
    pub fn unified_diff_bytes(&self) -> Vec<u8> {
        self.changes
            .iter()
            .flat_map(|c| encode(&c.unified_diff(), c.encoding))
            .collect()
    }
}

impl Rule {
    /// Plans the rule on `source` (pure: reads, never writes).
    pub fn plan(&self, source: &Path, params: &Params) -> Result<PatchPlan, PatchError> {
        self.plan_with_progress(source, params, &mut |_| {})
    }

    /// Like [`Rule::plan`], reporting scan progress to `progress` (every 256 files, and once
    /// at the end).
    pub fn plan_with_progress(
        &self,
        source: &Path,
        params: &Params,
        progress: &mut dyn FnMut(ScanProgress),
    ) -> Result<PatchPlan, PatchError> {
        match std::fs::metadata(source) {
            Ok(m) if m.is_dir() => {}
            Ok(_) => {
                return Err(PatchError::SourceDir {
                    path: source.to_path_buf(),
                    reason: "not a directory".into(),
                });
            }
            Err(e) => {
                return Err(PatchError::SourceDir {
                    path: source.to_path_buf(),
                    reason: e.to_string(),
                });
            }
        }
        let walked = walk(self, source, progress)?;

        // Which files each edit touches.
        let edit_files: Vec<Vec<&String>> = self
            .edits
            .iter()
            .map(|e| {
                walked
                    .files
                    .keys()
                    .filter(|rel| e.files.iter().any(|p| p.matches(rel)))
                    .collect()
            })
            .collect();
        if edit_files.iter().all(|f| f.is_empty()) {
            return Err(PatchError::NothingToChange {
                rule: self.name.clone(),
                source_dir: source.to_path_buf(),
                looked_for: self.file_patterns(),
            });
        }

        let mut originals: BTreeMap<&String, (String, Encoding)> = BTreeMap::new();
        for rel in edit_files.iter().flatten() {
            if !originals.contains_key(rel) {
                let abs = &walked.files[*rel];
                let bytes = std::fs::read(abs).map_err(|e| PatchError::io(abs, e))?;
                originals.insert(rel, decode(bytes));
            }
        }
        // A file whose every line ends in CRLF is edited with LF endings and written back with
        // CRLF, so that patterns match and inserted lines get the file's own endings.
        let crlf: BTreeMap<&String, bool> = originals
            .iter()
            .map(|(k, (t, _))| (*k, is_crlf(t)))
            .collect();
        let mut working: BTreeMap<&String, String> = originals
            .iter()
            .map(|(k, (t, _))| {
                let text = if crlf[k] {
                    t.replace("\r\n", "\n")
                } else {
                    t.clone()
                };
                (*k, text)
            })
            .collect();

        // Run the edits in order; record per file how much each found.
        let mut changing: Vec<&str> = Vec::new();
        let mut found: Vec<BTreeMap<&String, (usize, usize)>> = Vec::new();
        for (edit, files) in self.edits.iter().zip(&edit_files) {
            let mut per_file = BTreeMap::new();
            for rel in files {
                let Some(text) = working.get_mut(*rel) else {
                    continue;
                };
                let run = run_edit(edit, text, params);
                *text = run.text;
                if run.pending > 0 && !changing.contains(&edit.id.as_str()) {
                    changing.push(&edit.id);
                }
                per_file.insert(*rel, (run.pending, run.applied));
            }
            found.push(per_file);
        }

        let mismatches = self.mismatches(&edit_files, &found);
        if !mismatches.is_empty() {
            if let Some(status) = self.not_applicable_status(&walked) {
                return Ok(self.finish(
                    source,
                    status,
                    Vec::new(),
                    walked.seen,
                    &edit_files,
                    Vec::new(),
                ));
            }
            return Err(PatchError::Unrecognised {
                rule: self.name.clone(),
                source_dir: source.to_path_buf(),
                mismatches,
            });
        }

        let mut changes = Vec::new();
        for (rel, after) in working {
            let (before, encoding) = &originals[rel];
            let after = if crlf[rel] {
                after.replace('\n', "\r\n")
            } else {
                after
            };
            if &after == before {
                continue;
            }
            if *encoding == Encoding::Latin1 && after.chars().any(|c| c as u32 > 0xff) {
                return Err(PatchError::io(
                    &walked.files[rel],
                    std::io::Error::new(
                        std::io::ErrorKind::InvalidData,
                        "file is not UTF-8 and the replacement has characters outside Latin-1",
                    ),
                ));
            }
            changes.push(FileChange {
                path: rel.clone(),
                abs: walked.files[rel].clone(),
                before: before.clone(),
                after,
                encoding: *encoding,
            });
        }
        let status = if changes.is_empty() {
            PlanStatus::AlreadyApplied
        } else {
            PlanStatus::Pending
        };
        let warnings = if changes.is_empty() {
            Vec::new()
        } else {
            self.warnings_for(params, &changing)
        };
        Ok(self.finish(source, status, changes, walked.seen, &edit_files, warnings))
    }

    fn finish(
        &self,
        source: &Path,
        status: PlanStatus,
        changes: Vec<FileChange>,
        files_seen: usize,
        edit_files: &[Vec<&String>],
        warnings: Vec<String>,
    ) -> PatchPlan {
        PatchPlan {
            rule: self.name.clone(),
            source_dir: source.to_path_buf(),
            status,
            changes,
            warnings,
            files_seen,
            skipped_edits: self
                .edits
                .iter()
                .zip(edit_files)
                .filter(|(_, f)| f.is_empty())
                .map(|(e, _)| e.id.clone())
                .collect(),
        }
    }

    fn mismatches(
        &self,
        edit_files: &[Vec<&String>],
        found: &[BTreeMap<&String, (usize, usize)>],
    ) -> Vec<Mismatch> {
        let hits = |i: usize, rel: &String| found[i].get(rel).map(|(p, a)| p + a).unwrap_or(0);
        let mut out = Vec::new();
        let mut groups: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
        for (i, edit) in self.edits.iter().enumerate() {
            if let Some(g) = &edit.one_of {
                groups.entry(g.as_str()).or_default().push(i);
            }
            let files = &edit_files[i];
            if let Some(n) = edit.count {
                for rel in files {
                    let h = hits(i, rel);
                    if h != 0 && h != n {
                        out.push(Mismatch {
                            file: (*rel).clone(),
                            edit: edit.id.clone(),
                            expected: format!("{n} occurrence(s) of {}, found {h}", edit.expect),
                        });
                    }
                }
            }
            if edit.one_of.is_some() {
                continue;
            }
            let missing: Vec<&&String> = files.iter().filter(|rel| hits(i, rel) == 0).collect();
            let report = match edit.require {
                Require::EachFile => !missing.is_empty(),
                Require::AnyFile => !files.is_empty() && missing.len() == files.len(),
                Require::Optional => false,
            };
            if report {
                out.extend(missing.into_iter().map(|rel| Mismatch {
                    file: (*rel).clone(),
                    edit: edit.id.clone(),
                    expected: edit.expect.clone(),
                }));
            }
        }
        for members in groups.values() {
            let files: BTreeSet<&String> = members
                .iter()
                .flat_map(|&i| edit_files[i].iter().copied())
                .collect();
            for rel in files {
                if members.iter().all(|&i| hits(i, rel) == 0) {
                    out.push(Mismatch {
                        file: rel.clone(),
                        edit: members
                            .iter()
                            .map(|&i| self.edits[i].id.as_str())
                            .collect::<Vec<_>>()
                            .join("` or `"),
                        expected: members
                            .iter()
                            .map(|&i| self.edits[i].expect.as_str())
                            .collect::<Vec<_>>()
                            .join(", or "),
                    });
                }
            }
        }
        // Nothing at all found anywhere (possible when every edit is optional).
        let any_hit =
            (0..self.edits.len()).any(|i| edit_files[i].iter().any(|rel| hits(i, rel) > 0));
        if !any_hit && out.is_empty() {
            for (i, edit) in self.edits.iter().enumerate() {
                out.extend(edit_files[i].iter().map(|rel| Mismatch {
                    file: (*rel).clone(),
                    edit: edit.id.clone(),
                    expected: edit.expect.clone(),
                }));
            }
        }
        out
    }

    fn not_applicable_status(&self, walked: &Walked) -> Option<PlanStatus> {
        for marker in &self.not_applicable {
            for (rel, abs) in &walked.files {
                if !marker.files.iter().any(|p| p.matches(rel)) {
                    continue;
                }
                let Ok(bytes) = std::fs::read(abs) else {
                    continue;
                };
                let (text, _) = decode(bytes);
                if let Some(line) = first_match_line(&text, &marker.find) {
                    return Some(PlanStatus::NotApplicable {
                        reason: marker.reason.clone(),
                        file: rel.clone(),
                        line,
                    });
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::PlanStatus;
    use crate::{PatchError, parse_rule};

    fn tree(files: &[(&str, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        for (rel, text) in files {
            let path = dir.path().join(rel);
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        }
        dir
    }

    fn rule(edits: &str) -> crate::Rule {
        parse_rule("t.toml", &format!("name = \"t\"\nsummary = \"s\"\n{edits}")).expect("rule")
    }

    #[test]
    fn a_replacement_containing_the_find_text_applies_once() {
        let r = rule(
            "[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"if (x)\"\nreplace = \"if (FALSE && if (x)\"\n",
        );
        let dir = tree(&[("a.c", "a\nif (x)\nb\n")]);
        let plan = r.plan(dir.path(), &r.default_params()).expect("plan");
        assert_eq!(plan.changes()[0].after(), "a\nif (FALSE && if (x)\nb\n");
        plan.apply().expect("apply");
        let again = r.plan(dir.path(), &r.default_params()).expect("plan");
        assert_eq!(again.status(), &PlanStatus::AlreadyApplied);
    }

    #[test]
    fn one_of_needs_one_alternative_per_file() {
        let edits = "[[edits]]\nid = \"new\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"NEW\"\nreplace = \"N\"\none_of = \"g\"\n\
                     [[edits]]\nid = \"old\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"OLD\"\nreplace = \"O\"\none_of = \"g\"\n";
        let r = rule(edits);
        let dir = tree(&[("a.c", "OLD\n")]);
        let plan = r.plan(dir.path(), &r.default_params()).expect("plan");
        assert_eq!(plan.changes()[0].after(), "O\n");
        let dir = tree(&[("a.c", "neither\n")]);
        match r.plan(dir.path(), &r.default_params()) {
            Err(PatchError::Unrecognised { mismatches, .. }) => {
                assert_eq!(mismatches.len(), 1);
                assert_eq!(
                    mismatches[0].to_string(),
                    "a.c: expected `NEW`, or `OLD` (edit `new` or `old`)"
                );
            }
            other => panic!("expected Unrecognised, got {other:?}"),
        }
    }

    #[test]
    fn any_file_tolerates_files_without_the_code() {
        let r = rule(
            "[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"*.h\"]\nfind = \"32\"\nreplace = \"64\"\nrequire = \"any-file\"\n",
        );
        let dir = tree(&[("a.h", "N 32\n"), ("b.h", "nothing\n")]);
        let plan = r.plan(dir.path(), &r.default_params()).expect("plan");
        let paths: Vec<&str> = plan.changes().iter().map(|c| c.path()).collect();
        assert_eq!(paths, ["a.h"]);
        assert_eq!(
            plan.unified_diff(),
            "--- a/a.h\n+++ b/a.h\n@@ -1 +1 @@\n-N 32\n+N 64\n"
        );
    }

    #[test]
    fn a_file_changed_after_planning_stops_the_apply() {
        let r = rule(
            "[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"*.c\"]\nfind = \"x\"\nreplace = \"y\"\n",
        );
        let dir = tree(&[("a.c", "x\n"), ("b.c", "x\n")]);
        let plan = r.plan(dir.path(), &r.default_params()).expect("plan");
        std::fs::write(dir.path().join("b.c"), "x changed\n").expect("write");
        assert!(matches!(
            plan.apply(),
            Err(PatchError::ChangedSincePlan { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(dir.path().join("a.c")).expect("read"),
            "x\n"
        );
    }

    #[test]
    fn files_without_a_final_newline_give_a_diff_patch_understands() {
        let r = rule(
            "[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nreplace = \"y\"\n",
        );
        let dir = tree(&[("a.c", "x")]);
        let plan = r.plan(dir.path(), &r.default_params()).expect("plan");
        assert_eq!(
            plan.unified_diff(),
            "--- a/a.c\n+++ b/a.c\n@@ -1 +1 @@\n-x\n\\ No newline at end of file\n+y\n\\ No newline at end of file\n"
        );
    }
}
