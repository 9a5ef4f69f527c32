//! `*.d` configuration directories with same-name overrides, as kmod (modprobe.d) and udev
//! (rules.d) read them: every file with the suffix in every directory, a file in an earlier
//! (higher-precedence) directory hides a same-named one in a later directory, and the
//! survivors apply in lexical order of their names. A file that is a symbolic link to
//! `/dev/null` (or empty) masks the name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::context::join;
use crate::error::{Error, Result};

/// One file that takes part in the effective configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfFile {
    /// Its name, e.g. `hostkit-rtl8139.conf`.
    pub name: String,
    /// Its logical path, e.g. `/etc/modprobe.d/hostkit-rtl8139.conf`.
    pub logical: String,
    /// Its path on the host (under the root).
    pub path: PathBuf,
    /// Its text (empty when masked).
    pub text: String,
    /// True when it masks the name (a link to /dev/null).
    pub masked: bool,
    /// Same-named files it hides, in lower-precedence directories (logical paths).
    pub hides: Vec<String>,
}

/// The effective files of `dirs` (logical, highest precedence first) under `root`, in the
/// order they apply, and the directories that exist.
pub fn effective(root: &Path, dirs: &[&str], suffix: &str) -> Result<(Vec<ConfFile>, Vec<String>)> {
    let mut by_name: BTreeMap<String, ConfFile> = BTreeMap::new();
    let mut present = Vec::new();
    let mut seen: Vec<PathBuf> = Vec::new();
    for dir in dirs {
        let host_dir = join(root, Path::new(dir));
        // On a merged-/usr system /lib is a link to usr/lib: read each real directory once.
        if let Ok(real) = std::fs::canonicalize(&host_dir) {
            if seen.contains(&real) {
                continue;
            }
            seen.push(real);
        }
        let entries = match std::fs::read_dir(&host_dir) {
            Ok(e) => e,
            Err(e)
                if e.kind() == std::io::ErrorKind::NotFound
                    || e.raw_os_error() == Some(libc::ENOTDIR) =>
            {
                continue;
            }
            Err(e) => return Err(Error::io(&host_dir, e)),
        };
        present.push(dir.to_string());
        let mut names = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| Error::io(&host_dir, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(suffix) && !name.starts_with('.') {
                names.push(name);
            }
        }
        names.sort();
        for name in names {
            let logical = format!("{}/{name}", dir.trim_end_matches('/'));
            if let Some(winner) = by_name.get_mut(&name) {
                winner.hides.push(logical);
                continue;
            }
            let path = host_dir.join(&name);
            let (text, masked) = read_conf(root, &path)?;
            by_name.insert(
                name.clone(),
                ConfFile {
                    name,
                    logical,
                    path,
                    text,
                    masked,
                    hides: Vec::new(),
                },
            );
        }
    }
    Ok((by_name.into_values().collect(), present))
}

/// Reads one file; a link to /dev/null masks, an absolute link is followed inside the root.
fn read_conf(root: &Path, path: &Path) -> Result<(String, bool)> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| Error::io(path, e))?;
    let mut target = path.to_path_buf();
    if meta.file_type().is_symlink() {
        let link = std::fs::read_link(path).map_err(|e| Error::io(path, e))?;
        if link == Path::new("/dev/null") {
            return Ok((String::new(), true));
        }
        if link.is_absolute() {
            target = join(root, &link);
        }
    }
    match std::fs::read(&target) {
        Ok(bytes) => Ok((
            String::from_utf8_lossy(&bytes).into_owned(),
            bytes.is_empty(),
        )),
        // A dangling link contributes nothing.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((String::new(), true)),
        Err(e) => Err(Error::io(&target, e)),
    }
}

/// The logical lines of a config file: `#` comments dropped, `\`-continued lines joined;
/// each with its 1-based starting line number.
pub fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(body) = raw.strip_suffix('\\') {
            acc.push_str(body);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(raw);
        let trimmed = acc.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push((start, trimmed.to_string()));
        }
    }
    if let Some((start, acc)) = pending {
        let trimmed = acc.trim();
        if !trimmed.is_empty() && !trimmed.starts_with('#') {
            out.push((start, trimmed.to_string()));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn higher_directories_hide_same_names_and_files_apply_in_lexical_order() {
        let root = tempfile::tempdir().unwrap();
        let w = |p: &str, t: &str| {
            let path = root.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, t).unwrap();
        };
        w("etc/modprobe.d/b.conf", "blacklist x\n");
        w("lib/modprobe.d/b.conf", "blacklist y\n");
        w("lib/modprobe.d/a.conf", "options z \\\n  a=1\n# c\n");
        w("lib/modprobe.d/notes.txt", "ignored\n");
        std::os::unix::fs::symlink("/dev/null", root.path().join("etc/modprobe.d/c.conf")).unwrap();
        w("lib/modprobe.d/c.conf", "blacklist masked\n");
        let (files, present) = effective(
            root.path(),
            &["/etc/modprobe.d", "/run/modprobe.d", "/lib/modprobe.d"],
            ".conf",
        )
        .unwrap();
        assert_eq!(present, ["/etc/modprobe.d", "/lib/modprobe.d"]);
        let names: Vec<(&str, &str, bool)> = files
            .iter()
            .map(|f| (f.name.as_str(), f.logical.as_str(), f.masked))
            .collect();
        assert_eq!(
            names,
            [
                ("a.conf", "/lib/modprobe.d/a.conf", false),
                ("b.conf", "/etc/modprobe.d/b.conf", false),
                ("c.conf", "/etc/modprobe.d/c.conf", true),
            ]
        );
        assert_eq!(files[1].hides, ["/lib/modprobe.d/b.conf"]);
        assert_eq!(
            logical_lines(&files[0].text),
            [(1, "options z    a=1".to_string())]
        );
    }
}
