//! Package managers: which one the root uses, whether a package is installed (and its version),
//! and the command that installs packages.

mod dpkg_status;

use std::path::Path;

use serde::Serialize;

use crate::error::Result;
use crate::host::{Cmd, Host, not_started};
use crate::recipe::PackageNames;

/// A package manager, detected from its database under the root.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Manager {
    /// dpkg/apt (`var/lib/dpkg/status`).
    Dpkg,
    /// rpm/dnf (`var/lib/rpm` or `usr/lib/sysimage/rpm`).
    Rpm,
    /// pacman (`var/lib/pacman/local`).
    Pacman,
}

impl Manager {
    /// Detects the package manager of the system under `root`.
    pub fn detect(root: &Path) -> Option<Manager> {
        if root.join("var/lib/dpkg/status").is_file() {
            Some(Manager::Dpkg)
        } else if root.join("var/lib/rpm").is_dir() || root.join("usr/lib/sysimage/rpm").is_dir() {
            Some(Manager::Rpm)
        } else if root.join("var/lib/pacman/local").is_dir() {
            Some(Manager::Pacman)
        } else {
            None
        }
    }

    /// Its name.
    pub fn name(self) -> &'static str {
        match self {
            Manager::Dpkg => "dpkg",
            Manager::Rpm => "rpm",
            Manager::Pacman => "pacman",
        }
    }

    /// The distribution's names for a logical package.
    pub fn names(self, names: &PackageNames) -> &[String] {
        match self {
            Manager::Dpkg => &names.dpkg,
            Manager::Rpm => &names.rpm,
            Manager::Pacman => &names.pacman,
        }
    }

    /// The query command for one package.
    pub fn query_cmd(self, root: &Path, package: &str) -> Cmd {
        let root_s = root.display().to_string();
        match self {
            Manager::Dpkg => Cmd::new([
                "dpkg-query".to_string(),
                "--admindir".into(),
                root.join("var/lib/dpkg").display().to_string(),
                "-W".into(),
                "-f".into(),
                "${Status}\\t${Version}".into(),
                package.into(),
            ]),
            Manager::Rpm => Cmd::new([
                "rpm",
                "--root",
                &root_s,
                "-q",
                "--qf",
                "%{VERSION}",
                package,
            ]),
            Manager::Pacman => Cmd::new([
                "pacman".to_string(),
                "--root".into(),
                root_s.clone(),
                "--dbpath".into(),
                root.join("var/lib/pacman").display().to_string(),
                "-Q".into(),
                package.into(),
            ]),
        }
    }

    /// The command that installs packages on the live system.
    pub fn install_cmd(self, packages: &[String]) -> Cmd {
        let mut argv: Vec<String> = match self {
            Manager::Dpkg => vec!["apt-get".into(), "install".into(), "-y".into()],
            Manager::Rpm => vec!["dnf".into(), "install".into(), "-y".into()],
            Manager::Pacman => vec![
                "pacman".into(),
                "-S".into(),
                "--needed".into(),
                "--noconfirm".into(),
            ],
        };
        argv.extend(packages.iter().cloned());
        let cmd = Cmd::new(argv);
        if self == Manager::Dpkg {
            cmd.env("DEBIAN_FRONTEND", "noninteractive")
        } else {
            cmd
        }
    }

    /// The installed version of a package, `None` when it is not installed. `Err` with a
    /// "could not start" command error when the query tool is missing.
    /// dpkg's status file answers without a process when it certainly gives dpkg-query's
    /// answer, on a host that allows it ([`Host::reads_package_database`]).
    pub fn installed(self, host: &dyn Host, root: &Path, package: &str) -> Result<Option<String>> {
        if self == Manager::Dpkg
            && host.reads_package_database()
            && let Some(answer) = dpkg_status::installed(&root.join("var/lib/dpkg"), package)
        {
            return Ok(answer);
        }
        let cmd = self.query_cmd(root, package);
        let out = host.run(&cmd)?;
        if !out.success() {
            // dpkg-query, rpm -q and pacman -Q all exit 1 for a package they do not know.
            if out.code == Some(1) {
                return Ok(None);
            }
            cmd.check(out)?;
            return Ok(None);
        }
        let text = out.stdout.trim();
        Ok(match self {
            Manager::Dpkg => {
                let (status, version) = text.split_once('\t').unwrap_or((text, ""));
                status.ends_with(" installed").then(|| version.to_string())
            }
            Manager::Rpm => Some(text.to_string()),
            Manager::Pacman => Some(text.split_whitespace().nth(1).unwrap_or("").to_string()),
        })
    }
}

