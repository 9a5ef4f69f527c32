//! A catalog of named definitions: the built-in ones plus every `*.toml` of the directories a
//! user names (read through [`crate::source`]), with one policy for recipes and patch rules
//! alike — a name defined twice is an error naming both places, never a silent replacement.

use std::path::Path;

/// A definition a catalog holds.
pub trait Entry {
    /// Its unique name.
    fn name(&self) -> &str;
    /// Where it was defined (a path, or `<built-in>/…`), for messages.
    fn origin(&self) -> &str;
}

/// A name defined twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// The name.
    pub name: String,
    /// Where it was defined first.
    pub first: String,
    /// Where it was defined again.
    pub second: String,
}

/// Definitions with unique names, in name order.
#[derive(Debug, Clone)]
pub struct Catalog<T> {
    entries: Vec<T>,
}

impl<T> Default for Catalog<T> {
    fn default() -> Self {
        Catalog {
            entries: Vec::new(),
        }
    }
}

impl<T: Entry> Catalog<T> {
    /// Adds a definition; its name must be new.
    pub fn add(&mut self, entry: T) -> Result<(), Duplicate> {
        match self
            .entries
            .binary_search_by(|e| e.name().cmp(entry.name()))
        {
            Ok(i) => Err(Duplicate {
                name: entry.name().to_string(),
                first: self.entries[i].origin().to_string(),
                second: entry.origin().to_string(),
            }),
            Err(i) => {
                self.entries.insert(i, entry);
                Ok(())
            }
        }
    }

    /// Adds every `*.toml` of `dir` (a trusted directory of trusted files, see
    /// [`crate::source`]), parsed by `parse(path, text)`. Errors convert into the caller's.
    pub fn load_dir<E>(
        &mut self,
        dir: &Path,
        mut parse: impl FnMut(&Path, &str) -> Result<T, E>,
    ) -> Result<(), E>
    where
        E: From<crate::SourceError> + From<Duplicate>,
    {
        for path in crate::source::list_dir(dir, "toml")? {
            let text = crate::source::read_text(&path)?;
            self.add(parse(&path, &text)?)?;
        }
        Ok(())
    }

    /// The definition called `name`.
    pub fn get(&self, name: &str) -> Option<&T> {
        self.entries
            .binary_search_by(|e| e.name().cmp(name))
            .ok()
            .map(|i| &self.entries[i])
    }

    /// All definitions, in name order.
    pub fn iter(&self) -> std::slice::Iter<'_, T> {
        self.entries.iter()
    }

    /// The names, in order (for "known: …" lists).
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name())
    }

    /// How many definitions it holds.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether it holds none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Def(&'static str, &'static str);
    impl Entry for Def {
        fn name(&self) -> &str {
            self.0
        }
        fn origin(&self) -> &str {
            self.1
        }
    }

    #[test]
    fn names_are_unique_and_sorted() {
        let mut c = Catalog::default();
        c.add(Def("b", "<built-in>/b.toml")).unwrap();
        c.add(Def("a", "<built-in>/a.toml")).unwrap();
        assert_eq!(c.names().collect::<Vec<_>>(), ["a", "b"]);
        assert_eq!(
            c.add(Def("b", "/srv/b.toml")),
            Err(Duplicate {
                name: "b".into(),
                first: "<built-in>/b.toml".into(),
                second: "/srv/b.toml".into()
            })
        );
        assert_eq!(c.get("a").map(|d| d.1), Some("<built-in>/a.toml"));
        assert!(c.get("c").is_none());
    }
}
