//! `rtl8139`: which driver a Realtek 8139 card gets. The card in sysfs (vendor 0x10ec, device
//! 0x8139, PCI revision: 0x20 and above is a genuine 8139C+, whose driver *is* 8139cp), the
//! kernel's own hint in its log, the effective modprobe configuration (confirmed by the real
//! `modprobe -c`), and on legacy modutils systems the order of the `modules.pcimap` entries.

use std::path::Path;

use walkdir::WalkDir;

use crate::context::{Context, join};
use crate::error::Result;
use crate::host::Host;
use crate::probes::confdirs::{ConfFile, effective, logical_lines};
use crate::probes::{Ran, bounded, read_host_text, read_text, shown, try_run};
use crate::steps::Outcome;

/// modprobe.d directories, highest precedence first (modprobe.d(5)).
pub const MODPROBE_DIRS: &[&str] = &[
    "/etc/modprobe.d",
    "/run/modprobe.d",
    "/usr/local/lib/modprobe.d",
    "/usr/lib/modprobe.d",
    "/lib/modprobe.d",
];
const PCI_DEVICES: &str = "/sys/bus/pci/devices";
/// PCI revisions from this one up are 8139C+ chips (8139cp's cp_init_one()).
const CPLUS_REVISION: u32 = 0x20;
/// The kernel's hint (drivers/net/ethernet/realtek/8139cp.c).
const HINT: &str = "not an 8139C+ compatible chip";
/// Log files read under `--root`, in order.
const LOGS: &[&str] = &["/var/log/kern.log", "/var/log/dmesg", "/var/log/messages"];
/// At most this much of a log file is read (its end).
const LOG_TAIL: u64 = 16 << 20;

/// A Realtek 8139 on the PCI bus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Card {
    /// Its PCI address, e.g. `0000:02:00.0`.
    pub address: String,
    /// Its revision (`None`: unreadable).
    pub revision: Option<u32>,
    /// The driver bound to it, if any.
    pub driver: Option<String>,
}

impl Card {
    /// True for a genuine 8139C+.
    pub fn is_cplus(&self) -> bool {
        self.revision.is_some_and(|r| r >= CPLUS_REVISION)
    }

    fn describe(&self) -> String {
        let rev = self.revision.map_or("unknown revision".to_string(), |r| {
            format!("revision {r:#04x}")
        });
        let chip = if self.is_cplus() {
            "a genuine 8139C+: 8139cp is its driver"
        } else {
            "8139/8139A/B/C: 8139too is its driver"
        };
        let driver = self
            .driver
            .as_deref()
            .map_or("no driver bound".to_string(), |d| format!("driver {d}"));
        format!("{} 10ec:8139 {rev} ({chip}; {driver})", self.address)
    }
}

fn hex(text: &str) -> Option<u32> {
    u32::from_str_radix(text.trim().trim_start_matches("0x"), 16).ok()
}

/// The Realtek 8139 cards under `ROOT/sys/bus/pci/devices` (`None`: no such directory), and
/// how many devices were looked at.
pub fn cards(root: &Path) -> Option<(Vec<Card>, usize)> {
    let dir = join(root, Path::new(PCI_DEVICES));
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .ok()?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .collect();
    entries.sort();
    let read = |p: &Path, f: &str| std::fs::read_to_string(p.join(f)).ok();
    let mut cards = Vec::new();
    for dev in &entries {
        let ids = (read(dev, "vendor"), read(dev, "device"));
        let (Some(vendor), Some(device)) = ids else {
            continue;
        };
        if hex(&vendor) != Some(0x10ec) || hex(&device) != Some(0x8139) {
            continue;
        }
        cards.push(Card {
            address: dev
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            revision: read(dev, "revision").as_deref().and_then(hex),
            driver: std::fs::read_link(dev.join("driver"))
                .ok()
                .and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned())),
        });
    }
    Some((cards, entries.len()))
}

/// Probe `rtl8139-card`.
pub fn card(ctx: &Context) -> Outcome {
    match cards(&ctx.root) {
        None if ctx.live => Outcome::NotApplicable(format!("no {PCI_DEVICES}: no PCI bus here")),
        None => Outcome::NotApplicable(format!(
            "no {} under the root: the card is live hardware (run without --root, or copy the device's sysfs files there)",
            shown(PCI_DEVICES)
        )),
        Some((cards, seen)) if cards.is_empty() => Outcome::Ok(format!(
            "no Realtek 8139 (10ec:8139) among {seen} PCI devices: the blacklist is harmless here and takes effect if such a card appears"
        )),
        Some((cards, _)) => Outcome::Ok(
            cards
                .iter()
                .map(Card::describe)
                .collect::<Vec<_>>()
                .join("\n"),
        ),
    }
}

