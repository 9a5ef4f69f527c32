//! Where a recipe runs: the root, the scope, the home and XDG directories, the state directory,
//! who is trusted and who owns new files, and the variables for `{…}` placeholders.

use std::collections::BTreeMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::fsutil::{self, Existing, Trust};
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
    /// The state directory on the host.
    pub state_dir: PathBuf,
    /// Whose symbolic links are followed.
    pub trust: Trust,
    /// Owner of new files and directories.
    pub owner: (u32, u32),
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
        let (state, trust, owner, dir_mode) = match scope {
            Scope::System => (
                PathBuf::from("/var/lib/hostkit"),
                Trust { uids: vec![0] },
                ids,
                0o755,
            ),
            Scope::User => {
                let home = home.clone().ok_or_else(|| {
                    Error::Environment("user scope needs HOME set to an absolute path".into())
                })?;
                let state = abs_env("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state"));
                let host_home = join(&root, &home);
                let (trust, owner) = match std::fs::metadata(&host_home) {
                    Ok(m) => (
                        Trust {
                            uids: dedup(vec![0, m.uid()]),
                        },
                        (m.uid(), m.gid()),
                    ),
                    Err(_) => (
                        Trust {
                            uids: dedup(vec![0, ids.0]),
                        },
                        ids,
                    ),
                };
                (state.join("hostkit"), trust, owner, 0o700)
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
            state_dir: join(&root, &state),
            root,
            live,
            scope,
            vars,
            trust,
            owner,
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

    /// The host path of a logical path, with trusted symbolic links resolved.
    pub fn resolve(&self, logical: &Path) -> Result<PathBuf> {
        fsutil::resolve(&self.root, logical, &self.trust)
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

fn dedup(mut v: Vec<u32>) -> Vec<u32> {
    v.sort_unstable();
    v.dedup();
    v
}
