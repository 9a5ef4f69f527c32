//! `hostkit patch …` on fixture trees (tests/fixtures/patch/<rule>/<tree>), with the real GNU
//! `patch` for exported diffs.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{TestDir, hostkit, run, run_ok, texts};

/// Every (rule, fixture tree) pair that has something to change.
const PENDING: &[(&str, &str)] = &[
    ("ngroups", "linux-2.4"),
    ("ngroups", "sysroot"),
    ("procps", "procps-3.2.8"),
    ("procps", "procps-2.0.7"),
    ("shadow-groups", "shadow-20000902"),
    ("udisks-media", "udisks2-2.9"),
    ("udisks-media", "udisks2-2.0"),
    ("gtk-typeahead", "gtk-3.24"),
    ("gtk-single-click", "gtk-3.22"),
];

pub(crate) fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/patch")
}

pub(crate) fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).expect("read fixture dir") {
        let entry = entry.expect("fixture entry");
        let dest = to.join(entry.file_name());
        if entry.file_type().expect("file type").is_dir() {
            std::fs::create_dir_all(&dest).expect("mkdir");
            copy_tree(&entry.path(), &dest);
        } else {
            std::fs::copy(entry.path(), &dest).expect("copy fixture file");
        }
    }
}

/// A fresh copy of a fixture tree.
pub(crate) fn fixture(rule: &str, tree: &str) -> TestDir {
    let dir = TestDir::new();
    copy_tree(&fixtures().join(rule).join(tree), dir.path());
    dir
}

/// Every file under `dir`: relative path → (contents, mode).
fn snapshot(dir: &Path) -> BTreeMap<String, (Vec<u8>, u32)> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, (Vec<u8>, u32)>) {
        for entry in std::fs::read_dir(dir).expect("read dir") {
            let entry = entry.expect("entry");
            let path = entry.path();
            if entry.file_type().expect("file type").is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path
                    .strip_prefix(root)
                    .expect("prefix")
                    .display()
                    .to_string();
                let mode = entry.metadata().expect("metadata").permissions().mode() & 0o7777;
                out.insert(rel, (std::fs::read(&path).expect("read"), mode));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(dir, dir, &mut out);
    out
}

fn hk(args: &[&str]) -> Output {
    run(hostkit().args(args))
}

fn apply(rule: &str, dir: &TestDir, extra: &[&str]) -> Output {
    let src = dir.path().to_str().expect("utf-8 path");
    let mut args = vec!["patch", "apply", rule, "--source", src];
    args.extend_from_slice(extra);
    hk(&args)
}

/// Stdout and stderr of a run that must exit with `code`.
fn expect_exit(out: &Output, code: i32) -> (String, String) {
    let (stdout, stderr) = texts(out);
    assert_eq!(
        out.status.code(),
        Some(code),
        "exit status\nstdout:\n{stdout}\nstderr:\n{stderr}"
    );
    (stdout, stderr)
}

/// Asserts that each of `lines` is a whole line of the diff.
pub(crate) fn assert_diff_has(diff: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            diff.lines().any(|l| l == *line),
            "missing {line:?} in:\n{diff}"
        );
    }
}

pub(crate) fn gnu_patch(dir: &Path, diff: &Path) {
    run_ok(
        Command::new("patch")
            .args([
                "-p1",
                "--batch",
                "--forward",
                "--no-backup-if-mismatch",
                "-i",
            ])
            .arg(diff)
            .current_dir(dir),
    );
}

#[test]
fn list_names_every_rule() {
    let (stdout, _) = expect_exit(&hk(&["patch", "list"]), 0);
    let names: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert_eq!(
        names,
        [
            "gtk-single-click",
            "gtk-typeahead",
            "ngroups",
            "procps",
            "shadow-groups",
            "udisks-media"
        ]
    );
    assert!(stdout.contains(
        "procps             Give procps's readproc.c status buffer a named, larger size"
    ));
}

