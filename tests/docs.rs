//! Shell completions and manual pages, generated from the command line: every shell gets a
//! script its own parser accepts, and every subcommand a page `man -l` renders without a
//! warning.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use crate::util::{TestDir, assert_man_page_renders, have_tool, hostkit, run, run_ok, texts};

/// The subcommands `hostkit WORDS… --help` lists under "Commands:" (without `help`).
fn subcommands(words: &[&str]) -> Vec<String> {
    let help = run_ok(hostkit().args(words).arg("--help"));
    let mut out = Vec::new();
    let mut inside = false;
    for line in help.lines() {
        if line == "Commands:" {
            inside = true;
            continue;
        }
        if inside {
            // "  name  description"; a wrapped description is indented further.
            let Some(rest) = line.strip_prefix("  ") else {
                break;
            };
            if rest.starts_with(' ') {
                continue;
            }
            let name = rest.split_whitespace().next().unwrap_or("");
            if !name.is_empty() && name != "help" {
                out.push(name.to_string());
            }
        }
    }
    out
}

/// Every page `hostkit man` should write: `hostkit.1`, and `hostkit-A-B.1` for every command
/// `A B` found by walking `--help`.
pub(crate) fn expected_pages() -> BTreeSet<String> {
    let mut pages = BTreeSet::from(["hostkit.1".to_string()]);
    let mut todo: Vec<Vec<String>> = vec![Vec::new()];
    while let Some(words) = todo.pop() {
        let w: Vec<&str> = words.iter().map(String::as_str).collect();
        for sub in subcommands(&w) {
            let mut next = words.clone();
            next.push(sub);
            pages.insert(format!("hostkit-{}.1", next.join("-")));
            todo.push(next);
        }
    }
    pages
}

#[test]
fn completions_are_generated_for_each_shell_and_parse() {
    for (shell, needle) in [
        ("bash", "_hostkit()"),
        ("zsh", "#compdef hostkit"),
        ("fish", "complete -c hostkit"),
    ] {
        let script = run_ok(hostkit().args(["completions", shell]));
        assert!(script.contains(needle), "{shell}: no `{needle}`:\n{script}");
        // Subcommands two levels down, and an option's values.
        for word in [
            "tun",
            "up",
            "check",
            "revert",
            "scope",
            "completions",
            "man",
        ] {
            assert!(script.contains(word), "{shell}: `{word}` missing");
        }
    }
    let dir = TestDir::new();
    let bash = dir.write(
        "hostkit.bash",
        run_ok(hostkit().args(["completions", "bash"])),
    );
    let out = run(Command::new("bash").arg("-n").arg(&bash));
    let (_, stderr) = texts(&out);
    assert!(
        out.status.success() && stderr.is_empty(),
        "bash -n: {stderr}"
    );
    // Sourced, the function completes `hostkit tun u` to `up`.
    let probe = format!(
        "source {}; COMP_WORDS=(hostkit tun u); COMP_CWORD=2; COMP_LINE='hostkit tun u'; \
         COMP_POINT=${{#COMP_LINE}}; _hostkit hostkit u tun; printf '%s\\n' \"${{COMPREPLY[@]}}\"",
        bash.display()
    );
    let replies = run_ok(Command::new("bash").args(["--norc", "-c", &probe]));
    assert!(replies.lines().any(|l| l == "up"), "{replies}");
    for (shell, check) in [("zsh", ["-n"]), ("fish", ["--no-execute"])] {
        if !have_tool(shell, "--version") {
            continue;
        }
        let file = dir.write(
            format!("hostkit.{shell}"),
            run_ok(hostkit().args(["completions", shell])),
        );
        let out = run(Command::new(shell).args(check).arg(&file));
        assert!(out.status.success(), "{shell}: {}", texts(&out).1);
    }
    // An unknown shell is a usage error.
    let out = run(hostkit().args(["completions", "tcsh"]));
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn man_writes_a_page_per_subcommand_and_each_renders_without_warnings() {
    let dir = TestDir::new();
    let out_dir = dir.join("man/man1");
    let listed = run_ok(hostkit().args(["man", "--out"]).arg(&out_dir));
    let written: BTreeSet<String> = std::fs::read_dir(&out_dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let want = expected_pages();
    assert_eq!(written, want);
    assert!(want.contains("hostkit-tun-up.1") && want.contains("hostkit-man.1"));
    // stdout lists each page written.
    let listed: BTreeSet<String> = listed
        .lines()
        .map(|l| {
            Path::new(l)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    assert_eq!(listed, want);
    // A directory that cannot be made is an error, exit 2.
    let file = dir.write("a-file", "x");
    let out = run(hostkit().args(["man", "--out"]).arg(file.join("sub")));
    assert_eq!(out.status.code(), Some(2));
    if !have_tool("man", "--version") || !have_tool("groff", "--version") {
        return;
    }
    for page in &want {
        let path = out_dir.join(page);
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.is_ascii(), "{page}: not ASCII");
        // man-db, as a reader runs it, with every warning on.
        assert_man_page_renders(&path, page);
        // And groff alone, without man-db's preprocessors.
        let out = run(Command::new("groff")
            .args(["-man", "-Tutf8", "-ww", "-z"])
            .arg(&path));
        let (_, warnings) = texts(&out);
        assert!(warnings.is_empty(), "groff {page}: {warnings}");
    }
    let check = run_ok(
        Command::new("man")
            .arg("-l")
            .arg(out_dir.join("hostkit-check.1"))
            .env("MANWIDTH", "200")
            .env_remove("MANPAGER")
            .env_remove("PAGER"),
    );
    assert!(check.contains("1: something would change"), "{check}");
}

#[test]
fn the_readme_stays_under_15_kb() {
    // The front page: the details live in docs/ (its Documentation table lists them).
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    assert!(
        readme.len() < 15_000,
        "README.md is {} bytes: move detail into docs/",
        readme.len()
    );
    for doc in ["docs/packaging.md", "docs/exit-codes.md"] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README.md does not link {doc}"
        );
    }
}
