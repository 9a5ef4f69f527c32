//! What hostkit's unit tests share: a missing prerequisite fails under CI and is a visible skip
//! elsewhere, as in the integration tests' `tests/util.rs`.
#![deny(missing_docs)]

/// True when running under CI (`CI` set to anything but empty, `0` or `false`).
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "0" && v != "false")
}

/// A missing prerequisite: fails under CI, otherwise prints `SKIPPED <test>: <why>` straight to
/// stderr (bypassing the harness's capture).
#[track_caller]
pub fn skip(why: &str) {
    let name = std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string();
    if in_ci() {
        panic!("{name}: missing prerequisite under CI: {why}");
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED {name}: {why}");
}
