//! hostkit's source-tree edit engine.
//!
//! The classic fixes hostkit knows about were patches against old source releases (the 2.4
//! kernel's group limits, procps's status buffer, shadow's fixed group array, udisks's mount
//! path, GTK 3's file-chooser typeahead and single-click). hostkit ships no upstream source:
//! each fix is a small TOML *rule* (in `patches/` of the hostkit repository, built into the
//! binary) that says which files to edit (by name or path pattern), what to find (literal text
//! or a regular expression), what to put instead (with `{param}` holes) and which parameters it
//! takes. A rule is applied to a source tree the person already has.
//!
//! The engine is all-or-nothing and says precisely why when it cannot act:
//! * [`Rule::plan`] is pure: it walks the tree (skipping `.git`), runs every edit in memory and
//!   returns a [`PatchPlan`] with each file's text before and after;
//! * code that differs from what the rule expects is an [`PatchError::Unrecognised`] error
//!   naming each file and what was expected; a tree where the problem is solved differently
//!   (e.g. a dynamic buffer) gives [`PlanStatus::NotApplicable`] with the evidence; a tree
//!   where every replacement is already present gives [`PlanStatus::AlreadyApplied`];
//! * [`PatchPlan::unified_diff`] is a standard diff (`--- a/PATH` / `+++ b/PATH`) for
//!   `patch -p1`, and [`PatchPlan::apply`] writes every file atomically (temporary file in the
//!   same directory, fsync, rename; mode and owner kept).
//!
//! ```no_run
//! let rules = hostkit_patch::load_builtin()?;
//! let rule = rules.get("procps")?;
//! let params = rule.params_with(&["size=8192"])?;
//! let plan = rule.plan(std::path::Path::new("/src/procps-3.2.8"), &params)?;
//! print!("{}", plan.unified_diff());
//! plan.apply()?;
//! # Ok::<(), hostkit_patch::PatchError>(())
//! ```
#![deny(missing_docs)]

mod error;
mod glob;
mod params;
mod plan;
mod rule;

use std::path::Path;

pub use error::{Mismatch, PatchError, RuleError};
pub use glob::FilePattern;
pub use params::{ParamKind, ParamSpec, ParamValue, Params};
pub use plan::{ApplyReport, FileChange, PatchPlan, PlanStatus, ScanProgress};
pub use rule::{Rule, parse_rule};

/// The rule files built into hostkit: (file name, contents).
pub const BUILTIN_RULES: &[(&str, &str)] = &[
    (
        "patches/ngroups.toml",
        include_str!("../../../patches/ngroups.toml"),
    ),
    (
        "patches/procps.toml",
        include_str!("../../../patches/procps.toml"),
    ),
    (
        "patches/shadow-groups.toml",
        include_str!("../../../patches/shadow-groups.toml"),
    ),
    (
        "patches/udisks-media.toml",
        include_str!("../../../patches/udisks-media.toml"),
    ),
    (
        "patches/gtk-typeahead.toml",
        include_str!("../../../patches/gtk-typeahead.toml"),
    ),
    (
        "patches/gtk-single-click.toml",
        include_str!("../../../patches/gtk-single-click.toml"),
    ),
];

impl hostkit_core::Entry for Rule {
    fn name(&self) -> &str {
        &self.name
    }
    fn origin(&self) -> &str {
        &self.file
    }
}

/// A set of rules with unique names, in name order (`hostkit_core::Catalog`: a name defined
/// twice, built-in or not, is an error).
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: hostkit_core::Catalog<Rule>,
}

/// Parses the built-in rules.
pub fn load_builtin() -> Result<RuleSet, PatchError> {
    let mut set = RuleSet::default();
    for (file, text) in BUILTIN_RULES {
        set.rules.add(parse_rule(file, text)?)?;
    }
    Ok(set)
}

impl RuleSet {
    /// Adds every `*.toml` rule file in `dir` (trusted files only, see `hostkit_core::source`).
    pub fn load_dir(&mut self, dir: &Path) -> Result<(), PatchError> {
        self.rules.load_dir(dir, |path, text| {
            parse_rule(&path.display().to_string(), text).map_err(PatchError::from)
        })
    }

    /// The rule called `name`.
    pub fn get(&self, name: &str) -> Result<&Rule, PatchError> {
        self.rules.get(name).ok_or_else(|| PatchError::UnknownRule {
            name: name.to_string(),
            known: self.rules.names().map(str::to_string).collect(),
        })
    }

    /// All rules, in name order.
    pub fn iter(&self) -> impl Iterator<Item = &Rule> {
        self.rules.iter()
    }

