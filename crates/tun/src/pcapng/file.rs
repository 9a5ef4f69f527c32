//! Where a capture goes: the directory is opened once and every later step is relative to it
//! (so replacing a directory on the way afterwards redirects nothing), and a capture file is
//! only ever created anew (`O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC`, mode 0640): an
//! existing regular file at its name is removed first (so a hard link to another file is
//! never written through), while a symbolic link, FIFO, socket, device or directory there is
//! refused and left alone, never opened.
//!
//! Rotation names: the file being written is always `FILE`; a rotation renames `FILE.{k}` to
//! `FILE.{k+1}` from the oldest down and `FILE` to `FILE.1`, so `FILE.1` is the newest
//! closed file and `FILE.{N-1}` the oldest; renaming onto `FILE.{N-1}` removes the oldest. A
//! rename moves a directory entry without opening it, so whatever sits at `FILE.k` is never
//! followed either.

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{AtFlags, OFlag};
use nix::sys::stat::{Mode, SFlag};

use super::CaptureError;

/// Permissions of a capture file (before the umask): root reads and writes, its group reads.
pub(crate) const MODE: u32 = 0o640;

/// The directory and final name of a capture, and the path as given (for messages).
#[derive(Debug)]
pub(crate) struct Target {
    dir: OwnedFd,
    name: OsString,
    path: PathBuf,
}

/// What a file type is, for a refusal.
fn kind(mode: u32) -> &'static str {
    match SFlag::from_bits_truncate(mode & SFlag::S_IFMT.bits()) {
        SFlag::S_IFIFO => "a FIFO",
        SFlag::S_IFCHR => "a character device",
        SFlag::S_IFBLK => "a block device",
        SFlag::S_IFSOCK => "a socket",
        SFlag::S_IFDIR => "a directory",
        _ => "not a regular file",
    }
}

fn io(path: &Path, op: &'static str, errno: Errno) -> CaptureError {
    CaptureError::Io {
        path: path.to_path_buf(),
        op,
        cause: errno.into(),
    }
}

impl Target {
    /// Opens the directory of `path`. Symbolic links on the way to it are followed (as for
    /// any path); only the final component is checked, by [`Target::create`].
    pub(crate) fn new(path: &Path) -> Result<Target, CaptureError> {
        let bytes = path.as_os_str().as_bytes();
        let name = match path.file_name() {
            Some(name) if !bytes.ends_with(b"/") && !bytes.ends_with(b"/.") => name,
            _ => {
                return Err(CaptureError::NotAFile {
                    path: path.to_path_buf(),
                });
            }
        };
        let parent = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let dir = nix::fcntl::open(
            parent,
            OFlag::O_RDONLY | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(parent, "cannot open the directory", e))?;
        Ok(Target {
            dir,
            name: name.to_os_string(),
            path: path.to_path_buf(),
        })
    }

    /// The path as given.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// The name of ring member `k`: `FILE` for 0, `FILE.k` after.
    fn member_name(&self, k: u32) -> OsString {
        if k == 0 {
            return self.name.clone();
        }
        let mut name = self.name.clone().into_vec();
        name.extend_from_slice(format!(".{k}").as_bytes());
        OsString::from_vec(name)
    }

    /// The path of ring member `k` (see [`Target::member_name`]).
    pub(crate) fn member_path(&self, k: u32) -> PathBuf {
        self.path.with_file_name(self.member_name(k))
    }

    /// Creates `FILE` anew: a regular file there is removed first; a symbolic link or any
    /// other kind of file is refused and left as it is.
    pub(crate) fn create(&self) -> Result<File, CaptureError> {
        let name: &OsStr = &self.name;
        match nix::sys::stat::fstatat(&self.dir, name, AtFlags::AT_SYMLINK_NOFOLLOW) {
            Err(Errno::ENOENT) => {}
            Err(e) => return Err(io(&self.path, "cannot inspect", e)),
            Ok(st) => {
                let ty = st.st_mode & SFlag::S_IFMT.bits();
                if ty == SFlag::S_IFLNK.bits() {
                    return Err(CaptureError::SymbolicLink {
                        path: self.path.clone(),
                    });
                }
                if ty != SFlag::S_IFREG.bits() {
                    return Err(CaptureError::NotRegular {
                        path: self.path.clone(),
                        kind: kind(st.st_mode),
                    });
                }
                match nix::unistd::unlinkat(
                    &self.dir,
                    name,
                    nix::unistd::UnlinkatFlags::NoRemoveDir,
                ) {
                    Ok(()) | Err(Errno::ENOENT) => {}
                    Err(e) => return Err(io(&self.path, "cannot replace", e)),
                }
            }
        }
        // O_EXCL: whatever appeared at the name meanwhile (a link included) makes this fail
        // with EEXIST rather than be opened.
        let fd = nix::fcntl::openat(
            &self.dir,
            name,
            OFlag::O_WRONLY | OFlag::O_CREAT | OFlag::O_EXCL | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::from_bits_truncate(MODE),
        )
        .map_err(|e| io(&self.path, "cannot create", e))?;
        Ok(File::from(fd))
    }

