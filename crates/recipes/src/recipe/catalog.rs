//! The catalog: the built-in recipes plus every `*.toml` of `--recipes DIR` (read through
//! `hostkit-core`); a name defined twice is an error.

use std::path::Path;

use super::{BUILTIN, Recipe, parse};
use crate::error::{Error, Result};

/// All recipes: the built-in ones plus every `*.toml` in the extra directories.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    /// The recipes, sorted by name.
    pub recipes: Vec<Recipe>,
}

impl Catalog {
    /// Loads the built-in recipes and those in `dirs` (a name defined twice is an error).
    pub fn load(dirs: &[impl AsRef<Path>]) -> Result<Catalog> {
        let mut recipes: Vec<Recipe> = Vec::new();
        let mut add = |recipe: Recipe| -> Result<()> {
            if let Some(old) = recipes.iter().find(|r| r.name == recipe.name) {
                return Err(Error::DuplicateRecipe {
                    name: recipe.name.clone(),
                    first: old.source.clone(),
                    second: recipe.source.clone(),
                });
            }
            recipes.push(recipe);
            Ok(())
        };
        for (file, text) in BUILTIN {
            let name = file.trim_end_matches(".toml");
            add(parse(name, &format!("<built-in>/{file}"), text)?)?;
        }
        for dir in dirs {
            for path in hostkit_core::list_dir(dir.as_ref(), "toml")? {
                let text = hostkit_core::read_text(&path)?;
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                add(parse(&name, &path.display().to_string(), &text)?)?;
            }
        }
        recipes.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(Catalog { recipes })
    }

    /// The recipe called `name`.
    pub fn get(&self, name: &str) -> Result<&Recipe> {
        self.recipes
            .iter()
            .find(|r| r.name == name)
            .ok_or_else(|| Error::UnknownRecipe {
                name: name.to_string(),
                available: self
                    .recipes
                    .iter()
                    .map(|r| r.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }
}
