//! `ngroups`: can a user be in more than 32 groups here? The kernel's limit, the C library's,
//! the largest membership in `/etc/group` + `/etc/passwd`, NFS mounts that carry only 16
//! groups (AUTH_SYS), and, live as root, a child process that really holds 1024 groups.

use std::collections::{BTreeMap, BTreeSet};

use crate::context::Context;
use crate::error::{Error, Result};
use crate::host::Host;
use crate::probes::{in_groups, read_text, shown};
use crate::steps::Outcome;

const NGROUPS_MAX: &str = "/proc/sys/kernel/ngroups_max";
const GROUP: &str = "/etc/group";
const PASSWD: &str = "/etc/passwd";
/// Groups AUTH_SYS (NFS `sec=sys`) carries; the rest are dropped silently.
pub const AUTH_SYS_GROUPS: usize = 16;
/// The 2.4 kernel's limit.
const OLD_LIMIT: u64 = 32;
/// How many groups the live proof gives its child.
const PROOF_GROUPS: u64 = 1024;

/// The kernel's limit from `/proc/sys/kernel/ngroups_max` under the root, if the file is there.
pub fn kernel_limit(ctx: &Context) -> Result<Option<u64>> {
    let Some(text) = read_text(ctx, NGROUPS_MAX)? else {
        return Ok(None);
    };
    let value = text.trim();
    value.parse().map(Some).map_err(|_| Error::Parse {
        file: shown(NGROUPS_MAX).into(),
        line: 1,
        message: format!("expected a number, found `{value}`"),
    })
}

/// Probe `ngroups-kernel`.
pub fn kernel(ctx: &Context) -> Result<Outcome> {
    Ok(match kernel_limit(ctx)? {
        None if ctx.live => {
            Outcome::NotApplicable(format!("{NGROUPS_MAX} is missing: is /proc mounted?"))
        }
        None => Outcome::NotApplicable(format!(
            "{} is not under the root: the kernel's limit is live-host state (copy the running kernel's file there to check it)",
            shown(NGROUPS_MAX)
        )),
        Some(n) if n >= 65536 => Outcome::Ok(format!(
            "kernel limit {n} ({NGROUPS_MAX}): group lists are allocated at run time (Linux 2.6 and later); nothing to raise"
        )),
        Some(n) => Outcome::Ok(format!(
            "kernel limit {n} ({NGROUPS_MAX}): a fixed group array; a user in more groups loses the rest at login (rebuild: hostkit apply ngroups --source KERNEL-TREE --set limit=N)"
        )),
    })
}

/// Probe `ngroups-libc`: `sysconf(_SC_NGROUPS_MAX)` of the running C library (live only).
pub fn libc(ctx: &Context) -> Outcome {
    if !ctx.live {
        return Outcome::NotApplicable(
            "live probe, not run under --root: sysconf(_SC_NGROUPS_MAX) answers for the running C library, not the image's".into(),
        );
    }
    let n = match nix::unistd::sysconf(nix::unistd::SysconfVar::NGROUPS_MAX) {
        Ok(Some(n)) => n,
        _ => return Outcome::NotApplicable("sysconf(_SC_NGROUPS_MAX) gave no answer".into()),
    };
    Outcome::Ok(format!(
        "C library limit {n} (sysconf(_SC_NGROUPS_MAX); glibc reads {NGROUPS_MAX}); it may exceed the kernel's, which refuses more with EINVAL"
    ))
}

/// Users and the number of groups each is in.
#[derive(Debug, Default)]
pub struct Memberships {
    /// User → the group ids they are in (primary included).
    pub users: BTreeMap<String, BTreeSet<u32>>,
    /// Malformed lines, `file:line: what` (skipped).
    pub warnings: Vec<String>,
}

impl Memberships {
    /// The users with the most groups first (ties by name).
    pub fn ranked(&self) -> Vec<(&str, usize)> {
        let mut v: Vec<(&str, usize)> = self
            .users
            .iter()
            .map(|(u, g)| (u.as_str(), g.len()))
            .collect();
        v.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        v
    }

    /// Users in more than `n` groups, most first.
    pub fn above(&self, n: usize) -> Vec<(&str, usize)> {
        self.ranked().into_iter().filter(|(_, c)| *c > n).collect()
    }
}

