//! `procps`: does `ps` show every group of a process in many groups? The procps version, and
//! live as root a child in 300 supplementary groups checked with the real `ps` against
//! `/proc/PID/status`.

use std::collections::BTreeSet;

use crate::context::Context;
use crate::error::Result;
use crate::host::Host;
use crate::pkg::{Presence, at_least, presence};
use crate::probes::{Ran, bounded, in_groups, try_run};
use crate::recipe::PackageNames;
use crate::steps::Outcome;

/// How many groups the live probe gives its child ("hundreds").
const LIVE_GROUPS: usize = 300;

fn names() -> PackageNames {
    PackageNames {
        dpkg: vec!["procps".into()],
        rpm: vec!["procps-ng".into()],
        pacman: vec!["procps-ng".into()],
    }
}

/// The version number in `ps --version` output (`ps from procps-ng 4.0.2` → `4.0.2`).
fn ps_version(text: &str) -> Option<String> {
    text.split_whitespace()
        .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()))
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_ascii_digit())
                .to_string()
        })
}

/// Probe `procps-version`.
pub fn version(ctx: &Context, host: &dyn Host) -> Outcome {
    let mut seen = Vec::new();
    let mut version = None;
    if ctx.live
        && let Ok(Ran::Done(out)) = try_run(host, &bounded(["ps", "--version"]))
        && out.success()
    {
        let line = out.stdout.lines().next().unwrap_or("").trim().to_string();
        version = ps_version(&line);
        seen.push(format!("`ps --version`: {line}"));
    }
    match presence(host, &ctx.root, "procps", &names()) {
        Presence::Installed(v) => {
            seen.push(format!("package procps {v}"));
            version = version.or(Some(v));
        }
        Presence::Missing(n) => seen.push(format!("package {} not installed", n.join("/"))),
        Presence::Unknown(why) if version.is_none() => return Outcome::NotApplicable(why),
        Presence::Unknown(_) => {}
    }
    let Some(v) = version else {
        return Outcome::NotApplicable(format!("no procps found ({})", seen.join("; ")));
    };
    let seen = seen.join("; ");
    if at_least(&v, "4") {
        Outcome::Ok(format!(
            "{seen}: procps-ng 4 reads /proc/PID/status into a buffer that grows until EOF; the Groups: line always fits"
        ))
    } else if at_least(&v, "3.3") {
        Outcome::Ok(format!(
            "{seen}: procps-ng 3.3 (which release replaced the fixed 1024-byte status buffer is unverified; the live probe, as root, shows whether this ps copes)"
        ))
    } else {
        Outcome::Manual(format!(
            "{seen}: this procps reads /proc/PID/status into a fixed buffer; processes in about 100 groups or more give random \"Internal error\" messages; rebuild it: hostkit apply procps --source PROCPS-TREE [--set size=N]"
        ))
    }
}

/// The script the child runs: its own pid's groups through `ps` and `/proc`, between markers.
const SCRIPT: &str = "echo '==supgid=='; ps -o supgid= -p $$ 2>&1; echo '==supgrp=='; ps -o supgrp= -p $$ 2>&1; echo '==status=='; grep '^Groups:' /proc/$$/status";

/// The sections of the script's output.
fn sections(text: &str) -> (String, String, String) {
    let mut parts = [String::new(), String::new(), String::new()];
    let mut cur: Option<usize> = None;
    for line in text.lines() {
        match line {
            "==supgid==" => cur = Some(0),
            "==supgrp==" => cur = Some(1),
            "==status==" => cur = Some(2),
            _ => {
                if let Some(i) = cur {
                    parts[i].push_str(line);
                    parts[i].push('\n');
                }
            }
        }
    }
    let [a, b, c] = parts;
    (a, b, c)
}

/// Probe `procps-live`.
pub fn live(ctx: &Context, host: &dyn Host) -> Result<Outcome> {
    let (gids, out) = match in_groups(ctx, host, LIVE_GROUPS, &["sh", "-c", SCRIPT])? {
        Ok(ran) => ran,
        Err(outcome) => return Ok(outcome),
    };
    let (supgid, supgrp, status) = sections(&out.stdout);
    let status: BTreeSet<u32> = status
        .trim()
        .strip_prefix("Groups:")
        .unwrap_or("")
        .split_whitespace()
        .filter_map(|g| g.parse().ok())
        .collect();
    let internal = [&supgid, &supgrp]
        .iter()
        .any(|s| s.contains("Internal error"));
    let by_ps: Option<BTreeSet<u32>> = if supgid.contains("error") || supgid.trim().is_empty() {
        None
    } else {
        Some(
            supgid
                .trim()
                .split(',')
                .filter_map(|g| g.trim().parse().ok())
                .collect(),
        )
    };
    let names = supgrp.trim().split(',').filter(|s| !s.is_empty()).count();
    let want: BTreeSet<u32> = gids.iter().copied().collect();
    if !want.is_subset(&status) {
        return Ok(Outcome::Manual(format!(
            "the child asked for {LIVE_GROUPS} groups but /proc/PID/status lists {}",
            status.len()
        )));
    }
    match by_ps {
        Some(ps) if ps == status && !internal => Ok(Outcome::Ok(format!(
            "proved live: for a child in {} groups, `ps -o supgid=` listed all {} (as /proc/PID/status Groups: does) and `ps -o supgrp=` {names} names",
            status.len(),
            ps.len()
        ))),
        None if names == status.len() && !internal => Ok(Outcome::Ok(format!(
            "this ps has no supgid format; `ps -o supgrp=` gave {names} names for a child in {} groups, as /proc/PID/status does",
            status.len()
        ))),
        by_ps => Ok(Outcome::Manual(format!(
            "`ps` does not show all groups of a child in {} groups: supgid gave {}, supgrp {names} names{}; rebuild procps: hostkit apply procps --source PROCPS-TREE",
            status.len(),
            by_ps.map_or("nothing".to_string(), |p| p.len().to_string()),
            if internal {
                " and libproc printed \"Internal error\""
            } else {
                ""
            }
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_and_sections_are_read() {
        assert_eq!(
            ps_version("ps from procps-ng 4.0.2").as_deref(),
            Some("4.0.2")
        );
        assert_eq!(ps_version("procps version 3.2.8").as_deref(), Some("3.2.8"));
        let (a, b, c) = sections("==supgid==\n1,2\n==supgrp==\na,b\n==status==\nGroups:\t1 2\n");
        assert_eq!(
            (a.as_str(), b.as_str(), c.as_str()),
            ("1,2\n", "a,b\n", "Groups:\t1 2\n")
        );
    }
}