#[test]
fn show_explains_parameters_warnings_and_history() {
    let (stdout, _) = expect_exit(&hk(&["patch", "show", "ngroups"]), 0);
    for needle in [
        "ngroups — Raise the 32-group limit",
        "rule file: patches/ngroups.toml",
        "recipe: ngroups (hostkit apply ngroups --source DIR)",
        "  limit = 255 (integer 32..=65536) — the kernel's group limit",
        "  libc_limit = 65536 (integer 32..=65536)",
        "when limit > 255 and edit kernel-ngroups or kernel-ngroups-max changes something: on a 2.4 kernel the group array sits in task_struct on the 8 KiB kernel stack: a limit of 1024 crashed at boot, 255 worked",
        "do not `make install` a rebuilt C library over the running one",
        "kernel-ngroups: the per-task group array size (one param.h per architecture) [include/asm-*/param.h]",
        "struct group_info",
    ] {
        assert!(stdout.contains(needle), "missing {needle:?} in:\n{stdout}");
    }
}

#[test]
fn every_rule_dry_runs_applies_once_and_exports_a_diff_gnu_patch_applies() {
    for (rule, tree) in PENDING {
        let ctx = format!("{rule} on {tree}");
        let a = fixture(rule, tree);
        let pristine = snapshot(a.path());

        // Dry run: the diff, and nothing written.
        let (dry, dry_err) = expect_exit(&apply(rule, &a, &["--dry-run"]), 0);
        assert!(dry.starts_with("--- a/"), "{ctx}: dry-run diff:\n{dry}");
        assert!(
            dry_err.contains(&format!("dry run: rule {rule} would change")),
            "{ctx}: {dry_err}"
        );
        assert_eq!(
            snapshot(a.path()),
            pristine,
            "{ctx}: dry run changed the tree"
        );

        // Apply: prints the same diff and changes the tree, keeping modes.
        let (applied, applied_err) = expect_exit(&apply(rule, &a, &[]), 0);
        assert_eq!(applied, dry, "{ctx}: applied diff differs from the dry run");
        assert!(
            applied_err.contains(&format!("applied rule {rule}: changed")),
            "{ctx}: {applied_err}"
        );
        let after = snapshot(a.path());
        assert_ne!(after, pristine, "{ctx}: apply changed nothing");
        for (path, (_, mode)) in &pristine {
            assert_eq!(after[path].1, *mode, "{ctx}: mode of {path}");
        }

        // Second apply: nothing to do, exit 0.
        let (again, again_err) = expect_exit(&apply(rule, &a, &[]), 0);
        assert_eq!(again, "", "{ctx}");
        assert!(
            again_err.contains(&format!("rule {rule} is already applied under")),
            "{ctx}: {again_err}"
        );
        assert_eq!(
            snapshot(a.path()),
            after,
            "{ctx}: second apply changed the tree"
        );

        // Export on a fresh copy, then the real `patch -p1` gives the same tree.
        let b = fixture(rule, tree);
        let out = TestDir::new();
        let diff = out.join("change.diff");
        let src = b.path().to_str().expect("path");
        let (_, export_err) = expect_exit(
            &hk(&[
                "patch",
                "export",
                rule,
                "--source",
                src,
                "-o",
                diff.to_str().expect("path"),
            ]),
            0,
        );
        assert!(
            export_err.contains("apply it inside"),
            "{ctx}: {export_err}"
        );
        assert_eq!(
            snapshot(b.path()),
            pristine,
            "{ctx}: export changed the tree"
        );
        let diff_text = std::fs::read(&diff).expect("diff written");
        assert_eq!(
            String::from_utf8_lossy(&diff_text),
            dry,
            "{ctx}: exported diff"
        );
        gnu_patch(b.path(), &diff);
        assert_eq!(
            snapshot(b.path()),
            after,
            "{ctx}: patch -p1 result differs from hostkit's"
        );
    }
}

#[test]
fn export_without_output_prints_the_diff() {
    let a = fixture("udisks-media", "udisks2-2.9");
    let src = a.path().to_str().expect("path");
    let (stdout, _) = expect_exit(
        &hk(&["patch", "export", "udisks-media", "--source", src]),
        0,
    );
    assert_eq!(
        stdout,
        "--- a/src/udiskslinuxfilesystem.c\n\
         +++ b/src/udiskslinuxfilesystem.c\n\
         @@ -19,8 +19,8 @@\n \
         #define MOUNT_BASE \"/media\"\n \
         #define MOUNT_BASE_PERSISTENT TRUE\n \
         #else\n\
         -#define MOUNT_BASE \"/run/media\"\n\
         -#define MOUNT_BASE_PERSISTENT FALSE\n\
         +#define MOUNT_BASE \"/media\"\n\
         +#define MOUNT_BASE_PERSISTENT TRUE\n \
         #endif\n \
         \n \
         static gchar *\n"
    );
}

