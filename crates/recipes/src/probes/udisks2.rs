//! `udisks2-media`: where udisks2 mounts removable media. The package and its build (Debian's
//! is built with `--enable-fhs-media`: `/media/$USER`), and `UDISKS_FILESYSTEM_SHARED` across
//! the udev rules directories (set to 1, udisks2 mounts under `/media/LABEL`, shared).

use crate::context::Context;
use crate::error::Result;
use crate::host::Host;
use crate::pkg::{Presence, presence};
use crate::probes::confdirs::{effective, logical_lines};
use crate::probes::{read_text, shown};
use crate::recipe::PackageNames;
use crate::steps::Outcome;

/// udev rules directories, highest precedence first (udev(7)).
pub const UDEV_DIRS: &[&str] = &[
    "/etc/udev/rules.d",
    "/run/udev/rules.d",
    "/usr/local/lib/udev/rules.d",
    "/usr/lib/udev/rules.d",
    "/lib/udev/rules.d",
];
const PROPERTY: &str = "UDISKS_FILESYSTEM_SHARED";

fn names() -> PackageNames {
    let n = vec!["udisks2".to_string()];
    PackageNames {
        dpkg: n.clone(),
        rpm: n.clone(),
        pacman: n,
    }
}

/// Distributions whose udisks2 is built with `--enable-fhs-media` (`/media/$USER`).
const FHS_MEDIA: &[&str] = &["debian", "ubuntu", "gentoo", "guix"];

/// The distribution (`ID`, `ID_LIKE` words) from `etc/os-release` (or `usr/lib/os-release`),
/// when it is one that builds udisks2 with fhs-media.
fn fhs_media_distro(ctx: &Context) -> Result<Option<String>> {
    let text = match read_text(ctx, "/etc/os-release")? {
        Some(t) => t,
        None => match read_text(ctx, "/usr/lib/os-release")? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let mut ids = Vec::new();
    let mut pretty = None;
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim().trim_matches('"').trim_matches('\'');
        match k.trim() {
            "ID" | "ID_LIKE" => ids.extend(v.split_whitespace().map(str::to_string)),
            "PRETTY_NAME" => pretty = Some(v.to_string()),
            _ => {}
        }
    }
    Ok(ids
        .iter()
        .any(|i| FHS_MEDIA.contains(&i.as_str()))
        .then(|| pretty.unwrap_or_else(|| ids.join(" "))))
}

/// Probe `udisks2-package`.
pub fn package(ctx: &Context, host: &dyn Host) -> Outcome {
    let distro = fhs_media_distro(ctx).ok().flatten();
    let build = match &distro {
        Some(d) => format!(
            "{d} builds udisks2 with --enable-fhs-media: it mounts under /media/$USER already"
        ),
        None => "udisks2 mounts under /run/media/$USER unless built with --enable-fhs-media (Fedora, Arch)".into(),
    };
    match presence(host, &ctx.root, "udisks2", &names()) {
        Presence::Installed(v) => Outcome::Ok(format!("udisks2 {v} is installed; {build}")),
        Presence::Missing(_) => Outcome::Ok(format!(
            "udisks2 is not installed: nothing here mounts removable media for users; {build}"
        )),
        Presence::Unknown(why) => Outcome::NotApplicable(format!("{why}; {build}")),
    }
}

/// Guard `udisks2-needs-rule`: the rule is pointless without udisks2, and not needed where
/// udisks2 already mounts under `/media`.
pub fn needs_rule(ctx: &Context, host: &dyn Host) -> Option<String> {
    if let Presence::Missing(_) = presence(host, &ctx.root, "udisks2", &names()) {
        return Some("udisks2 is not installed".into());
    }
    fhs_media_distro(ctx).ok().flatten().map(|d| {
        format!(
            "{d}'s udisks2 already mounts under /media/$USER (built with --enable-fhs-media); the rule would move mounts to /media/LABEL, shared by all users"
        )
    })
}

/// Probe `udisks2-udev-rules`: where `UDISKS_FILESYSTEM_SHARED` is set, in the order udev
/// applies the files (the last assignment wins).
pub fn udev_rules(ctx: &Context) -> Result<Outcome> {
    let (files, present) = effective(&ctx.root, UDEV_DIRS, ".rules")?;
    let mut found = Vec::new();
    for f in files.iter().filter(|f| !f.masked) {
        for (line, text) in logical_lines(&f.text) {
            if let Some(pos) = text.find(&format!("ENV{{{PROPERTY}}}")) {
                let rest = text[pos + PROPERTY.len() + 5..].trim_start();
                if rest.starts_with("==") {
                    continue;
                }
                if let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(":=")) {
                    let value = value.trim().split('"').nth(1).unwrap_or("").to_string();
                    found.push((format!("{}:{line}", shown(&f.logical)), value));
                }
            }
        }
    }
    let mut masked: Vec<String> = files
        .iter()
        .filter(|f| f.masked && !f.hides.is_empty())
        .map(|f| format!("{} masks {}", shown(&f.logical), f.hides.join(", ")))
        .collect();
    let looked = if present.is_empty() {
        "no udev rules directory exists".to_string()
    } else {
        format!("read {}", present.join(", "))
    };
    masked.push(looked);
    let tail = masked.join("; ");
    Ok(Outcome::Ok(match found.last() {
        None => format!(
            "no rules file sets {PROPERTY}: udisks2 would mount per user, under /media/$USER or /run/media/$USER as its build decides (step udisks2) ({tail})"
        ),
        Some((at, value)) if value == "1" => format!(
            "{PROPERTY}=1 set by {at} (the last assignment in udev's order): udisks2 mounts those filesystems under /media/LABEL, shared ({tail})"
        ),
        Some((at, value)) => {
            format!("{PROPERTY}={value} set last by {at}: mounts stay per user ({tail})")
        }
    }))
}
