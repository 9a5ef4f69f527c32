//! `hostkit patch …`: apply the source-tree edit rules of `patches/` (library: hostkit-patch).

use std::path::PathBuf;

use anyhow::Context;
use hostkit_patch::{PatchPlan, PlanStatus, RuleSet, ScanProgress};

use crate::Outcome;
use crate::printer::Printer;

/// The `patch` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum PatchCommand {
    /// List the rules.
    List {
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Explain a rule: what it edits, its parameters, warnings and history.
    Show {
        /// The rule's name (see `hostkit patch list`).
        name: String,
        #[command(flatten)]
        rules: RulesArg,
    },
    /// Apply a rule to a source tree and print the diff it applied.
    Apply {
        #[command(flatten)]
        target: TargetArgs,
        /// Print the diff and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Write the rule's change as a unified diff for `patch -p1` (run inside DIR).
    Export {
        #[command(flatten)]
        target: TargetArgs,
        /// Write the diff to FILE instead of stdout (`-`: stdout).
        #[arg(short, long, value_name = "FILE")]
        output: Option<PathBuf>,
    },
}

/// Where extra rule files come from.
#[derive(Debug, Clone, clap::Args)]
pub struct RulesArg {
    /// Also read `*.toml` rules from DIR (a rule named like a built-in one replaces it).
    #[arg(long, value_name = "DIR")]
    rules_dir: Option<PathBuf>,
}

/// A rule, a source tree and parameter overrides.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// The rule's name (see `hostkit patch list`).
    name: String,
    /// The source tree to edit.
    #[arg(long, value_name = "DIR")]
    source: PathBuf,
    /// Override a parameter (repeatable); `hostkit patch show NAME` lists them.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    sets: Vec<String>,
    #[command(flatten)]
    rules: RulesArg,
}

/// What to do with a plan.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    DryRun,
    Apply,
    Export,
}

/// Everything one `patch apply`/`export` run needs.
#[derive(Debug, Clone)]
struct Settings {
    target: TargetArgs,
    action: Action,
    output: Option<PathBuf>,
}

fn rule_set(arg: &RulesArg) -> anyhow::Result<RuleSet> {
    let mut set = hostkit_patch::load_builtin().context("reading the built-in rules")?;
    if let Some(dir) = &arg.rules_dir {
        set.load_dir(dir)
            .with_context(|| format!("reading rules from {}", dir.display()))?;
    }
    Ok(set)
}

/// Runs a `patch` subcommand.
pub fn run(cmd: PatchCommand, printer: &Printer) -> anyhow::Result<Outcome> {
    let settings = match cmd {
        PatchCommand::List { rules } => {
            for rule in rule_set(&rules)?.iter() {
                printer.out(format!("{:<18} {}", rule.name(), rule.summary()));
            }
            return Ok(Outcome::Success);
        }
        PatchCommand::Show { name, rules } => {
            printer.out_raw(rule_set(&rules)?.get(&name)?.explain());
            return Ok(Outcome::Success);
        }
        PatchCommand::Apply { target, dry_run } => Settings {
            target,
            action: if dry_run {
                Action::DryRun
            } else {
                Action::Apply
            },
            output: None,
        },
        PatchCommand::Export { target, output } => Settings {
            target,
            action: Action::Export,
            output,
        },
    };
    run_plan(&settings, printer)
}

fn run_plan(s: &Settings, printer: &Printer) -> anyhow::Result<Outcome> {
    let set = rule_set(&s.target.rules)?;
    let rule = set.get(&s.target.name)?;
    let params = rule.params_with(&s.target.sets)?;
    let mut progress = |p: ScanProgress| {
        if p.done {
            printer.progress_clear();
        } else {
            printer.progress(&format!(
                "scanning {}: {} files",
                s.target.source.display(),
                p.files_seen
            ));
        }
    };
    let plan = rule.plan_with_progress(&s.target.source, &params, &mut progress)?;
    if printer.verbosity() >= 1 {
        printer.note(format!("scanned {} files", plan.files_seen()));
        for id in plan.skipped_edits() {
            printer.note(format!(
                "edit `{id}` skipped: none of its files exist in this tree"
            ));
        }
    }
    if !announce(&plan, printer) {
        return Ok(Outcome::Success);
    }
    let files: Vec<&str> = plan.changes().iter().map(|c| c.path()).collect();
    let dir = s.target.source.display();
    match s.action {
        Action::DryRun => apply_or_show(&plan, true, printer)?,
        Action::Apply => apply_or_show(&plan, false, printer)?,
        Action::Export => match &s.output {
            Some(path) if path.as_os_str() != "-" => {
                std::fs::write(path, plan.unified_diff_bytes())
                    .with_context(|| format!("writing {}", path.display()))?;
                printer.note(format!(
                    "wrote {} ({} file(s)); apply it inside {dir} with: patch -p1 < {}",
                    path.display(),
                    files.len(),
                    path.display()
                ));
            }
            _ => printer.out_bytes(&plan.unified_diff_bytes()),
        },
    }
    Ok(Outcome::Success)
}

/// Prints a plan's warnings and, when it has nothing to change, why (already applied, or not
/// applicable with the evidence); returns true when it has changes.
pub fn announce(plan: &PatchPlan, printer: &Printer) -> bool {
    for w in plan.warnings() {
        printer.warn(w);
    }
    let dir = plan.source_dir().display();
    match plan.status() {
        PlanStatus::AlreadyApplied => {
            printer.note(format!(
                "rule {} is already applied under {dir}; nothing to do",
                plan.rule()
            ));
            false
        }
        PlanStatus::NotApplicable { reason, file, line } => {
            printer.note(format!(
                "rule {} is not applicable under {dir}: {reason} ({file}:{line}); nothing was changed",
                plan.rule()
            ));
            false
        }
        PlanStatus::Pending => true,
    }
}

/// Prints a pending plan's diff on stdout and, unless `dry_run`, applies it (all files or
/// none); a summary goes to stderr.
pub fn apply_or_show(plan: &PatchPlan, dry_run: bool, printer: &Printer) -> anyhow::Result<()> {
    let files: Vec<&str> = plan.changes().iter().map(|c| c.path()).collect();
    if dry_run {
        printer.out_bytes(&plan.unified_diff_bytes());
        printer.note(format!(
            "dry run: rule {} would change {} file(s) ({}); nothing was written",
            plan.rule(),
            files.len(),
            files.join(", ")
        ));
    } else {
        let report = plan.apply()?;
        printer.out_bytes(&plan.unified_diff_bytes());
        printer.note(format!(
            "applied rule {}: changed {} file(s) ({})",
            plan.rule(),
            report.files.len(),
            report.files.join(", ")
        ));
    }
    Ok(())
}