#[test]
fn ngroups_edits_each_architecture_and_limits_h() {
    let a = fixture("ngroups", "linux-2.4");
    let (stdout, stderr) = expect_exit(&apply("ngroups", &a, &[]), 0);
    assert_diff_has(
        &stdout,
        &[
            "--- a/include/asm-alpha/param.h",
            "+++ b/include/asm-i386/param.h",
            "-#define NGROUPS\t\t32",
            "+#define NGROUPS\t\t255",
            "-#define NGROUPS_MAX       32\t/* supplemental group IDs are available */",
            "+#define NGROUPS_MAX       255\t/* supplemental group IDs are available */",
        ],
    );
    assert!(
        !stderr.contains("warning:"),
        "no warning at the default limit: {stderr}"
    );
    assert!(
        a.read("include/asm-i386/param.h")
            .contains("#ifndef NGROUPS\n#define NGROUPS\t\t255\n#endif")
    );
    assert!(
        a.read("include/linux/sched.h")
            .contains("gid_t\tgroups[NGROUPS];")
    );
}

#[test]
fn ngroups_above_255_warns_about_the_kernel_stack() {
    let a = fixture("ngroups", "linux-2.4");
    let (_, stderr) = expect_exit(&apply("ngroups", &a, &["--set", "limit=1024"]), 0);
    assert!(
        stderr.contains("warning: on a 2.4 kernel the group array sits in task_struct on the 8 KiB kernel stack: a limit of 1024 crashed at boot, 255 worked"),
        "{stderr}"
    );
    assert!(
        a.read("include/asm-alpha/param.h")
            .contains("#define NGROUPS\t\t1024\n")
    );
    assert!(
        a.read("include/linux/limits.h")
            .contains("#define NGROUPS_MAX       1024\t")
    );
    // Changing the limit again edits the already-raised constants.
    let (stdout, _) = expect_exit(&apply("ngroups", &a, &["--set", "limit=512"]), 0);
    assert!(
        stdout.lines().any(|l| l == "-#define NGROUPS\t\t1024"),
        "{stdout}"
    );
    assert!(
        stdout.lines().any(|l| l == "+#define NGROUPS\t\t512"),
        "{stdout}"
    );
}

#[test]
fn ngroups_on_c_library_headers_warns_about_make_install() {
    let a = fixture("ngroups", "sysroot");
    let (stdout, stderr) = expect_exit(&apply("ngroups", &a, &["--set", "libc_limit=4096"]), 0);
    assert!(
        stdout.contains(
            "+#define NGROUPS_MAX       4096\t/* supplemental group IDs are available */\n"
        ),
        "{stdout}"
    );
    assert!(
        stderr.contains("warning: do not `make install` a rebuilt C library over the running one"),
        "{stderr}"
    );
}

#[test]
fn procps_buffer_gets_a_named_size_and_literal_sizes_go() {
    let a = fixture("procps", "procps-2.0.7");
    let (stdout, _) = expect_exit(&apply("procps", &a, &["--set", "size=8192"]), 0);
    assert_diff_has(
        &stdout,
        &[
            "+#define STATUS_BUF_SIZE 8192  /* /proc/PID/status grows with the Groups: line */",
            "-    static char path[32], sbuf[512];\t/* bufs for stat,statm */",
            "+    static char path[32], sbuf[STATUS_BUF_SIZE];\t/* bufs for stat,statm */",
            "-\tif ((file2str(path, \"status\", sbuf, 512)) != -1 )",
            "+\tif ((file2str(path, \"status\", sbuf, sizeof sbuf)) != -1 )",
        ],
    );
    // A new size only rewrites the definition.
    let (stdout, _) = expect_exit(&apply("procps", &a, &["--set", "size=16384"]), 0);
    let changed: Vec<&str> = stdout
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-#define STATUS_BUF_SIZE 8192  /* /proc/PID/status grows with the Groups: line */",
            "+#define STATUS_BUF_SIZE 16384  /* /proc/PID/status grows with the Groups: line */",
        ]
    );
}

#[test]
fn procps_both_buffers_of_3_2_are_replaced() {
    let a = fixture("procps", "procps-3.2.8");
    expect_exit(&apply("procps", &a, &[]), 0);
    let text = a.read("proc/readproc.c");
    assert_eq!(
        text.matches("static char sbuf[STATUS_BUF_SIZE];    // buffer for stat,statm")
            .count(),
        2
    );
    assert_eq!(text.matches("#define STATUS_BUF_SIZE 4096").count(), 1);
    assert!(text.contains("#define STATUS_BUF_SIZE 4096  /* /proc/PID/status grows with the Groups: line */\n\nstatic int file2str(const char *directory"));
}

