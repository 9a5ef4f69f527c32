//! Probes: report-only looks at the host, used by `kind = "probe"` steps (what a probe found)
//! and by `when.probe` guards (an objection that makes a step not applicable).
//!
//! A probe reads files under the root and may run bounded, read-only commands through the
//! [`Host`] (`modprobe -c`, `ps`, `setpriv … id -G`); it never writes anything, so the planner
//! stays free of side effects. Live probes (the running kernel, the running C library, child
//! processes with large group lists) run only on the live system and say so under `--root`.
//! One module per subject; [`confdirs`] is the shared reader for `*.d` configuration
//! directories with same-name overrides (modprobe.d, udev rules).

pub mod confdirs;
pub mod ngroups;
pub mod procps;
pub mod rtl8139;
pub mod udisks2;

use std::path::Path;

use crate::context::{Context, join};
use crate::error::{Error, Result};
use crate::host::{Cmd, Host, Output, not_started};
use crate::steps::Outcome;

/// Every probe a `probe` step may name.
pub const PROBES: &[&str] = &[
    "ngroups-kernel",
    "ngroups-libc",
    "ngroups-members",
    "ngroups-nfs",
    "ngroups-live",
    "procps-version",
    "procps-live",
    "rtl8139-card",
    "rtl8139-kernel-log",
    "rtl8139-modprobe",
    "rtl8139-pcimap",
    "udisks2-package",
    "udisks2-udev-rules",
];

/// Every guard a `when.probe` may name.
pub const GUARDS: &[&str] = &["rtl8139-no-cplus", "udisks2-needs-rule"];

/// Runs the probe called `name`.
pub fn run(name: &str, ctx: &Context, host: &dyn Host) -> Result<Outcome> {
    match name {
        "ngroups-kernel" => ngroups::kernel(ctx),
        "ngroups-libc" => Ok(ngroups::libc(ctx)),
        "ngroups-members" => ngroups::members(ctx),
        "ngroups-nfs" => ngroups::nfs(ctx),
        "ngroups-live" => ngroups::live(ctx, host),
        "procps-version" => Ok(procps::version(ctx, host)),
        "procps-live" => procps::live(ctx, host),
        "rtl8139-card" => Ok(rtl8139::card(ctx)),
        "rtl8139-kernel-log" => rtl8139::kernel_log(ctx, host),
        "rtl8139-modprobe" => rtl8139::modprobe(ctx, host),
        "rtl8139-pcimap" => rtl8139::pcimap(ctx),
        "udisks2-package" => Ok(udisks2::package(ctx, host)),
        "udisks2-udev-rules" => udisks2::udev_rules(ctx),
        _ => Err(unknown(name, PROBES)),
    }
}

/// Runs the guard called `name`: `Some(objection)` when the step must not apply here.
pub fn guard(name: &str, ctx: &Context, host: &dyn Host) -> Result<Option<String>> {
    match name {
        "rtl8139-no-cplus" => Ok(rtl8139::no_cplus(ctx)),
        "udisks2-needs-rule" => Ok(udisks2::needs_rule(ctx, host)),
        _ => Err(unknown(name, GUARDS)),
    }
}

fn unknown(name: &str, known: &[&str]) -> Error {
    Error::UnknownProbe {
        name: name.to_string(),
        known: known.join(", "),
    }
}

/// The longest a probe's child process may run, in seconds (`timeout -k 2 N`).
pub const TIMEOUT_SECS: u32 = 20;

/// A command bounded in time with coreutils `timeout` (killed with SIGKILL 2 s after SIGTERM).
pub fn bounded<I, S>(argv: I) -> Cmd
where
    I: IntoIterator<Item = S>,
    S: Into<String>,
{
    let mut words: Vec<String> = vec![
        "timeout".into(),
        "-k".into(),
        "2".into(),
        TIMEOUT_SECS.to_string(),
    ];
    words.extend(argv.into_iter().map(Into::into));
    Cmd::new(words)
}

/// What running a probe command gave: its output, or why it could not run.
pub enum Ran {
    /// It ran (whatever its exit status).
    Done(Output),
    /// It could not start (not installed) or timed out, with why.
    Unavailable(String),
}

/// Runs a probe command; a failure to start is [`Ran::Unavailable`], not an error.
pub fn try_run(host: &dyn Host, cmd: &Cmd) -> Result<Ran> {
    match host.run(cmd) {
        Ok(out) => {
            // coreutils `timeout` exits 127 when it cannot run the program.
            if out.code == Some(127) {
                Ok(Ran::Unavailable(out.stderr.trim().to_string()))
            } else if out.code == Some(124) || out.code.is_none() {
                // The program's name: the command line may hold a thousand group ids.
                let program = cmd.argv.get(4).map_or("the probe", String::as_str);
                Ok(Ran::Unavailable(format!(
                    "{program} timed out after {TIMEOUT_SECS} s"
                )))
            } else {
                Ok(Ran::Done(out))
            }
        }
        Err(e) if not_started(&e) => Ok(Ran::Unavailable(e.to_string())),
        Err(e) => Err(e),
    }
}

/// A file under the root as (lossy) text; `None` when it does not exist.
pub fn read_text(ctx: &Context, logical: &str) -> Result<Option<String>> {
    read_host_text(&join(&ctx.root, Path::new(logical)))
}

