//! Running one edit on one file's text: every occurrence of its find, what it becomes, and
//! whether it is already done.

use std::ops::Range;

use crate::params::Params;
use crate::rule::{Applied, Edit, Matcher};

/// An edit's effect on one file's text.
pub(super) struct EditRun {
    pub text: String,
    pub pending: usize,
    pub applied: usize,
}

pub(super) fn run_edit(edit: &Edit, text: &str, params: &Params) -> EditRun {
    // Every occurrence of the find, with what it would become.
    let mut finds: Vec<(Range<usize>, String)> = Vec::new();
    match &edit.find {
        Matcher::Literal(lit) => {
            let replacement = crate::params::render(&edit.replace, params, false);
            for r in literal_ranges(text, lit) {
                finds.push((r, replacement.clone()));
            }
        }
        Matcher::Regex(re) => {
            let tpl = crate::params::render(&edit.replace, params, true);
            for caps in re.captures_iter(text) {
                let Some(m) = caps.get(0) else { continue };
                if m.is_empty() {
                    continue;
                }
                let mut replacement = String::new();
                caps.expand(&tpl, &mut replacement);
                finds.push((m.range(), replacement));
            }
        }
    }
    // Where the edit's result already stands. A result that only lies inside a find occurrence
    // (a replacement shorter than what it replaces) proves nothing and is dropped; a find
    // occurrence inside a result (a replacement that keeps the found text) is already done.
    let candidates: Vec<Range<usize>> = match (&edit.applied, &edit.find) {
        (Some(Applied::Literal(t)), _) => {
            literal_ranges(text, &crate::params::render(t, params, false))
        }
        (Some(Applied::Regex(r)), _) => r.find_iter(text).map(|m| m.range()).collect(),
        (None, Matcher::Literal(_)) => {
            literal_ranges(text, &crate::params::render(&edit.replace, params, false))
        }
        (None, Matcher::Regex(_)) => Vec::new(),
    };
    let contains = |outer: &Range<usize>, inner: &Range<usize>| {
        outer.start <= inner.start && inner.end <= outer.end
    };
    let overlap = |a: &Range<usize>, b: &Range<usize>| a.start < b.end && b.start < a.end;
    let applied: Vec<Range<usize>> = candidates
        .into_iter()
        .filter(|a| finds.iter().all(|(f, _)| !overlap(a, f) || contains(a, f)))
        .collect();

    let mut out = String::with_capacity(text.len());
    let mut last = 0;
    let (mut pending, mut equal) = (0, 0);
    for (range, replacement) in finds {
        if applied.iter().any(|a| contains(a, &range)) {
            continue;
        }
        if replacement == text[range.clone()] {
            equal += 1;
            continue;
        }
        pending += 1;
        out.push_str(&text[last..range.start]);
        out.push_str(&replacement);
        last = range.end;
    }
    out.push_str(&text[last..]);
    EditRun {
        text: out,
        pending,
        applied: applied.len() + equal,
    }
}

fn literal_ranges(text: &str, needle: &str) -> Vec<Range<usize>> {
    if needle.is_empty() {
        return Vec::new();
    }
    text.match_indices(needle)
        .map(|(i, m)| i..i + m.len())
        .collect()
}

pub(super) fn first_match_line(text: &str, m: &Matcher) -> Option<usize> {
    let start = match m {
        Matcher::Literal(l) => text.find(l.as_str())?,
        Matcher::Regex(r) => r.find(text)?.start(),
    };
    Some(text[..start].matches('\n').count() + 1)
}

/// True when the text has line ends and every one is CRLF.
pub(super) fn is_crlf(text: &str) -> bool {
    let lf = text.matches('\n').count();
    lf > 0 && text.matches("\r\n").count() == lf
}