#[test]
fn shadow_arrays_are_sized_at_run_time_and_latin1_bytes_survive() {
    let a = fixture("shadow-groups", "shadow-20000902");
    let (stdout, _) = expect_exit(&apply("shadow-groups", &a, &[]), 0);
    assert_diff_has(
        &stdout,
        &[
            "-\tGETGROUPS_T grouplist[NGROUPS_MAX];",
            "+\tlong ngroups_max = sysconf (_SC_NGROUPS_MAX) > 0 ? sysconf (_SC_NGROUPS_MAX) : NGROUPS_MAX;",
            "+\tGETGROUPS_T *grouplist = (GETGROUPS_T *) xmalloc (ngroups_max * sizeof (GETGROUPS_T));",
            "-\tngroups = getgroups(NGROUPS_MAX, grouplist);",
            "+\tngroups = getgroups(ngroups_max, grouplist);",
            "+\t\tif (ngroups >= ngroups_max) {",
            "+\t\tif (ngroups == ngroups_max) {",
        ],
    );
    let bytes = std::fs::read(a.join("libmisc/addgrps.c")).expect("read");
    assert!(
        bytes.windows(6).any(|w| w == b"Fran\xe7o"),
        "the ISO-8859-1 byte was rewritten"
    );
    assert!(!String::from_utf8_lossy(&bytes).contains("NGROUPS_MAX]"));
}

#[test]
fn udisks_old_trees_lose_every_run_media_and_the_base_is_settable() {
    let a = fixture("udisks-media", "udisks2-2.0");
    let (stdout, _) = expect_exit(
        &apply("udisks-media", &a, &["--set", "base=/mnt/removable"]),
        0,
    );
    assert!(
        stdout.contains("+      mount_dir = g_strdup_printf (\"/mnt/removable/%s\", user_name);\n"),
        "{stdout}"
    );
    assert!(!a.read("src/udiskslinuxfilesystem.c").contains("/run/media"));
    let (_, stderr) = expect_exit(
        &apply("udisks-media", &a, &["--set", "base=/mnt/removable"]),
        0,
    );
    assert!(stderr.contains("is already applied"), "{stderr}");
}

#[test]
fn gtk_typeahead_and_single_click_edit_the_real_lines() {
    let a = fixture("gtk-typeahead", "gtk-3.24");
    let (stdout, _) = expect_exit(&apply("gtk-typeahead", &a, &[]), 0);
    assert!(stdout.contains("+  else if (FALSE /* typeahead instead of search, GNOME/gtk#839 */ && gtk_search_entry_handle_event (GTK_SEARCH_ENTRY (priv->search_entry), (GdkEvent *)event))\n"));
    assert_eq!(stdout.matches("+  gtk_tree_view_set_search_column (GTK_TREE_VIEW (priv->browse_files_tree_view), MODEL_COL_NAME);\n").count(), 2);
    assert!(
        stdout.contains(
            "--- a/gtk/ui/gtkfilechooserwidget.ui\n+++ b/gtk/ui/gtkfilechooserwidget.ui\n"
        )
    );
    assert!(stdout.contains("+            <property name=\"enable-search\">1</property>\n"));

    let b = fixture("gtk-single-click", "gtk-3.22");
    let (stdout, _) = expect_exit(&apply("gtk-single-click", &b, &[]), 0);
    assert!(
        stdout.contains("-  if (!is_touchscreen &&\n+  if (FALSE && !is_touchscreen &&\n"),
        "{stdout}"
    );
}

#[test]
fn solved_upstream_is_not_applicable_and_changes_nothing() {
    for (rule, tree, evidence) in [
        ("procps", "procps-ng-4.0", "(library/readproc.c:20)"),
        ("shadow-groups", "shadow-4.13", "(libmisc/addgrps.c:37)"),
        (
            "gtk-single-click",
            "gtk-3.24",
            "(gtk/gtkfilechooserwidget.c:12)",
        ),
        ("ngroups", "linux-2.6", "(include/linux/sched.h:8)"),
    ] {
        let a = fixture(rule, tree);
        let before = snapshot(a.path());
        let (stdout, stderr) = expect_exit(&apply(rule, &a, &[]), 0);
        assert_eq!(stdout, "", "{rule}");
        assert!(
            stderr.contains(&format!("rule {rule} is not applicable under")),
            "{stderr}"
        );
        assert!(
            stderr.contains(&format!("{evidence}; nothing was changed")),
            "{stderr}"
        );
        assert!(!stderr.contains("warning:"), "{stderr}");
        assert_eq!(snapshot(a.path()), before, "{rule} on {tree}");
    }
}

