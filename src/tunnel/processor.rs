//! `--processor-exec CMD` and `--processor-socket PATH`: a program of the user's, in any
//! language, as a stage of the relay ([`hostkit_tun::external`]; the protocol is in
//! `docs/processors.md`). Checked with the other options before anything changes; started
//! (spawned or connected, then greeted) once the namespace is entered, still before anything
//! changes.

use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hostkit_tun::external::{ExternalOptions, ExternalStage, FailMode, HELLO_TIMEOUT};

/// The descriptor the program finds its socket on.
pub const PROCESSOR_FD: i32 = 3;

/// The environment variables a spawned program gets from hostkit's (nothing else: no
/// `LD_*`, no `PYTHON*`, no tokens or agent sockets).
const KEPT_ENV: &[&str] = &["PATH", "HOME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TERM"];

/// How the program is reached.
#[derive(Debug, Clone)]
pub(super) enum Plan {
    /// Spawned: the command line as given, its words, the program file found.
    Exec {
        line: String,
        argv: Vec<String>,
        program: PathBuf,
    },
    /// Connected: the checked socket path.
    Socket { path: PathBuf },
}

impl Plan {
    /// `exec 'python3 x.py'`, `socket /run/p.sock`.
    pub(super) fn what(&self) -> String {
        match self {
            Plan::Exec { line, .. } => format!("exec '{line}'"),
            Plan::Socket { path } => format!("socket {}", path.display()),
        }
    }

    /// Checks `--processor-exec` (its words, its program) or `--processor-socket` (the
    /// trust boundary), changing nothing.
    pub(super) fn check(exec: Option<&str>, socket: Option<&Path>) -> anyhow::Result<Option<Plan>> {
        if let Some(line) = exec {
            let argv = split_command(line).map_err(|e| anyhow!("--processor-exec: {e}"))?;
            let program = find_program(&argv[0]).map_err(|e| anyhow!("--processor-exec: {e}"))?;
            return Ok(Some(Plan::Exec {
                line: line.trim().to_string(),
                argv,
                program,
            }));
        }
        if let Some(path) = socket {
            let path =
                hostkit_net::check_socket(path).map_err(|e| anyhow!("--processor-socket: {e}"))?;
            return Ok(Some(Plan::Socket { path }));
        }
        Ok(None)
    }

    /// Spawns or connects to the program and greets it: the stage, or why not.
    pub(super) fn start(
        &self,
        timeout: Duration,
        fail: FailMode,
        devs: [String; 2],
        filter: Option<String>,
    ) -> anyhow::Result<ExternalStage> {
        let what = self.what();
        let (stream, child) = match self {
            Plan::Exec { argv, program, .. } => {
                let (stream, child) = spawn(argv, program)
                    .with_context(|| format!("--processor-exec: cannot start {}", argv[0]))?;
                (stream, Some(child))
            }
            Plan::Socket { path } => (connect(path, HELLO_TIMEOUT)?, None),
        };
        let opts = ExternalOptions {
            what,
            timeout,
            hello_timeout: HELLO_TIMEOUT,
            fail,
            devs,
            filter,
        };
        Ok(ExternalStage::start(stream, child, opts)?)
    }
}

/// Splits a command line into words as a POSIX shell would — blanks separate words, `'…'`
/// keeps everything literally, `"…"` keeps everything but `\"`, `\\`, `\$` and `` \` ``, a
/// backslash outside quotes keeps the next character — without a shell: no variables, globs,
/// pipes or redirections; an unquoted `|`, `&`, `;`, `<`, `>`, `(`, `)`, `$` or `` ` `` is
/// refused (it would need a shell: say `sh -c '…'`).
pub(super) fn split_command(line: &str) -> Result<Vec<String>, String> {
    #[derive(PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut words = Vec::new();
    let mut word: Option<String> = None;
    let mut quote = Quote::None;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match quote {
            Quote::Single => match c {
                '\'' => quote = Quote::None,
                c => word.get_or_insert_default().push(c),
            },
            Quote::Double => match c {
                '"' => quote = Quote::None,
                '\\' => match chars.next() {
                    Some(n @ ('"' | '\\' | '$' | '`')) => word.get_or_insert_default().push(n),
                    Some('\n') => {}
                    Some(n) => {
                        let w = word.get_or_insert_default();
                        w.push('\\');
                        w.push(n);
                    }
                    None => return Err("an unclosed double quote".into()),
                },
                c => word.get_or_insert_default().push(c),
            },
            Quote::None => match c {
                ' ' | '\t' | '\n' => {
                    if let Some(w) = word.take() {
                        words.push(w);
                    }
                }
                '\'' => {
                    quote = Quote::Single;
                    word.get_or_insert_default();
                }
                '"' => {
                    quote = Quote::Double;
                    word.get_or_insert_default();
                }
                '\\' => match chars.next() {
                    Some('\n') => {}
                    Some(n) => word.get_or_insert_default().push(n),
                    None => return Err("a backslash at the end".into()),
                },
                '|' | '&' | ';' | '<' | '>' | '(' | ')' | '$' | '`' => {
                    return Err(format!(
                        "'{c}' needs a shell, and the command runs without one: quote it, or run a shell yourself (sh -c '…')"
                    ));
                }
                c => word.get_or_insert_default().push(c),
            },
        }
    }
    match quote {
        Quote::Single => return Err("an unclosed single quote".into()),
        Quote::Double => return Err("an unclosed double quote".into()),
        Quote::None => {}
    }
    if let Some(w) = word {
        words.push(w);
    }
    if words.is_empty() {
        return Err("an empty command".into());
    }
    Ok(words)
}

