//! dpkg's answer without running dpkg: whether a package is installed, and its version, read
//! from `ADMINDIR/status` the way `dpkg-query --admindir ADMINDIR -W -f '${Status}\t${Version}'
//! NAME` reads it.
//!
//! A query is one process start (and a parse of the whole database) per package; `check all`
//! asks about seven. The status file holds the answer, so [`installed`] reads it, and answers
//! only when the answer is certainly dpkg-query's. It gives up (`None`: run dpkg-query) when:
//!
//! * the name is not a plain lower-case package name (dpkg-query would match a pattern, or an
//!   architecture qualifier);
//! * `dpkg-query` is not on `PATH` (running it reports that it is missing, as before);
//! * `ADMINDIR/updates` holds a journal entry (dpkg-query applies those over the status file);
//! * the status file cannot be read, or has a line that is neither a field, a continuation
//!   nor blank;
//! * more than one stanza names the package (multi-arch instances: dpkg-query prints each, in
//!   its own order);
//! * the stanza's `Status` is not three known words, or its `Version` is one dpkg-query would
//!   print differently (an explicit `0:` epoch, spaces, no leading digit).
//!
//! The file is streamed line by line, once per process while it stays the same file: only
//! each package's status and version are kept.

use std::collections::HashMap;
use std::io::BufRead;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

const WANTS: &[&str] = &["unknown", "install", "hold", "deinstall", "purge"];
const FLAGS: &[&str] = &["ok", "reinstreq"];
const STATES: &[&str] = &[
    "not-installed",
    "config-files",
    "half-installed",
    "unpacked",
    "half-configured",
    "triggers-awaited",
    "triggers-pending",
    "installed",
];

/// What `Manager::Dpkg.installed` returns for `package` (`Some(version)` when its status is
/// `installed`), read from `admindir/status`; `None` when only dpkg-query can tell (see the
/// module documentation).
pub(crate) fn installed(admindir: &Path, package: &str) -> Option<Option<String>> {
    let plain = package
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && package
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b));
    if !plain || !on_path("dpkg-query") || pending_updates(admindir)? {
        return None;
    }
    let (status, version) = match lookup(&admindir.join("status"), package)? {
        None => return Some(None),
        Some(found) => found,
    };
    let words: Vec<&str> = status.split(' ').collect();
    let [want, flag, state] = words[..] else {
        return None;
    };
    if !WANTS.contains(&want) || !FLAGS.contains(&flag) || !STATES.contains(&state) {
        return None;
    }
    if state != "installed" {
        return Some(None);
    }
    let upstream = version
        .split_once(':')
        .map_or(version.as_str(), |(epoch, rest)| {
            if epoch.bytes().all(|b| b == b'0') {
                // `0:1.2` prints as `1.2`; an empty or all-zero epoch is left to dpkg-query.
                ""
            } else {
                rest
            }
        });
    let fine = upstream.bytes().next().is_some_and(|b| b.is_ascii_digit())
        && !version.bytes().any(|b| b.is_ascii_whitespace());
    fine.then_some(Some(version))
}

/// What the status file says about each package: its `Status` and `Version`, or that
/// several stanzas name it.
type Index = HashMap<String, Option<(Option<String>, String)>>;

/// The `Status` and `Version` of the one stanza whose `Package` is `package`: `Some(None)`
/// when there is none, `None` when unsure.
///
/// The file is read once per process and kept, with its identity (device, inode, size and
/// modification time): a later query reads it again only when it was replaced or changed, as
/// dpkg does it (a new file renamed over the old one).
fn lookup(path: &Path, package: &str) -> Option<Option<(String, String)>> {
    type Cached = (PathBuf, [i64; 5], Option<Arc<Index>>);
    static CACHE: Mutex<Option<Cached>> = Mutex::new(None);
    let meta = std::fs::metadata(path).ok()?;
    let key = [
        meta.dev() as i64,
        meta.ino() as i64,
        meta.size() as i64,
        meta.mtime(),
        meta.mtime_nsec(),
    ];
    let mut cache = CACHE.lock().unwrap_or_else(|p| p.into_inner());
    let index = match &*cache {
        Some((p, k, index)) if p == path && *k == key => index.clone(),
        _ => {
            let index = read_index(path).map(Arc::new);
            *cache = Some((path.to_path_buf(), key, index.clone()));
            index
        }
    };
    drop(cache);
    match index?.get(package) {
        None => Some(None),
        Some(None) => None,
        Some(Some((status, version))) => Some(Some((status.clone()?, version.clone()))),
    }
}

