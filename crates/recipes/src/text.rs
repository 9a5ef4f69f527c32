//! Line-level editing that keeps everything it does not have to change: other lines, comments,
//! order, and the file's own line endings (LF or CRLF) and final newline.

/// A text file split into lines, each keeping its own terminator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lines {
    lines: Vec<String>,
    eol: &'static str,
}

impl Lines {
    /// Splits `text`; the line ending for new lines is CRLF when the file already uses it.
    pub fn new(text: &str) -> Lines {
        let eol = if text.contains("\r\n") { "\r\n" } else { "\n" };
        Lines {
            lines: text.split_inclusive('\n').map(str::to_string).collect(),
            eol,
        }
    }

    /// The number of lines.
    pub fn len(&self) -> usize {
        self.lines.len()
    }

    /// The content of line `i`, without its terminator.
    pub fn content(&self, i: usize) -> &str {
        self.lines[i].trim_end_matches('\n').trim_end_matches('\r')
    }

    /// Indexes of the lines, for iteration.
    pub fn indexes(&self) -> std::ops::Range<usize> {
        0..self.lines.len()
    }

    /// Replaces the content of line `i`, keeping its terminator.
    pub fn replace(&mut self, i: usize, content: &str) {
        let old = &self.lines[i];
        let terminator = &old[self.content(i).len()..];
        self.lines[i] = format!("{content}{terminator}");
    }

    /// Inserts a line before line `i` (or at the end when `i == len`).
    pub fn insert(&mut self, i: usize, content: &str) {
        if i == self.lines.len() {
            self.push(content);
            return;
        }
        self.lines.insert(i, format!("{content}{}", self.eol));
    }

    /// Appends a line, first terminating a last line that lacks a newline.
    pub fn push(&mut self, content: &str) {
        if let Some(last) = self.lines.last_mut()
            && !last.ends_with('\n')
        {
            last.push_str(self.eol);
        }
        self.lines.push(format!("{content}{}", self.eol));
    }

    /// Removes line `i`.
    pub fn remove(&mut self, i: usize) {
        self.lines.remove(i);
    }

    /// The text back.
    pub fn text(&self) -> String {
        self.lines.concat()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_crlf_and_missing_final_newline() {
        let mut l = Lines::new("a\r\nb");
        l.push("c");
        assert_eq!(l.text(), "a\r\nb\r\nc\r\n");
        l.replace(0, "A");
        assert_eq!(l.text(), "A\r\nb\r\nc\r\n");
        let mut l = Lines::new("");
        l.insert(0, "x");
        assert_eq!(l.text(), "x\n");
    }
}
