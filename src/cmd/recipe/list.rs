//! `hostkit list`.

use crate::Outcome;
use crate::cmd::recipe::{CatalogArgs, Format};
use crate::printer::Printer;

/// `hostkit list` options.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    pub catalog: CatalogArgs,
}

/// Lists every recipe: name, scopes (default first), summary.
pub fn run(args: Args, printer: &Printer) -> anyhow::Result<Outcome> {
    let catalog = args.catalog.load()?;
    if args.catalog.format == Format::Json {
        let list: Vec<_> = catalog
            .recipes()
            .map(|r| {
                serde_json::json!({
                    "schema_version": hostkit_recipes::SCHEMA_VERSION,
                    "name": r.name,
                    "scopes": r.scopes,
                    "default_scope": r.default_scope,
                    "summary": r.summary,
                    "source": r.source,
                })
            })
            .collect();
        printer.out(serde_json::to_string_pretty(&list)?);
        return Ok(Outcome::Success);
    }
    for r in catalog.recipes() {
        let mut scopes = vec![r.default_scope.to_string()];
        scopes.extend(
            r.scopes
                .iter()
                .filter(|s| **s != r.default_scope)
                .map(|s| s.to_string()),
        );
        printer.out(format!(
            "{:<14} {:<12} {}",
            r.name,
            scopes.join(","),
            r.summary
        ));
    }
    Ok(Outcome::Success)
}