/// Guard `rtl8139-no-cplus`: refuse to block 8139cp when a genuine 8139C+ is present.
pub fn no_cplus(ctx: &Context) -> Option<String> {
    let (cards, _) = cards(&ctx.root)?;
    let cplus: Vec<String> = cards
        .iter()
        .filter(|c| c.is_cplus())
        .map(Card::describe)
        .collect();
    if cplus.is_empty() {
        None
    } else {
        Some(format!(
            "refused: a genuine RTL8139C+ is present ({}); blocking 8139cp would leave it without its proper driver",
            cplus.join("; ")
        ))
    }
}

/// The kernel log's 8139cp lines, and where they were read.
/// The 8139 lines of the kernel log, and where they were read from (`Err`: why no log could
/// be read at all).
fn kernel_lines(
    ctx: &Context,
    host: &dyn Host,
) -> Result<(Vec<String>, std::result::Result<String, String>)> {
    let pick = |text: &str| -> Vec<String> {
        text.lines()
            .filter(|l| l.contains("8139cp") || l.contains("8139too"))
            .map(|l| l.trim().to_string())
            .collect()
    };
    if ctx.live {
        for argv in [
            vec!["dmesg"],
            vec!["journalctl", "-k", "-b", "--no-pager", "-q"],
        ] {
            if let Ran::Done(out) = try_run(host, &bounded(argv.clone()))?
                && out.success()
            {
                return Ok((pick(&out.stdout), Ok(format!("`{}`", argv.join(" ")))));
            }
        }
        return Ok((
            Vec::new(),
            Err(
                "no kernel log: `dmesg` and `journalctl -k` both failed (no permission in a container?)"
                    .into(),
            ),
        ));
    }
    let mut lines = Vec::new();
    let mut read = Vec::new();
    for logical in LOGS {
        let path = join(&ctx.root, Path::new(logical));
        if let Some(text) = read_tail(&path)? {
            read.push(shown(logical));
            lines.extend(pick(&text));
        }
    }
    let from = if read.is_empty() {
        Err(format!(
            "no kernel log under the root (looked for {})",
            LOGS.iter().map(|l| shown(l)).collect::<Vec<_>>().join(", ")
        ))
    } else {
        Ok(read.join(", "))
    };
    Ok((lines, from))
}

fn read_tail(path: &Path) -> Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(crate::error::Error::io(path, e)),
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    if len > LOG_TAIL {
        file.seek(SeekFrom::Start(len - LOG_TAIL))
            .map_err(|e| crate::error::Error::io(path, e))?;
    }
    let mut bytes = Vec::new();
    file.take(LOG_TAIL)
        .read_to_end(&mut bytes)
        .map_err(|e| crate::error::Error::io(path, e))?;
    Ok(Some(String::from_utf8_lossy(&bytes).into_owned()))
}

/// Probe `rtl8139-kernel-log`.
pub fn kernel_log(ctx: &Context, host: &dyn Host) -> Result<Outcome> {
    let (lines, from) = match kernel_lines(ctx, host)? {
        (_, Err(why)) => return Ok(Outcome::Ok(why)),
        (lines, Ok(from)) => (lines, from),
    };
    if let Some(hint) = lines.iter().find(|l| l.contains(HINT)) {
        return Ok(Outcome::Ok(format!(
            "the kernel's own hint ({from}): \"{hint}\": 8139cp looked at the card, found it is not an 8139C+ and left it to 8139too; blocking 8139cp only saves that failed probe"
        )));
    }
    if lines.is_empty() {
        return Ok(Outcome::Ok(format!("no 8139cp/8139too messages in {from}")));
    }
    Ok(Outcome::Ok(format!(
        "8139 driver messages ({from}), no \"{HINT}\" hint:\n{}",
        lines.join("\n")
    )))
}

/// A modprobe.d directive about 8139cp or 8139too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    /// `file:line`.
    pub at: String,
    /// The directive, whitespace normalised.
    pub text: String,
}

const MODULES: &[&str] = &["8139cp", "8139too"];