/// The program file `name` names: itself if it has a `/`, else the first in `PATH`; it must
/// be an executable regular file that only root (or whoever runs hostkit) could have written,
/// in a directory likewise ([`hostkit_core::source::check_program`]): it runs as root.
fn find_program(name: &str) -> Result<PathBuf, String> {
    let program = locate_program(name)?;
    hostkit_core::source::check_program(&program).map_err(|e| e.to_string())?;
    Ok(program)
}

/// [`find_program`]'s lookup, before the program's owner and mode are checked.
fn locate_program(name: &str) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    let executable = |p: &Path| {
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.contains('/') {
        let p = PathBuf::from(name);
        return match std::fs::metadata(&p) {
            Err(e) => Err(format!("{name}: {e}")),
            Ok(m) if !m.is_file() => Err(format!("{name}: not a regular file")),
            Ok(_) if !executable(&p) => Err(format!("{name}: not executable")),
            Ok(_) => Ok(p),
        };
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
        .ok_or_else(|| format!("no program {name} in PATH ({})", path.to_string_lossy()))
}

/// Starts the program: its socket on descriptor 3 (`HOSTKIT_PROCESSOR_FD=3`), stdin from
/// /dev/null, stdout to hostkit's stderr (stdout carries the counters), stderr hostkit's; a
/// short list of environment variables; no other descriptor; its own process group (a
/// terminal's Ctrl-C reaches hostkit, which then closes the socket); killed if hostkit dies.
fn spawn(argv: &[String], program: &Path) -> std::io::Result<(UnixStream, Child)> {
    let (ours, theirs) = UnixStream::pair()?;
    let mut cmd = Command::new(program);
    cmd.arg0(&argv[0])
        .args(&argv[1..])
        .env_clear()
        .envs(
            KEPT_ENV
                .iter()
                .filter_map(|k| std::env::var_os(k).map(|v| (k, v))),
        )
        .env("HOSTKIT_PROCESSOR_FD", PROCESSOR_FD.to_string())
        .env(
            "HOSTKIT_PROCESSOR_PROTOCOL",
            hostkit_tun::external::proto::VERSION.to_string(),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
        .stderr(Stdio::inherit())
        .process_group(0);
    let fd = theirs.as_raw_fd();
    let parent = std::process::id();
    // SAFETY: the closure runs in the child between fork and exec, and calls only
    // async-signal-safe functions (fcntl, dup2, syscall(close_range), prctl, getppid) on
    // plain integers; it allocates nothing and touches no lock.
    unsafe {
        cmd.pre_exec(move || {
            // The socket on descriptor 3, kept across exec.
            if fd == PROCESSOR_FD {
                if libc::fcntl(fd, libc::F_SETFD, 0) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            } else if libc::dup2(fd, PROCESSOR_FD) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // Every other descriptor closes at exec (std's own status pipe included, which
            // is why they are marked rather than closed now).
            let first = (PROCESSOR_FD + 1) as libc::c_uint;
            if libc::syscall(
                libc::SYS_close_range,
                first,
                libc::c_uint::MAX,
                libc::CLOSE_RANGE_CLOEXEC,
            ) != 0
            {
                for f in first as i32..4096 {
                    libc::fcntl(f, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
            // Dies with hostkit (even by SIGKILL), and not after it.
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::getppid() as u32 != parent {
                return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
            }
            Ok(())
        });
    }
    let child = cmd.spawn()?;
    drop(theirs);
    Ok((ours, child))
}

/// Connects to a listening program (bounded: a full backlog is retried until `timeout`) and
/// checks who listens: root (the user hostkit runs as), from its credentials at `listen()`.
fn connect(path: &Path, timeout: Duration) -> anyhow::Result<UnixStream> {
    use nix::sys::socket::{
        AddressFamily, SockFlag, SockType, UnixAddr, connect, getsockopt, socket,
        sockopt::PeerCredentials,
    };
    let shown = path.display();
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    )
    .context("create a Unix socket")?;
    let addr = UnixAddr::new(path).with_context(|| format!("--processor-socket {shown}"))?;
    let deadline = Instant::now() + timeout;
    loop {
        match connect(fd.as_raw_fd(), &addr) {
            Ok(()) => break,
            Err(nix::errno::Errno::EINTR) => {}
            Err(nix::errno::Errno::EAGAIN) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(nix::errno::Errno::ECONNREFUSED) => {
                bail!("--processor-socket {shown}: nobody listens on it (connection refused)")
            }
            Err(e) => bail!("--processor-socket {shown}: cannot connect: {e}"),
        }
    }
    let cred = getsockopt(&fd, PeerCredentials)
        .with_context(|| format!("--processor-socket {shown}: who listens on it"))?;
    if !hostkit_net::trusted_uid(cred.uid()) {
        bail!(
            "--processor-socket {shown}: the program listening on it (pid {}) runs as uid {}, not as root: it would see and decide every packet",
            cred.pid(),
            cred.uid()
        );
    }
    let stream = UnixStream::from(fd);
    stream.set_nonblocking(false)?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_split_like_a_shell_splits_words() {
        let ok = |line: &str| split_command(line).unwrap();
        assert_eq!(ok("python3 x.py 3"), ["python3", "x.py", "3"]);
        assert_eq!(ok("  a   b\tc  "), ["a", "b", "c"]);
        assert_eq!(ok("a 'b c' \"d e\" f\\ g"), ["a", "b c", "d e", "f g"]);
        assert_eq!(ok("a '' \"\""), ["a", "", ""]);
        assert_eq!(ok(r#"a "x\"y\\z\$\n""#), ["a", r#"x"y\z$\n"#]);
        assert_eq!(ok("a 'it''s' x'|'y"), ["a", "its", "x|y"]);
        assert_eq!(
            ok("sh -c 'exec cat | tee /dev/null'"),
            ["sh", "-c", "exec cat | tee /dev/null"]
        );
        for (line, needle) in [
            ("", "empty command"),
            ("   ", "empty command"),
            ("a 'b", "unclosed single quote"),
            ("a \"b", "unclosed double quote"),
            ("a \\", "backslash at the end"),
            ("a | b", "'|' needs a shell"),
            ("a > log", "'>' needs a shell"),
            ("a $HOME", "'$' needs a shell"),
            ("a; b", "';' needs a shell"),
        ] {
            let err = split_command(line).unwrap_err();
            assert!(err.contains(needle), "{line:?}: {err:?} lacks {needle:?}");
        }
    }

    #[test]
    fn programs_are_found_in_path_or_by_their_path() {
        assert!(find_program("sh").unwrap().ends_with("sh"));
        assert!(
            find_program("no-such-program-hostkit")
                .unwrap_err()
                .contains("no program no-such-program-hostkit in PATH")
        );
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "").unwrap();
        assert!(
            find_program(plain.to_str().unwrap())
                .unwrap_err()
                .contains("not executable")
        );
        assert!(
            find_program("/etc")
                .unwrap_err()
                .contains("not a regular file")
        );
        assert!(
            find_program("/nonexistent/x")
                .unwrap_err()
                .contains("No such file")
        );
    }

    /// The attack: a program someone else could change, run by root.
    #[test]
    fn a_program_others_could_write_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let prog = dir.path().join("prog");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(find_program(prog.to_str().unwrap()).unwrap(), prog);
        // World-writable: anyone could put their code in it.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = find_program(prog.to_str().unwrap()).unwrap_err();
        assert!(err.contains("lets group or others change it"), "{err}");
        // In a directory others can write (not sticky): anyone could replace it.
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
        let err = find_program(prog.to_str().unwrap()).unwrap_err();
        assert!(err.contains("lets group or others change it"), "{err}");
        // Through a link: the file it resolves to is what is checked.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o777)).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&prog, &link).unwrap();
        assert!(find_program(link.to_str().unwrap()).is_err());
    }
}
