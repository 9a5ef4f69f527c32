//! Property tests: the recipe loader, the patch-rule loader and the packet decoder survive any
//! input — arbitrary bytes, and the built-in files mutated line by line and value by value —
//! without a panic; a loader's error names the file and a line that exists.

use proptest::prelude::*;

/// What a mutation does to one line of a TOML file.
#[derive(Debug, Clone)]
enum Mutation {
    /// Drop the line.
    Delete,
    /// Repeat it.
    Duplicate,
    /// Replace the value after `=` with another TOML value of any type.
    Value(String),
    /// Replace the whole line.
    Line(String),
    /// Cut the line at a byte offset.
    Truncate(usize),
}

fn toml_value() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        any::<i64>().prop_map(|i| i.to_string()),
        any::<bool>().prop_map(|b| b.to_string()),
        "[a-z{}/. _-]{0,12}".prop_map(|s| format!("{s:?}")),
        Just("\"\"\"multi\nline\"\"\"".to_string()),
        Just("1979-05-27T07:32:00Z".to_string()),
        Just("0o777".to_string()),
        Just("inf".to_string()),
    ];
    leaf.prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|v| format!("[{}]", v.join(", "))),
            prop::collection::vec(("[a-z_]{1,6}", inner), 0..3).prop_map(|kv| {
                let body: Vec<String> = kv.into_iter().map(|(k, v)| format!("{k} = {v}")).collect();
                format!("{{ {} }}", body.join(", "))
            }),
        ]
    })
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        Just(Mutation::Delete),
        Just(Mutation::Duplicate),
        toml_value().prop_map(Mutation::Value),
        "[\\[\\]a-z_.= \"{}#-]{0,30}".prop_map(Mutation::Line),
        (0usize..80).prop_map(Mutation::Truncate),
    ]
}

/// Applies mutations at line indexes (taken modulo the line count).
fn mutate(text: &str, edits: &[(usize, Mutation)]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for (at, m) in edits {
        if lines.is_empty() {
            break;
        }
        let i = at % lines.len();
        match m {
            Mutation::Delete => {
                lines.remove(i);
            }
            Mutation::Duplicate => {
                let l = lines[i].clone();
                lines.insert(i, l);
            }
            Mutation::Value(v) => {
                if let Some((key, _)) = lines[i].split_once('=') {
                    lines[i] = format!("{key}= {v}");
                }
            }
            Mutation::Line(l) => lines[i] = l.clone(),
            Mutation::Truncate(n) => {
                let cut = (*n).min(lines[i].len());
                let cut = (0..=cut)
                    .rev()
                    .find(|&c| lines[i].is_char_boundary(c))
                    .unwrap_or(0);
                lines[i].truncate(cut);
            }
        }
    }
    lines.join("\n") + "\n"
}

/// A loader's error must name the file and a line of it (or the line after the last).
fn check_location(file: &str, line: usize, text: &str, want_file: &str, message: &str) {
    assert_eq!(file, want_file, "{message}");
    let lines = text.lines().count().max(1);
    assert!(
        (1..=lines + 1).contains(&line),
        "line {line} of {lines}: {message}"
    );
}

fn recipe(text: &str) {
    match hostkit_recipes::parse_recipe("fuzzed", "fuzzed.toml", text) {
        Ok(_) => {}
        Err(hostkit_recipes::Error::Recipe {
            file,
            line,
            message,
            ..
        }) => check_location(&file, line, text, "fuzzed.toml", &message),
        Err(e) => panic!("a recipe error that names no file and line: {e}"),
    }
}

fn rule(text: &str) {
    if let Err(e) = hostkit_patch::parse_rule("fuzzed.toml", text) {
        check_location(&e.file, e.line, text, "fuzzed.toml", &e.message);
    }
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 300,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn recipe_loader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        recipe(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn recipe_loader_takes_mutated_recipes(
        which in 0usize..64,
        edits in prop::collection::vec((any::<usize>(), mutation()), 1..6),
    ) {
        let (_, text) = hostkit_recipes::BUILTIN[which % hostkit_recipes::BUILTIN.len()];
        recipe(&mutate(text, &edits));
    }

    #[test]
    fn rule_loader_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
        rule(&String::from_utf8_lossy(&bytes));
    }

    #[test]
    fn rule_loader_takes_mutated_rules(
        which in 0usize..64,
        edits in prop::collection::vec((any::<usize>(), mutation()), 1..6),
    ) {
        let (file, text) = hostkit_patch::BUILTIN_RULES[which % hostkit_patch::BUILTIN_RULES.len()];
        // The rule's name must match its file's: keep the file name so deeper checks run.
        let text = mutate(text, &edits);
        if let Err(e) = hostkit_patch::parse_rule(file, &text) {
            check_location(&e.file, e.line, &text, file, &e.message);
        }
    }

    #[test]
    fn packet_decoder_takes_any_bytes(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let _ = hostkit_tun::packet::decode(&bytes);
    }

    #[test]
    fn packet_decoder_takes_mutated_headers(
        version in prop_oneof![Just(4u8), Just(6u8), any::<u8>()],
        proto in prop_oneof![Just(0u8), Just(6), Just(17), Just(1), Just(58), Just(43), Just(44), Just(60), any::<u8>()],
        rest in prop::collection::vec(any::<u8>(), 0..120),
    ) {
        // A header whose version and protocol are right, so the decoder goes past them.
        let mut pkt = vec![0u8; 40];
        pkt[0] = version << 4 | 5;
        pkt[9] = proto;
        pkt[6] = proto;
        pkt.extend(rest);
        let _ = hostkit_tun::packet::decode(&pkt);
    }
}
