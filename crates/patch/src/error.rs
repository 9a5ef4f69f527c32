//! The errors of the patch engine.

use std::path::PathBuf;

/// A rule file that could not be read: where, and what is wrong (`FILE:LINE:COLUMN: MESSAGE`;
/// for built-in rules the file is `patches/NAME.toml`).
pub type RuleError = hostkit_core::Located;

/// One file in which an edit did not find the code it expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// The file, relative to the source directory.
    pub file: String,
    /// The edit's id within the rule.
    pub edit: String,
    /// What the edit expected to find there.
    pub expected: String,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}: expected {} (edit `{}`)",
            self.file, self.expected, self.edit
        )
    }
}

/// Everything that can go wrong while loading, planning or applying a rule.
#[derive(Debug, thiserror::Error)]
pub enum PatchError {
    /// A rule file is malformed.
    #[error(transparent)]
    Rule(#[from] RuleError),

    /// No rule has that name.
    #[error("unknown patch rule `{name}` (known rules: {})", known.join(", "))]
    UnknownRule {
        /// The name asked for.
        name: String,
        /// The names of the rules that exist.
        known: Vec<String>,
    },

    /// Two rule files define the same name (built-in or not: a rule never silently replaces
    /// another).
    #[error("rule `{name}` is defined twice: in {first} and in {second}")]
    DuplicateRule {
        /// The rule's name.
        name: String,
        /// The file read first.
        first: String,
        /// The file read second.
        second: String,
    },

    /// The source directory cannot be used.
    #[error("source directory {}: {reason}", path.display())]
    SourceDir {
        /// The directory given.
        path: PathBuf,
        /// Why it cannot be used.
        reason: String,
    },

    /// A `--set` argument that cannot be used.
    #[error(transparent)]
    Set(#[from] hostkit_core::SetError),

    /// A `--set` key names no parameter of the rule.
    #[error("rule `{rule}` has no parameter `{key}` ({})", known_params(known))]
    UnknownParam {
        /// The rule.
        rule: String,
        /// The key given.
        key: String,
        /// The rule's parameters.
        known: Vec<String>,
    },

    /// A parameter value is out of range or of the wrong kind.
    #[error("rule `{rule}`: bad value `{value}` for parameter `{key}`: {reason}")]
    BadParamValue {
        /// The rule.
        rule: String,
        /// The parameter.
        key: String,
        /// The value given.
        value: String,
        /// What a valid value looks like.
        reason: String,
    },

    /// None of the files the rule edits exist under the source directory.
    #[error(
        "rule `{rule}` found nothing to change under {}: none of its files exist (looked for {}); nothing was changed",
        source_dir.display(),
        looked_for.join(", ")
    )]
    NothingToChange {
        /// The rule.
        rule: String,
        /// The source directory.
        source_dir: PathBuf,
        /// The file patterns the rule looked for.
        looked_for: Vec<String>,
    },

    /// The files exist but their code is not what the rule knows.
    #[error(
        "rule `{rule}` does not recognise the code under {}; nothing was changed:\n  {}",
        source_dir.display(),
        mismatches.iter().map(|m| m.to_string()).collect::<Vec<_>>().join("\n  ")
    )]
    Unrecognised {
        /// The rule.
        rule: String,
        /// The source directory.
        source_dir: PathBuf,
        /// Each file and what was expected in it.
        mismatches: Vec<Mismatch>,
    },

    /// A file changed between planning and applying.
    #[error("{} changed since the plan was made; nothing was changed", path.display())]
    ChangedSincePlan {
        /// The file.
        path: PathBuf,
    },

    /// A rule file or directory that cannot be read or trusted.
    #[error(transparent)]
    Source(#[from] hostkit_core::SourceError),

    /// A file could not be read or written.
    #[error("{}: {cause}", path.display())]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The underlying error (in the message, not repeated as a `source`).
        cause: std::io::Error,
    },
}

fn known_params(known: &[String]) -> String {
    if known.is_empty() {
        "it takes no parameters".to_string()
    } else {
        format!("its parameters: {}", known.join(", "))
    }
}

impl PatchError {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        PatchError::Io {
            path: path.into(),
            cause: source,
        }
    }
}

impl From<hostkit_core::Duplicate> for PatchError {
    fn from(d: hostkit_core::Duplicate) -> PatchError {
        PatchError::DuplicateRule {
            name: d.name,
            first: d.first,
            second: d.second,
        }
    }
}