/// Whether a directive line concerns 8139cp/8139too (the module argument, or an alias target).
fn concerns(words: &[&str]) -> bool {
    match words {
        ["alias", _, module, ..] => MODULES.contains(module),
        [_, module, ..] => MODULES.contains(module),
        _ => false,
    }
}

/// The directives about 8139cp/8139too in the effective files, in the order they apply.
pub fn directives(files: &[ConfFile]) -> Vec<Directive> {
    let mut out = Vec::new();
    for f in files.iter().filter(|f| !f.masked) {
        for (line, text) in logical_lines(&f.text) {
            let words: Vec<&str> = text.split_whitespace().collect();
            if concerns(&words) {
                out.push(Directive {
                    at: format!("{}:{line}", shown(&f.logical)),
                    text: words.join(" "),
                });
            }
        }
    }
    out
}

/// What the directives do to 8139cp.
fn verdict(directives: &[&str]) -> String {
    let install = directives.iter().find(|d| d.starts_with("install 8139cp "));
    let blacklist = directives.contains(&"blacklist 8139cp");
    match (install, blacklist) {
        (Some(cmd), _) => format!(
            "8139cp cannot load at all (`{cmd}`: not by name, alias or as a dependency); 8139too drives the card"
        ),
        (None, true) => "8139cp is blacklisted: hardware autoload (by alias) skips it and 8139too drives the card; `modprobe 8139cp` by name still loads it".into(),
        (None, false) => "8139cp is not blocked: both drivers claim 10ec:8139 and whichever loads first binds the card".into(),
    }
}

