//! The import graph follows the order of the modules in `lib.rs`'s table: a
//! module may use only those listed before it, and every module is listed.

use std::path::Path;

use crate::source_files::sources;

/// Top-level modules in the order of the table in `lib.rs`'s documentation
/// (rustfmt sorts the `mod` lines themselves).
fn declared_order(lib: &str) -> Vec<String> {
    lib.lines()
        .filter_map(|l| l.strip_prefix("//! | [`"))
        .filter_map(|l| l.split_once('`').map(|(m, _)| m.to_string()))
        .collect()
}

fn word(s: &str) -> String {
    s.chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
        .collect()
}

/// The text of the `{...}` group `s` starts with, without its braces, to its
/// balanced closing brace (or to the end).
fn group(s: &str) -> &str {
    let inner = &s[1..];
    let mut depth = 0usize;
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' if depth == 0 => return &inner[..i],
            '}' => depth -= 1,
            _ => {}
        }
    }
    inner
}

/// The first path segment of each item of a use group's text: `a::{b, c}, d`
/// gives `a` and `d`; a nested group of its own (`{a, b}`) gives its items'.
fn group_heads(text: &str, found: &mut Vec<String>) {
    let mut depth = 0usize;
    let mut start = 0;
    for (i, c) in text.char_indices().chain([(text.len(), ',')]) {
        match c {
            '{' => depth += 1,
            '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                let item = text[start..i].trim();
                if item.starts_with('{') {
                    group_heads(group(item), found);
                } else if !item.is_empty() {
                    found.push(word(item));
                }
                start = i + 1;
            }
            _ => {}
        }
    }
}

/// The crate modules a source file names: `crate::x` and `use crate::{x, y}`.
fn uses(src: &str) -> Vec<String> {
    let mut found = Vec::new();
    for (i, _) in src.match_indices("crate::") {
        let rest = &src[i + "crate::".len()..];
        if rest.starts_with('{') {
            group_heads(group(rest), &mut found);
        } else {
            found.push(word(rest));
        }
    }
    found
}

/// The `pub mod` lines of `lib.rs`, sorted.
fn lib_modules(root: &Path) -> Vec<String> {
    let lib = std::fs::read_to_string(root.join("lib.rs")).unwrap();
    let mut m: Vec<String> = lib
        .lines()
        .filter_map(|l| l.strip_prefix("pub mod "))
        .map(|m| m.trim_end_matches(';').to_string())
        .collect();
    m.sort();
    m
}

#[test]
fn modules_import_only_lower_ones() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let order = declared_order(&std::fs::read_to_string(root.join("lib.rs")).unwrap());

    let declared = lib_modules(&root);
    let mut listed = order.clone();
    listed.sort();
    assert_eq!(listed, declared, "lib.rs's table lists every module once");
    let rank = |m: &str| order.iter().position(|x| x == m);
    let mut wrong = Vec::new();
    for (i, module) in order.iter().enumerate() {
        let mut files = Vec::new();
        let dir = root.join(module);
        if dir.is_dir() {
            sources(&dir, &mut files);
        } else {
            files.push(root.join(format!("{module}.rs")));
        }
        for f in files {
            let src = std::fs::read_to_string(&f).unwrap();
            for used in uses(&src) {
                if rank(&used).is_some_and(|r| r > i) {
                    wrong.push(format!("{} uses crate::{used}", f.display()));
                }
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "imports against the order:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_checker_sees_grouped_and_inline_uses() {
    let src = "use crate::{model::Hop, views};\nlet x = crate::run::go();";
    assert_eq!(uses(src), ["model", "views", "run"]);
}

#[test]
fn the_checker_sees_every_item_of_nested_groups() {
    assert_eq!(uses("use crate::{a::{b}, views};"), ["a", "views"]);
    let src = "use crate::{\n    model::{Hop, x::{Y, Z}},\n    {run, time},\n    views::tui,\n};";
    assert_eq!(uses(src), ["model", "run", "time", "views"]);
}

/// Modules that work on the typed domain only: the kernel's raw structs
/// (`tracer_common`) are decoded at the boundary (`events`) and never reach
/// them, tests aside.
const TYPED_ONLY: [&str; 9] = [
    "model",
    "netfilter",
    "dataplane",
    "facts",
    "doctor",
    "correlation",
    "diagnosis",
    "merge",
    "views",
];

/// The part of a source file that is not its tests.
fn non_test(path: &Path, src: &str) -> String {
    let in_test_dir = path.components().any(|c| c.as_os_str() == "tests");
    if in_test_dir
        || path
            .file_stem()
            .is_some_and(|s| s.to_string_lossy().starts_with("tests"))
    {
        return String::new();
    }
    src.split("#[cfg(test)]").next().unwrap_or("").to_string()
}

#[test]
fn raw_kernel_structs_stay_at_the_boundary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut wrong = Vec::new();
    for module in TYPED_ONLY {
        let mut files = Vec::new();
        sources(&root.join(module), &mut files);
        assert!(!files.is_empty(), "{module} has sources");
        for f in files {
            let src = std::fs::read_to_string(&f).unwrap();
            if non_test(&f, &src).contains("tracer_common") {
                wrong.push(f.display().to_string());
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "raw kernel structs in:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn tests_are_told_apart_from_code() {
    let src = "use crate::model;\n#[cfg(test)]\nmod tests { use tracer_common::X; }";
    assert!(!non_test(Path::new("src/merge/mod.rs"), src).contains("tracer_common"));
    assert_eq!(non_test(Path::new("src/merge/tests.rs"), src), "");
    assert!(
        non_test(Path::new("src/merge/mod.rs"), "use tracer_common::Event;")
            .contains("tracer_common")
    );
}
