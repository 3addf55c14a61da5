//! Every `unsafe` block and `unsafe impl` in the repository's crates says why
//! it is sound: a `// SAFETY:` comment on its line, or within the 3 lines
//! above it (comment lines in between do not count, so a longer SAFETY
//! comment may run on).

use crate::source_files;

/// Lines above an `unsafe` that may separate it from its SAFETY comment.
const REACH: usize = 3;

/// Whether a line of code opens an `unsafe` block or implements an unsafe trait.
fn opens_unsafe(line: &str) -> bool {
    let code = line.split("//").next().unwrap_or("");
    code.match_indices("unsafe").any(|(i, _)| {
        let word = |c: char| c.is_alphanumeric() || c == '_';
        let before = code[..i].chars().next_back();
        let after = code[i + "unsafe".len()..].trim_start();
        let is_impl = after
            .strip_prefix("impl")
            .is_some_and(|r| !r.starts_with(word));
        !before.is_some_and(word) && (after.starts_with('{') || is_impl)
    })
}

fn is_comment(line: &str) -> bool {
    line.trim_start().starts_with("//")
}

/// The 1-based numbers of the lines with an `unsafe` that has no SAFETY comment.
fn missing_safety(src: &str) -> Vec<usize> {
    let lines: Vec<&str> = src.lines().collect();
    let justified = |i: usize| {
        if lines[i].contains("// SAFETY:") {
            return true;
        }
        let mut code_lines = 0;
        for above in lines[..i].iter().rev() {
            if above.contains("// SAFETY:") {
                return true;
            }
            if !is_comment(above) {
                code_lines += 1;
                if code_lines >= REACH {
                    return false;
                }
            }
        }
        false
    };
    (0..lines.len())
        .filter(|&i| !is_comment(lines[i]) && opens_unsafe(lines[i]) && !justified(i))
        .map(|i| i + 1)
        .collect()
}

#[test]
fn every_unsafe_says_why_it_is_sound() {
    let (root, files) = source_files::in_repository(&[
        "tracer-ebpf",
        "tracer-common",
        "tracer-user",
        "tests",
        "xtask",
        "fuzz",
    ]);
    assert!(files.len() > 100, "found only {} sources", files.len());
    let mut wrong = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        for line in missing_safety(&src) {
            let shown = f.strip_prefix(&root).unwrap_or(f);
            wrong.push(format!("{}:{line}", shown.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "unsafe without a `// SAFETY:` comment on its line or in the {REACH} lines above:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_scanner_finds_an_unsafe_without_safety() {
    // Built from pieces so that this file itself has no bare `unsafe {`.
    let kw = "unsafe";
    let src = format!(
        "fn f() {{\n    let a = 1;\n    let x = {kw} {{ g() }};\n}}\n\
         // SAFETY: Pod: plain integers, no padding.\n{kw} impl Pod for E {{}}\n\
         {kw} impl<T> Pod for F<T> {{}}\n\
         // SAFETY: g has no preconditions.\n// (more words)\n// (more)\nlet y = {kw} {{ g() }};\n\
         let z = {kw} {{ g() }}; // SAFETY: as above.\n\
         // {kw} {{ in a comment }}\nlet s = not_{kw} {{ }};\n"
    );
    assert_eq!(missing_safety(&src), [3]);
    let far = format!("// SAFETY: too far.\na;\nb;\nc;\nlet x = {kw} {{ g() }};\n");
    assert_eq!(missing_safety(&far), [5]);
    let near = format!("// SAFETY: near.\na;\nb;\nlet x = {kw} {{ g() }};\n");
    assert!(missing_safety(&near).is_empty());
    let generic = format!("a;\n{kw} impl<T: Pod> Pod for W<T> {{}}\n{kw} fn h() {{}}\n");
    assert_eq!(missing_safety(&generic), [2]);
}
