//! `hostkit show NAME`.

use crate::Outcome;
use crate::cmd::recipe::{CatalogArgs, Format};
use crate::printer::Printer;

/// `hostkit show` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The recipe.
    pub name: String,
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// Shows what a recipe does, step by step, why, and what is manual.
pub fn run(args: Args, printer: &Printer) -> anyhow::Result<Outcome> {
    let catalog = args.catalog.load()?;
    let recipe = catalog.get(&args.name)?;
    if args.catalog.format == Format::Json {
        let steps: Vec<_> = recipe
            .steps
            .iter()
            .map(|s| {
                serde_json::json!({
                    "id": s.id,
                    "kind": s.spec.kind(),
                    "scopes": s.scopes,
                    "summary": s.summary,
                    "why": s.why,
                    "reaches": s.reaches,
                })
            })
            .collect();
        let params: Vec<_> = recipe
            .params
            .iter()
            .map(|p| serde_json::json!({"name": p.name, "default": p.default, "allowed": p.allowed, "help": p.help}))
            .collect();
        let value = serde_json::json!({
            "schema_version": hostkit_recipes::SCHEMA_VERSION,
            "name": recipe.name,
            "summary": recipe.summary,
            "description": recipe.description,
            "scopes": recipe.scopes,
            "default_scope": recipe.default_scope,
            "params": params,
            "steps": steps,
        });
        printer.out(serde_json::to_string_pretty(&value)?);
        return Ok(Outcome::Success);
    }
    printer.out(format!("{}: {}", recipe.name, recipe.summary));
    if !recipe.description.is_empty() {
        printer.out(recipe.description.trim_end());
    }
    let scopes: Vec<String> = recipe.scopes.iter().map(|s| s.to_string()).collect();
    printer.out(format!(
        "\nScopes: {} (default {})",
        scopes.join(", "),
        recipe.default_scope
    ));
    if !recipe.params.is_empty() {
        printer.out("\nParameters (--set KEY=VALUE):");
        for p in &recipe.params {
            let allowed = if p.allowed.is_empty() {
                String::new()
            } else {
                format!(" [{}]", p.allowed.join("|"))
            };
            printer.out(format!("  {}={}{}  {}", p.name, p.default, allowed, p.help));
        }
    }
    printer.out("\nSteps:");
    for s in &recipe.steps {
        let scopes: Vec<String> = s.scopes.iter().map(|s| s.to_string()).collect();
        let manual = if s.spec.kind() == hostkit_recipes::StepKind::Manual {
            " (manual)"
        } else {
            ""
        };
        printer.out(format!(
            "  {} [{}, {}]{manual}: {}",
            s.id,
            s.spec.kind().name(),
            scopes.join("+"),
            s.summary
        ));
        if !s.why.is_empty() {
            printer.out(format!("      why: {}", s.why));
        }
        if !s.reaches.is_empty() {
            printer.out(format!("      reaches: {}", s.reaches));
        }
        if let hostkit_recipes::StepSpec::Manual(m) = &s.spec {
            printer.out(format!("      what to do: {}", m.action.as_str()));
        }
    }
    Ok(Outcome::Success)
}
