//! The rule model: what a rule edits, finds and puts instead ([`Rule`], its edits, warnings
//! and markers); [`parse_rule`] reads one from TOML.

mod parse;

use std::collections::BTreeSet;

use regex::Regex;

use crate::glob::FilePattern;
use hostkit_core::Template;

use crate::params::{Condition, ParamSpec};

pub use parse::parse_rule;

/// A rule: which files of a source tree to edit, what to find and what to put instead.
#[derive(Debug, Clone)]
pub struct Rule {
    pub(crate) name: String,
    pub(crate) file: String,
    pub(crate) summary: String,
    pub(crate) recipe: Option<String>,
    pub(crate) applies_to: Vec<String>,
    pub(crate) history: String,
    pub(crate) references: Vec<String>,
    pub(crate) params: Vec<ParamSpec>,
    pub(crate) warnings: Vec<Warning>,
    pub(crate) edits: Vec<Edit>,
    pub(crate) not_applicable: Vec<Marker>,
}

/// A warning shown by `show` and whenever the rule is planned with matching parameters.
#[derive(Debug, Clone)]
pub struct Warning {
    pub(crate) when: Option<Condition>,
    pub(crate) edits: Vec<String>,
    pub(crate) text: String,
}

/// What an edit finds.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    Literal(String),
    Regex(Regex),
}

/// How many of an edit's files must contain its code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Require {
    EachFile,
    AnyFile,
    Optional,
}

/// One find-and-replace of a rule.
#[derive(Debug, Clone)]
pub(crate) struct Edit {
    pub(crate) id: String,
    pub(crate) description: String,
    pub(crate) files: Vec<FilePattern>,
    pub(crate) find: Matcher,
    pub(crate) replace: Template,
    pub(crate) applied: Option<Applied>,
    pub(crate) expect: String,
    pub(crate) require: Require,
    pub(crate) one_of: Option<String>,
    pub(crate) count: Option<usize>,
}

/// Text whose presence means an edit is already done.
#[derive(Debug, Clone)]
pub(crate) enum Applied {
    Literal(Template),
    Regex(Regex),
}

/// Code whose presence explains why the rule has nothing to do (e.g. fixed upstream).
#[derive(Debug, Clone)]
pub(crate) struct Marker {
    pub(crate) files: Vec<FilePattern>,
    pub(crate) find: Matcher,
    pub(crate) reason: String,
}

impl Rule {
    /// The rule's name (its file's stem).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The file it was read from, e.g. `patches/ngroups.toml`.
    pub fn file(&self) -> &str {
        &self.file
    }

    /// One line saying what the rule does.
    pub fn summary(&self) -> &str {
        &self.summary
    }

    /// The recipe whose `--source DIR` form runs this rule, if any.
    pub fn recipe(&self) -> Option<&str> {
        self.recipe.as_deref()
    }

    /// Which source releases the rule was written for.
    pub fn applies_to(&self) -> &[String] {
        &self.applies_to
    }

    /// Why the change exists and what is known about it.
    pub fn history(&self) -> &str {
        &self.history
    }

    /// Where the facts come from.
    pub fn references(&self) -> &[String] {
        &self.references
    }

    /// The rule's parameters.
    pub fn params(&self) -> &[ParamSpec] {
        &self.params
    }

    /// The file patterns of all edits, in order, without repeats.
    pub fn file_patterns(&self) -> Vec<String> {
        let mut seen = BTreeSet::new();
        self.edits
            .iter()
            .flat_map(|e| e.files.iter())
            .map(|p| p.as_str().to_string())
            .filter(|p| seen.insert(p.clone()))
            .collect()
    }

    /// The warnings that hold for these parameters when the edits with ids in `changing`
    /// change something (a warning tied to edits needs one of them among `changing`).
    pub fn warnings_for(&self, params: &crate::Params, changing: &[&str]) -> Vec<String> {
        self.warnings
            .iter()
            .filter(|w| w.when.as_ref().is_none_or(|c| c.holds(params)))
            .filter(|w| {
                w.edits.is_empty() || w.edits.iter().any(|e| changing.contains(&e.as_str()))
            })
            .map(|w| w.text.clone())
            .collect()
    }

    /// The full explanation that `hostkit patch show` prints.
    pub fn explain(&self) -> String {
        let mut out = format!("{} — {}\n", self.name, self.summary);
        out.push_str(&format!("rule file: {}\n", self.file));
        if let Some(recipe) = &self.recipe {
            out.push_str(&format!(
                "recipe: {recipe} (hostkit apply {recipe} --source DIR)\n"
            ));
        }
        if !self.applies_to.is_empty() {
            out.push_str("\napplies to:\n");
            for a in &self.applies_to {
                out.push_str(&format!("  - {a}\n"));
            }
        }
        out.push_str("\nparameters:\n");
        if self.params.is_empty() {
            out.push_str("  (none)\n");
        }
        for p in &self.params {
            out.push_str(&format!(
                "  {} = {} ({}) — {}\n",
                p.name,
                p.default,
                p.kind.describe(),
                p.description
            ));
        }
        out.push_str("\nedits:\n");
        for e in &self.edits {
            let files: Vec<&str> = e.files.iter().map(|f| f.as_str()).collect();
            out.push_str(&format!(
                "  {}: {} [{}]\n      finds {}\n",
                e.id,
                e.description,
                files.join(", "),
                e.expect
            ));
        }
        if !self.not_applicable.is_empty() {
            out.push_str("\nnot applicable when:\n");
            for m in &self.not_applicable {
                out.push_str(&format!("  - {}\n", m.reason));
            }
        }
        if !self.warnings.is_empty() {
            out.push_str("\nwarnings:\n");
            for w in &self.warnings {
                let mut conds = Vec::new();
                if let Some(c) = &w.when {
                    conds.push(c.to_string());
                }
                if !w.edits.is_empty() {
                    conds.push(format!("edit {} changes something", w.edits.join(" or ")));
                }
                if conds.is_empty() {
                    out.push_str(&format!("  - {}\n", w.text));
                } else {
                    out.push_str(&format!("  - when {}: {}\n", conds.join(" and "), w.text));
                }
            }
        }
        if !self.history.is_empty() {
            out.push_str("\nhistory:\n");
            for line in self.history.trim_end().lines() {
                out.push_str(&format!("  {line}\n").replace("  \n", "\n"));
            }
        }
        if !self.references.is_empty() {
            out.push_str("\nreferences:\n");
            for r in &self.references {
                out.push_str(&format!("  - {r}\n"));
            }
        }
        out
    }
}
