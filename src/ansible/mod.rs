//! hostkit as an Ansible binary module: the `hostkit-ansible` binary, installed into a
//! playbook's `library/` as `hostkit` (beside its documentation, `hostkit.yml`).
//!
//! Ansible copies a binary module to the target unchanged and runs it with one argument, the
//! path of a JSON file holding the task's arguments and Ansible's own `_ansible_*` keys (see
//! [`args`]). The module prints exactly one JSON object on stdout — `changed`, `failed`, `msg`,
//! `steps` (the recipe report's steps, as `--format json` prints them) and, when Ansible asks
//! for it (`--diff`), `diff`: one `{before, after, before_header, after_header}` per file — and
//! exits 0, or 1 with `failed: true`. Anything else that would reach stdout (a child process,
//! a library) is sent to stderr instead, and a panic becomes `failed: true`.
//!
//! | `state` | normal run | check mode (`--check`, `_ansible_check_mode`) |
//! |---|---|---|
//! | `applied` (default) | `hostkit apply` | `hostkit apply --dry-run` |
//! | `reverted` | `hostkit revert` | what `revert` would put back, changing nothing |
//! | `checked` | `hostkit check`: never changes anything, `changed` is false, `would_change` says whether `apply` would | the same |
//!
//! Documented for users in `examples/ansible/` and `docs/ansible.md`; the result's fields in
//! `docs/json.md`.

pub mod args;

use std::io::Write;
use std::os::fd::AsFd;
use std::path::Path;
use std::process::ExitCode;

use hostkit_recipes::{Action, Report, StepStatus};
use serde_json::{Map, Value, json};

use self::args::{ModuleArgs, State};

/// The module's entry point (the `hostkit-ansible` binary).
pub fn main() -> ExitCode {
    // stdout carries exactly one JSON object: whatever else would be written there (a child
    // process, a library) goes to stderr, and the result to the saved descriptor.
    let out = std::io::stdout();
    let saved = nix::unistd::dup(out.as_fd()).ok();
    if saved.is_some() {
        let _ = nix::unistd::dup2_stdout(std::io::stderr().as_fd());
    }
    let argv: Vec<std::ffi::OsString> = std::env::args_os().skip(1).collect();
    let result = std::panic::catch_unwind(|| run(&argv)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic".into());
        failure(format!("hostkit-ansible: internal error: {what}"))
    });
    let failed = result.get("failed").and_then(Value::as_bool) != Some(false);
    let mut text = serde_json::to_string(&Value::Object(result)).unwrap_or_else(|_| {
        r#"{"changed": false, "failed": true, "msg": "hostkit-ansible: cannot encode the result"}"#
            .into()
    });
    text.push('\n');
    let written = match saved {
        Some(fd) => std::fs::File::from(fd).write_all(text.as_bytes()),
        None => std::io::stdout().lock().write_all(text.as_bytes()),
    };
    if written.is_err() || failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

/// A failed result with this message.
fn failure(msg: String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("changed".into(), Value::Bool(false));
    m.insert("failed".into(), Value::Bool(true));
    m.insert("msg".into(), Value::String(msg));
    m.insert(
        "schema_version".into(),
        Value::from(hostkit_recipes::SCHEMA_VERSION),
    );
    m
}

/// One module invocation: `argv` is what follows the program name.
pub fn run(argv: &[std::ffi::OsString]) -> Map<String, Value> {
    let [path] = argv else {
        return failure(
            "hostkit-ansible is an Ansible module: Ansible runs it with the path of a JSON \
             arguments file (install it as library/hostkit; see examples/ansible)"
                .into(),
        );
    };
    let args = match args::read_file(Path::new(path)).and_then(|t| args::parse(&t)) {
        Ok(a) => a,
        Err(msg) => return failure(msg),
    };
    match execute(&args) {
        Ok(result) => result,
        Err(err) => {
            let mut m = failure(format!("{err:#}"));
            m.insert("recipe".into(), Value::String(args.recipe.clone()));
            m.insert("state".into(), Value::String(args.state.as_str().into()));
            m
        }
    }
}

