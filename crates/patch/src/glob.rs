//! File patterns: a pattern without `/` matches a file's name anywhere in the tree; a pattern
//! with `/` matches the whole path relative to the source directory. `*` matches any run of
//! characters except `/`, `?` one character except `/`, and `**/` any number of directories.

/// A compiled file pattern.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FilePattern {
    text: String,
    by_name: bool,
}

impl FilePattern {
    /// Checks the pattern's syntax: it must be relative, non-empty and free of `.`/`..` parts.
    pub fn new(text: &str) -> Result<FilePattern, String> {
        if text.is_empty() {
            return Err("a file pattern must not be empty".into());
        }
        if text.starts_with('/') {
            return Err(format!(
                "file pattern `{text}` must be relative to the source directory"
            ));
        }
        if text
            .split('/')
            .any(|part| part.is_empty() || part == "." || part == "..")
        {
            return Err(format!(
                "file pattern `{text}` must not contain empty, `.` or `..` parts"
            ));
        }
        Ok(FilePattern {
            text: text.to_string(),
            by_name: !text.contains('/'),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `rel_path` (relative, `/`-separated) matches.
    pub fn matches(&self, rel_path: &str) -> bool {
        if self.by_name {
            let name = rel_path.rsplit('/').next().unwrap_or(rel_path);
            segment_match(self.text.as_bytes(), name.as_bytes())
        } else {
            let pat: Vec<&str> = self.text.split('/').collect();
            let path: Vec<&str> = rel_path.split('/').collect();
            parts_match(&pat, &path)
        }
    }
}

fn parts_match(pat: &[&str], path: &[&str]) -> bool {
    match pat.split_first() {
        None => path.is_empty(),
        Some((&"**", rest)) => (0..=path.len()).any(|skip| parts_match(rest, &path[skip..])),
        Some((first, rest)) => match path.split_first() {
            Some((p, path_rest)) => {
                segment_match(first.as_bytes(), p.as_bytes()) && parts_match(rest, path_rest)
            }
            None => false,
        },
    }
}

fn segment_match(pat: &[u8], text: &[u8]) -> bool {
    match pat.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|skip| segment_match(rest, &text[skip..])),
        Some((b'?', rest)) => !text.is_empty() && segment_match(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && segment_match(rest, &text[1..]),
    }
}

#[cfg(test)]
mod tests {
    use super::FilePattern;

    fn m(pat: &str, path: &str) -> bool {
        FilePattern::new(pat).expect("valid pattern").matches(path)
    }

    #[test]
    fn names_match_anywhere() {
        assert!(m("readproc.c", "proc/readproc.c"));
        assert!(m("readproc.c", "library/readproc.c"));
        assert!(m("*.c", "a/b/c.c"));
        assert!(!m("readproc.c", "proc/readproc.h"));
    }

    #[test]
    fn paths_are_anchored() {
        assert!(m("include/asm-*/param.h", "include/asm-i386/param.h"));
        assert!(!m("include/asm-*/param.h", "include/asm-i386/x/param.h"));
        assert!(!m("include/linux/limits.h", "usr/include/linux/limits.h"));
        assert!(m("**/linux/limits.h", "usr/include/linux/limits.h"));
        assert!(m("**/linux/limits.h", "linux/limits.h"));
        assert!(m(
            "gtk/gtkfilechooser?idget.c",
            "gtk/gtkfilechooserwidget.c"
        ));
    }

    #[test]
    fn bad_patterns_are_refused() {
        assert!(FilePattern::new("/etc/x").is_err());
        assert!(FilePattern::new("a/../b").is_err());
        assert!(FilePattern::new("").is_err());
        assert!(FilePattern::new("a//b").is_err());
    }
}
