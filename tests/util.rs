//! The harness: temporary directories, the real `hostkit` binary, root checks and network
//! namespaces that are always deleted.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

/// Skips the current test unless running as root (see [`skip`]).
macro_rules! require_root {
    () => {
        if !$crate::util::is_root() {
            $crate::util::skip("needs root (CAP_NET_ADMIN/CAP_SYS_ADMIN); run the suite as root");
            return;
        }
    };
}

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A missing prerequisite. Under CI the test fails, naming it: a test never passes without
/// running there. Elsewhere it is skipped, visibly: `SKIPPED <test name>: <why>` goes straight
/// to the terminal's stderr (the harness captures only `print!`/`eprint!`), so it shows in the
/// default `cargo test` output.
#[track_caller]
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    if in_ci() {
        panic!("{name}: missing prerequisite under CI: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {name}: {why}");
}

/// True when `tool VERSION_ARG` runs; otherwise skips the test (fails it under CI),
/// naming the tool.
pub fn have_tool(tool: &str, version_arg: &str) -> bool {
    let ok = Command::new(tool)
        .arg(version_arg)
        .stdin(Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        skip(&format!("`{tool}` is not installed (see .ci/deps)"));
    }
    ok
}

/// True when the tests run as root.
pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// The path of the built `hostkit` binary.
pub fn hostkit_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_hostkit"))
}

/// A `Command` for the real `hostkit` binary, with a clean, predictable environment.
pub fn hostkit() -> Command {
    let mut cmd = Command::new(hostkit_bin());
    cmd.env_remove("NO_COLOR").env("RUST_BACKTRACE", "0");
    cmd
}

/// A temporary directory, removed on drop.
pub struct TestDir {
    dir: tempfile::TempDir,
}

impl TestDir {
    /// A fresh empty directory.
    pub fn new() -> TestDir {
        TestDir {
            dir: tempfile::Builder::new()
                .prefix("hostkit-test-")
                .tempdir()
                .expect("tempdir"),
        }
    }

    /// Its path.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// `path` joined under the directory.
    pub fn join(&self, rel: impl AsRef<Path>) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Writes a file (creating parents).
    pub fn write(&self, rel: impl AsRef<Path>, contents: impl AsRef<[u8]>) -> PathBuf {
        let path = self.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("create parent");
        }
        std::fs::write(&path, contents).expect("write file");
        path
    }

    /// Reads a file as a string.
    pub fn read(&self, rel: impl AsRef<Path>) -> String {
        std::fs::read_to_string(self.join(rel)).expect("read file")
    }
}

/// Runs a command and returns its output; panics with the command line if it cannot start.
pub fn run(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"))
}

/// Runs a command that must end within `secs` seconds: killed and the test failed otherwise
/// (for what could block, such as a FIFO).
pub fn run_with_timeout(cmd: &mut Command, secs: u64) -> Output {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    use std::sync::mpsc;
    use std::time::{Duration, Instant};
    // Its own process group, so that what it started (a dbus-daemon, an Xvfb) goes with it.
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    let group = nix::unistd::Pid::from_raw(child.id() as i32);
    let kill_group = || {
        let _ = nix::sys::signal::killpg(group, nix::sys::signal::Signal::SIGKILL);
    };
    let reader = |mut pipe: Box<dyn Read + Send>| {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = pipe.read_to_end(&mut v);
            let _ = tx.send(v);
        });
        rx
    };
    let out_rx = reader(Box::new(child.stdout.take().expect("stdout")));
    let err_rx = reader(Box::new(child.stderr.take().expect("stderr")));
    let deadline = Instant::now() + Duration::from_secs(secs);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if Instant::now() > deadline {
            kill_group();
            let _ = child.wait();
            panic!("{cmd:?} did not end within {secs} s (it blocked)");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    // A process it left behind may hold the pipes open: bounded too.
    let collect = |rx: mpsc::Receiver<Vec<u8>>| {
        let left = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(2);
        rx.recv_timeout(left).unwrap_or_else(|_| {
            kill_group();
            rx.recv_timeout(Duration::from_secs(5))
                .unwrap_or_else(|_| panic!("{cmd:?}: what it started still holds its output open"))
        })
    };
    Output {
        status,
        stdout: collect(out_rx),
        stderr: collect(err_rx),
    }
}