    /// The rules a recipe's `--source DIR` form runs (their `recipe` key names it).
    pub fn for_recipe<'a>(&'a self, recipe: &'a str) -> impl Iterator<Item = &'a Rule> + 'a {
        self.rules
            .iter()
            .filter(move |r| r.recipe.as_deref() == Some(recipe))
    }

    /// Plans every rule of `recipe` on `source` (the `hostkit apply RECIPE --source DIR`
    /// door). Each `KEY=VALUE` in `sets` goes to the rules that declare KEY and must be
    /// declared by at least one. Rules whose files do not exist in this tree are left out
    /// (a kernel tree has no shadow sources); if no rule has files there, the result is
    /// [`PatchError::NothingToChange`] naming the recipe. Any other error of any rule is
    /// returned, and then nothing should be applied. Apply the plans one by one with
    /// [`PatchPlan::apply`]; each is all-or-nothing for its own files.
    pub fn plan_recipe<S: AsRef<str>>(
        &self,
        recipe: &str,
        source: &Path,
        sets: &[S],
    ) -> Result<Vec<PatchPlan>, PatchError> {
        let rules: Vec<&Rule> = self.for_recipe(recipe).collect();
        let label = format!("(recipe {recipe})");
        if rules.is_empty() {
            return Err(PatchError::UnknownRule {
                name: label,
                known: self.rules.iter().filter_map(|r| r.recipe.clone()).collect(),
            });
        }
        let pairs = hostkit_core::parse_sets(sets)?;
        let declared = |key: &str, r: &Rule| r.params.iter().any(|p| p.name == key);
        if let Some((key, _)) = pairs
            .iter()
            .find(|(k, _)| !rules.iter().any(|r| declared(k, r)))
        {
            return Err(PatchError::UnknownParam {
                rule: label,
                key: key.clone(),
                known: rules
                    .iter()
                    .flat_map(|r| r.params.iter().map(|p| p.name.clone()))
                    .collect(),
            });
        }
        let mut plans = Vec::new();
        let mut looked_for = Vec::new();
        for rule in &rules {
            let mine: Vec<(String, String)> = pairs
                .iter()
                .filter(|(k, _)| declared(k, rule))
                .cloned()
                .collect();
            let params = rule.params_from_pairs(&mine)?;
            match rule.plan(source, &params) {
                Ok(plan) => plans.push(plan),
                Err(PatchError::NothingToChange { looked_for: l, .. }) => looked_for.extend(l),
                Err(e) => return Err(e),
            }
        }
        if plans.is_empty() {
            return Err(PatchError::NothingToChange {
                rule: label,
                source_dir: source.to_path_buf(),
                looked_for,
            });
        }
        Ok(plans)
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn builtin_rules_parse() {
        let set = super::load_builtin().expect("built-in rules parse");
        let names: Vec<&str> = set.iter().map(|r| r.name()).collect();
        let mut files: Vec<&str> = super::BUILTIN_RULES
            .iter()
            .filter_map(|(f, _)| f.strip_prefix("patches/")?.strip_suffix(".toml"))
            .collect();
        files.sort();
        assert_eq!(names, files);
        let ngroups: Vec<&str> = set.for_recipe("ngroups").map(|r| r.name()).collect();
        assert_eq!(ngroups, ["ngroups", "shadow-groups"]);
    }

    #[test]
    fn a_recipe_plans_the_rules_whose_files_exist_and_routes_parameters() {
        let set = super::load_builtin().expect("built-in rules parse");
        let dir = tempfile::tempdir().expect("tempdir");
        let limits = dir.path().join("include/linux/limits.h");
        let param = dir.path().join("include/asm-i386/param.h");
        std::fs::create_dir_all(limits.parent().expect("parent")).expect("mkdir");
        std::fs::create_dir_all(param.parent().expect("parent")).expect("mkdir");
        std::fs::write(&limits, "#define NGROUPS_MAX       32\n").expect("write");
        std::fs::write(&param, "#define NGROUPS\t\t32\n").expect("write");

        let plans = set
            .plan_recipe("ngroups", dir.path(), &["limit=300"])
            .expect("plans");
        let names: Vec<&str> = plans.iter().map(|p| p.rule()).collect();
        assert_eq!(
            names,
            ["ngroups"],
            "shadow-groups has no files in a kernel tree"
        );
        assert_eq!(
            plans[0].changes()[1].after(),
            "#define NGROUPS_MAX       300\n"
        );
        assert_eq!(plans[0].warnings().len(), 1, "the 2.4 kernel-stack warning");

        let err = set
            .plan_recipe("ngroups", dir.path(), &["limt=300"])
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "rule `(recipe ngroups)` has no parameter `limt` (its parameters: limit, libc_limit)"
        );
        let empty = tempfile::tempdir().expect("tempdir");
        let err = set
            .plan_recipe("ngroups", empty.path(), &[] as &[&str])
            .unwrap_err();
        assert!(
            err.to_string()
                .starts_with("rule `(recipe ngroups)` found nothing to change"),
            "{err}"
        );
    }
}