/// What the package database says about a logical package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Presence {
    /// Installed, with the version of the first installed name.
    Installed(String),
    /// Not installed (the names that were looked up).
    Missing(Vec<String>),
    /// Cannot tell, and why.
    Unknown(String),
}

/// Looks a logical package up (installed when any of its names is installed).
pub fn presence(host: &dyn Host, root: &Path, logical: &str, names: &PackageNames) -> Presence {
    let Some(manager) = Manager::detect(root) else {
        return Presence::Unknown(format!(
            "cannot tell whether {logical} is installed: no dpkg, rpm or pacman database under {}",
            root.display()
        ));
    };
    let candidates = manager.names(names);
    if candidates.is_empty() {
        return Presence::Unknown(format!(
            "the recipe names no {} package for {logical}",
            manager.name()
        ));
    }
    for name in candidates {
        match manager.installed(host, root, name) {
            Ok(Some(version)) => return Presence::Installed(version),
            Ok(None) => {}
            Err(e) if not_started(&e) => {
                return Presence::Unknown(format!("cannot query {}: {e}", manager.name()));
            }
            Err(e) => return Presence::Unknown(e.to_string()),
        }
    }
    Presence::Missing(candidates.to_vec())
}

/// The upstream part of a distribution version: no epoch (`1:`), no revision (`-2~deb12u3`).
fn upstream(version: &str) -> &str {
    let v = version.split_once(':').map_or(version, |(_, rest)| rest);
    v.rsplit_once('-').map_or(v, |(up, _)| up)
}

/// Compares versions by their numeric dot-separated upstream components: `3.24.38-2 >= 3.24.9`.
pub fn at_least(version: &str, min: &str) -> bool {
    let nums = |s: &str| -> Vec<u64> {
        upstream(s)
            .split(['.', '+', '~'])
            .map(|part| {
                let digits: String = part.chars().take_while(|c| c.is_ascii_digit()).collect();
                digits.parse().unwrap_or(0)
            })
            .collect()
    };
    let (a, b) = (nums(version), nums(min));
    for i in 0..a.len().max(b.len()) {
        let (x, y) = (
            a.get(i).copied().unwrap_or(0),
            b.get(i).copied().unwrap_or(0),
        );
        if x != y {
            return x > y;
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn managers_are_detected_from_the_root_and_commands_are_exact() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        assert_eq!(Manager::detect(r), None);
        std::fs::create_dir_all(r.join("var/lib/pacman/local")).unwrap();
        assert_eq!(Manager::detect(r), Some(Manager::Pacman));
        std::fs::create_dir_all(r.join("usr/lib/sysimage/rpm")).unwrap();
        assert_eq!(Manager::detect(r), Some(Manager::Rpm));
        std::fs::create_dir_all(r.join("var/lib/dpkg")).unwrap();
        std::fs::write(r.join("var/lib/dpkg/status"), "").unwrap();
        assert_eq!(Manager::detect(r), Some(Manager::Dpkg));
        let pkgs = ["a".to_string(), "b".to_string()];
        assert_eq!(
            Manager::Dpkg.install_cmd(&pkgs).display(),
            "apt-get install -y a b"
        );
        assert_eq!(
            Manager::Rpm.install_cmd(&pkgs).display(),
            "dnf install -y a b"
        );
        assert_eq!(
            Manager::Pacman.install_cmd(&pkgs).display(),
            "pacman -S --needed --noconfirm a b"
        );
        let root = Path::new("/img");
        assert_eq!(
            Manager::Rpm.query_cmd(root, "gtk3").display(),
            "rpm --root /img -q --qf '%{VERSION}' gtk3"
        );
        assert_eq!(
            Manager::Pacman.query_cmd(root, "gtk3").display(),
            "pacman --root /img --dbpath /img/var/lib/pacman -Q gtk3"
        );
        assert_eq!(
            Manager::Dpkg.query_cmd(root, "gtk3").display(),
            "dpkg-query --admindir /img/var/lib/dpkg -W -f '${Status}\\t${Version}' gtk3"
        );
    }

    #[test]
    fn versions_compare_numerically() {
        assert!(at_least("3.24.38-2~deb12u3", "3.24.9"));
        assert!(at_least("1:3.24.9-1", "3.24.9"));
        assert!(!at_least("3.24.5-1", "3.24.9"));
        assert!(!at_least("3.22.30", "3.24.9"));
    }
}
