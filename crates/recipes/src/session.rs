//! `gsettings` for the home being configured: run as its user, through a backend the user's
//! next desktop session reads, and believed only when the value reads back.
//!
//! [`SessionHost`] wraps the real [`Host`]; every `gsettings` command the engine runs (the
//! plan's `get`, apply's `set`, revert's `set`/`reset`) goes through it:
//!
//! * **Whose**: the home's user. When hostkit (root) configures someone else's home (`--user`,
//!   sudo, pkexec, or a `HOME` owned by another uid), `gsettings` runs as that user
//!   (`setpriv --reuid --regid --init-groups`) with a clean environment built from the passwd
//!   database: `HOME`, `USER`, `LOGNAME`, `PATH`, and that user's runtime directory and bus.
//!   It never runs as root in a user's home (dconf-service would create root-owned files there).
//! * **Runtime directory**: dconf keeps a shared-memory flag file in `$XDG_RUNTIME_DIR/dconf`,
//!   and without `XDG_RUNTIME_DIR` glib falls back to `~/.cache`, so even a `gsettings get`
//!   would leave `~/.cache/dconf/user` behind. The user's own (`$XDG_RUNTIME_DIR`, or
//!   `/run/user/UID` when it is a 0700 directory the user owns) is used, else a private
//!   temporary one, removed afterwards.
//! * **Which bus**: a write through dconf needs dconf-service on the user's session bus.
//!   Without one (ssh without a user bus, `sudo -u`, cron), `gsettings set` prints "failed to
//!   commit changes to dconf" and still exits 0. So: the user's bus when it answers (`gdbus`
//!   `GetId`), else a private bus for the one command (`dbus-run-session -- gsettings …`),
//!   whose dconf-service writes the same `~/.config/dconf/user` the next session reads.
//! * **Verified**: after every `set`/`reset`, a fresh `gsettings get` (which reads the database
//!   file itself) must show the wanted value (the default, for `reset`); otherwise the command
//!   fails, naming what it read back: hostkit never reports a change that did not happen.
//! * **Side effects**: a write on a home without a dconf database creates
//!   `~/.config/dconf/user` (and `~/.config/dconf`, even `~/.config`). Before apply's first
//!   write, what is missing of these is recorded in the recipe's state directory
//!   (`dconf-created.json`, owned by whoever runs hostkit, like the journal); after revert's
//!   write, the database is removed only when it is in that record and holds no key at all
//!   (`dconf dump /` through a profile with just `user-db:user`), then the recorded
//!   directories that are empty. A database the user had is never removed.
//!
//! Under `--root` there is no live session: everything passes through unchanged.

use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use crate::context::{Context, Options};
use crate::error::{Error, Result};
use crate::fsutil;
use crate::host::{Cmd, Host, Output};
use crate::recipe::{Recipe, Scope};
use crate::report::Action;

/// The user `gsettings` runs as, when not hostkit's own.
#[derive(Debug, Clone)]
struct Other {
    uid: u32,
    gid: u32,
    name: Option<String>,
}

/// The runtime directory handed to `gsettings`.
#[derive(Debug)]
struct Runtime {
    path: PathBuf,
    /// Created by hostkit for this run: removed on drop.
    private: bool,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.private {
            let _ = std::fs::remove_dir_all(&self.path);
        }
    }
}

/// How writes reach dconf.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Bus {
    /// A GSettings backend that needs no bus (`GSETTINGS_BACKEND=keyfile`, …).
    NotNeeded,
    /// The user's session bus, which answered.
    Session(String),
    /// None answers: a private one per command (`dbus-run-session`).
    Private(String),
}

/// The record file in the recipe's state directory.
const RECORD: &str = "dconf-created.json";

/// A [`Host`] that runs `gsettings` for the configured home (see the module documentation).
pub struct SessionHost<'h> {
    inner: &'h dyn Host,
    action: Action,
    ctx: Context,
    other: Option<Other>,
    // Shared by the steps a plan checks at the same time: a runtime directory two of them
    // made at once is made twice, and the one not kept is removed at once (Runtime's drop).
    runtime: OnceLock<Runtime>,
    bus: OnceLock<Bus>,
    notes: Mutex<Vec<String>>,
}

fn is_socket(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket())
}

fn io(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::io(path, e)
}