/// Parses `/etc/passwd` and `/etc/group` texts: each user's groups, primary group included.
/// Malformed lines are skipped with a `file:line` warning; NIS `+`/`-` lines are skipped.
pub fn memberships(passwd: &str, group: &str) -> Memberships {
    let mut m = Memberships::default();
    let fields = |file: &str, text: &str, want: usize, m: &mut Memberships| {
        let mut rows = Vec::new();
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() || line.starts_with('#') {
                continue;
            }
            if line.starts_with('+') || line.starts_with('-') {
                continue;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() != want {
                m.warnings.push(format!(
                    "{file}:{}: expected {want} fields separated by `:`, found {}; line skipped",
                    i + 1,
                    f.len()
                ));
                continue;
            }
            let Ok(id) = f[if want == 7 { 3 } else { 2 }].parse::<u32>() else {
                m.warnings.push(format!(
                    "{file}:{}: group id `{}` is not a number from 0 to 4294967295; line skipped",
                    i + 1,
                    f[if want == 7 { 3 } else { 2 }]
                ));
                continue;
            };
            rows.push((f[0].to_string(), id, f[want - 1].to_string()));
        }
        rows
    };
    for (user, gid, _) in fields(shown(PASSWD), passwd, 7, &mut m) {
        m.users.entry(user).or_default().insert(gid);
    }
    for (_, gid, members) in fields(shown(GROUP), group, 4, &mut m) {
        for user in members.split(',').map(str::trim).filter(|u| !u.is_empty()) {
            m.users.entry(user.to_string()).or_default().insert(gid);
        }
    }
    m
}

fn read_memberships(ctx: &Context) -> Result<Option<Memberships>> {
    let Some(group) = read_text(ctx, GROUP)? else {
        return Ok(None);
    };
    let passwd = read_text(ctx, PASSWD)?.unwrap_or_default();
    Ok(Some(memberships(&passwd, &group)))
}

/// Probe `ngroups-members`.
pub fn members(ctx: &Context) -> Result<Outcome> {
    let Some(m) = read_memberships(ctx)? else {
        return Ok(Outcome::NotApplicable(format!(
            "no {} under the root",
            shown(GROUP)
        )));
    };
    let ranked = m.ranked();
    let mut text = match ranked.first() {
        None => format!("no users in {} or {}", shown(PASSWD), shown(GROUP)),
        Some((user, n)) => format!(
            "largest membership: {user} in {n} group(s), primary included ({} users; {} in more than {AUTH_SYS_GROUPS} groups, {} in more than {OLD_LIMIT})",
            ranked.len(),
            m.above(AUTH_SYS_GROUPS).len(),
            m.above(OLD_LIMIT as usize).len()
        ),
    };
    for w in &m.warnings {
        text.push_str(&format!("\nwarning: {w}"));
    }
    if let (Some(limit), Some((user, n))) = (kernel_limit(ctx)?, ranked.first())
        && *n as u64 > limit
    {
        return Ok(Outcome::Manual(format!(
            "{text}\n{user} is in {n} groups but the kernel allows {limit}: the groups past the {limit}th are lost at login; build a kernel with a larger limit (hostkit apply ngroups --source KERNEL-TREE --set limit=N) or trim the memberships"
        )));
    }
    Ok(Outcome::Ok(text))
}

/// An NFS mount and the security flavours it uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NfsMount {
    /// `server:/export`.
    pub what: String,
    /// The mount point.
    pub on: String,
    /// `sec=` flavours (`sys` when none is given).
    pub sec: Vec<String>,
    /// `file:line` where it was found.
    pub at: String,
}

/// The NFS mounts of a `proc/mounts`- or `fstab`-format text.
pub fn nfs_mounts(file: &str, text: &str) -> Vec<NfsMount> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !matches!(f[2], "nfs" | "nfs4") {
            continue;
        }
        let opts = f.get(3).copied().unwrap_or("defaults");
        let mut sec: Vec<String> = opts
            .split(',')
            .filter_map(|o| o.strip_prefix("sec="))
            .flat_map(|v| v.split(':'))
            .map(str::to_string)
            .collect();
        if sec.is_empty() {
            sec.push("sys".into());
        }
        out.push(NfsMount {
            what: f[0].into(),
            on: f[1].into(),
            sec,
            at: format!("{file}:{}", i + 1),
        });
    }
    out
}