/// Runs the recipe command the task asks for and builds its result.
fn execute(args: &ModuleArgs) -> anyhow::Result<Map<String, Value>> {
    let catalog = hostkit_recipes::Catalog::load(&[] as &[&Path])?;
    let recipe = catalog.get(&args.recipe)?;
    recipe.param_values(&args.sets)?;
    let opts = hostkit_recipes::Options {
        root: args.root.clone(),
        scope: args.scope,
        sets: args.sets.clone(),
        force: args.force,
        wait: args.wait,
        user: args.user.clone(),
    };
    let action = match (args.state, args.check_mode) {
        (State::Checked, _) | (State::Reverted, true) => Action::Check,
        (State::Applied, true) => Action::DryRun,
        (State::Applied, false) => Action::Apply,
        (State::Reverted, false) => Action::Revert,
    };
    // The same session, and the same note on whose home it is, as the command line's.
    let (host, note) = crate::cmd::recipe::session_host_and_note(recipe, &opts, action)?;
    let mut notes: Vec<String> = note.into_iter().collect();
    let (report, error) = match (args.state, args.check_mode) {
        (State::Checked, _) => (hostkit_recipes::check(recipe, &opts, &host)?, None),
        (State::Applied, true) => (hostkit_recipes::dry_run(recipe, &opts, &host)?, None),
        (State::Applied, false) => {
            let applied = hostkit_recipes::apply(recipe, &opts, &host)?;
            (applied.report, applied.error)
        }
        (State::Reverted, true) => (hostkit_recipes::revert_preview(recipe, &opts, &host)?, None),
        (State::Reverted, false) => (hostkit_recipes::revert(recipe, &opts, &host)?, None),
    };
    notes.extend(host.notes());
    Ok(result(args, &report, error.map(anyhow::Error::from), notes))
}

/// Whether a check-mode report predicts a change: a step that would change a file or run a
/// command (not one whose commands would only be reported, under `--root`).
fn predicts_change(report: &Report) -> bool {
    report.steps.iter().any(|s| {
        s.status == StepStatus::WouldChange
            && (!s.files.is_empty() || s.commands.iter().any(|c| c.run) || s.commands.is_empty())
    })
}

/// The module result for a report.
fn result(
    args: &ModuleArgs,
    report: &Report,
    error: Option<anyhow::Error>,
    notes: Vec<String>,
) -> Map<String, Value> {
    let changed = match (args.state, args.check_mode) {
        (State::Checked, _) => false,
        (State::Applied, true) => predicts_change(report),
        _ => report.changed,
    };
    let mut msg = report.message.clone();
    if args.check_mode && args.state != State::Checked {
        msg.push_str(" (check mode: nothing changed)");
    }
    let mut warnings = Vec::new();
    for step in &report.steps {
        let unrun: Vec<&str> = step
            .commands
            .iter()
            .filter(|c| !c.run)
            .map(|c| c.command.as_str())
            .collect();
        let reported = match step.status {
            StepStatus::Reported | StepStatus::Changed => true,
            StepStatus::WouldChange => args.state != State::Checked,
            _ => false,
        };
        if reported && !unrun.is_empty() {
            warnings.push(format!(
                "{}: not run under root {}: run inside the image: {}",
                step.id,
                report.root,
                unrun.join("; ")
            ));
        }
        if args.state == State::Reverted
            && let Some(reason) = &step.reason
        {
            warnings.push(format!("{}: {reason}", step.id));
        }
    }
    let mut m = Map::new();
    m.insert("changed".into(), Value::Bool(changed));
    m.insert("failed".into(), Value::Bool(error.is_some()));
    m.insert(
        "msg".into(),
        Value::String(match &error {
            Some(e) => format!("{e:#}"),
            None => msg,
        }),
    );
    m.insert("schema_version".into(), Value::from(report.schema_version));
    m.insert("recipe".into(), Value::String(report.recipe.clone()));
    m.insert("state".into(), Value::String(args.state.as_str().into()));
    m.insert("scope".into(), json!(report.scope));
    m.insert("root".into(), Value::String(report.root.clone()));
    m.insert("check_mode".into(), Value::Bool(args.check_mode));
    if args.state == State::Checked {
        m.insert("would_change".into(), Value::Bool(report.changed));
    }
    m.insert(
        "steps".into(),
        serde_json::to_value(&report.steps).unwrap_or_else(|_| Value::Array(Vec::new())),
    );
    if args.diff {
        m.insert("diff".into(), Value::Array(diff(report)));
    }
    if !warnings.is_empty() {
        m.insert("warnings".into(), json!(warnings));
    }
    if !notes.is_empty() {
        m.insert("notes".into(), json!(notes));
    }
    m
}

/// Ansible's `diff`: one `{before, after, before_header, after_header}` per file a step changes
/// (or would change, or put back), headed by its path on the host (`(absent)` when the file
/// does not exist on that side).
fn diff(report: &Report) -> Vec<Value> {
    let base = report.root.trim_end_matches('/');
    let mut out = Vec::new();
    for step in &report.steps {
        if !matches!(
            step.status,
            StepStatus::WouldChange | StepStatus::Changed | StepStatus::Reverted
        ) {
            continue;
        }
        for t in &step.texts {
            if t.before == t.after {
                continue;
            }
            let path = format!("{base}/{}", t.path);
            let header = |side: &Option<String>| match side {
                Some(_) => path.clone(),
                None => format!("{path} (absent)"),
            };
            out.push(json!({
                "before": t.before.clone().unwrap_or_default(),
                "after": t.after.clone().unwrap_or_default(),
                "before_header": header(&t.before),
                "after_header": header(&t.after),
            }));
        }
    }
    out
}
