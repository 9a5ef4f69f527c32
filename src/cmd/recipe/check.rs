//! `hostkit check NAME|all`.

use crate::Outcome;
use crate::cmd::recipe::{Format, TargetArgs, print_json, session_host_and_note, step_lines};
use crate::printer::Printer;

/// `hostkit check` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe, or `all` for every recipe.
    pub name: String,
    #[command(flatten)]
    pub target: TargetArgs,
}

/// Reports each step's status; exit 0 when all are satisfied, 1 when something would change.
pub fn run(args: Args, printer: &Printer) -> anyhow::Result<Outcome> {
    let catalog = args.target.catalog.load()?;
    let opts = args.target.options(false);
    let many = args.name == "all";
    let recipes: Vec<&hostkit_recipes::Recipe> = if many {
        catalog.recipes().collect()
    } else {
        vec![catalog.get(&args.name)?]
    };
    // `--set KEY=VALUE`, split once (a malformed one is refused here).
    let pairs = hostkit_core::parse_sets(&opts.sets)?;
    if many {
        // A --set key no recipe has is a mistake, not something to drop silently.
        for (kv, (key, _)) in opts.sets.iter().zip(&pairs) {
            if !recipes
                .iter()
                .any(|r| r.params.iter().any(|p| p.name == *key))
            {
                anyhow::bail!("`--set {kv}`: no recipe has a parameter `{key}`");
            }
        }
    }
    let mut jobs = Vec::new();
    for recipe in recipes {
        let mut opts = opts.clone();
        if many {
            // `check all`: each recipe in the requested scope when it has it, else its default;
            // `--set` applies to the recipes that have the parameter.
            opts.scope = opts.scope.filter(|s| recipe.scopes.contains(s));
            if recipe.scope(opts.scope).ok() == Some(hostkit_recipes::Scope::System) {
                // `--user` names the home of the user-scope recipes.
                opts.user = None;
            }
            let mut keys = pairs.iter().map(|(k, _)| k);
            opts.sets.retain(|_| {
                keys.next()
                    .is_some_and(|k| recipe.params.iter().any(|p| &p.name == k))
            });
        }
        jobs.push((recipe, opts));
    }
    // The recipes are checked at the same time (their probes wait on child processes), and
    // reported in catalog order, each with its note and error where it was before.
    let checked: Vec<(Option<String>, anyhow::Result<hostkit_recipes::Report>)> =
        if hostkit_recipes::sequential(&hostkit_recipes::RealHost) {
            jobs.iter()
                .map(|(recipe, opts)| check_one(recipe, opts))
                .collect()
        } else {
            hostkit_recipes::par::map(&jobs, |(recipe, opts)| check_one(recipe, opts))
        };
    let mut reports = Vec::new();
    let mut failed: Vec<(&str, String)> = Vec::new();
    for ((recipe, _), (note, checked)) in jobs.iter().zip(checked) {
        if let Some(note) = note {
            printer.note(note);
        }
        match checked {
            Ok(report) => reports.push(report),
            // `check all` goes on with the other recipes and fails at the end.
            Err(e) if many => {
                let e = e.context(format!("recipe {}", recipe.name));
                printer.error(&e);
                failed.push((recipe.name.as_str(), format!("{e:#}")));
            }
            Err(e) => return Err(e),
        }
    }
    if args.target.catalog.format == Format::Json {
        if failed.is_empty() {
            print_json(printer, &reports, many)?;
        } else {
            // Each recipe that could not be checked appears with its error.
            let mut all: Vec<serde_json::Value> = reports
                .iter()
                .map(serde_json::to_value)
                .collect::<Result<_, _>>()?;
            all.extend(failed.iter().map(|(name, error)| {
                serde_json::json!({
                    "schema_version": hostkit_recipes::SCHEMA_VERSION,
                    "recipe": name,
                    "action": "check",
                    "error": error,
                })
            }));
            all.sort_by(|a, b| a["recipe"].as_str().cmp(&b["recipe"].as_str()));
            printer.out(serde_json::to_string_pretty(&all)?);
        }
    } else {
        for report in &reports {
            for line in step_lines(printer, report, printer.color_stdout()) {
                printer.out(line);
            }
            printer.out(format!("  => {}: {}", report.recipe, report.message));
        }
    }
    if !failed.is_empty() {
        anyhow::bail!(
            "could not check {} (see the errors above)",
            failed
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok(if reports.iter().any(|r| r.pending()) {
        Outcome::Pending
    } else {
        Outcome::Success
    })
}

/// Checks one recipe: the note its host has for stderr, and the report.
fn check_one(
    recipe: &hostkit_recipes::Recipe,
    opts: &hostkit_recipes::Options,
) -> (Option<String>, anyhow::Result<hostkit_recipes::Report>) {
    match session_host_and_note(recipe, opts, hostkit_recipes::Action::Check) {
        Ok((host, note)) => (
            note,
            hostkit_recipes::check(recipe, opts, &host).map_err(anyhow::Error::from),
        ),
        Err(e) => (None, Err(e)),
    }
}