#[test]
fn unrecognised_code_is_named_and_nothing_changes_in_any_file() {
    let a = fixture("ngroups", "linux-2.4");
    a.write(
        "include/linux/limits.h",
        "#ifndef _LINUX_LIMITS_H\n#define _LINUX_LIMITS_H\n#define NGROUPS_MAX (NGROUPS)\n#endif\n",
    );
    let before = snapshot(a.path());
    let (stdout, stderr) = expect_exit(&apply("ngroups", &a, &[]), 2);
    assert_eq!(stdout, "");
    assert!(
        stderr.starts_with("error: rule `ngroups` does not recognise the code under "),
        "{stderr}"
    );
    assert!(
        stderr.contains("\n  include/linux/limits.h: expected a line `#define NGROUPS_MAX <number>` (edit `kernel-ngroups-max`)\n"),
        "{stderr}"
    );
    assert!(!stderr.contains("param.h"), "{stderr}");
    assert_eq!(
        snapshot(a.path()),
        before,
        "param.h must stay untouched too"
    );
}

#[test]
fn unexpected_occurrence_counts_are_refused() {
    let a = fixture("gtk-typeahead", "gtk-3.24");
    let path = "gtk/gtkfilechooserwidget.c";
    let text = a.read(path).replacen(
        "gtk_tree_view_set_search_column (GTK_TREE_VIEW (priv->browse_files_tree_view), -1);",
        "gtk_tree_view_set_search_column (GTK_TREE_VIEW (priv->browse_files_tree_view), MODEL_COL_TIME);",
        1,
    );
    a.write(path, text);
    a.write("gtk/ui/gtkfilechooserwidget.ui", "<interface/>\n");
    let before = snapshot(a.path());
    let (_, stderr) = expect_exit(&apply("gtk-typeahead", &a, &[]), 2);
    assert!(stderr.contains("gtk/gtkfilechooserwidget.c: expected 2 occurrence(s) of `gtk_tree_view_set_search_column (GTK_TREE_VIEW (priv->browse_files_tree_view), -1);` (in file_list_set_sort_column_ids and recent_idle_cleanup), found 1 (edit `search-column`)"), "{stderr}");
    assert!(stderr.contains("gtk/ui/gtkfilechooserwidget.ui: expected `<property name=\"enable-search\">0</property>` (edit `enable-search`)"), "{stderr}");
    assert_eq!(snapshot(a.path()), before);
}

#[test]
fn a_tree_without_the_rules_files_has_nothing_to_change() {
    let a = TestDir::new();
    a.write("README", "not a kernel\n");
    let (_, stderr) = expect_exit(&apply("ngroups", &a, &[]), 2);
    assert!(
        stderr.contains("error: rule `ngroups` found nothing to change under "),
        "{stderr}"
    );
    assert!(stderr.contains("none of its files exist (looked for include/asm-*/param.h, include/linux/limits.h, usr/include/linux/limits.h); nothing was changed"), "{stderr}");
}

#[test]
fn version_control_directories_are_skipped() {
    let a = fixture("procps", "procps-3.2.8");
    let original = a.read("proc/readproc.c");
    a.write(".git/readproc.c", &original);
    expect_exit(&apply("procps", &a, &[]), 0);
    assert_eq!(a.read(".git/readproc.c"), original);
    assert_ne!(a.read("proc/readproc.c"), original);
}

