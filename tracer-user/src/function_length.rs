//! No function is longer than [`MAX_LINES`] lines, in every crate of the
//! repository: the design keeps them short (a function does one thing).

use crate::source_files;

const MAX_LINES: usize = 80;

/// The source with string, character and comment contents blanked (line
/// breaks kept), so that braces in them do not count.
fn code_only(src: &str) -> String {
    let b = src.as_bytes();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &[u8]| {
        out.extend(s.iter().map(|&c| if c == b'\n' { '\n' } else { ' ' }));
    };
    while i < b.len() {
        let rest = &b[i..];
        let end = if rest.starts_with(b"//") {
            rest.iter().position(|&c| c == b'\n').unwrap_or(rest.len())
        } else if rest.starts_with(b"/*") {
            find(rest, b"*/").map_or(rest.len(), |e| e + 2)
        } else if let Some(hashes) = raw_string_open(rest) {
            let close: Vec<u8> = std::iter::once(b'"')
                .chain(std::iter::repeat_n(b'#', hashes))
                .collect();
            let start = 2 + hashes;
            find(&rest[start..], &close).map_or(rest.len(), |e| start + e + close.len())
        } else if rest[0] == b'"' {
            string_end(rest)
        } else if rest[0] == b'\'' {
            char_end(rest)
        } else {
            0
        };
        if end == 0 {
            out.push(b[i] as char);
            i += 1;
        } else {
            blank(&mut out, &rest[..end]);
            i += end;
        }
    }
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `r"`, `r#"`, `br##"`: the number of hashes of a raw string opening here.
fn raw_string_open(s: &[u8]) -> Option<usize> {
    let s = s.strip_prefix(b"b").unwrap_or(s);
    let s = s.strip_prefix(b"r")?;
    let hashes = s.iter().take_while(|&&c| c == b'#').count();
    (s.get(hashes) == Some(&b'"')).then_some(hashes)
}

/// The length of the string literal opening here, its quotes included.
fn string_end(s: &[u8]) -> usize {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    s.len()
}

/// The length of the character literal opening here; 0 for a lifetime.
fn char_end(s: &[u8]) -> usize {
    match s.get(1) {
        Some(b'\\') => s[2..].iter().position(|&c| c == b'\'').map_or(0, |e| e + 3),
        Some(_) if s.get(2) == Some(&b'\'') => 3,
        // A multi-byte character.
        Some(&c) if c >= 0x80 => s[1..].iter().position(|&c| c == b'\'').map_or(0, |e| e + 2),
        _ => 0,
    }
}

/// Whether a line starts a function: `fn`, after its qualifiers.
fn starts_fn(line: &str) -> bool {
    for w in line.split_whitespace() {
        match w {
            "fn" => return true,
            "pub" | "async" | "unsafe" | "const" | "extern" => {}
            w if w.starts_with("pub(") => {}
            w if w.starts_with('"') => {}
            _ => return false,
        }
    }
    false
}

/// Each function longer than [`MAX_LINES`]: its first line (1-based) and
/// its length.
fn long_functions(src: &str) -> Vec<(usize, usize)> {
    let code = code_only(src);
    let lines: Vec<&str> = code.lines().collect();
    let mut long = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        if !starts_fn(lines[i]) {
            i += 1;
            continue;
        }
        let (mut depth, mut opened, mut j) = (0i32, false, i);
        while j < lines.len() {
            for c in lines[j].chars() {
                match c {
                    '{' => (depth, opened) = (depth + 1, true),
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => break,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && lines[j].trim_end().ends_with(';')) {
                break;
            }
            j += 1;
        }
        if opened && j - i + 1 > MAX_LINES {
            long.push((i + 1, j - i + 1));
        }
        // Functions inside it are counted in it.
        i = j + 1;
    }
    long
}

#[test]
fn no_function_is_longer_than_80_lines() {
    let (root, files) = source_files::in_repository(&[
        "tracer-ebpf",
        "tracer-common",
        "tracer-user",
        "xtask",
        "fuzz",
        "tests/src",
        "tests/tests",
    ]);
    assert!(files.len() > 100, "found only {} sources", files.len());
    let mut wrong = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(f).unwrap();
        for (line, n) in long_functions(&src) {
            let shown = f.strip_prefix(&root).unwrap_or(f);
            wrong.push(format!("{}:{line}: {n} lines", shown.display()));
        }
    }
    assert!(
        wrong.is_empty(),
        "functions over {MAX_LINES} lines:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn the_counter_sees_through_strings_chars_and_comments() {
    let body = "    x();\n".repeat(MAX_LINES);
    let long = format!("fn a() {{\n{body}}}\n");
    assert_eq!(long_functions(&long), [(1, MAX_LINES + 2)]);
    let short = format!("fn b() {{\n{}}}\n", "    x();\n".repeat(MAX_LINES - 2));
    assert!(long_functions(&short).is_empty());
    // A brace in a string, a char, a raw string or a comment closes nothing.
    let tricky = format!(
        "pub(crate) fn c<'a>(s: &'a str) {{\n    let _ = \"}}\";\n    let _ = '}}';\n    \
         let _ = r#\"}}\"#;\n    // }}\n{body}}}\nfn d() {{}}\n"
    );
    assert_eq!(long_functions(&tricky), [(1, MAX_LINES + 6)]);
    assert!(long_functions("fn e();\nfn f() {}\n").is_empty());
}
