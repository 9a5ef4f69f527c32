//! `timeout -k KILL DURATION PROGRAM ARGS…` (coreutils) without the `timeout` process.
//!
//! Probes and `gsettings` run bounded in time through coreutils `timeout`. [`RealHost`] runs
//! such a command itself, with the same observable result, and one process fewer each time:
//!
//! * PROGRAM starts in a process group of its own (`timeout` starts one for itself and the
//!   program), with the command's environment;
//! * after DURATION it gets SIGTERM, then SIGCONT, as its whole group does; KILL seconds later
//!   SIGKILL (0: never);
//! * the exit code is `timeout`'s: the program's own; 124 when it was timed out (137 when it
//!   died of a SIGKILL after that); none (a signal) when the SIGKILL was needed, or when the
//!   program died of a signal it was not sent (`timeout` re-raises it on itself).
//!
//! Whenever that is not certain to hold, [`run`] returns `None` before starting anything and
//! the real `timeout` runs: the program cannot be started (`timeout` then exits 126 or 127 with
//! its own message), the command has another form, or the kernel has no `pidfd_open` (Linux
//! 5.3) to wait for the program with a deadline.
//!
//! [`RealHost`]: super::RealHost

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{Signal, kill, killpg};
use nix::unistd::Pid;

use super::{Cmd, Output};

/// `timeout -k KILL DURATION PROGRAM…` with whole seconds: (KILL, DURATION, PROGRAM…).
pub(super) fn parse(argv: &[String]) -> Option<(Duration, Duration, &[String])> {
    let [timeout, k, kill_after, duration, program @ ..] = argv else {
        return None;
    };
    if timeout != "timeout" || k != "-k" || program.is_empty() {
        return None;
    }
    let secs = |s: &str| -> Option<Duration> {
        (!s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| Duration::from_secs(s.parse().unwrap_or(0)))
    };
    let duration = secs(duration)?;
    // `timeout 0` means no limit at all: left to the real one.
    (!duration.is_zero()).then_some((secs(kill_after)?, duration, program))
}

/// True when this kernel has `pidfd_open` (asked once).
fn pidfd_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| pidfd(std::process::id() as i32).is_some())
}