/// Probe `ngroups-nfs`.
pub fn nfs(ctx: &Context) -> Result<Outcome> {
    let mut mounts = Vec::new();
    let mut read = Vec::new();
    for logical in ["/proc/mounts", "/etc/fstab"] {
        if let Some(text) = read_text(ctx, logical)? {
            read.push(shown(logical));
            for m in nfs_mounts(shown(logical), &text) {
                if !mounts
                    .iter()
                    .any(|o: &NfsMount| o.on == m.on && o.what == m.what)
                {
                    mounts.push(m);
                }
            }
        }
    }
    let sys: Vec<&NfsMount> = mounts
        .iter()
        .filter(|m| m.sec.iter().any(|s| s == "sys"))
        .collect();
    if read.is_empty() {
        return Ok(Outcome::NotApplicable(
            "neither proc/mounts nor etc/fstab is under the root".into(),
        ));
    }
    if sys.is_empty() {
        return Ok(Outcome::Ok(format!(
            "no NFS mount uses sec=sys (AUTH_SYS, {AUTH_SYS_GROUPS} groups) in {}",
            read.join(", ")
        )));
    }
    let list = sys
        .iter()
        .map(|m| format!("{} on {} ({})", m.what, m.on, m.at))
        .collect::<Vec<_>>()
        .join("; ");
    let many = match read_memberships(ctx)? {
        Some(m) => m
            .above(AUTH_SYS_GROUPS)
            .iter()
            .map(|(u, n)| format!("{u} ({n})"))
            .collect::<Vec<_>>(),
        None => Vec::new(),
    };
    if many.is_empty() {
        return Ok(Outcome::Ok(format!(
            "NFS with sec=sys: {list}; no user is in more than {AUTH_SYS_GROUPS} groups, so AUTH_SYS loses none"
        )));
    }
    Ok(Outcome::Manual(format!(
        "users in more than {AUTH_SYS_GROUPS} groups: {}; NFS with sec=sys (AUTH_SYS carries {AUTH_SYS_GROUPS} groups and silently drops the rest): {list}; use sec=krb5 (the server looks the groups up), or `rpc.mountd --manage-gids` on the server",
        many.join(", ")
    )))
}

/// Probe `ngroups-live`: a child process set a large group list and reads it back.
pub fn live(ctx: &Context, host: &dyn Host) -> Result<Outcome> {
    let n = kernel_limit(ctx)?.map_or(PROOF_GROUPS, |l| l.min(PROOF_GROUPS)) as usize;
    let (gids, out) = match in_groups(ctx, host, n, &["id", "-G"])? {
        Ok(ran) => ran,
        Err(outcome) => return Ok(outcome),
    };
    let got: BTreeSet<u32> = out
        .stdout
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let back = gids.iter().filter(|g| got.contains(g)).count();
    if back == n {
        Ok(Outcome::Ok(format!(
            "proved live: a child process took {n} supplementary groups (setpriv --groups, gids {}-{}) and `id -G` in it read all {back} back",
            gids[0],
            gids[n - 1]
        )))
    } else {
        Ok(Outcome::Manual(format!(
            "a child process set {n} supplementary groups but `id -G` read only {back} of them back"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memberships_count_primary_groups_and_warn_about_bad_lines() {
        let passwd = "root:x:0:0:root:/root:/bin/bash\nalice:x:1000:1000::/home/alice:/bin/sh\nbroken:x:12\n";
        let group = "root:x:0:\nalice:x:1000:\nwheel:x:10:alice,bob\nbad:x:nope:alice\n+nis\nbig:x:4294967294:alice\n";
        let m = memberships(passwd, group);
        assert_eq!(m.ranked(), [("alice", 3), ("bob", 1), ("root", 1)]);
        assert_eq!(
            m.warnings,
            [
                "etc/passwd:3: expected 7 fields separated by `:`, found 3; line skipped",
                "etc/group:4: group id `nope` is not a number from 0 to 4294967295; line skipped",
            ]
        );
        assert_eq!(m.above(2), [("alice", 3)]);
    }

    #[test]
    fn nfs_mounts_default_to_auth_sys() {
        let fstab = "# x\nsrv:/home /home nfs rw,hard 0 0\nsrv:/k /k nfs4 sec=krb5p 0 0\nsrv:/m /m nfs4 sec=krb5:sys\n/dev/sda1 / ext4 defaults 0 1\nsrv:/n /n nfs\n";
        let m = nfs_mounts("etc/fstab", fstab);
        let secs: Vec<(&str, Vec<&str>)> = m
            .iter()
            .map(|m| (m.on.as_str(), m.sec.iter().map(String::as_str).collect()))
            .collect();
        assert_eq!(
            secs,
            [
                ("/home", vec!["sys"]),
                ("/k", vec!["krb5p"]),
                ("/m", vec!["krb5", "sys"]),
                ("/n", vec!["sys"]),
            ]
        );
        assert_eq!(m[0].at, "etc/fstab:2");
    }
}
