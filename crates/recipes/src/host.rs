//! Host effects behind one small trait: running commands (gsettings, dconf, dpkg-query, the
//! package manager) and reading the environment. [`RealHost`] is the real thing; unit tests of
//! the planner use a fake.

mod timeout;

use std::process::Command;

use crate::error::{Error, Result};

/// What a command printed and how it ended.
#[derive(Debug, Clone)]
pub struct Output {
    /// The exit code (`None` when killed by a signal).
    pub code: Option<i32>,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// True when the command exited 0.
    pub fn success(&self) -> bool {
        self.code == Some(0)
    }
}

/// A command line with extra environment variables.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Cmd {
    /// The program and its arguments.
    pub argv: Vec<String>,
    /// Variables set for this command only (not shown in the command line).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<(String, String)>,
}

impl Cmd {
    /// A command from its words.
    pub fn new<I, S>(argv: I) -> Cmd
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Cmd {
            argv: argv.into_iter().map(Into::into).collect(),
            env: Vec::new(),
        }
    }

    /// Adds an environment variable.
    pub fn env(mut self, key: &str, value: &str) -> Cmd {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// The command line as a person would type it (POSIX-shell quoted).
    pub fn display(&self) -> String {
        self.argv
            .iter()
            .map(|a| shell_quote(a))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Turns a non-zero exit into an error naming the command.
    pub fn check(&self, out: Output) -> Result<Output> {
        if out.success() {
            Ok(out)
        } else {
            Err(Error::Command {
                command: self.display(),
                failure: format!(
                    "exited with status {}: {}",
                    out.code.map_or("signal".to_string(), |c| c.to_string()),
                    out.stderr.trim()
                ),
            })
        }
    }
}

/// Quotes a word for a POSIX shell when it needs it.
pub fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
    if plain {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// The host: commands, environment, identity. Shared by the steps a plan checks at the same
/// time, hence `Sync`.
pub trait Host: Sync {
    /// Runs a command to completion. An error only when it cannot start
    /// ([`Error::NotStarted`]).
    fn run(&self, cmd: &Cmd) -> Result<Output>;
    /// An environment variable.
    fn env(&self, name: &str) -> Option<String>;
    /// The effective user and group ids.
    fn ids(&self) -> (u32, u32);
    /// True when package queries may be answered from the package database's files instead
    /// of the query command, where the answer is certainly the same (dpkg's status file, see
    /// `pkg::dpkg_status`). Hosts whose commands are not the real ones (test fakes) say no.
    fn reads_package_database(&self) -> bool {
        false
    }
    /// Called once by `revert` after every entry is put back, before the state directory is
    /// cleaned up: a host that caused side effects of its own (a dconf database its write
    /// created) removes them here.
    fn finish_revert(&self) -> Result<()> {
        Ok(())
    }
}

/// The real host. A command `timeout -k K N PROGRAM…` runs PROGRAM directly, bounded the same
/// way (see `host/timeout.rs`).
#[derive(Debug, Default, Clone, Copy)]
pub struct RealHost;

impl Host for RealHost {
    fn run(&self, cmd: &Cmd) -> Result<Output> {
        let Some((program, args)) = cmd.argv.split_first() else {
            return Err(Error::NotStarted {
                command: String::new(),
                reason: "empty command".into(),
            });
        };
        log::debug!("running {}", cmd.display());
        if let Some((kill_after, duration, bounded)) = timeout::parse(&cmd.argv)
            && let Some(out) = timeout::run(cmd, kill_after, duration, bounded)
        {
            // What `timeout` would have given, without its process.
            return Ok(out);
        }
        let out = Command::new(program)
            .args(args)
            .envs(cmd.env.iter().map(|(k, v)| (k, v)))
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| Error::NotStarted {
                command: cmd.display(),
                reason: e.to_string(),
            })?;
        Ok(Output {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        })
    }

    fn env(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }

    fn reads_package_database(&self) -> bool {
        true
    }

    fn ids(&self) -> (u32, u32) {
        (
            nix::unistd::geteuid().as_raw(),
            nix::unistd::getegid().as_raw(),
        )
    }
}

/// True when an error says the command could not start (e.g. not installed).
pub fn not_started(err: &Error) -> bool {
    matches!(err, Error::NotStarted { .. })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A fake host for unit tests of the planner: canned command outputs, a fixed environment.

    use std::collections::BTreeMap;
    use std::sync::Mutex;

    use super::*;

    /// Answers commands from a table keyed by the command line; records every call.
    #[derive(Default)]
    pub struct FakeHost {
        pub answers: BTreeMap<String, Output>,
        pub env: BTreeMap<String, String>,
        pub calls: Mutex<Vec<String>>,
    }

    impl FakeHost {
        pub fn answer(&mut self, line: &str, code: i32, stdout: &str) {
            self.answers.insert(
                line.to_string(),
                Output {
                    code: Some(code),
                    stdout: stdout.to_string(),
                    stderr: String::new(),
                },
            );
        }
    }

    impl Host for FakeHost {
        fn run(&self, cmd: &Cmd) -> Result<Output> {
            let line = cmd.display();
            self.calls.lock().unwrap().push(line.clone());
            self.answers.get(&line).cloned().ok_or(Error::NotStarted {
                command: line,
                reason: "not in the fake's table".into(),
            })
        }

        fn env(&self, name: &str) -> Option<String> {
            self.env.get(name).cloned()
        }

        fn ids(&self) -> (u32, u32) {
            (
                nix::unistd::geteuid().as_raw(),
                nix::unistd::getegid().as_raw(),
            )
        }
    }
}
