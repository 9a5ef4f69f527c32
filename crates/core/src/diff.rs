//! Unified diffs, the one wrapper around `similar` that recipes and patches print: `a/…` and
//! `b/…` paths relative to the root or source tree (`/dev/null` for a file that is created or
//! removed), 3 lines of context.

use similar::TextDiff;

/// The unified diff of one file (empty when nothing changes).
pub fn unified(display: &str, before: Option<&str>, after: Option<&str>) -> String {
    if before == after {
        return String::new();
    }
    let old_header = before.map_or("/dev/null".to_string(), |_| format!("a/{display}"));
    let new_header = after.map_or("/dev/null".to_string(), |_| format!("b/{display}"));
    let diff = TextDiff::from_lines(before.unwrap_or(""), after.unwrap_or(""));
    diff.unified_diff()
        .context_radius(3)
        .header(&old_header, &new_header)
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::unified;

    #[test]
    fn new_file_and_edit() {
        assert_eq!(
            unified("etc/x", None, Some("a\n")),
            "--- /dev/null\n+++ b/etc/x\n@@ -0,0 +1 @@\n+a\n"
        );
        assert_eq!(
            unified("etc/x", Some("a\nb"), Some("a\nb\nc\n")),
            "--- a/etc/x\n+++ b/etc/x\n@@ -1,2 +1,3 @@\n a\n-b\n\\ No newline at end of file\n+b\n+c\n"
        );
    }
}