impl<'h> SessionHost<'h> {
    /// Wraps `inner` for a command on `recipe` with these options.
    pub fn new(
        recipe: &Recipe,
        opts: &Options,
        inner: &'h dyn Host,
        action: Action,
    ) -> Result<SessionHost<'h>> {
        let ctx = Context::new(recipe, opts, inner)?;
        let runner = inner.ids().0;
        let other = match (&ctx.account, &ctx.home) {
            _ if runner != 0 || ctx.scope != Scope::User => None,
            (Some(a), _) if a.uid != runner => Some(Other {
                uid: a.uid,
                gid: a.gid,
                name: Some(a.name.clone()),
            }),
            (None, Some(h)) if h.uid != runner => Some(Other {
                uid: h.uid,
                gid: ctx.owner.1,
                name: nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(h.uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name),
            }),
            _ => None,
        };
        Ok(SessionHost {
            inner,
            action,
            ctx,
            other,
            runtime: OnceLock::new(),
            bus: OnceLock::new(),
            notes: Mutex::new(Vec::new()),
        })
    }

    /// What it did that a person should know (which bus, what it removed), for stderr.
    pub fn notes(&self) -> Vec<String> {
        self.notes.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The context it was built with.
    pub fn context(&self) -> &Context {
        &self.ctx
    }

    fn note(&self, text: String) {
        let mut notes = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        if !notes.contains(&text) {
            notes.push(text);
        }
    }

    fn home(&self) -> &Path {
        self.ctx
            .home
            .as_ref()
            .map_or(Path::new("/"), |h| h.logical.as_path())
    }

    fn who(&self) -> String {
        match &self.other {
            Some(Other {
                name: Some(name), ..
            }) => name.clone(),
            Some(o) => format!("uid {}", o.uid),
            None => "the current user".into(),
        }
    }

    fn runtime(&self) -> Result<&Path> {
        if let Some(r) = self.runtime.get() {
            return Ok(&r.path);
        }
        let own = match &self.other {
            None => self
                .inner
                .env("XDG_RUNTIME_DIR")
                .filter(|v| v.starts_with('/'))
                .map(PathBuf::from)
                .filter(|p| p.is_dir()),
            Some(o) => {
                let p = PathBuf::from(format!("/run/user/{}", o.uid));
                std::fs::symlink_metadata(&p)
                    .ok()
                    .filter(|m| m.is_dir() && m.uid() == o.uid && m.mode() & 0o077 == 0)
                    .map(|_| p)
            }
        };
        let runtime = match own {
            Some(path) => Runtime {
                path,
                private: false,
            },
            None => {
                let path = nix::unistd::mkdtemp(Path::new("/tmp/hostkit-runtime-XXXXXX"))
                    .map_err(|e| Error::io(Path::new("/tmp"), e.into()))?;
                let runtime = Runtime {
                    path: path.clone(),
                    private: true,
                };
                if let Some(o) = &self.other {
                    nix::unistd::chown(
                        &path,
                        Some(nix::unistd::Uid::from_raw(o.uid)),
                        Some(nix::unistd::Gid::from_raw(o.gid)),
                    )
                    .map_err(|e| Error::io(&path, e.into()))?;
                }
                runtime
            }
        };
        Ok(&self.runtime.get_or_init(|| runtime).path)
    }

    /// `argv` as the home's user, with its runtime directory, `env` and the bus.
    fn launch(&self, argv: &[String], env: &[(String, String)], bus: Option<&Bus>) -> Result<Cmd> {
        let runtime = self.runtime()?.display().to_string();
        let mut words: Vec<String> = Vec::new();
        let mut vars: Vec<(String, String)> = vec![("XDG_RUNTIME_DIR".into(), runtime)];
        if let Some(Bus::Session(addr)) = bus {
            vars.push(("DBUS_SESSION_BUS_ADDRESS".into(), addr.clone()));
        }
        vars.extend(env.iter().cloned());
        if let Some(o) = &self.other {
            let home = self.home().display().to_string();
            words.extend([
                "setpriv".to_string(),
                format!("--reuid={}", o.uid),
                format!("--regid={}", o.gid),
            ]);
            words.push(if o.name.is_some() {
                "--init-groups".into()
            } else {
                "--clear-groups".into()
            });
            words.extend(["env".to_string(), "-i".into()]);
            let name = o.name.clone().unwrap_or_else(|| o.uid.to_string());
            for (k, v) in [
                ("HOME", home),
                ("USER", name.clone()),
                ("LOGNAME", name),
                ("PATH", "/usr/local/bin:/usr/bin:/bin".into()),
            ]
            .into_iter()
            .chain(vars.iter().map(|(k, v)| (k.as_str(), v.clone())))
            {
                words.push(format!("{k}={v}"));
            }
            vars.clear();
        }
        // Nothing here may block for ever (a hung bus, a stuck dconf-service).
        words.extend(["timeout", "-k", "5", "60"].map(String::from));
        if let Some(Bus::Private(_)) = bus {
            words.extend(["dbus-run-session".to_string(), "--".into()]);
        }
        words.extend(argv.iter().cloned());
        let mut cmd = Cmd::new(words);
        for (k, v) in &vars {
            cmd = cmd.env(k, v);
        }
        Ok(cmd)
    }

    /// How writes reach dconf (decided once, at the first write).
    fn bus(&self) -> Result<&Bus> {
        if let Some(b) = self.bus.get() {
            return Ok(b);
        }
        let bus = self.find_bus()?;
        match &bus {
            Bus::Private(why) => self.note(format!(
                "gsettings: {why}; each write goes through a private bus (dbus-run-session), whose dconf-service writes the database the next session reads, and is read back"
            )),
            Bus::Session(addr) => self.note(format!(
                "gsettings: writing through {}'s session bus ({addr}), read back after each write",
                self.who()
            )),
            Bus::NotNeeded => {}
        }
        Ok(self.bus.get_or_init(|| bus))
    }

    fn find_bus(&self) -> Result<Bus> {
        if self.other.is_none()
            && let Some(backend) = self.inner.env("GSETTINGS_BACKEND")
            && !backend.is_empty()
            && backend != "dconf"
        {
            return Ok(Bus::NotNeeded);
        }
        let runtime = self.runtime()?.to_path_buf();
        let address = match &self.other {
            None => self
                .inner
                .env("DBUS_SESSION_BUS_ADDRESS")
                .filter(|a| !a.is_empty())
                .or_else(|| {
                    is_socket(&runtime.join("bus"))
                        .then(|| format!("unix:path={}", runtime.join("bus").display()))
                }),
            Some(o) => {
                let socket = runtime.join("bus");
                let owned = std::fs::symlink_metadata(&socket).is_ok_and(|m| m.uid() == o.uid);
                (is_socket(&socket) && owned).then(|| format!("unix:path={}", socket.display()))
            }
        };
        let Some(address) = address else {
            return Ok(Bus::Private(format!(
                "no session bus is reachable for {} (no DBUS_SESSION_BUS_ADDRESS, no {}/bus)",
                self.who(),
                runtime.display()
            )));
        };
        let probe = self.launch(
            &[
                "gdbus",
                "call",
                "--session",
                "--dest",
                "org.freedesktop.DBus",
                "--object-path",
                "/org/freedesktop/DBus",
                "--method",
                "org.freedesktop.DBus.GetId",
            ]
            .map(String::from),
            &[],
            Some(&Bus::Session(address.clone())),
        )?;
        match self.inner.run(&probe) {
            Ok(out) if out.success() => Ok(Bus::Session(address)),
            Ok(out) => Ok(Bus::Private(format!(
                "{}'s session bus {address} does not answer ({})",
                self.who(),
                out.stderr.trim()
            ))),
            Err(e) => Ok(Bus::Private(format!(
                "{}'s session bus {address} could not be asked ({e})",
                self.who()
            ))),
        }
    }

    /// `gsettings get SCHEMA KEY` (through the memory backend: the default).
    fn get(&self, schema: &str, key: &str, default: bool) -> Result<Output> {
        let env: Vec<(String, String)> = if default {
            vec![("GSETTINGS_BACKEND".into(), "memory".into())]
        } else {
            Vec::new()
        };
        let argv = ["gsettings", "get", schema, key].map(String::from);
        self.inner.run(&self.launch(&argv, &env, None)?)
    }

    /// A `gsettings set`/`reset`: through the bus, then read back.
    fn write(&self, cmd: &Cmd) -> Result<Output> {
        let (sub, schema, key) = (&cmd.argv[1], &cmd.argv[2], &cmd.argv[3]);
        let failed = |failure: String| Error::Command {
            command: cmd.display(),
            failure,
        };
        if self.action == Action::Apply {
            self.record_before_write()?;
        }
        let bus = self.bus()?.clone();
        let out = self
            .inner
            .run(&self.launch(&cmd.argv, &cmd.env, Some(&bus))?)?;
        if !out.success() {
            return Ok(out);
        }
        let stderr: Vec<&str> = out
            .stderr
            .lines()
            .filter(|l| {
                let l = l.to_ascii_lowercase();
                l.contains("failed to commit") || l.contains("cannot autolaunch")
            })
            .collect();
        if !stderr.is_empty() {
            return Err(failed(format!(
                "exited 0 but did not write: {}",
                stderr.join("; ").trim()
            )));
        }
        let want = if sub == "reset" {
            let d = self.get(schema, key, true)?;
            if !d.success() {
                return Err(failed(format!(
                    "could not read the default back: {}",
                    d.stderr.trim()
                )));
            }
            d.stdout.trim().to_string()
        } else {
            cmd.argv.get(4).cloned().unwrap_or_default()
        };
        let now = self.get(schema, key, false)?;
        let got = now.stdout.trim();
        if !now.success() || got != want {
            return Err(failed(format!(
                "exited 0, but {schema} {key} reads back as `{got}`, not `{want}`: the change did not happen{}",
                if now.stderr.trim().is_empty() {
                    String::new()
                } else {
                    format!(" ({})", now.stderr.trim())
                }
            )));
        }
        Ok(out)
    }

    /// The dconf database and the directories above it, inside the home, outermost first,
    /// the database last: as logical paths and host paths. `None` when the configuration
    /// directory is outside the home or behind a link hostkit does not follow.
    fn dconf_chain(&self) -> Option<Vec<(PathBuf, PathBuf)>> {
        let home = self.home().to_path_buf();
        let config = match &self.other {
            None if self.ctx.account.is_none() => self
                .inner
                .env("XDG_CONFIG_HOME")
                .filter(|v| v.starts_with('/'))
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config")),
            _ => home.join(".config"),
        };
        let db = config.join("dconf/user");
        let rel = db.strip_prefix(&home).ok()?.to_path_buf();
        let mut chain = Vec::new();
        let mut logical = home.clone();
        for c in rel.components() {
            logical.push(c);
            chain.push((logical.clone(), self.ctx.resolve(&logical).ok()?));
        }
        Some(chain)
    }

    fn record_path(&self) -> PathBuf {
        self.ctx.state_dir.join(&self.ctx.recipe).join(RECORD)
    }

    /// The record, when there is one hostkit wrote (owned by whoever runs hostkit, not
    /// group/world-writable: the state directory's own rules); its paths must be plain and
    /// relative (to the home).
    fn read_record(&self) -> Result<Option<Vec<PathBuf>>> {
        let path = self.record_path();
        if crate::state::read_trusted(&path, self.ctx.runner.0)?.is_none() {
            return Ok(None);
        }
        let list = crate::state::read_dirs(&path, self.ctx.runner.0)?;
        for p in &list {
            crate::state::checked_relative(&path, p)?;
        }
        Ok(Some(list))
    }

    /// Before apply's first write: what of the database's path is missing.
    fn record_before_write(&self) -> Result<()> {
        if self.read_record()?.is_some() {
            return Ok(());
        }
        let Some(chain) = self.dconf_chain() else {
            return Ok(());
        };
        let missing: Vec<PathBuf> = chain
            .iter()
            .filter(|(_, host)| std::fs::symlink_metadata(host).is_err())
            .filter_map(|(logical, _)| logical.strip_prefix(self.home()).ok())
            .map(Path::to_path_buf)
            .collect();
        // Only when the database itself is missing: one the user had is never removed.
        if chain
            .last()
            .is_none_or(|(l, _)| !missing.iter().any(|m| self.home().join(m) == *l))
        {
            return Ok(());
        }
        crate::state::save_dirs(&self.record_path(), &missing, self.ctx.runner)
    }

    /// After revert put every entry back: the database apply's write created goes, when it is
    /// empty (once, so that a recipe with several keys is judged after all are reset).
    fn clean_after_revert(&self) -> Result<()> {
        let Some(recorded) = self.read_record()? else {
            return Ok(());
        };
        let record = self.record_path();
        let Some(chain) = self.dconf_chain() else {
            return fsutil::remove(&record);
        };
        // Only paths of the chain count: the record cannot point anywhere else.
        let created: Vec<&(PathBuf, PathBuf)> = chain
            .iter()
            .filter(|(l, _)| recorded.iter().any(|r| self.home().join(r) == *l))
            .collect();
        let Some((db_logical, db)) = chain.last() else {
            return fsutil::remove(&record);
        };
        if created.last().is_some_and(|(l, _)| l == db_logical) {
            let owner = self.ctx.home.as_ref().map_or(self.ctx.runner.0, |h| h.uid);
            let is_ours = std::fs::symlink_metadata(db)
                .is_ok_and(|m| m.file_type().is_file() && m.uid() == owner);
            if is_ours && self.database_is_empty()? {
                fsutil::remove(db)?;
                let dirs: Vec<PathBuf> = created
                    .iter()
                    .filter(|(l, _)| l != db_logical)
                    .map(|(_, h)| h.clone())
                    .collect();
                fsutil::remove_empty_dirs(&dirs, &[owner]);
                self.note(format!(
                    "gsettings: removed {} (created by apply's write, empty again)",
                    db_logical.display()
                ));
            } else if is_ours {
                self.note(format!(
                    "gsettings: kept {} (created by apply's write, but it now holds other settings)",
                    db_logical.display()
                ));
            }
        }
        fsutil::remove(&record)
    }

    /// True when the user's own dconf database holds no key (`dconf dump /` through a profile
    /// with only `user-db:user`, so system databases do not count).
    fn database_is_empty(&self) -> Result<bool> {
        let dir = nix::unistd::mkdtemp(Path::new("/tmp/hostkit-profile-XXXXXX"))
            .map_err(|e| Error::io(Path::new("/tmp"), e.into()))?;
        let profile = dir.join("user");
        let result = (|| {
            std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))
                .map_err(io(&dir))?;
            std::fs::write(&profile, "user-db:user\n").map_err(io(&profile))?;
            std::fs::set_permissions(
                &profile,
                std::os::unix::fs::PermissionsExt::from_mode(0o644),
            )
            .map_err(io(&profile))?;
            let argv = ["dconf", "dump", "/"].map(String::from);
            let env = vec![("DCONF_PROFILE".into(), profile.display().to_string())];
            let out = self.inner.run(&self.launch(&argv, &env, None)?)?;
            Ok(out.success() && out.stdout.trim().is_empty())
        })();
        let _ = std::fs::remove_dir_all(&dir);
        match result {
            Ok(empty) => Ok(empty),
            // No `dconf` (or `timeout`, `setpriv`) to ask: keep the database.
            Err(e) if crate::host::not_started(&e) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

impl Host for SessionHost<'_> {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        let gsettings = cmd.argv.first().is_some_and(|p| p == "gsettings");
        if !gsettings || !self.ctx.live || self.ctx.scope != Scope::User {
            return self.inner.run(cmd);
        }
        if let Some(Other {
            uid, name: None, ..
        }) = &self.other
        {
            // dbus-daemon (and so dconf-service) will not run for a uid without an account,
            // and hostkit will not run it as root in that home: refuse before any change.
            return Err(Error::Environment(format!(
                "the home {} belongs to uid {uid}, which has no account in the passwd database: gsettings cannot run as that user here (use --user NAME, or --scope system)",
                self.home().display()
            )));
        }
        match cmd.argv.get(1).map(String::as_str) {
            Some("set" | "reset") if cmd.argv.len() >= 4 => self.write(cmd),
            _ => self.inner.run(&self.launch(&cmd.argv, &cmd.env, None)?),
        }
    }

    fn env(&self, name: &str) -> Option<String> {
        self.inner.env(name)
    }

    fn reads_package_database(&self) -> bool {
        self.inner.reads_package_database()
    }

    fn finish_revert(&self) -> Result<()> {
        if self.action == Action::Revert {
            self.clean_after_revert()?;
        }
        self.inner.finish_revert()
    }

    fn ids(&self) -> (u32, u32) {
        self.inner.ids()
    }
}
