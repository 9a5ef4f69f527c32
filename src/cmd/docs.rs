//! `hostkit completions SHELL` and `hostkit man --out DIR`: shell completions and manual pages,
//! generated from the command-line definition itself (clap_complete, clap_mangen), and the
//! exit statuses of every command ([`EXIT_CODES`], which docs/exit-codes.md's table repeats).

use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::CommandFactory;

use crate::Outcome;
use crate::printer::Printer;

/// A shell `hostkit completions` writes a script for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Shell {
    /// bash (bash-completion): `hostkit completions bash > /etc/bash_completion.d/hostkit`.
    Bash,
    /// zsh: `hostkit completions zsh > "${fpath[1]}/_hostkit"`.
    Zsh,
    /// fish: `hostkit completions fish > ~/.config/fish/completions/hostkit.fish`.
    Fish,
}

/// `hostkit completions` options.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// `hostkit man` options.
#[derive(Debug, clap::Args)]
pub struct ManArgs {
    /// Write the pages into DIR (created if missing): hostkit.1 and one per subcommand,
    /// hostkit-tun-up.1 and so on. Read one with `man -l DIR/hostkit-check.1`.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

/// The last row of [`EXIT_CODES`]: what every command shares.
const EVERY: &str = "every command";

/// The exit statuses of every command: the command (forms separated by ", "), then what 0, 1
/// and 2 mean for it ("—": never). docs/exit-codes.md's table is this one (a test compares them), and every
/// manual page has its command's row as EXIT STATUS.
pub const EXIT_CODES: &[(&str, &str, &str, &str)] = &[
    (
        "tun up",
        "stopped by SIGINT, SIGTERM or SIGHUP, and torn down; `--dry-run`: the commands printed",
        "—",
        "error: refused option (nothing changed), setup failed (undone), the relay failed or the tunnel could not be kept (torn down)",
    ),
    (
        "tun down",
        "removed, or nothing to remove",
        "—",
        "something could not be removed (named), or a state file was refused",
    ),
    ("tun status", "shown", "—", "error"),
    (
        "tun set",
        "the relay made the change (between two packets)",
        "—",
        "refused (a bad spec, filter or path, named; nothing changed), or no running relay",
    ),
    (
        "tun stats",
        "shown (every sample, with `--watch`)",
        "—",
        "error, or no running relay",
    ),
    (
        "tun config",
        "the configuration is valid (`--print`: printed)",
        "—",
        "refused (file, line and column named)",
    ),
    (
        "tun demo",
        "the demo ran (in its own network namespace)",
        "—",
        "error (not root, a tool missing, a step failed)",
    ),
    (
        "patch list, patch show",
        "shown",
        "—",
        "error (unknown rule, bad `--rules-dir`)",
    ),
    (
        "patch apply, patch export",
        "applied, exported, or nothing to do (already applied, or the tree lacks the files); `apply --dry-run`: the diff printed",
        "—",
        "error (the code to edit is not recognised, bad `--set`)",
    ),
    (
        "list, show",
        "shown",
        "—",
        "error (unknown recipe, a bad `--recipes` file)",
    ),
    (
        "check NAME, check all",
        "every step satisfied (`ok`, `not applicable`, `manual`)",
        "something would change",
        "error; `check all` checks the other recipes, then fails naming the ones it could not check",
    ),
    (
        "apply",
        "done, or already applied",
        "done, but some commands could only be reported under `--root` (a package install)",
        "error; a failure half-way lists the steps done, and `revert` undoes them",
    ),
    (
        "apply --dry-run",
        "the diff and commands printed (whether or not something would change)",
        "—",
        "error",
    ),
    (
        "apply --source DIR",
        "done, already applied, or not applicable",
        "—",
        "error (unrecognised code, bad `--set`, a recipe without rules)",
    ),
    ("revert", "reverted, or nothing to revert", "—", "error"),
    ("completions SHELL", "the script printed", "—", "error"),
    (
        "man --out DIR",
        "the pages written",
        "—",
        "error (DIR cannot be written)",
    ),
    (
        EVERY,
        "`--help`, `--version`",
        "—",
        "usage error (unknown option, bad value); results that could not be written to stdout (a closed pipe)",
    ),
];

/// The command line as clap builds it (subcommands named `hostkit-tun-up` and so on).
fn command() -> clap::Command {
    let mut cmd = crate::Cli::command().disable_help_subcommand(true);
    cmd.build();
    cmd
}

/// Prints the completion script.
pub fn completions(args: CompletionsArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    let mut cmd = crate::Cli::command();
    let mut script = Vec::new();
    let shell = match args.shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    clap_complete::generate(shell, &mut cmd, "hostkit", &mut script);
    printer.out_bytes(&script);
    Ok(Outcome::Success)
}

/// Writes one page per command into `--out`, and lists them on stdout.
pub fn man(args: ManArgs, printer: &Printer) -> anyhow::Result<Outcome> {
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    for path in write_pages(&command(), &[], &args.out)? {
        printer.out(path.display().to_string());
    }
    Ok(Outcome::Success)
}

/// Writes the page of `cmd` (reached through `words` below `hostkit`) and of its subcommands.
fn write_pages(cmd: &clap::Command, words: &[&str], dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let version = cmd.get_version().unwrap_or_default();
    let man = clap_mangen::Man::new(cmd.clone()).source(format!("hostkit {version}"));
    let path = dir.join(man.get_filename());
    let mut rendered = Vec::new();
    man.render(&mut rendered)?;
    let page = page_text(
        &String::from_utf8_lossy(&rendered),
        &exit_status_roff(words),
    );
    let mut file =
        std::fs::File::create(&path).with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(page.as_bytes())
        .and_then(|()| file.flush())
        .with_context(|| format!("cannot write {}", path.display()))?;
    let mut written = vec![path];
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let mut words = words.to_vec();
        words.push(sub.get_name());
        written.extend(write_pages(sub, &words, dir)?);
    }
    Ok(written)
}