/// `modprobe -C DIR…` over the directories read (in precedence order: kmod, like the
/// default search, lets the first same-named file win), then `args`.
fn modprobe_cmd(ctx: &Context, present: &[String], args: &[&str]) -> crate::host::Cmd {
    let mut argv: Vec<String> = vec!["modprobe".into()];
    let dirs: Vec<&str> = if present.is_empty() {
        vec![MODPROBE_DIRS[0]]
    } else {
        present.iter().map(String::as_str).collect()
    };
    for d in dirs {
        argv.push("-C".into());
        argv.push(join(&ctx.root, Path::new(d)).display().to_string());
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    bounded(argv)
}

/// The real `modprobe -c` over the same directories.
fn kmod_view(ctx: &Context, host: &dyn Host, present: &[String]) -> Result<Option<Vec<String>>> {
    let out = match try_run(host, &modprobe_cmd(ctx, present, &["-c"]))? {
        Ran::Done(out) if out.success() => out,
        _ => return Ok(None),
    };
    let mut lines = Vec::new();
    for line in out.stdout.lines() {
        if line.starts_with("# End of configuration files") {
            break;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        if concerns(&words) {
            lines.push(words.join(" "));
        }
    }
    Ok(Some(lines))
}

fn same_set(kmod: &[String], ours: &[&str]) -> bool {
    let mut a: Vec<&str> = kmod.iter().map(String::as_str).collect();
    let mut b = ours.to_vec();
    a.sort_unstable();
    b.sort_unstable();
    a == b
}

/// A card's modalias when one is present, else a plain 8139's.
fn modalias(ctx: &Context) -> String {
    let dir = join(&ctx.root, Path::new(PCI_DEVICES));
    cards(&ctx.root)
        .and_then(|(cards, _)| cards.into_iter().next())
        .and_then(|c| std::fs::read_to_string(dir.join(&c.address).join("modalias")).ok())
        .map(|m| m.trim().to_string())
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| "pci:v000010ECd00008139sv000010ECsd00008139bc02sc00i00".into())
}

/// The kernels under `ROOT/lib/modules` with kmod indexes (`modules.alias.bin`), at most 4.
fn kernels(ctx: &Context) -> Vec<String> {
    let base = join(&ctx.root, Path::new("/lib/modules"));
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut v: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| e.path().join("modules.alias.bin").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v.truncate(4);
    v
}

/// What hardware autoload would do: the real `modprobe -d ROOT -S KVER -C … -n -v ALIAS`
/// for each kernel with module indexes (kmod skips blacklisted modules reached by alias).
/// Each line comes with whether 8139cp would be loaded.
fn autoload(ctx: &Context, host: &dyn Host, present: &[String]) -> Result<Vec<(String, bool)>> {
    let alias = modalias(ctx);
    let root = ctx.root.display().to_string();
    let mut lines = Vec::new();
    for kver in kernels(ctx) {
        let cmd = modprobe_cmd(
            ctx,
            present,
            &["-d", &root, "-S", &kver, "-n", "-v", &alias],
        );
        let Ran::Done(out) = try_run(host, &cmd)? else {
            continue;
        };
        let mut loads = Vec::new();
        for line in out.stdout.lines() {
            let words: Vec<&str> = line.split_whitespace().collect();
            match words.as_slice() {
                ["insmod", path, ..] => loads.push(
                    Path::new(path)
                        .file_name()
                        .map(|n| n.to_string_lossy().trim_end_matches(".ko").to_string())
                        .unwrap_or_default(),
                ),
                ["install", rest @ ..] => {
                    loads.push(format!("install command `{}`", rest.join(" ")))
                }
                _ => {}
            }
        }
        let said = if !out.success() {
            format!("failed: {}", out.stderr.trim())
        } else if loads.is_empty() {
            "nothing (already loaded, or no module claims it)".into()
        } else {
            loads.join(", ")
        };
        let loads_cp = out.success() && loads.iter().any(|m| m == "8139cp");
        lines.push((
            format!("hardware autoload, kernel {kver} (`modprobe -n -v {alias}`, kmod): {said}"),
            loads_cp,
        ));
    }
    Ok(lines)
}

/// Probe `rtl8139-modprobe`.
pub fn modprobe(ctx: &Context, host: &dyn Host) -> Result<Outcome> {
    let (files, present) = effective(&ctx.root, MODPROBE_DIRS, ".conf")?;
    let found = directives(&files);
    let ours: Vec<&str> = found.iter().map(|d| d.text.as_str()).collect();
    let mut text = verdict(&ours);
    for d in &found {
        text.push_str(&format!("\n{}: {}", d.at, d.text));
    }
    for f in files.iter().filter(|f| !f.hides.is_empty()) {
        text.push_str(&format!(
            "\n{} overrides {}",
            shown(&f.logical),
            f.hides
                .iter()
                .map(|h| shown(h))
                .collect::<Vec<_>>()
                .join(", ")
        ));
    }
    text.push_str(&format!(
        "\nread: {}",
        if present.is_empty() {
            "no modprobe.d directory exists".to_string()
        } else {
            present.join(", ")
        }
    ));
    match kmod_view(ctx, host, &present)? {
        None => text.push_str("\nnot confirmed: kmod's modprobe is not installed or failed"),
        // kmod dumps its configuration grouped by directive, not in file order.
        Some(kmod) if same_set(&kmod, &ours) => {
            text.push_str("\nconfirmed by the real `modprobe -C DIR… -c` (kmod)");
            if ours.iter().any(|d| d.starts_with("install 8139cp ")) {
                // An install command needs no module files: kmod's dry run shows it.
                if let Ran::Done(out) =
                    try_run(host, &modprobe_cmd(ctx, &present, &["-n", "-v", "8139cp"]))?
                {
                    let said = format!("{}{}", out.stdout, out.stderr);
                    text.push_str(&format!(
                        "\n`modprobe -n -v 8139cp` (kmod): {}",
                        said.split_whitespace().collect::<Vec<_>>().join(" ")
                    ));
                }
            }
            let blocked = ours
                .iter()
                .any(|d| *d == "blacklist 8139cp" || d.starts_with("install 8139cp "));
            for (line, loads_cp) in autoload(ctx, host, &present)? {
                text.push('\n');
                text.push_str(&line);
                if blocked && loads_cp {
                    return Ok(Outcome::Manual(format!(
                        "{text}\n8139cp is blocked in modprobe.d, yet kmod would still load it for the card"
                    )));
                }
            }
        }
        Some(kmod) => {
            return Ok(Outcome::Manual(format!(
                "{text}\nkmod's `modprobe -c` disagrees with this reading; it says:\n{}",
                if kmod.is_empty() {
                    "(nothing about 8139cp/8139too)".to_string()
                } else {
                    kmod.join("\n")
                }
            )));
        }
    }
    Ok(Outcome::Ok(text))
}

/// A `modules.pcimap` entry for 10ec:8139.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    /// The map file, root-relative.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// The module it names.
    pub module: String,
}

