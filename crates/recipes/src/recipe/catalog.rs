//! The catalog: the built-in recipes plus every `*.toml` of `--recipes DIR`, kept by
//! `hostkit_core::Catalog` (trusted reads; a name defined twice is an error).

use std::path::Path;

use super::{BUILTIN, Recipe, parse};
use crate::error::{Error, Result};

impl hostkit_core::Entry for Recipe {
    fn name(&self) -> &str {
        &self.name
    }
    fn origin(&self) -> &str {
        &self.source
    }
}

/// All recipes: the built-in ones plus every `*.toml` in the extra directories.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    recipes: hostkit_core::Catalog<Recipe>,
}

impl Catalog {
    /// Loads the built-in recipes and those in `dirs` (a name defined twice is an error).
    pub fn load(dirs: &[impl AsRef<Path>]) -> Result<Catalog> {
        let mut recipes = hostkit_core::Catalog::default();
        for (file, text) in BUILTIN {
            let name = file.trim_end_matches(".toml");
            recipes.add(parse(name, &format!("<built-in>/{file}"), text)?)?;
        }
        for dir in dirs {
            recipes.load_dir(dir.as_ref(), |path, text| {
                let name = path
                    .file_stem()
                    .map(|s| s.to_string_lossy().into_owned())
                    .unwrap_or_default();
                parse(&name, &path.display().to_string(), text)
            })?;
        }
        Ok(Catalog { recipes })
    }

    /// The recipes, sorted by name.
    pub fn recipes(&self) -> std::slice::Iter<'_, Recipe> {
        self.recipes.iter()
    }

    /// The recipe called `name`.
    pub fn get(&self, name: &str) -> Result<&Recipe> {
        self.recipes.get(name).ok_or_else(|| Error::UnknownRecipe {
            name: name.to_string(),
            available: self.recipes.names().collect::<Vec<_>>().join(", "),
        })
    }
}
