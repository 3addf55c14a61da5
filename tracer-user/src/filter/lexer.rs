//! The FILTER text split into words, parentheses and the operators `and`/`&&`,
//! `or`/`||`, `not`/`!`.

use super::FilterError;

#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Tok {
    Word(String),
    LParen,
    RParen,
    And,
    Or,
    Not,
}

#[derive(Clone, Debug)]
pub(super) struct Token {
    pub(super) tok: Tok,
    /// 0-based character offset.
    pub(super) pos: usize,
}

fn is_delim(c: char) -> bool {
    c.is_whitespace() || matches!(c, '(' | ')' | '!' | '&' | '|')
}

/// Splits `src` into tokens; returns them and the length of `src` in characters.
pub(super) fn tokenize(src: &str) -> Result<(Vec<Token>, usize), FilterError> {
    let chars: Vec<char> = src.chars().collect();
    let mut toks = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let (c, pos) = (chars[i], i);
        i += 1;
        let tok = match c {
            c if c.is_whitespace() => continue,
            '(' => Tok::LParen,
            ')' => Tok::RParen,
            '!' => Tok::Not,
            '&' | '|' => {
                let word = if c == '&' { "and" } else { "or" };
                if chars.get(i) != Some(&c) {
                    return Err(FilterError::new(
                        pos,
                        format!("single \"{c}\"; write \"{c}{c}\" or \"{word}\""),
                    ));
                }
                i += 1;
                if c == '&' { Tok::And } else { Tok::Or }
            }
            _ => {
                while i < chars.len() && !is_delim(chars[i]) {
                    i += 1;
                }
                let w: String = chars[pos..i].iter().collect();
                match w.to_ascii_lowercase().as_str() {
                    "and" => Tok::And,
                    "or" => Tok::Or,
                    "not" => Tok::Not,
                    _ => Tok::Word(w),
                }
            }
        };
        toks.push(Token { tok, pos });
    }
    Ok((toks, chars.len()))
}