/// The 10ec:8139 entries of a modules.pcimap text, in order.
pub fn pcimap_entries(file: &str, text: &str) -> Vec<MapEntry> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || f[0].starts_with('#') {
            continue;
        }
        let id = |s: &str| u32::from_str_radix(s.trim_start_matches("0x"), 16).ok();
        if id(f[1]) == Some(0x10ec) && id(f[2]) == Some(0x8139) {
            out.push(MapEntry {
                file: file.to_string(),
                line: i + 1,
                module: f[0].to_string(),
            });
        }
    }
    out
}

/// `pcimapfile=` in `/etc/modules.conf`, with its line.
fn pcimapfile(ctx: &Context) -> Result<Option<(String, usize)>> {
    let Some(text) = read_text(ctx, "/etc/modules.conf")? else {
        return Ok(None);
    };
    Ok(logical_lines(&text).into_iter().find_map(|(n, l)| {
        l.strip_prefix("pcimapfile=")
            .map(|p| (p.trim().to_string(), n))
    }))
}

/// Probe `rtl8139-pcimap`: which map entries claim 10ec:8139, in order.
pub fn pcimap(ctx: &Context) -> Result<Outcome> {
    let base = join(&ctx.root, Path::new("/lib/modules"));
    let mut maps: Vec<std::path::PathBuf> = WalkDir::new(&base)
        .min_depth(2)
        .max_depth(2)
        .sort_by_file_name()
        .into_iter()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name() == "modules.pcimap" && e.file_type().is_file())
        .map(|e| e.into_path())
        .collect();
    let configured = pcimapfile(ctx)?;
    if let Some((path, _)) = &configured
        && path.starts_with('/')
        && !path.contains('`')
    {
        let p = join(&ctx.root, Path::new(path));
        if !maps.contains(&p) {
            maps.push(p);
        }
    }
    let mut lines = Vec::new();
    let mut first_cp = Vec::new();
    for map in &maps {
        let Some(text) = read_host_text(map)? else {
            continue;
        };
        let file = ctx.display(map);
        let entries = pcimap_entries(&file, &text);
        if entries.is_empty() {
            lines.push(format!("{file}: no 10ec:8139 entry"));
            continue;
        }
        let order: Vec<String> = entries
            .iter()
            .map(|e| format!("{} (line {})", e.module, e.line))
            .collect();
        lines.push(format!("{file}: {}", order.join(", then ")));
        if entries[0].module == "8139cp" {
            first_cp.push(file);
        }
    }
    if let Some((path, line)) = &configured {
        lines.push(format!("etc/modules.conf:{line}: pcimapfile={path}"));
    }
    if lines.is_empty() {
        return Ok(Outcome::Ok(
            "no modules.pcimap under lib/modules: kmod's depmod stopped writing map files in 2012; drivers load by modalias through udev, and the modprobe.d blacklist decides"
                .into(),
        ));
    }
    let text = lines.join("\n");
    if first_cp.is_empty() {
        return Ok(Outcome::Ok(text));
    }
    Ok(Outcome::Manual(format!(
        "{text}\nhotplug loads the first matching entry, 8139cp, in {}: move the 8139too line before it (and keep depmod from rewriting the edited map: pcimapfile= in etc/modules.conf, step legacy-pcimapfile)",
        first_cp.join(", ")
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pcimap_entries_keep_their_order() {
        let map = "# pci module         vendor     device\n8139cp               0x000010ec 0x00008139 0xffffffff 0xffffffff 0x00000000 0x00000000 0x0\n3c59x 0x000010b7 0x00005900 0xffffffff 0xffffffff 0x00000000 0x00000000 0x0\n8139too              0x000010ec 0x00008139 0xffffffff 0xffffffff 0x00000000 0x00000000 0x0\n";
        let e = pcimap_entries("m", map);
        let order: Vec<(&str, usize)> = e.iter().map(|e| (e.module.as_str(), e.line)).collect();
        assert_eq!(order, [("8139cp", 2), ("8139too", 4)]);
    }

    #[test]
    fn verdicts() {
        assert!(verdict(&["install 8139cp /bin/false"]).starts_with("8139cp cannot load"));
        assert!(verdict(&["blacklist 8139cp"]).starts_with("8139cp is blacklisted"));
        assert!(verdict(&["options 8139too debug=1"]).starts_with("8139cp is not blocked"));
        assert!(concerns(&["alias", "eth0", "8139too"]));
        assert!(!concerns(&["blacklist", "e1000"]));
    }
}