/// The page: clap_mangen's, with the EXIT STATUS section before VERSION (where man-pages(7)
/// puts it), and every character outside ASCII as a groff escape (`\[u2026]`), so that
/// troff reads the page without a preprocessor.
fn page_text(rendered: &str, exit_status: &str) -> String {
    let text = match rendered.find("\n.SH VERSION") {
        Some(at) => format!("{}\n{exit_status}{}", &rendered[..at], &rendered[at + 1..]),
        None => format!("{rendered}{exit_status}"),
    };
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            out.push_str(&format!("\\[u{:04X}]", u32::from(c)));
        }
    }
    out
}

/// The EXIT STATUS section of the page for `hostkit WORDS…`: the rows of [`EXIT_CODES`] for
/// that command (all of them on hostkit.1, those below it on a group like `tun`).
fn exit_status_roff(words: &[&str]) -> String {
    let name = words.join(" ");
    let rows: Vec<_> = EXIT_CODES
        .iter()
        .filter(|(cmd, ..)| {
            name.is_empty()
                || cmd
                    .split(", ")
                    .any(|c| c == name || c.starts_with(&format!("{name} ")))
                || *cmd == EVERY
        })
        .collect();
    let mut out = String::from(".SH \"EXIT STATUS\"\n");
    for (cmd, zero, one, two) in rows {
        let cmd = match *cmd {
            EVERY => EVERY.to_string(),
            cmd => cmd
                .split(", ")
                .map(|c| format!("hostkit {c}"))
                .collect::<Vec<_>>()
                .join(", "),
        };
        out.push_str(&format!(".TP\n\\fB{}\\fR\n", roff_text(&cmd)));
        for (code, text) in [("0", zero), ("1", one), ("2", two)] {
            if *text != "—" {
                out.push_str(&format!("{code}: {}\n.br\n", roff_text(text)));
            }
        }
    }
    out
}

/// Text for a roff body line: backslashes escaped, backticks dropped, no leading `.` or `'`.
fn roff_text(text: &str) -> String {
    let text = text.replace('\\', "\\e").replace('`', "");
    if text.starts_with(['.', '\'']) {
        format!("\\&{text}")
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The Markdown table of [`EXIT_CODES`].
    fn exit_codes_markdown() -> String {
        let mut out = String::from("| command | 0 | 1 | 2 |\n|---|---|---|---|\n");
        for (cmd, zero, one, two) in EXIT_CODES {
            let cmd = match *cmd {
                EVERY => EVERY.to_string(),
                cmd => cmd
                    .split(", ")
                    .map(|c| format!("`hostkit {c}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
            };
            out.push_str(&format!("| {cmd} | {zero} | {one} | {two} |\n"));
        }
        out
    }

    #[test]
    fn the_docs_have_the_exit_codes_table() {
        let doc = include_str!("../../docs/exit-codes.md");
        let table = exit_codes_markdown();
        assert!(
            doc.contains(&table),
            "docs/exit-codes.md's table differs from EXIT_CODES (src/cmd/docs.rs); it should read:\n{table}"
        );
        // The README points to it.
        let readme = include_str!("../../README.md");
        assert!(readme.contains("[docs/exit-codes.md](docs/exit-codes.md)"));
    }

    #[test]
    fn every_page_has_its_commands_exit_status() {
        let check = exit_status_roff(&["check"]);
        assert!(
            check.contains("hostkit check NAME, hostkit check all"),
            "{check}"
        );
        assert!(check.contains("1: something would change"), "{check}");
        assert!(check.contains("every command"), "{check}");
        assert!(!check.contains("hostkit apply"), "{check}");
        let tun = exit_status_roff(&["tun"]);
        assert!(tun.contains("hostkit tun up") && tun.contains("hostkit tun demo"));
        let patch = exit_status_roff(&["patch", "export"]);
        assert!(
            patch.contains("hostkit patch apply, hostkit patch export"),
            "{patch}"
        );
        // Every subcommand has a row.
        fn walk(cmd: &clap::Command, words: Vec<&str>) {
            for sub in cmd.get_subcommands() {
                let mut w = words.clone();
                w.push(sub.get_name());
                let roff = exit_status_roff(&w);
                assert!(
                    roff.matches(".TP").count() >= 2,
                    "no exit status row for hostkit {}",
                    w.join(" ")
                );
                walk(sub, w);
            }
        }
        walk(&command(), Vec::new());
    }
}