#[test]
fn file_modes_are_kept() {
    let a = fixture("udisks-media", "udisks2-2.9");
    let path = a.join("src/udiskslinuxfilesystem.c");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).expect("chmod");
    expect_exit(&apply("udisks-media", &a, &[]), 0);
    let mode = std::fs::metadata(&path)
        .expect("metadata")
        .permissions()
        .mode()
        & 0o7777;
    assert_eq!(mode, 0o640);
    let leftovers: Vec<_> = std::fs::read_dir(a.join("src"))
        .expect("read dir")
        .filter_map(|e| e.ok())
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with(".hostkit-patch-")
        })
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn export_of_an_applied_tree_writes_nothing() {
    let a = fixture("procps", "procps-3.2.8");
    expect_exit(&apply("procps", &a, &[]), 0);
    let out = TestDir::new();
    let diff = out.join("x.diff");
    let src = a.path().to_str().expect("path");
    let (stdout, stderr) = expect_exit(
        &hk(&[
            "patch",
            "export",
            "procps",
            "--source",
            src,
            "-o",
            diff.to_str().expect("path"),
        ]),
        0,
    );
    assert_eq!(stdout, "");
    assert!(stderr.contains("is already applied"), "{stderr}");
    assert!(!diff.exists());
}

#[test]
fn bad_input_gets_a_clear_error_and_exit_2() {
    let a = fixture("procps", "procps-3.2.8");
    let src = a.path().to_str().expect("path").to_string();
    let before = snapshot(a.path());
    let missing = a.join("no/such/dir");
    let file = a.join("proc/readproc.c");
    let cases: Vec<(Vec<&str>, String)> = vec![
        (
            vec!["patch", "show", "nope"],
            "error: unknown patch rule `nope` (known rules: gtk-single-click, gtk-typeahead, ngroups, procps, shadow-groups, udisks-media)".into(),
        ),
        (
            vec!["patch", "apply", "nope", "--source", &src],
            "error: unknown patch rule `nope`".into(),
        ),
        (
            vec!["patch", "apply", "procps", "--source", missing.to_str().expect("path")],
            format!("error: source directory {}: No such file or directory", missing.display()),
        ),
        (
            vec!["patch", "apply", "procps", "--source", file.to_str().expect("path")],
            format!("error: source directory {}: not a directory", file.display()),
        ),
        (
            vec!["patch", "apply", "procps", "--source", &src, "--set", "sise=8192"],
            "error: rule `procps` has no parameter `sise` (its parameters: size)".into(),
        ),
        (
            vec!["patch", "apply", "procps", "--source", &src, "--set", "size=12"],
            "error: rule `procps`: bad value `12` for parameter `size`: out of range: expected an integer 1024..=1048576".into(),
        ),
        (
            vec!["patch", "apply", "procps", "--source", &src, "--set", "size=big"],
            "error: rule `procps`: bad value `big` for parameter `size`: expected an integer 1024..=1048576".into(),
        ),
        (
            vec!["patch", "apply", "procps", "--source", &src, "--set", "size"],
            "error: `--set size`: expected KEY=VALUE".into(),
        ),
        (
            vec!["patch", "apply", "gtk-typeahead", "--source", &src, "--set", "x=1"],
            "error: rule `gtk-typeahead` has no parameter `x` (it takes no parameters)".into(),
        ),
        (
            vec!["patch", "apply", "udisks-media", "--source", &src, "--set", "base=/run/media"],
            "error: rule `udisks-media`: bad value `/run/media` for parameter `base`: expected a string matching /".into(),
        ),
    ];
    for (args, expected) in cases {
        let out = hk(&args);
        let (_, stderr) = expect_exit(&out, 2);
        assert!(
            stderr.starts_with(&expected),
            "{args:?}: expected {expected:?}, got:\n{stderr}"
        );
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    assert_eq!(snapshot(a.path()), before);
}

#[test]
fn malformed_rule_files_name_file_line_and_column() {
    let rules = TestDir::new();
    let dir = rules.path().to_str().expect("path").to_string();
    let cases = [
        (
            "name = \"bad\"\nsummary = \"x\"\nfnd = \"y\"\n",
            "3:1: unknown key `fnd` in the rule file; allowed keys: name, summary, recipe, applies_to, history, references, params, warnings, edits, not_applicable",
        ),
        (
            "name = \"bad\"\nsummary = \"x\"\n\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nreplace = \"y\"\n  expected = \"z\"\n",
            "10:3: unknown key `expected` in [[edits]]; allowed keys: id, description, files, find, find_regex, replace, applied, applied_regex, expect, require, one_of, count",
        ),
        (
            "name = \"bad\"\nsummary = [\n",
            "3:1: TOML syntax error: invalid array; expected `]`",
        ),
        (
            "name = \"bad\"\nsummary = \"x\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind_regex = \"(unclosed\"\nreplace = \"y\"\n",
            "7:14: bad `find_regex`: regex parse error",
        ),
        (
            "name = \"bad\"\nsummary = \"x\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"a.c\"]\nfind = \"x\"\nreplace = \"{size}\"\n",
            "8:11: `{size}` names no parameter of this rule",
        ),
        (
            "name = \"other\"\nsummary = \"x\"\n",
            "1:8: `name = \"other\"` must be the file's name without `.toml` (`bad`)",
        ),
    ];
    for (text, expected) in cases {
        rules.write("bad.toml", text);
        let (_, stderr) = expect_exit(&hk(&["patch", "list", "--rules-dir", &dir]), 2);
        assert!(
            stderr.starts_with(&format!(
                "error: reading rules from {dir}\n\nCaused by:\n    {dir}/bad.toml:{expected}"
            )),
            "for {text:?}:\n{stderr}"
        );
    }
}

#[test]
fn a_rule_from_rules_dir_is_used() {
    let rules = TestDir::new();
    rules.write(
        "hello.toml",
        "name = \"hello\"\nsummary = \"Greets {{people}}\"\n\n[params.who]\ndescription = \"who\"\ntype = \"string\"\ndefault = \"world\"\n\n[[edits]]\nid = \"greet\"\ndescription = \"greet\"\nfiles = [\"*.txt\"]\nfind = \"hello\"\nreplace = \"hello, {who}\"\n",
    );
    let tree = TestDir::new();
    tree.write("a/b.txt", "hello\n");
    let dir = rules.path().to_str().expect("path");
    let src = tree.path().to_str().expect("path");
    let (stdout, _) = expect_exit(
        &hk(&[
            "patch",
            "apply",
            "hello",
            "--rules-dir",
            dir,
            "--source",
            src,
            "--set",
            "who=you",
        ]),
        0,
    );
    assert_eq!(
        stdout,
        "--- a/a/b.txt\n+++ b/a/b.txt\n@@ -1 +1 @@\n-hello\n+hello, you\n"
    );
    assert_eq!(tree.read("a/b.txt"), "hello, you\n");
    let (_, stderr) = expect_exit(
        &hk(&[
            "patch",
            "apply",
            "hello",
            "--rules-dir",
            dir,
            "--source",
            src,
            "--set",
            "who=you",
        ]),
        0,
    );
    assert!(stderr.contains("already applied"), "{stderr}");
}

#[test]
fn a_rules_dir_cannot_silently_replace_a_built_in_rule() {
    // One duplicate policy for rules and recipes: a file named like a built-in rule (or a
    // rule defined twice) is refused, naming both places, and nothing is planned.
    let rules = TestDir::new();
    rules.write(
        "procps.toml",
        "name = \"procps\"\nsummary = \"mine\"\n[[edits]]\nid = \"e\"\ndescription = \"d\"\nfiles = [\"*.c\"]\nfind = \"x\"\nreplace = \"y\"\n",
    );
    let dir = rules.path().to_str().expect("path");
    let (stdout, stderr) = expect_exit(&hk(&["patch", "list", "--rules-dir", dir]), 2);
    assert!(stdout.is_empty(), "{stdout}");
    assert!(
        stderr.contains(&format!(
            "rule `procps` is defined twice: in patches/procps.toml and in {dir}/procps.toml"
        )),
        "{stderr}"
    );
}

#[test]
fn no_progress_line_when_stderr_is_not_a_terminal() {
    let a = fixture("procps", "procps-3.2.8");
    let (_, stderr) = expect_exit(&apply("procps", &a, &["--dry-run"]), 0);
    assert!(!stderr.contains("scanning"), "{stderr}");
    assert!(!stderr.contains('\r'), "{stderr:?}");
}

#[test]
fn file_owner_is_kept() {
    require_root!();
    use std::os::unix::fs::MetadataExt;
    let a = fixture("udisks-media", "udisks2-2.9");
    let path = a.join("src/udiskslinuxfilesystem.c");
    std::os::unix::fs::chown(&path, Some(1234), Some(4321)).expect("chown");
    expect_exit(&apply("udisks-media", &a, &[]), 0);
    let meta = std::fs::metadata(&path).expect("metadata");
    assert_eq!((meta.uid(), meta.gid()), (1234, 4321));
    assert!(
        a.read("src/udiskslinuxfilesystem.c")
            .contains("#define MOUNT_BASE_PERSISTENT TRUE\n#endif")
    );
}