/// Every stanza's Package, Status and Version; `None` when a line is neither a field, a
/// continuation nor blank, a stanza has no Package, or a field is there twice (dpkg refuses
/// such a file). Streamed: only the three fields are kept.
fn read_index(path: &Path) -> Option<Index> {
    let file = std::fs::File::open(path).ok()?;
    let mut reader = std::io::BufReader::with_capacity(64 * 1024, file);
    let mut index = Index::new();
    let mut line = Vec::new();
    // The stanza being read: its Package, Status and Version, and whether it has any field.
    let mut stanza: [Option<String>; 3] = [None, None, None];
    let mut fields = false;
    let mut finish = |stanza: &mut [Option<String>; 3], fields: &mut bool| -> Option<()> {
        let [name, status, version] = std::mem::take(stanza);
        if !std::mem::take(fields) {
            return Some(());
        }
        let name = name?;
        index
            .entry(name)
            .and_modify(|e| *e = None)
            .or_insert(Some((status, version.unwrap_or_default())));
        Some(())
    };
    loop {
        line.clear();
        if reader.read_until(b'\n', &mut line).ok()? == 0 {
            finish(&mut stanza, &mut fields)?;
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        match text.first() {
            None => {
                finish(&mut stanza, &mut fields)?;
                continue;
            }
            // A line of blanks: whether it ends a stanza is dpkg's to say.
            Some(b' ' | b'\t') if text.iter().all(u8::is_ascii_whitespace) => return None,
            // A continuation line (Description, Conffiles): nothing this reads.
            Some(b' ' | b'\t') => continue,
            _ => {}
        }
        let colon = text.iter().position(|&b| b == b':')?;
        let field = &text[..colon];
        if field.is_empty() || field.iter().any(u8::is_ascii_whitespace) {
            return None;
        }
        fields = true;
        let slot = if field.eq_ignore_ascii_case(b"Package") {
            0
        } else if field.eq_ignore_ascii_case(b"Status") {
            1
        } else if field.eq_ignore_ascii_case(b"Version") {
            2
        } else {
            continue;
        };
        if stanza[slot].is_some() {
            return None;
        }
        let value = std::str::from_utf8(&text[colon + 1..]).ok()?;
        stanza[slot] = Some(value.trim().to_string());
    }
    Some(index)
}

/// True when `ADMINDIR/updates` holds a journal entry (a file named by digits only); `None`
/// when the directory cannot be read.
fn pending_updates(admindir: &Path) -> Option<bool> {
    let dir = admindir.join("updates");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(false),
        Err(_) => return None,
    };
    for entry in entries {
        let name = entry.ok()?.file_name();
        let name = name.as_encoded_bytes();
        if !name.is_empty() && name.iter().all(u8::is_ascii_digit) {
            return Some(true);
        }
    }
    Some(false)
}

