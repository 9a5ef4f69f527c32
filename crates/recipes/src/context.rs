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
    /// `--user NAME`: in user scope, configure this user's home (from the passwd database:
    /// the root's `etc/passwd` under `--root`). Without it, root run through `sudo` or `pkexec`
    /// configures the invoking user's home (see `Account`).
    pub user: Option<String>,
}

/// How the user of a user-scope run was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// `--user NAME`.
    Option,
    /// `SUDO_UID`/`SUDO_USER` (root run through sudo).
    Sudo,
    /// `PKEXEC_UID` (root run through pkexec).
    Pkexec,
}

impl Via {
    /// How it is shown.
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Option => "--user",
            Via::Sudo => "SUDO_USER/SUDO_UID",
            Via::Pkexec => "PKEXEC_UID",
        }
    }
}

/// A user account from the passwd database: whose home a user-scope run configures when it is
/// not simply the `HOME` of whoever runs hostkit.
///
/// Root run through `sudo` or `pkexec` still means the person who ran it: their account comes
/// from `SUDO_UID`/`SUDO_USER` or `PKEXEC_UID` (or `--user NAME`), looked up in the passwd
/// database (the root's `etc/passwd` under `--root`), never from `HOME`, which `sudo` may
/// have left pointing anywhere. These variables are data: a name that is not a plain user
/// name, a uid that is not a number or not in the database, or a name and uid that disagree
/// are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    /// The user name.
    pub name: String,
    /// The uid.
    pub uid: u32,
    /// The primary gid.
    pub gid: u32,
    /// The home (absolute, inside the root).
    pub home: PathBuf,
    /// How it was chosen.
    pub via: Via,
}

/// True for a plain user name (what `useradd` accepts by default, plus `.`): no `/`, no
/// `..`, not starting with `-`.
fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name != "."
        && name != ".."
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// One `etc/passwd` entry: name, uid, gid, home.
fn passwd_entries(text: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    text.lines().filter_map(|line| {
        let f: Vec<&str> = line.split(':').collect();
        if f.len() != 7 {
            return None;
        }
        Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?, f[5]))
    })
}

/// The passwd database: the live one (NSS) or a root's `etc/passwd`.
enum Passwd {
    Live,
    File(PathBuf, String),
}

impl Passwd {
    fn open(root: &Path, live: bool) -> Result<Passwd> {
        if live {
            return Ok(Passwd::Live);
        }
        let path = fsutil::resolve(root, Path::new("/etc/passwd"))?;
        let text = match fsutil::read(&path)? {
            Some(e) => {
                String::from_utf8(e.bytes).map_err(|_| Error::NotText { path: path.clone() })?
            }
            None => String::new(),
        };
        Ok(Passwd::File(path, text))
    }

    fn where_(&self) -> String {
        match self {
            Passwd::Live => "the passwd database".into(),
            Passwd::File(p, _) => p.display().to_string(),
        }
    }

    fn by_name(&self, name: &str) -> Option<(String, u32, u32, PathBuf)> {
        match self {
            Passwd::Live => nix::unistd::User::from_name(name)
                .ok()
                .flatten()
                .map(|u| (u.name, u.uid.as_raw(), u.gid.as_raw(), u.dir)),
            Passwd::File(_, text) => passwd_entries(text)
                .find(|e| e.0 == name)
                .map(|(n, u, g, h)| (n.to_string(), u, g, PathBuf::from(h))),
        }
    }

    fn by_uid(&self, uid: u32) -> Option<(String, u32, u32, PathBuf)> {
        match self {
            Passwd::Live => nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten()
                .map(|u| (u.name, u.uid.as_raw(), u.gid.as_raw(), u.dir)),
            Passwd::File(_, text) => passwd_entries(text)
                .find(|e| e.1 == uid)
                .map(|(n, u, g, h)| (n.to_string(), u, g, PathBuf::from(h))),
        }
    }
}

