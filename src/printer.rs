//! The one place that writes output: results go to stdout, logs and errors to stderr.

use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};

use crate::GlobalArgs;

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    /// Colour when the stream is a terminal and `NO_COLOR` is unset.
    Auto,
    /// Always colour.
    Always,
    /// Never colour.
    Never,
}

/// Writes results on stdout and logs on stderr, honouring verbosity and colour.
#[derive(Debug, Clone)]
pub struct Printer {
    verbosity: i8,
    color_out: bool,
    color_err: bool,
    err_tty: bool,
    /// The first error writing results to stdout (`hostkit list >/dev/full`): reported once
    /// the command is done, and the exit status is 2.
    stdout_error: Arc<Mutex<Option<std::io::Error>>>,
}

impl Printer {
    /// Builds the printer from the global options.
    pub fn new(args: &GlobalArgs) -> Self {
        let verbosity = if args.quiet { -1 } else { args.verbose as i8 };
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let decide = |tty: bool| match args.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        Printer {
            verbosity,
            color_out: decide(std::io::stdout().is_terminal()),
            color_err: decide(std::io::stderr().is_terminal()),
            err_tty: std::io::stderr().is_terminal(),
            stdout_error: Arc::default(),
        }
    }

    fn stdout_result(&self, result: std::io::Result<()>) {
        if let Err(e) = result {
            let mut first = self.stdout_error.lock().unwrap_or_else(|p| p.into_inner());
            first.get_or_insert(e);
        }
    }

    /// Flushes stdout now (between the samples of a command that keeps printing); a failure is
    /// kept for [`Printer::finish_stdout`]. Returns whether stdout still takes results.
    pub fn flush_stdout(&self) -> bool {
        let flushed = std::io::stdout().lock().flush();
        self.stdout_result(flushed);
        self.stdout_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
    }

    /// After the command: flushes stdout, and fails when any result could not be written
    /// (a closed or full stdout, a broken pipe).
    pub fn finish_stdout(&self) -> std::io::Result<()> {
        let flushed = std::io::stdout().lock().flush();
        self.stdout_result(flushed);
        match self
            .stdout_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// The verbosity: -1 quiet, 0 normal, 1 `-v`, 2 `-vv`, …
    pub fn verbosity(&self) -> i8 {
        self.verbosity
    }

    /// Whether stdout gets colour.
    pub fn color_stdout(&self) -> bool {
        self.color_out
    }

    /// Routes the `log` facade (used by the libraries) to stderr at our verbosity.
    pub fn install_logger(&self) {
        let level = match self.verbosity {
            i8::MIN..=-1 => log::LevelFilter::Error,
            0 => log::LevelFilter::Info,
            1 => log::LevelFilter::Debug,
            _ => log::LevelFilter::Trace,
        };
        let logger = StderrLogger {
            level,
            // Other crates' logs (netlink internals, …) only from -vvv on.
            others: if self.verbosity >= 3 {
                level
            } else {
                level.min(log::LevelFilter::Warn)
            },
            color: self.color_err,
        };
        if log::set_boxed_logger(Box::new(logger)).is_ok() {
            log::set_max_level(level);
        }
    }

    /// A line of results on stdout.
    pub fn out(&self, line: impl AsRef<str>) {
        let mut stdout = std::io::stdout().lock();
        let r = writeln!(stdout, "{}", line.as_ref());
        self.stdout_result(r);
    }

    /// Several lines of results on stdout, written as given.
    pub fn out_raw(&self, text: impl AsRef<str>) {
        self.out_bytes(text.as_ref().as_bytes());
    }

    /// Bytes of results on stdout, written as given (e.g. a diff of non-UTF-8 files).
    pub fn out_bytes(&self, bytes: &[u8]) {
        let mut stdout = std::io::stdout().lock();
        let r = stdout.write_all(bytes).and_then(|()| stdout.flush());
        self.stdout_result(r);
    }

    /// A progress line on stderr, redrawn in place; only on a terminal and unless `-q`.
    pub fn progress(&self, line: &str) {
        if self.err_tty && self.verbosity >= 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r{line}\x1b[K");
            let _ = stderr.flush();
        }
    }

    /// Erases the progress line (see [`Printer::progress`]).
    pub fn progress_clear(&self) {
        if self.err_tty && self.verbosity >= 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = write!(stderr, "\r\x1b[K");
            let _ = stderr.flush();
        }
    }