    /// Shifts a ring of `files` members one step (see the module doc); `FILE` no longer
    /// exists afterwards unless the ring has one member, in which case [`Target::create`]
    /// replaces it.
    pub(crate) fn rotate(&self, files: u32) -> Result<(), CaptureError> {
        for k in (0..files.saturating_sub(1)).rev() {
            let from = self.member_name(k);
            let to = self.member_name(k + 1);
            match nix::fcntl::renameat(&self.dir, from.as_os_str(), &self.dir, to.as_os_str()) {
                Ok(()) | Err(Errno::ENOENT) => {}
                Err(e) => return Err(io(&self.member_path(k), "cannot rotate", e)),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};

    #[test]
    fn members_are_file_then_numbered_suffixes() {
        let dir = tempfile::tempdir().unwrap();
        let t = Target::new(&dir.path().join("cap.pcapng")).unwrap();
        assert_eq!(t.member_path(0), dir.path().join("cap.pcapng"));
        assert_eq!(t.member_path(1), dir.path().join("cap.pcapng.1"));
        assert_eq!(t.member_path(12), dir.path().join("cap.pcapng.12"));
    }

    #[test]
    fn a_path_that_names_no_file_is_refused() {
        for p in ["/", "/tmp/", "..", "/tmp/.."] {
            let err = Target::new(Path::new(p)).unwrap_err();
            assert!(matches!(err, CaptureError::NotAFile { .. }), "{p}: {err}");
            assert!(err.to_string().starts_with(p), "{err}");
        }
    }

    #[test]
    fn a_missing_directory_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("no/such");
        let err = Target::new(&missing.join("cap")).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: cannot open the directory: No such file or directory (os error 2)",
                missing.display()
            )
        );
    }

    #[test]
    fn create_replaces_a_regular_file_with_a_new_one_of_mode_0640() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("cap");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let other = dir.path().join("other");
        std::fs::hard_link(&path, &other).unwrap();
        let t = Target::new(&path).unwrap();
        drop(t.create().unwrap());
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.len(), 0);
        assert_eq!(meta.permissions().mode() & 0o7777 & !MODE, 0);
        assert_eq!(
            std::fs::read_to_string(&other).unwrap(),
            "old",
            "the other link is untouched"
        );
    }

    #[test]
    fn create_refuses_a_symlink_and_a_fifo_and_leaves_them() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        std::fs::write(&victim, "keep").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&victim, &link).unwrap();
        let err = Target::new(&link).unwrap().create().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("{}: a symbolic link; refusing to follow it", link.display())
        );
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "keep");

        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, Mode::from_bits_truncate(0o600)).unwrap();
        let err = Target::new(&fifo).unwrap().create().unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: not a regular file (a FIFO); refusing to write a capture to it",
                fifo.display()
            )
        );
        assert!(
            std::fs::symlink_metadata(&fifo)
                .unwrap()
                .file_type()
                .is_fifo()
        );

        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let err = Target::new(&sub).unwrap().create().unwrap_err();
        assert!(err.to_string().contains("(a directory)"), "{err}");
    }

    #[test]
    fn rotate_shifts_names_and_drops_the_oldest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c");
        let t = Target::new(&path).unwrap();
        let read = |k: u32| std::fs::read_to_string(t.member_path(k)).ok();
        for round in 0..5 {
            if round > 0 {
                t.rotate(3).unwrap();
                assert!(read(0).is_none());
            }
            use std::io::Write;
            t.create()
                .unwrap()
                .write_all(format!("{round}").as_bytes())
                .unwrap();
        }
        assert_eq!(read(0).as_deref(), Some("4"));
        assert_eq!(read(1).as_deref(), Some("3"));
        assert_eq!(read(2).as_deref(), Some("2"));
        assert_eq!(read(3), None);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 3);
    }
}
