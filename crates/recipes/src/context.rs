//! Where a recipe runs: the root, the scope, the home and XDG directories, the state directory,
//! who owns new files, and the variables for `{…}` placeholders.
//!
//! In user scope every file a recipe touches must resolve inside the home (see
//! [`Context::resolve`]): a home belongs to its user, who may have planted links anywhere in
//! it, so nothing outside it is ever written on a user's behalf.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, Existing};
use crate::host::Host;
use crate::recipe::{Recipe, Scope, Template};

/// The options a command line gives: one settings struct for every subcommand.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--root DIR`: an offline image or chroot; `None` is the live system.
    pub root: Option<PathBuf>,
    /// `--scope`; `None` is the recipe's default.
    pub scope: Option<Scope>,
    /// `--set KEY=VALUE`, as given.
    pub sets: Vec<String>,
    /// `--force` (revert: overwrite files changed since apply).
    pub force: bool,
    /// `--wait` (apply, revert): wait for another apply or revert to finish instead of failing.
    pub wait: bool,
}

/// The home of a user-scope run.
#[derive(Debug, Clone)]
pub struct Home {
    /// As given by `HOME` (an absolute path inside the root).
    pub logical: PathBuf,
    /// Resolved on the host.
    pub host: PathBuf,
    /// Its owner.
    pub uid: u32,
}

/// Everything a plan is computed against.
#[derive(Debug, Clone)]
pub struct Context {
    /// The recipe's name.
    pub recipe: String,
    /// The root on the host (`/` for the live system).
    pub root: PathBuf,
    /// True on the live system (no `--root`): live probes and commands run.
    pub live: bool,
    /// The scope.
    pub scope: Scope,
    /// Placeholder values: built-ins and parameters.
    pub vars: BTreeMap<String, String>,
    /// The home, in user scope: as given (inside the root) and resolved on the host.
    pub home: Option<Home>,
    /// The state directory on the host (resolved; see [`crate::state`]).
    pub state_dir: PathBuf,
    /// Owner of new files and directories (the home's owner in user scope).
    pub owner: (u32, u32),
    /// Who runs hostkit: owner of the state directory and everything in it.
    pub runner: (u32, u32),
    /// Mode of new directories.
    pub dir_mode: u32,
}

impl Context {
    /// Builds the context for `recipe` from the options and the host's environment.
    pub fn new(recipe: &Recipe, opts: &Options, host: &dyn Host) -> Result<Context> {
        let scope = recipe.scope(opts.scope)?;
        let params = recipe.param_values(&opts.sets)?;
        let root = match &opts.root {
            Some(r) => {
                let meta = std::fs::metadata(r).map_err(|e| Error::io(r, e))?;
                if !meta.is_dir() {
                    return Err(Error::Environment(format!(
                        "--root {}: not a directory",
                        r.display()
                    )));
                }
                std::fs::canonicalize(r).map_err(|e| Error::io(r, e))?
            }
            None => PathBuf::from("/"),
        };
        let live = root == Path::new("/");
        let abs_env = |name: &str| {
            host.env(name)
                .filter(|v| v.starts_with('/'))
                .map(PathBuf::from)
        };
        let home = abs_env("HOME");
        let mut vars = BTreeMap::new();
        vars.insert("recipe".to_string(), recipe.name.clone());
        let ids = host.ids();
        let (state, owner, dir_mode, home_info) = match scope {
            Scope::System => (PathBuf::from("/var/lib/hostkit"), ids, 0o755, None),
            Scope::User => {
                let home = home.clone().ok_or_else(|| {
                    Error::Environment("user scope needs HOME set to an absolute path".into())
                })?;
                let state = abs_env("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state"));
                let host_home = fsutil::resolve(&root, &home)?;
                let owner = match std::fs::metadata(&host_home) {
                    Ok(m) => (m.uid(), m.gid()),
                    Err(_) => ids,
                };
                let info = Home {
                    logical: home,
                    host: host_home,
                    uid: owner.0,
                };
                (state.join("hostkit"), owner, 0o700, Some(info))
            }
        };
        if let Some(home) = &home {
            let config = abs_env("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
            vars.insert("home".into(), home.display().to_string());
            vars.insert("config_home".into(), config.display().to_string());
        }
        vars.extend(params);
        Ok(Context {
            recipe: recipe.name.clone(),
            state_dir: fsutil::resolve(&root, &state)?,
            root,
            live,
            scope,
            vars,
            home: home_info,
            owner,
            runner: ids,
            dir_mode,
        })
    }