/// True when `program` is an executable file in a `PATH` directory, as `execvp` looks it up.
fn on_path(program: &str) -> bool {
    let path = std::env::var_os("PATH").unwrap_or_else(|| "/bin:/usr/bin".into());
    std::env::split_paths(&path).any(|dir| {
        let dir = if dir.as_os_str().is_empty() {
            Path::new(".").to_path_buf()
        } else {
            dir
        };
        let candidate = dir.join(program);
        candidate.is_file()
            && nix::unistd::access(&candidate, nix::unistd::AccessFlags::X_OK).is_ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::{Cmd, Host, Output, RealHost};
    use crate::pkg::Manager;

    /// Runs every command for real, and never reads the database itself: the reference.
    struct Spawning;

    impl Host for Spawning {
        fn run(&self, cmd: &Cmd) -> crate::error::Result<Output> {
            RealHost.run(cmd)
        }
        fn env(&self, name: &str) -> Option<String> {
            RealHost.env(name)
        }
        fn ids(&self) -> (u32, u32) {
            RealHost.ids()
        }
    }

    fn dpkg_query() -> bool {
        if on_path("dpkg-query") {
            return true;
        }
        hostkit_testutil::skip("dpkg-query is missing (apt-get install dpkg)");
        false
    }

    /// The answer read from the file equals the real dpkg-query's, for each name; returns how
    /// many the file answered.
    fn same_as_dpkg_query(root: &Path, names: &[&str]) -> usize {
        let admindir = root.join("var/lib/dpkg");
        let mut answered = 0;
        for name in names {
            let real = Manager::Dpkg.installed(&Spawning, root, name).unwrap();
            if let Some(read) = installed(&admindir, name) {
                answered += 1;
                assert_eq!(
                    read, real,
                    "{name}: the status file and dpkg-query disagree"
                );
            }
            // Through the real host, whichever way it goes.
            assert_eq!(
                Manager::Dpkg.installed(&RealHost, root, name).unwrap(),
                real
            );
        }
        answered
    }

    #[test]
    fn the_status_file_answers_as_dpkg_query_does_on_crafted_databases() {
        if !dpkg_query() {
            return;
        }
        let root = tempfile::tempdir().unwrap();
        let admindir = root.path().join("var/lib/dpkg");
        std::fs::create_dir_all(admindir.join("updates")).unwrap();
        let stanza = |name: &str, status: &str, version: &str, extra: &str| {
            format!(
                "Package: {name}\nStatus: {status}\nPriority: optional\nSection: libs\n\
                 Installed-Size: 100\nMaintainer: Test <t@example.org>\nArchitecture: amd64\n\
                 {extra}Version: {version}\nDescription: test\n two lines\n .\n\n"
            )
        };
        let mut status = String::new();
        status += &stanza("plain", "install ok installed", "1.2-3", "");
        status += &stanza("epoch", "install ok installed", "2:1.0-1", "");
        status += &stanza("zero-epoch", "install ok installed", "0:1.0-1", "");
        status += &stanza("gone", "deinstall ok config-files", "1.0", "");
        status += &stanza("half", "install reinstreq half-installed", "1.0", "");
        status += &stanza("held", "hold ok installed", "3.24.38-2~deb12u3", "");
        status += &stanza("unpacked", "install ok unpacked", "1.0", "");
        status += &stanza("multi", "install ok installed", "1.0", "Multi-Arch: same\n");
        status += &stanza("multi", "install ok installed", "1.0", "Multi-Arch: same\n")
            .replace("amd64", "i386");
        status += &stanza(
            "conf",
            "install ok installed",
            "1.0",
            "Conffiles:\n /etc/x 0123\n",
        );
        std::fs::write(admindir.join("status"), status).unwrap();
        let names = [
            "plain",
            "epoch",
            "zero-epoch",
            "gone",
            "half",
            "held",
            "unpacked",
            "multi",
            "conf",
            "absent",
            "Plain",
            "pla*",
            "plain:amd64",
        ];
        let answered = same_as_dpkg_query(root.path(), &names);
        // All but the ambiguous ones: multi (two instances), zero-epoch, and the three that
        // are not plain names.
        assert_eq!(answered, names.len() - 5);
        // A pending journal entry: only dpkg-query knows.
        std::fs::write(
            admindir.join("updates/0001"),
            stanza("plain", "deinstall ok config-files", "1.2-3", ""),
        )
        .unwrap();
        assert_eq!(installed(&admindir, "plain"), None);
        assert_eq!(same_as_dpkg_query(root.path(), &["plain", "epoch"]), 0);
    }

    #[test]
    fn the_status_file_answers_as_dpkg_query_does_on_this_host() {
        let root = Path::new("/");
        if !root.join("var/lib/dpkg/status").is_file() {
            hostkit_testutil::skip("no dpkg database on this host");
            return;
        }
        if !dpkg_query() {
            return;
        }
        let text = std::fs::read_to_string("/var/lib/dpkg/status").unwrap();
        let mut names: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("Package: "))
            .collect();
        names.sort_unstable();
        names.dedup();
        // The recipes' packages, and every 8th package of the database (each query is a
        // process), and names that are not there.
        let mut sample: Vec<&str> = names.iter().step_by(8).copied().collect();
        sample.extend([
            "libgtk-3-0",
            "procps",
            "udisks2",
            "libqtgui4",
            "qt5-gtk-platformtheme",
            "qt6-gtk-platformtheme",
            "hostkit-no-such-package",
        ]);
        let answered = same_as_dpkg_query(root, &sample);
        assert!(
            answered * 10 >= sample.len() * 9,
            "the status file answered only {answered} of {}",
            sample.len()
        );
        // Every package at once, against one dpkg-query listing of the whole database.
        let out = RealHost
            .run(&Cmd::new([
                "dpkg-query",
                "-W",
                "-f",
                "${binary:Package}\\t${Status}\\t${Version}\\n",
            ]))
            .unwrap();
        assert!(out.success(), "{}", out.stderr);
        let mut listed: std::collections::BTreeMap<&str, Vec<(&str, &str)>> = Default::default();
        for line in out.stdout.lines() {
            let mut f = line.split('\t');
            let (Some(name), Some(status), Some(version)) = (f.next(), f.next(), f.next()) else {
                panic!("unexpected dpkg-query line {line:?}");
            };
            let name = name.split_once(':').map_or(name, |(n, _)| n);
            listed.entry(name).or_default().push((status, version));
        }
        let admindir = root.join("var/lib/dpkg");
        for name in names {
            let Some(read) = installed(&admindir, name) else {
                continue;
            };
            let want = match listed.get(name).map(Vec::as_slice) {
                Some([(status, version)]) if status.ends_with(" installed") => {
                    Some(version.to_string())
                }
                _ => None,
            };
            assert_eq!(read, want, "{name}");
        }
    }
}