fn pidfd(pid: i32) -> Option<OwnedFd> {
    // SAFETY: pidfd_open takes a pid and flags and returns a new file descriptor or -1; it
    // touches no memory of ours.
    let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: `fd` is a file descriptor the kernel just opened for us, owned by nothing else.
    Some(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

/// Runs `program` as `timeout -k kill_after duration program…` would (see the module
/// documentation); `None` when the real `timeout` must run instead (nothing was started).
pub(super) fn run(
    cmd: &Cmd,
    kill_after: Duration,
    duration: Duration,
    program: &[String],
) -> Option<Output> {
    if !pidfd_works() {
        return None;
    }
    let mut child = Command::new(&program[0])
        .args(&program[1..])
        .envs(cmd.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .ok()?;
    let pid = Pid::from_raw(child.id() as i32);
    let start = Instant::now();
    let mut streams = [
        child.stdout.take().map(|o| File::from(OwnedFd::from(o))),
        child.stderr.take().map(|e| File::from(OwnedFd::from(e))),
    ];
    let mut bufs = [Vec::new(), Vec::new()];
    let mut exited = false;
    let Some(alive) = pidfd(pid.as_raw()) else {
        // No way to wait with a deadline here: stop it, and let the caller run the real
        // `timeout` (a probe only reads), rather than wait without a deadline.
        let _ = killpg(pid, Signal::SIGKILL);
        let _ = child.wait();
        return None;
    };
    let alive = Some(alive);
    let mut timed_out = false;
    let mut killed = false;
    let mut kill_at: Option<Instant> = None;
    loop {
        let open: Vec<usize> = (0..2).filter(|&i| streams[i].is_some()).collect();
        if exited && open.is_empty() {
            break;
        }
        let next = if exited {
            None
        } else if !timed_out {
            Some(start + duration)
        } else {
            kill_at
        };
        let wait = match next {
            None => PollTimeout::NONE,
            Some(at) => {
                let ms = at.saturating_duration_since(Instant::now()).as_millis();
                PollTimeout::try_from(ms.min(60_000) as i32 + 1).unwrap_or(PollTimeout::MAX)
            }
        };
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .map(|&i| PollFd::new(streams[i].as_ref().unwrap().as_fd(), PollFlags::POLLIN))
            .collect();
        if let Some(p) = alive.as_ref().filter(|_| !exited) {
            fds.push(PollFd::new(p.as_fd(), PollFlags::POLLIN));
        }
        match poll(&mut fds, wait) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => {
                // Cannot wait here any more: stop it, and let the caller run the real
                // `timeout`, rather than wait without a deadline.
                let _ = killpg(pid, Signal::SIGKILL);
                let _ = child.wait();
                return None;
            }
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| f.revents().is_some_and(|r| !r.is_empty()))
            .collect();
        drop(fds);
        for (n, &i) in open.iter().enumerate() {
            if ready[n] {
                let mut chunk = [0u8; 16 * 1024];
                let Some(file) = streams[i].as_mut() else {
                    continue;
                };
                match file.read(&mut chunk) {
                    Ok(0) => streams[i] = None,
                    Ok(n) => bufs[i].extend_from_slice(&chunk[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => streams[i] = None,
                }
            }
        }
        if !exited && ready.len() > open.len() && ready[open.len()] {
            exited = true;
            continue;
        }
        if exited {
            continue;
        }
        let now = Instant::now();
        if !timed_out && now >= start + duration {
            timed_out = true;
            // As `timeout` does: the program, then its group; SIGCONT so a stopped one dies.
            let _ = kill(pid, Signal::SIGTERM);
            let _ = killpg(pid, Signal::SIGTERM);
            let _ = kill(pid, Signal::SIGCONT);
            let _ = killpg(pid, Signal::SIGCONT);
            kill_at = (!kill_after.is_zero()).then(|| now + kill_after);
        } else if let Some(at) = kill_at
            && now >= at
        {
            let _ = kill(pid, Signal::SIGKILL);
            let _ = killpg(pid, Signal::SIGKILL);
            killed = true;
            kill_at = None;
        }
    }
    let status = child.wait().ok()?;
    let mut stderr = String::from_utf8_lossy(&bufs[1]).into_owned();
    let code = if killed {
        // `timeout` sent SIGKILL to its own group, itself included.
        None
    } else if let Some(code) = status.code() {
        Some(if timed_out { 124 } else { code })
    } else {
        let sig = status.signal().unwrap_or(0);
        if status.core_dumped() {
            stderr.push_str("timeout: the monitored command dumped core\n");
        }
        match (timed_out, sig) {
            (true, libc::SIGKILL) => Some(128 + sig),
            (true, _) => Some(124),
            // `timeout` re-raises the signal on itself.
            (false, _) => None,
        }
    };
    Some(Output {
        code,
        stdout: String::from_utf8_lossy(&bufs[0]).into_owned(),
        stderr,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::Host;

    fn words(line: &[&str]) -> Vec<String> {
        line.iter().map(|s| s.to_string()).collect()
    }

    /// The real `timeout`'s result and the emulation's for the same command line.
    fn both(line: &[&str]) -> (Output, Option<Output>) {
        let argv = words(line);
        let out = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .output()
            .expect("coreutils timeout");
        let real = Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        };
        let cmd = Cmd::new(argv.clone());
        let (k, d, program) = parse(&argv).expect("a timeout command");
        (real, run(&cmd, k, d, program))
    }

    #[test]
    fn only_the_plain_form_is_taken() {
        assert!(parse(&words(&["timeout", "-k", "2", "20", "ps", "--version"])).is_some());
        assert!(parse(&words(&["timeout", "20", "ps"])).is_none());
        assert!(parse(&words(&["timeout", "-k", "2", "1.5", "ps"])).is_none());
        assert!(parse(&words(&["timeout", "-k", "2", "0", "ps"])).is_none());
        assert!(parse(&words(&["timeout", "-k", "2", "20"])).is_none());
        assert!(parse(&words(&["setpriv", "-k", "2", "20", "ps"])).is_none());
    }

    #[test]
    fn it_gives_what_coreutils_timeout_gives() {
        if Command::new("timeout").arg("--version").output().is_err() {
            hostkit_testutil::skip("coreutils timeout is missing");
            return;
        }
        if !pidfd_works() {
            hostkit_testutil::skip("no pidfd_open here (the real timeout always runs)");
            return;
        }
        let cases: &[&[&str]] = &[
            // Output on both streams, an exit code.
            &[
                "timeout",
                "-k",
                "2",
                "20",
                "sh",
                "-c",
                "echo out; echo err >&2; exit 3",
            ],
            &["timeout", "-k", "2", "20", "sh", "-c", "seq 1 100000"],
            // Killed by a signal it was not sent: no code.
            &["timeout", "-k", "2", "20", "sh", "-c", "kill -USR1 $$"],
            // Timed out: 124, the group too (the sleep does not hold the pipe).
            &[
                "timeout",
                "-k",
                "2",
                "1",
                "sh",
                "-c",
                "echo start; sleep 30; echo never",
            ],
            // Ignores SIGTERM: SIGKILL after 1 s more, and no code.
            &[
                "timeout",
                "-k",
                "1",
                "1",
                "sh",
                "-c",
                "trap '' TERM; echo stubborn; sleep 30",
            ],
            // Exits by itself after SIGTERM: 124.
            &[
                "timeout",
                "-k",
                "2",
                "1",
                "sh",
                "-c",
                "trap 'echo bye; exit 0' TERM; sleep 30 & wait",
            ],
        ];
        for line in cases {
            let (real, emulated) = both(line);
            let emulated = emulated.unwrap_or_else(|| panic!("{line:?}: not emulated"));
            assert_eq!(
                (real.code, &real.stdout, &real.stderr),
                (emulated.code, &emulated.stdout, &emulated.stderr),
                "{line:?}"
            );
        }
        // A program that cannot start is left to the real timeout (127 and its message).
        let argv = words(&["timeout", "-k", "2", "20", "hostkit-no-such-program"]);
        let (k, d, p) = parse(&argv).unwrap();
        assert!(run(&Cmd::new(argv.clone()), k, d, p).is_none());
        let out = super::super::RealHost.run(&Cmd::new(argv)).unwrap();
        assert_eq!(out.code, Some(127), "{}", out.stderr);
        assert!(
            out.stderr.contains("hostkit-no-such-program"),
            "{}",
            out.stderr
        );
    }
}