/// Runs a command that must succeed, returning its stdout.
pub fn run_ok(cmd: &mut Command) -> String {
    let out = run(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Stdout and stderr of an output, as strings.
pub fn texts(out: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Renders manual page `path` (`label` in messages) with man-db as a reader runs it, every
/// warning on, and checks that it renders without one and has a NAME, a SYNOPSIS, an EXIT
/// STATUS and its own name (`label` less `.1` or `.1.gz`).
pub fn assert_man_page_renders(path: &std::path::Path, label: &str) {
    let out = run(Command::new("man")
        .args(["--warnings=all", "-l"])
        .arg(path)
        .env("MANWIDTH", "80")
        .env("LC_ALL", "C.UTF-8")
        .env_remove("MANPAGER")
        .env_remove("PAGER"));
    let (rendered, warnings) = texts(&out);
    assert!(
        out.status.success() && warnings.is_empty(),
        "man -l {label}: {warnings}"
    );
    let name = label.trim_end_matches(".gz").trim_end_matches(".1");
    for want in ["NAME", "SYNOPSIS", "EXIT STATUS", name] {
        assert!(rendered.contains(want), "{label}: no {want}:\n{rendered}");
    }
}

static NETNS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`) with a unique name, deleted on drop.
/// Every packet a test sends stays inside one of these.
pub struct NetNs {
    name: String,
}

impl NetNs {
    /// Creates `hk-<pid>-<n>` and brings its `lo` up.
    pub fn new() -> NetNs {
        let n = NETNS_COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("hk-{}-{}", std::process::id(), n);
        run_ok(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs { name };
        run_ok(&mut ns.exec(["ip", "link", "set", "lo", "up"]));
        ns
    }

    /// The namespace's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// A command run inside the namespace (`ip netns exec NAME …`).
    pub fn exec<I, S>(&self, argv: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name]);
        cmd.args(argv);
        cmd
    }

    /// `ip -n NAME ARGS…`, which must succeed; returns stdout.
    pub fn ip(&self, args: &[&str]) -> String {
        run_ok(Command::new("ip").arg("-n").arg(&self.name).args(args))
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Runs each named test once per relay engine: `NAME::simple` and `NAME::fast`.
macro_rules! with_both_engines {
    ($($name:ident),* $(,)?) => {
        $(
            mod $name {
                #[test]
                fn simple() {
                    super::$name("simple")
                }
                #[test]
                fn fast() {
                    super::$name("fast")
                }
            }
        )*
    };
}

/// A program in the background — a `hostkit tun up`, an example built on the relay — its
/// output going to files; killed on drop.
pub struct Background {
    child: Option<Child>,
    name: String,
    out: PathBuf,
    err: PathBuf,
}

impl Background {
    /// Starts `cmd` (stdin closed, stdout and stderr to `DIR/NAME.stdout` and `.stderr`) and
    /// waits until its stderr says `ready`, for at most `timeout`; exiting first is a failure.
    pub fn start(
        cmd: &mut Command,
        dir: &TestDir,
        name: &str,
        ready: &str,
        timeout: Duration,
    ) -> Background {
        let out = dir.join(format!("{name}.stdout"));
        let err = dir.join(format!("{name}.stderr"));
        let child = cmd
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&out).unwrap())
            .stderr(std::fs::File::create(&err).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("start {name} ({cmd:?}): {e}"));
        let mut bg = Background {
            child: Some(child),
            name: name.to_string(),
            out,
            err,
        };
        let start = Instant::now();
        loop {
            if bg.stderr().contains(ready) {
                return bg;
            }
            if let Ok(Some(status)) = bg.child.as_mut().unwrap().try_wait() {
                panic!("{name} exited early ({status}):\n{}", bg.stderr());
            }
            assert!(
                start.elapsed() < timeout,
                "{name}: no {ready:?} after {timeout:?}:\n{}",
                bg.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// What it wrote to stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err).unwrap_or_default()
    }

    /// SIGTERM, then a bounded wait (20 s): it must exit 0 (for a relay: a full teardown).
    /// Returns stdout (the final report) and stderr.
    pub fn stop(mut self) -> (String, String) {
        let mut child = self.child.take().unwrap();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            if start.elapsed() > Duration::from_secs(20) {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{} did not exit after SIGTERM:\n{}",
                    self.name,
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        let stdout = std::fs::read_to_string(&self.out).unwrap_or_default();
        let stderr = self.stderr();
        assert!(
            status.success(),
            "{} stopped by SIGTERM exited with {status}:\n{stderr}",
            self.name
        );
        (stdout, stderr)
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