/// A host file as (lossy) text; `None` when it does not exist.
pub fn read_host_text(path: &Path) -> Result<Option<String>> {
    match std::fs::read(path) {
        Ok(bytes) => Ok(Some(String::from_utf8_lossy(&bytes).into_owned())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => Ok(None),
        Err(e) => Err(Error::io(path, e)),
    }
}

/// `n` supplementary group ids for live probes: 60000, 60001, … (inside the 16-bit range a
/// container's id map usually covers; no group needs to exist).
pub fn probe_gids(n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| 60000 + i).collect()
}

/// The root-relative form of a logical path, as shown in findings: `etc/group`.
pub fn shown(logical: &str) -> &str {
    logical.trim_start_matches('/')
}

/// Runs `argv` in a child process with `n` supplementary groups ([`probe_gids`]), through
/// util-linux `setpriv --groups`, bounded in time. `Ok(Err(outcome))` when it cannot run here
/// (not live, not root, no setpriv) or the child failed; otherwise the gids and its output.
pub fn in_groups(
    ctx: &Context,
    host: &dyn Host,
    n: usize,
    argv: &[&str],
) -> Result<std::result::Result<(Vec<u32>, Output), Outcome>> {
    if let Err(why) = live_root(ctx, host) {
        return Ok(Err(Outcome::NotApplicable(why)));
    }
    let gids = probe_gids(n);
    let list = gids
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(",");
    let mut words = vec!["setpriv", "--groups", &list, "--"];
    words.extend_from_slice(argv);
    let out = match try_run(host, &bounded(words))? {
        Ran::Done(out) => out,
        Ran::Unavailable(why) => {
            return Ok(Err(Outcome::NotApplicable(format!(
                "setpriv (util-linux) or {} could not run: {why}",
                argv.first().unwrap_or(&"the command")
            ))));
        }
    };
    if !out.success() {
        return Ok(Err(Outcome::Manual(format!(
            "a child process with {n} supplementary groups (`setpriv --groups …`) failed: {}",
            out.stderr.trim()
        ))));
    }
    Ok(Ok((gids, out)))
}

/// True when the probe may start children with other group lists: the live system, as root.
pub fn live_root(ctx: &Context, host: &dyn Host) -> std::result::Result<(), String> {
    if !ctx.live {
        return Err(
            "live probe, not run under --root: it starts a child process on this host".into(),
        );
    }
    if host.ids().0 != 0 {
        return Err(
            "live probe, needs root (CAP_SETGID) to give a child a large group list; run as root"
                .into(),
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::Options;
    use crate::host::fake::FakeHost;
    use crate::plan::{Effect, Status, plan};
    use crate::recipe::Catalog;

    fn root_with(files: &[(&str, &str)]) -> tempfile::TempDir {
        let root = tempfile::tempdir().unwrap();
        for (path, text) in files {
            let p = root.path().join(path);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, text).unwrap();
        }
        root
    }

    fn planned(name: &str, root: &Path, host: &FakeHost, sets: &[&str]) -> crate::plan::Plan {
        let catalog = Catalog::load(&[] as &[&Path]).unwrap();
        let recipe = catalog.get(name).unwrap();
        let opts = Options {
            root: Some(root.to_path_buf()),
            sets: sets.iter().map(|s| s.to_string()).collect(),
            ..Options::default()
        };
        let ctx = Context::new(recipe, &opts, host).unwrap();
        plan(recipe, &ctx, host).unwrap()
    }

    #[test]
    fn the_udev_rule_carries_a_reload_that_is_only_reported_under_root() {
        let root = root_with(&[("etc/os-release", "ID=arch\n")]);
        let host = FakeHost::default();
        let p = planned("udisks2-media", root.path(), &host, &[]);
        let rule = &p.steps[1];
        assert_eq!(
            (rule.id.as_str(), rule.status),
            ("shared-rule", Status::WouldChange)
        );
        let Effect::Reload(reload) = &rule.effects[1] else {
            panic!("expected a reload after the file: {:?}", rule.effects)
        };
        assert_eq!(reload.cmd.display(), "udevadm control --reload");
        assert!(!reload.run);
        // Nothing but probes ran: no udevadm while planning.
        assert!(
            host.calls
                .lock()
                .unwrap()
                .iter()
                .all(|c| !c.contains("udevadm"))
        );
    }

    #[test]
    fn kmod_disagreeing_with_the_directory_reading_needs_a_person() {
        let root = root_with(&[("etc/modprobe.d/a.conf", "blacklist 8139cp\n")]);
        let mut host = FakeHost::default();
        let conf = root.path().join("etc/modprobe.d").display().to_string();
        host.answer(
            &format!("timeout -k 2 20 modprobe -C {conf} -c"),
            0,
            "install 8139cp /bin/true\n# End of configuration files. Dumping indexes now:\nblacklist 8139cp\n",
        );
        let p = planned("rtl8139", root.path(), &host, &[]);
        let config = p.steps.iter().find(|s| s.id == "modprobe-config").unwrap();
        assert_eq!(config.status, Status::Manual);
        assert!(
            config
                .reason
                .as_deref()
                .unwrap()
                .ends_with("kmod's `modprobe -c` disagrees with this reading; it says:\ninstall 8139cp /bin/true"),
            "{:?}",
            config.reason
        );
        // The guard, `when.param` and `when.exists`: one drop-in step applies, legacy does not.
        let status = |id: &str| p.steps.iter().find(|s| s.id == id).unwrap().status;
        assert_eq!(status("blacklist"), Status::WouldChange);
        assert_eq!(status("install-false"), Status::NotApplicable);
        assert_eq!(status("legacy-pcimapfile"), Status::NotApplicable);
    }
}
