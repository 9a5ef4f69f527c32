//! The library's error type.

use std::path::PathBuf;

/// Everything that can go wrong while loading, planning, applying or reverting a recipe.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A recipe file is not valid: bad TOML, an unknown key, a wrong type or value.
    #[error("{file}:{line}:{column}: {message}")]
    Recipe {
        /// The recipe file (or `<built-in>/NAME.toml`).
        file: String,
        /// 1-based line.
        line: usize,
        /// 1-based column.
        column: usize,
        /// What is wrong, naming the key and the allowed values.
        message: String,
    },
    /// No recipe has this name.
    #[error("unknown recipe `{name}`; available: {available}")]
    UnknownRecipe {
        /// The name asked for.
        name: String,
        /// The recipes that exist, comma-separated.
        available: String,
    },
    /// Two recipe files define the same name.
    #[error("recipe `{name}` is defined twice: {first} and {second}")]
    DuplicateRecipe {
        /// The recipe name.
        name: String,
        /// Where it was first defined.
        first: String,
        /// Where it was defined again.
        second: String,
    },
    /// A `--set KEY=VALUE` names no parameter of the recipe, or is malformed.
    #[error("recipe {recipe}: unknown parameter `{key}`; allowed: {allowed}")]
    UnknownParam {
        /// The recipe.
        recipe: String,
        /// The key given.
        key: String,
        /// The recipe's parameters, comma-separated (or "none").
        allowed: String,
    },
    /// A `--set KEY=VALUE` whose value is not one of the allowed ones.
    #[error("recipe {recipe}: bad value `{value}` for parameter `{key}`; allowed: {allowed}")]
    BadParamValue {
        /// The recipe.
        recipe: String,
        /// The parameter.
        key: String,
        /// The value given.
        value: String,
        /// The allowed values, comma-separated.
        allowed: String,
    },
    /// A `--set` argument that cannot be used.
    #[error(transparent)]
    Set(#[from] hostkit_core::SetError),
    /// The recipe does not support the requested scope.
    #[error("recipe {recipe} does not support scope `{scope}`; supported: {supported}")]
    UnsupportedScope {
        /// The recipe.
        recipe: String,
        /// The scope asked for.
        scope: String,
        /// The scopes the recipe supports.
        supported: String,
    },
    /// A filesystem operation failed (the message says the cause; it is not repeated as a
    /// `source`).
    #[error("{}: {cause}", path.display())]
    Io {
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        cause: std::io::Error,
    },
    /// A target path is a directory where a file is expected.
    #[error("{}: is a directory, expected a regular file", path.display())]
    IsDirectory {
        /// The path concerned.
        path: PathBuf,
    },
    /// A target is not a regular file (a FIFO, a socket, a device).
    #[error("{}: not a regular file", path.display())]
    NotRegularFile {
        /// The path concerned.
        path: PathBuf,
    },
    /// A target is not UTF-8 text.
    #[error("{}: not UTF-8 text; hostkit only edits text files", path.display())]
    NotText {
        /// The path concerned.
        path: PathBuf,
    },
    /// A symbolic link in the way whose owner does not own what it points to.
    #[error(
        "{}: refusing to follow a symbolic link owned by uid {uid} to {} (owned by uid {target_uid}): hostkit follows a link only when root owns it or its owner owns the target; remove it or check who planted it",
        path.display(),
        target.display()
    )]
    UntrustedSymlink {
        /// The link.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// What it points to (resolved under the root).
        target: PathBuf,
        /// The target's owner (or, when it does not exist, its directory's).
        target_uid: u32,
    },
    /// A user-scope path that resolves outside the home.
    #[error(
        "{}: resolves to {}, outside the home {}; user-scope recipes only write inside the home",
        path.display(),
        resolved.display(),
        home.display()
    )]
    OutsideHome {
        /// The path as the recipe names it.
        path: PathBuf,
        /// Where it resolves.
        resolved: PathBuf,
        /// The home.
        home: PathBuf,
    },
    /// A file in a home that is a hard link to a file of another user.
    #[error(
        "{}: a hard link to a file owned by uid {uid}, not by the home's owner (uid {home_uid}); refusing to touch it",
        path.display()
    )]
    ForeignHardLink {
        /// The file.
        path: PathBuf,
        /// Its owner.
        uid: u32,
        /// The home's owner.
        home_uid: u32,
    },
    /// State (journal, backups, lock) that hostkit did not write, or that others could have
    /// changed: never acted on.
    #[error("{}: {reason}", path.display())]
    UntrustedState {
        /// The file or directory.
        path: PathBuf,
        /// Why it is refused, and what to do.
        reason: String,
    },
    /// Too many symbolic links, or a link that leaves the root.
    #[error("{}: {reason}", path.display())]
    BadSymlink {
        /// The link.
        path: PathBuf,
        /// Why it is refused.
        reason: String,
    },
    /// An external command ran and failed.
    #[error("`{command}` {failure}")]
    Command {
        /// The command line, shell-quoted.
        command: String,
        /// "exited with status N: stderr", or what else went wrong.
        failure: String,
    },
    /// An external command could not start (not installed, not executable).
    #[error("`{command}` could not start: {reason}")]
    NotStarted {
        /// The command line, shell-quoted.
        command: String,
        /// Why.
        reason: String,
    },
    /// Another `hostkit apply`/`revert` holds the lock.
    #[error("{}: locked by {holder} (another hostkit apply or revert); try again when it has finished, or use --wait", path.display())]
    Locked {
        /// The lock file.
        path: PathBuf,
        /// `pid N`, or `another process` when it did not say.
        holder: String,
    },
    /// Revert found a file changed since apply.
    #[error(
        "{}: changed by someone else since `hostkit apply {recipe}`; not overwriting it (use --force to revert anyway)",
        path.display()
    )]
    ChangedSince {
        /// The file.
        path: PathBuf,
        /// The recipe.
        recipe: String,
    },
    /// Revert found a GSettings key changed since apply.
    #[error(
        "gsettings {setting} is now {value}, changed by someone else since `hostkit apply {recipe}`; not overwriting it (use --force to revert anyway)"
    )]
    SettingChangedSince {
        /// `schema key`.
        setting: String,
        /// Its value now.
        value: String,
        /// The recipe.
        recipe: String,
    },
    /// The journal in the state directory cannot be read or written.
    #[error("{}: bad journal: {reason}", path.display())]
    Journal {
        /// The journal file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// A step failed in the middle of an apply; the steps before it are done.
    #[error(
        "step `{step}` failed; steps done before it: {done}; undo them with `hostkit revert {recipe}`"
    )]
    StepFailed {
        /// The recipe.
        recipe: String,
        /// The failing step.
        step: String,
        /// The steps that were completed, comma-separated (or "none").
        done: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// Two steps of one recipe write the same file.
    #[error("recipe {recipe}: steps `{first}` and `{second}` both write {}", path.display())]
    Conflict {
        /// The recipe.
        recipe: String,
        /// The first step.
        first: String,
        /// The second step.
        second: String,
        /// The file.
        path: PathBuf,
    },
    /// An error while planning or applying one step.
    #[error("step `{step}` ({location}): {source}")]
    InStep {
        /// The step's id.
        step: String,
        /// Where the step is defined (`file:line`).
        location: String,
        /// The cause.
        #[source]
        source: Box<Error>,
    },
    /// A host file a probe reads (`/etc/group`, `/proc/sys/kernel/ngroups_max`, …) is malformed.
    #[error("{file}:{line}: {message}")]
    Parse {
        /// The file, relative to the root.
        file: String,
        /// 1-based line.
        line: usize,
        /// What is wrong.
        message: String,
    },
    /// A probe named in a recipe does not exist.
    #[error("unknown probe `{name}`; known: {known}")]
    UnknownProbe {
        /// The name.
        name: String,
        /// The known probes, comma-separated.
        known: String,
    },
    /// The environment does not allow planning (e.g. `HOME` unset or relative).
    #[error("{0}")]
    Environment(String),
    /// A recipe file or directory that cannot be read or trusted.
    #[error(transparent)]
    Source(#[from] hostkit_core::SourceError),
    /// A failure injected by `HOSTKIT_FAIL_AFTER_STEP` (debug builds only).
    #[error("failure injected by HOSTKIT_FAIL_AFTER_STEP after step {0}")]
    Injected(usize),
}

impl From<hostkit_core::Located> for Error {
    fn from(l: hostkit_core::Located) -> Error {
        Error::Recipe {
            file: l.file,
            line: l.line,
            column: l.column,
            message: l.message,
        }
    }
}

impl From<hostkit_core::Duplicate> for Error {
    fn from(d: hostkit_core::Duplicate) -> Error {
        Error::DuplicateRecipe {
            name: d.name,
            first: d.first,
            second: d.second,
        }
    }
}

impl Error {
    /// Wraps an `io::Error` with its path.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Error {
        Error::Io {
            path: path.into(),
            cause: source,
        }
    }
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
