//! Every line the CLI prints goes out through here, made safe for a
//! terminal by one function, [`printable`]: result lines on stdout (text
//! and JSON alike), messages on stderr, and the live display's text.

use std::borrow::Cow;
use std::fmt::{self, Write as _};
use std::io::{self, Write};

/// Whether `c` must not reach a terminal as it is: control characters (C0,
/// DEL, C1: a newline that would forge a result line, an escape sequence
/// that would rewrite the screen or the clipboard), bidirectional controls
/// that reorder what is shown (U+061C, U+200E/F, U+202A–202E, U+2066–2069),
/// zero-width characters that hide text (U+200B–200D, U+2060–2064, U+FEFF,
/// U+180E) and the Unicode line and paragraph separators (U+2028/9).
fn must_escape(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061C}'
                | '\u{180E}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{2069}'
                | '\u{FEFF}'
        )
}

/// `text` with every character that [`must_escape`] written as an escape:
/// `\n`, `\r`, `\t`, else `\uXXXX`. Those are JSON's own escapes, so a JSON
/// line stays valid JSON with the same meaning; the rest is left as it is.
pub(crate) fn printable(text: &str) -> Cow<'_, str> {
    if !text.chars().any(must_escape) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 16);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if must_escape(c) => {
                // Every character escaped is in the basic plane: 4 digits.
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Prints a result line on stdout. A closed pipe (`| head`) is not an
/// error worth reporting.
pub(crate) fn emit(line: &str) {
    let mut out = io::stdout().lock();
    let _ = writeln!(out, "{}", printable(line)).and_then(|()| out.flush());
}

/// Prints a message for the user on stderr, after the program's name.
pub(crate) fn complain(message: impl fmt::Display) {
    note(format_args!("goenhance-jobs: {message}"));
}

/// Prints a line on stderr as it is given (the demo's narration).
pub(crate) fn note(line: impl fmt::Display) {
    let line = line.to_string();
    let _ = writeln!(io::stderr().lock(), "{}", printable(&line));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_bidi_and_zero_width_characters_are_escaped() {
        assert_eq!(
            printable("a\nb\r\tc\u{1b}]52;c;eA==\u{7}\u{1b}[2J\u{7f}\u{85}"),
            "a\\nb\\r\\tc\\u001b]52;c;eA==\\u0007\\u001b[2J\\u007f\\u0085"
        );
        for (c, escaped) in [
            ('\u{202E}', "\\u202e"),
            ('\u{202A}', "\\u202a"),
            ('\u{2066}', "\\u2066"),
            ('\u{2069}', "\\u2069"),
            ('\u{200E}', "\\u200e"),
            ('\u{200F}', "\\u200f"),
            ('\u{061C}', "\\u061c"),
            ('\u{200B}', "\\u200b"),
            ('\u{200D}', "\\u200d"),
            ('\u{2060}', "\\u2060"),
            ('\u{FEFF}', "\\ufeff"),
            ('\u{2028}', "\\u2028"),
        ] {
            assert_eq!(printable(&format!("x{c}y")), format!("x{escaped}y"));
        }
    }

    #[test]
    fn other_text_is_left_alone() {
        let text = "a1 succeeded https://cdn.example/é/视频.mp4?sig=a+b%20c";
        assert!(matches!(printable(text), Cow::Borrowed(t) if t == text));
    }

    #[test]
    fn a_json_line_stays_the_same_json() {
        let url = "https://x.example/\u{1b}[2J\u{202e}\u{7f}\u{200b}";
        let line = serde_json::json!({ "url": url }).to_string();
        let shown = printable(&line);
        assert!(!shown.chars().any(must_escape), "{shown}");
        let back: serde_json::Value = serde_json::from_str(&shown).unwrap();
        assert_eq!(back["url"], url);
    }
}