    /// Wraps `text` in an ANSI colour when stdout is coloured.
    pub fn paint(&self, text: &str, color: Color) -> String {
        if self.color_out {
            format!("\x1b[{}m{}\x1b[0m", color.code(), text)
        } else {
            text.to_string()
        }
    }

    /// A note on stderr (shown unless `-q`).
    pub fn note(&self, line: impl AsRef<str>) {
        if self.verbosity >= 0 {
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{}", line.as_ref());
        }
    }

    /// A warning on stderr (shown unless `-q`).
    pub fn warn(&self, line: impl AsRef<str>) {
        if self.verbosity >= 0 {
            let prefix = self.err_paint("warning:", Color::Yellow);
            let mut stderr = std::io::stderr().lock();
            let _ = writeln!(stderr, "{prefix} {}", line.as_ref());
        }
    }

    /// `error: …` then one `Caused by:` line per cause, on stderr.
    pub fn error(&self, err: &anyhow::Error) {
        let mut stderr = std::io::stderr().lock();
        let prefix = self.err_paint("error:", Color::Red);
        let _ = writeln!(stderr, "{prefix} {err}");
        // A cause already spelled out by a layer above is not repeated.
        let mut shown = err.to_string();
        let mut causes: Vec<String> = Vec::new();
        for cause in err.chain().skip(1).map(|c| c.to_string()) {
            if !shown.contains(&cause) {
                shown.push_str(&cause);
                causes.push(cause);
            }
        }
        if !causes.is_empty() {
            let _ = writeln!(stderr, "\nCaused by:");
            for cause in causes {
                let _ = writeln!(stderr, "    {cause}");
            }
        }
    }

    fn err_paint(&self, text: &str, color: Color) -> String {
        if self.color_err {
            format!("\x1b[1;{}m{}\x1b[0m", color.code(), text)
        } else {
            text.to_string()
        }
    }
}

/// The few colours we use.
#[derive(Debug, Clone, Copy)]
pub enum Color {
    /// Errors, removed lines.
    Red,
    /// Success, added lines.
    Green,
    /// Warnings, pending changes.
    Yellow,
    /// Headers.
    Cyan,
}

impl Color {
    fn code(self) -> &'static str {
        match self {
            Color::Red => "31",
            Color::Green => "32",
            Color::Yellow => "33",
            Color::Cyan => "36",
        }
    }
}

struct StderrLogger {
    /// hostkit's own crates.
    level: log::LevelFilter,
    /// Every other crate.
    others: log::LevelFilter,
    color: bool,
}

impl log::Log for StderrLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        let limit = if metadata.target().starts_with("hostkit") {
            self.level
        } else {
            self.others
        };
        metadata.level() <= limit
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (tag, color) = match record.level() {
            log::Level::Error => ("error:", "1;31"),
            log::Level::Warn => ("warning:", "1;33"),
            log::Level::Info => ("", ""),
            log::Level::Debug => ("", ""),
            log::Level::Trace => ("", ""),
        };
        let mut stderr = std::io::stderr().lock();
        let _ = if tag.is_empty() {
            writeln!(stderr, "{}", record.args())
        } else if self.color {
            writeln!(stderr, "\x1b[{color}m{tag}\x1b[0m {}", record.args())
        } else {
            writeln!(stderr, "{tag} {}", record.args())
        };
    }

    fn flush(&self) {
        let _ = std::io::stderr().flush();
    }
}