    /// A parameter's (or variable's) value.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars.get(name).map(String::as_str)
    }

    /// Renders a template.
    pub fn render(&self, t: &Template) -> String {
        t.render(&self.vars)
    }

    /// Renders a path template: it must be absolute (inside the root).
    pub fn path(&self, t: &Template) -> Result<PathBuf> {
        let p = self.render(t);
        if p.starts_with('/') {
            Ok(PathBuf::from(p))
        } else {
            Err(Error::Environment(format!(
                "path `{}` is not absolute after substitution (is HOME set?)",
                t.0
            )))
        }
    }

    /// The host path of a logical path (see [`fsutil::resolve`]); in user scope it must stay
    /// inside the home.
    pub fn resolve(&self, logical: &Path) -> Result<PathBuf> {
        let path = fsutil::resolve(&self.root, logical)?;
        if let Some(home) = &self.home
            && !path.starts_with(&home.host)
        {
            return Err(Error::OutsideHome {
                path: logical.to_path_buf(),
                resolved: path,
                home: home.host.clone(),
            });
        }
        Ok(path)
    }

    /// Where a scope's files live: the home in user scope, the root in system scope. Journal
    /// paths are relative to it.
    pub fn base(&self) -> &Path {
        match &self.home {
            Some(h) => &h.logical,
            None => Path::new("/"),
        }
    }

    /// A resolved host path relative to the scope's base (for the journal).
    pub fn relative(&self, host_path: &Path) -> Result<PathBuf> {
        let base = match &self.home {
            Some(h) => &h.host,
            None => &self.root,
        };
        host_path
            .strip_prefix(base)
            .map(Path::to_path_buf)
            .map_err(|_| {
                Error::Environment(format!(
                    "{} is outside {}",
                    host_path.display(),
                    base.display()
                ))
            })
    }

    /// The host path of a path read back from the journal (relative to the scope's base):
    /// resolved again under this root, by the same rules as a recipe's own paths.
    pub fn from_journal(&self, rel: &Path) -> Result<PathBuf> {
        self.resolve(&self.base().join(rel))
    }

    /// The path shown in diffs: relative to the root.
    pub fn display(&self, host_path: &Path) -> String {
        host_path
            .strip_prefix(&self.root)
            .unwrap_or(host_path)
            .display()
            .to_string()
    }

    /// Reads a target file (resolved).
    pub fn read(&self, logical: &Path) -> Result<(PathBuf, Option<Existing>)> {
        let path = self.resolve(logical)?;
        let existing = fsutil::read(&path)?;
        if let (Some(home), Some(e)) = (&self.home, &existing)
            && e.nlink > 1
            && e.uid != home.uid
        {
            // A hard link to someone else's file (`ln /etc/shadow ~/.profile`): never read
            // its bytes into the home, nor replace the user's name for it.
            return Err(Error::ForeignHardLink {
                path,
                uid: e.uid,
                home_uid: home.uid,
            });
        }
        Ok((path, existing))
    }

    /// Reads a target that must be UTF-8 text.
    pub fn read_text(&self, logical: &Path) -> Result<(PathBuf, Option<Existing>, Option<String>)> {
        let (path, existing) = self.read(logical)?;
        let text = match &existing {
            None => None,
            Some(e) => Some(
                String::from_utf8(e.bytes.clone())
                    .map_err(|_| Error::NotText { path: path.clone() })?,
            ),
        };
        Ok((path, existing, text))
    }
}

/// `logical` (absolute) under `root`.
pub fn join(root: &Path, logical: &Path) -> PathBuf {
    root.join(logical.strip_prefix("/").unwrap_or(logical))
}
