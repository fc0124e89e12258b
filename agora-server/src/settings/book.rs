//! The parts of the book's Configuration chapter made from the table: the flags table
//! and the `agora --help` text. Each sits between two marker comments in
//! `book/src/configuration.md`; a test fails when the chapter and the table disagree,
//! and `AGORA_WRITE_BOOK=1 cargo test -p agora-server --lib settings::book` rewrites
//! them.

use super::{build, SETTINGS};

/// The flags table, in Markdown: every setting not hidden, in the table's order.
pub fn flags_table() -> String {
    let mut out = String::from(
        "| Flag | Environment variable | `[broker]` key | Default | Valid values |\n\
         | --- | --- | --- | --- | --- |\n",
    );
    for s in SETTINGS.iter().filter(|s| !s.hidden) {
        let key = if s.in_file {
            format!("`{}`", s.key)
        } else {
            "—".to_owned()
        };
        let default = match (s.default, s.default_note) {
            (Some(d), "") => format!("`{d}`"),
            (Some(d), note) => format!("`{d}` ({note})"),
            (None, note) => note.to_owned(),
        };
        out += &format!(
            "| `--{}` | `{}` | {key} | {default} | {} |\n",
            s.flag, s.env, s.valid
        );
    }
    out
}

/// `agora --help` as the book shows it, in a `text` block: the environment variables'
/// current values are left out, so what is set where the test runs does not matter.
pub fn help_text() -> String {
    let help = build(true).render_long_help().to_string();
    let mut out = String::from("```text\n");
    for line in help.trim_end().lines() {
        match line.trim_start().strip_prefix("[env: ") {
            Some(rest) => {
                let indent = &line[..line.len() - line.trim_start().len()];
                let name = rest.split(['=', ']']).next().unwrap_or_default();
                out += &format!("{indent}[env: {name}=]\n");
            }
            None => {
                out += line;
                out.push('\n');
            }
        }
    }
    out += "```\n";
    out
}

/// Replaces what lies between `<!-- NAME:start -->` and `<!-- NAME:end -->` in `doc`
/// with `body`; `None` when the markers are missing.
pub fn replace_section(doc: &str, name: &str, body: &str) -> Option<String> {
    let start = format!("<!-- {name}:start -->\n");
    let end = format!("<!-- {name}:end -->");
    let a = doc.find(&start)? + start.len();
    let b = a + doc[a..].find(&end)?;
    Some(format!("{}{body}{}", &doc[..a], &doc[b..]))
}

/// What lies between the markers `NAME` in `doc`.
pub fn section<'a>(doc: &'a str, name: &str) -> Option<&'a str> {
    let start = format!("<!-- {name}:start -->\n");
    let end = format!("<!-- {name}:end -->");
    let a = doc.find(&start)? + start.len();
    let b = a + doc[a..].find(&end)?;
    Some(&doc[a..b])
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHAPTER: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../book/src/configuration.md");

    /// The first line where `want` and `got` differ, for a readable failure.
    fn first_difference(want: &str, got: &str) -> String {
        let (mut w, mut g) = (want.lines(), got.lines());
        for n in 1.. {
            match (w.next(), g.next()) {
                (None, None) => break,
                (a, b) if a == b => continue,
                (a, b) => {
                    return format!(
                        "line {n} of the section:\n  the table makes: {}\n  the book has:    {}",
                        a.unwrap_or("(nothing)"),
                        b.unwrap_or("(nothing)")
                    )
                }
            }
        }
        "no line differs (line endings?)".to_owned()
    }

    /// Compares each generated section with the chapter; with `AGORA_WRITE_BOOK=1`,
    /// rewrites the chapter instead.
    #[test]
    fn the_chapter_shows_what_the_table_makes() {
        let mut doc = std::fs::read_to_string(CHAPTER).expect("read the chapter");
        let write = std::env::var_os("AGORA_WRITE_BOOK").is_some_and(|v| v == "1");
        let mut stale = Vec::new();
        for (name, body) in [
            ("settings-table", flags_table()),
            ("agora-help", help_text()),
        ] {
            let have = section(&doc, name)
                .unwrap_or_else(|| panic!("{CHAPTER} has no <!-- {name}:start/end --> markers"));
            if have != body {
                stale.push(format!("[{name}] {}", first_difference(&body, have)));
                doc = replace_section(&doc, name, &body).expect("markers found above");
            }
        }
        if write && !stale.is_empty() {
            std::fs::write(CHAPTER, &doc).expect("rewrite the chapter");
            return;
        }
        assert!(
            stale.is_empty(),
            "book/src/configuration.md disagrees with the settings table \
             (agora-server/src/settings/table.rs):\n{}\n\
             Regenerate with: AGORA_WRITE_BOOK=1 cargo test -p agora-server --lib settings::book",
            stale.join("\n")
        );
    }

    #[test]
    fn sections_are_found_and_replaced_between_their_markers() {
        let doc = "a\n<!-- x:start -->\nold\n<!-- x:end -->\nb\n";
        assert_eq!(section(doc, "x"), Some("old\n"));
        assert_eq!(
            replace_section(doc, "x", "new\n").as_deref(),
            Some("a\n<!-- x:start -->\nnew\n<!-- x:end -->\nb\n")
        );
        assert_eq!(section(doc, "y"), None);
    }

    #[test]
    fn the_table_lists_each_visible_setting_once() {
        let t = flags_table();
        for s in SETTINGS {
            let row = format!("| `--{}` |", s.flag);
            assert_eq!(t.matches(&row).count(), usize::from(!s.hidden), "{row}");
        }
    }
}
