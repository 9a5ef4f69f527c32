//! The recipe subcommands (`list`, `show`, `check`, `apply`, `revert`): thin handlers that
//! build one [`hostkit_recipes::Options`] and call the library; rendering is shared here.

pub mod apply;
pub mod check;
pub mod list;
pub mod revert;
pub mod show;
pub mod source;

use std::path::PathBuf;

use hostkit_recipes::{Catalog, Options, Report, Scope, StepStatus};

use crate::printer::{Color, Printer};

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// For people.
    Text,
    /// A stable JSON shape for scripts (see the README).
    Json,
}

/// A scope on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScopeArg {
    /// The invoking user's home ($HOME and $XDG_CONFIG_HOME/$XDG_STATE_HOME; under sudo, pkexec
    /// or --user, that user's home from the passwd database).
    User,
    /// The whole system (/etc, packages, /var/lib/hostkit).
    System,
}

/// Where recipes come from.
#[derive(Debug, Clone, clap::Args)]
pub struct CatalogArgs {
    /// Also load every *.toml recipe in DIR (repeatable).
    #[arg(long = "recipes", value_name = "DIR")]
    pub recipes: Vec<PathBuf>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = Format::Text)]
    pub format: Format,
}

impl CatalogArgs {
    /// Loads the built-in recipes and those in `--recipes`.
    pub fn load(&self) -> anyhow::Result<Catalog> {
        Ok(Catalog::load(&self.recipes)?)
    }
}

/// Options shared by `check`, `apply` and `revert`.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// Work on an offline image or chroot: every path, including config and state, is under
    /// DIR; live-system probes and commands are reported instead of run.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// user or system (default: the recipe's own default scope).
    #[arg(long, value_enum)]
    pub scope: Option<ScopeArg>,
    /// Set a recipe parameter (repeatable); `hostkit show NAME` lists them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub set: Vec<String>,
    /// User scope: configure this user's home (looked up in the passwd database; under
    /// --root, in DIR/etc/passwd). Root run through sudo or pkexec configures the invoking
    /// user's home without it.
    #[arg(long, value_name = "NAME")]
    pub user: Option<String>,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

impl TargetArgs {
    /// The one settings struct the library takes.
    pub fn options(&self, force: bool) -> Options {
        Options {
            root: self.root.clone(),
            scope: self.scope.map(|s| match s {
                ScopeArg::User => Scope::User,
                ScopeArg::System => Scope::System,
            }),
            sets: self.set.clone(),
            force,
            wait: false,
            user: self.user.clone(),
        }
    }
}

/// The host a recipe command runs against: `gsettings` for the configured home runs as its
/// user, through a bus that reaches dconf, and is read back (see
/// [`hostkit_recipes::session`]). Says on stderr whose home a user-scope run configures when
/// it is not the runner's own `HOME` (`--user`, sudo, pkexec).
pub fn session_host<'h>(
    recipe: &hostkit_recipes::Recipe,
    opts: &Options,
    action: hostkit_recipes::Action,
    printer: &Printer,
) -> anyhow::Result<hostkit_recipes::SessionHost<'h>> {
    let (host, note) = session_host_and_note(recipe, opts, action)?;
    if let Some(note) = note {
        printer.note(note);
    }
    Ok(host)
}

/// [`session_host`], with the note it prints returned instead (for `check all`, which prints
/// the notes of recipes checked at the same time in their order).
pub fn session_host_and_note<'h>(
    recipe: &hostkit_recipes::Recipe,
    opts: &Options,
    action: hostkit_recipes::Action,
) -> anyhow::Result<(hostkit_recipes::SessionHost<'h>, Option<String>)> {
    let host = hostkit_recipes::SessionHost::new(recipe, opts, &hostkit_recipes::RealHost, action)?;
    let ctx = host.context();
    let note = match (&ctx.account, &ctx.home) {
        (Some(a), Some(home)) => Some(format!(
            "{}: user scope for {} (uid {}, from {}): home {}",
            recipe.name,
            a.name,
            a.uid,
            a.via.as_str(),
            home.logical.display()
        )),
        _ => None,
    };
    Ok((host, note))
}

/// Prints reports as JSON (one object, or an array when there are several).
pub fn print_json(printer: &Printer, reports: &[Report], many: bool) -> anyhow::Result<()> {
    let text = if many {
        serde_json::to_string_pretty(reports)?
    } else {
        serde_json::to_string_pretty(&reports[0])?
    };
    printer.out(text);
    Ok(())
}

/// Prints a diff on stdout, coloured on a terminal.
pub fn print_diff(printer: &Printer, diff: &str) {
    let mut out = String::new();
    for line in diff.split_inclusive('\n') {
        let color = if line.starts_with("+++") || line.starts_with("---") {
            None
        } else if line.starts_with('+') {
            Some(Color::Green)
        } else if line.starts_with('-') {
            Some(Color::Red)
        } else if line.starts_with("@@") {
            Some(Color::Cyan)
        } else {
            None
        };
        match color {
            Some(c) => {
                let body = line.strip_suffix('\n').unwrap_or(line);
                out.push_str(&printer.paint(body, c));
                if line.ends_with('\n') {
                    out.push('\n');
                }
            }
            None => out.push_str(line),
        }
    }
    printer.out_raw(out);
}

/// Prints the command lines of a report on stdout: `$ cmd` when run, `# not run (--root): cmd`
/// when only reported.
pub fn print_commands(printer: &Printer, report: &Report) {
    for step in &report.steps {
        if !step.status.acts() {
            continue;
        }
        for c in &step.commands {
            if c.run {
                printer.out(format!("$ {}", c.command));
            } else {
                printer.out(format!(
                    "# not run under --root, run inside the image: {}",
                    c.command
                ));
            }
        }
    }
}

/// One line per step (`status  id  summary`), then the reason, and with `-v` why the step
/// exists.
pub fn step_lines(printer: &Printer, report: &Report, color: bool) -> Vec<String> {
    let mut lines = vec![format!(
        "{} ({} scope, root {})",
        report.recipe, report.scope, report.root
    )];
    for step in &report.steps {
        let status = format!("{:<15}", step.status);
        let status = if color {
            let c = match step.status {
                StepStatus::Ok | StepStatus::Changed | StepStatus::Reverted => Color::Green,
                StepStatus::WouldChange | StepStatus::Manual | StepStatus::Reported => {
                    Color::Yellow
                }
                StepStatus::Failed => Color::Red,
                StepStatus::NotApplicable | StepStatus::NotDone => Color::Cyan,
            };
            printer.paint(&status, c)
        } else {
            status
        };
        lines.push(format!("  {status} {:<26} {}", step.id, step.summary));
        if step.status == StepStatus::WouldChange && step.reason.is_none() {
            // What exactly would change: the files (as paths inside the root) and commands.
            let what: Vec<String> = step
                .files
                .iter()
                .map(|f| format!("/{f}"))
                .chain(step.commands.iter().map(|c| format!("`{}`", c.command)))
                .collect();
            if !what.is_empty() {
                lines.push(format!("  {:<15} -> {}", "", what.join(", ")));
            }
        }
        if let Some(reason) = &step.reason {
            let mut first = true;
            for part in reason.lines() {
                let arrow = if first { "->" } else { "  " };
                lines.push(format!("  {:<15} {arrow} {part}", ""));
                first = false;
            }
        }
        if printer.verbosity() > 0 && !step.why.is_empty() {
            lines.push(format!("  {:<15} why: {}", "", step.why));
        }
    }
    lines
}