/// The user a user-scope run configures, when it is not the `HOME` of whoever runs hostkit:
/// `--user NAME`, or the person behind `sudo`/`pkexec` when root runs it. `None`: the runner's
/// own `HOME`, as before.
fn account(opts: &Options, host: &dyn Host, root: &Path, live: bool) -> Result<Option<Account>> {
    let runner = host.ids().0;
    let refuse = |msg: String| Err(Error::Environment(msg));
    let make = |(name, uid, gid, home): (String, u32, u32, PathBuf), via: Via| Account {
        name,
        uid,
        gid,
        home,
        via,
    };
    if let Some(name) = &opts.user {
        if !valid_user_name(name) {
            return refuse(format!("--user {name:?}: not a user name"));
        }
        let db = Passwd::open(root, live)?;
        let Some(entry) = db.by_name(name) else {
            return refuse(format!("--user {name}: no such user in {}", db.where_()));
        };
        if runner != 0 && entry.1 != runner {
            return refuse(format!(
                "--user {name}: only root can configure another user's home (run it as {name}, or with sudo)"
            ));
        }
        return Ok(Some(make(entry, Via::Option)));
    }
    if runner != 0 {
        return Ok(None);
    }
    let hint = "name the user with --user NAME (or run without sudo/pkexec for root's own home)";
    let parse_uid = |var: &str, v: String| -> Result<u32> {
        v.parse::<u32>()
            .map_err(|_| Error::Environment(format!("{var}={v:?} is not a uid; {hint}")))
    };
    // Who ran sudo/pkexec: a uid (live) and a name.
    let (via, uid, name) = if let Some(v) = host.env("PKEXEC_UID") {
        (Via::Pkexec, Some(parse_uid("PKEXEC_UID", v)?), None)
    } else {
        let uid = match host.env("SUDO_UID") {
            Some(v) => Some(parse_uid("SUDO_UID", v)?),
            None => None,
        };
        let name = host.env("SUDO_USER");
        if uid.is_none() && name.is_none() {
            return Ok(None);
        }
        (Via::Sudo, uid, name)
    };
    if let Some(name) = &name
        && !valid_user_name(name)
    {
        return refuse(format!("SUDO_USER={name:?} is not a user name; {hint}"));
    }
    if uid == Some(0) || (name.as_deref() == Some("root") && uid.is_none()) {
        // Root ran sudo: root's own home, as asked.
        return Ok(None);
    }
    let host_db = Passwd::Live;
    if !live {
        // Under --root: the image's account of the invoking user's name (SUDO_UID and
        // PKEXEC_UID are this host's uids; uids differ between systems).
        let name = match (name, uid) {
            (Some(name), _) => name,
            (None, Some(uid)) => match host_db.by_uid(uid) {
                Some(e) => e.0,
                None => {
                    return refuse(format!(
                        "{}: uid {uid} is not in {}; {hint}",
                        via.as_str(),
                        host_db.where_()
                    ));
                }
            },
            (None, None) => return Ok(None),
        };
        let db = Passwd::open(root, live)?;
        return match db.by_name(&name) {
            Some(e) => Ok(Some(make(e, via))),
            None => refuse(format!(
                "{} names {name}, who has no account in {}; name the image's user with --user NAME, or use --scope system",
                via.as_str(),
                db.where_()
            )),
        };
    }
    // The invoking user, on this host: the uid is authoritative, the name must agree.
    let entry = match (uid, &name) {
        (Some(uid), name) => {
            let Some(entry) = host_db.by_uid(uid) else {
                return refuse(format!(
                    "{}: uid {uid} is not in {}; {hint}",
                    via.as_str(),
                    host_db.where_()
                ));
            };
            if let Some(name) = name
                && *name != entry.0
            {
                return refuse(format!(
                    "SUDO_USER={name} but SUDO_UID={uid} is {} in {}; {hint}",
                    entry.0,
                    host_db.where_()
                ));
            }
            entry
        }
        (None, Some(name)) => match host_db.by_name(name) {
            Some(e) => e,
            None => {
                return refuse(format!(
                    "SUDO_USER={name} is not in {}; {hint}",
                    host_db.where_()
                ));
            }
        },
        (None, None) => return Ok(None),
    };
    if entry.1 == 0 {
        return Ok(None);
    }
    Ok(Some(make(entry, via)))
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
    /// In user scope, the account whose home it is, when hostkit configures someone else's
    /// home (`--user`, or root run through sudo/pkexec); `None`: the runner's own `HOME`.
    pub account: Option<Account>,
    /// The state directory on the host (resolved; see `crate::state`).
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
        let account = match scope {
            Scope::User => account(opts, host, &root, live)?,
            Scope::System if opts.user.is_some() => {
                return Err(Error::Environment(format!(
                    "--user is for user scope; recipe {} runs in system scope here",
                    recipe.name
                )));
            }
            Scope::System => None,
        };
        // Someone else's home: its paths come from the passwd database, never from this
        // process's HOME or XDG variables (sudo's, or root's own).
        let home = match &account {
            Some(a) => {
                if !a.home.is_absolute() {
                    return Err(Error::Environment(format!(
                        "user {}: home `{}` in the passwd database is not an absolute path",
                        a.name,
                        a.home.display()
                    )));
                }
                Some(a.home.clone())
            }
            None => abs_env("HOME"),
        };
        let xdg = |name: &str| match &account {
            Some(_) => None,
            None => abs_env(name),
        };
        let mut vars = BTreeMap::new();
        vars.insert("recipe".to_string(), recipe.name.clone());
        let ids = host.ids();
        let (state, owner, dir_mode, home_info) = match scope {
            Scope::System => (PathBuf::from("/var/lib/hostkit"), ids, 0o755, None),
            Scope::User => {
                let home = home.clone().ok_or_else(|| {
                    Error::Environment("user scope needs HOME set to an absolute path".into())
                })?;
                let state = xdg("XDG_STATE_HOME").unwrap_or_else(|| home.join(".local/state"));
                let host_home = fsutil::resolve(&root, &home)?;
                let owner = match (&account, std::fs::metadata(&host_home)) {
                    (Some(a), Ok(m)) if m.is_dir() && m.uid() == a.uid => (a.uid, a.gid),
                    (Some(a), Ok(m)) if m.is_dir() => {
                        return Err(Error::Environment(format!(
                            "the home {} of user {} is owned by uid {}, not by {} (uid {}); refusing to write {}'s files there",
                            host_home.display(),
                            a.name,
                            m.uid(),
                            a.name,
                            a.uid,
                            a.name
                        )));
                    }
                    (Some(a), _) => {
                        return Err(Error::Environment(format!(
                            "the home {} of user {} (from {}) is not a directory",
                            host_home.display(),
                            a.name,
                            a.via.as_str()
                        )));
                    }
                    (None, Ok(m)) => (m.uid(), m.gid()),
                    (None, Err(_)) => ids,
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
            let config = xdg("XDG_CONFIG_HOME").unwrap_or_else(|| home.join(".config"));
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
            account,
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
        t.render(|name| self.vars.get(name))
    }

    /// Renders a path template: it must be absolute (inside the root).
    pub fn path(&self, t: &Template) -> Result<PathBuf> {
        let p = self.render(t);
        if p.starts_with('/') {
            Ok(PathBuf::from(p))
        } else {
            Err(Error::Environment(format!(
                "path `{}` is not absolute after substitution (is HOME set?)",
                t.as_str()
            )))
        }
    }

    /// The host path of a logical path (see `fsutil::resolve`); in user scope it must stay
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::fake::FakeHost;

    #[test]
    fn user_names_are_plain() {
        for ok in ["alice", "a.b", "build-bot", "u_1"] {
            assert!(valid_user_name(ok), "{ok}");
        }
        for bad in [
            "",
            ".",
            "..",
            "../../root",
            "a/b",
            "-x",
            "a b",
            "a:b",
            "a\nb",
            "ä",
        ] {
            assert!(!valid_user_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn passwd_lines_that_are_not_seven_fields_or_have_bad_ids_are_skipped() {
        let text = "root:x:0:0:root:/root:/bin/bash\nbroken:x:12\nneg:x:-1:0::/h:/bin/sh\nalice:x:1000:1001:A:/home/alice:/bin/sh\n";
        let all: Vec<_> = passwd_entries(text).collect();
        assert_eq!(
            all,
            [
                ("root", 0, 0, "/root"),
                ("alice", 1000, 1001, "/home/alice")
            ]
        );
    }

    #[test]
    fn sudo_under_root_picks_the_images_account_by_name() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nalice:x:4242:4242::/home/alice:/bin/sh\n",
        )
        .unwrap();
        let root = std::fs::canonicalize(dir.path()).unwrap();
        let mut host = FakeHost::default();
        host.env.insert("SUDO_USER".into(), "alice".into());
        host.env.insert("SUDO_UID".into(), "1000".into());
        let opts = Options::default();
        if host.ids().0 == 0 {
            let a = account(&opts, &host, &root, false).unwrap().unwrap();
            assert_eq!((a.name.as_str(), a.uid, a.via), ("alice", 4242, Via::Sudo));
            assert_eq!(a.home, Path::new("/home/alice"));
            host.env.insert("SUDO_USER".into(), "../../root".into());
            let e = account(&opts, &host, &root, false).unwrap_err().to_string();
            assert!(e.contains("is not a user name"), "{e}");
        } else {
            // Not root: sudo variables mean nothing (the kernel already limits the run).
            assert_eq!(account(&opts, &host, &root, false).unwrap(), None);
        }
        let opts = Options {
            user: Some("nosuch".into()),
            ..Options::default()
        };
        let e = account(&opts, &host, &root, false).unwrap_err().to_string();
        assert!(e.contains("--user nosuch: no such user in"), "{e}");
    }
}
