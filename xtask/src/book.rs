//! `cargo xtask book`: builds book/ with a pinned mdbook, installing it on first use.
//!
//! The version is pinned so a developer, CI and a fresh machine render the same book from
//! the same `book.toml`; an mdbook of another version found on the machine is not used.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::process::{self, Result};
use crate::project_root;

/// The mdbook that builds the book. Installed with `--no-default-features`: `build` needs
/// none of `serve`, `watch` or `search`, and leaving them out saves most of the compile.
const MDBOOK_VERSION: &str = "0.5.4";

pub(crate) fn run() -> Result<()> {
    let mdbook = mdbook()?;
    let root = project_root();
    process::run(
        Command::new(&mdbook)
            .args(["build", "book"])
            .current_dir(&root),
    )?;
    println!("book: {}", root.join("book/book/index.html").display());
    Ok(())
}

/// The pinned mdbook: one already on the machine, or a fresh `cargo install`.
fn mdbook() -> Result<PathBuf> {
    if let Some(found) = find_pinned() {
        return Ok(found);
    }
    println!("mdbook {MDBOOK_VERSION} not found; installing it (takes a few minutes, once)");
    process::run(process::cargo().args([
        "install",
        "--locked",
        "--no-default-features",
        "mdbook",
        "--version",
        MDBOOK_VERSION,
    ]))?;
    find_pinned().ok_or_else(|| {
        format!(
            "installed mdbook {MDBOOK_VERSION}, but found no `mdbook` of that version on PATH \
             or in cargo's bin folder"
        )
        .into()
    })
}

fn find_pinned() -> Option<PathBuf> {
    process::find_executables("mdbook")
        .into_iter()
        .find(|path| {
            let version = version_of(path);
            if version.as_deref() != Some(MDBOOK_VERSION) {
                let seen = version.as_deref().unwrap_or("of unknown version");
                println!(
                    "skipping {} ({seen}): the book is built with mdbook {MDBOOK_VERSION}",
                    path.display()
                );
                return false;
            }
            true
        })
}

/// What `mdbook --version` says, as `0.5.4` (it prints `mdbook v0.5.4`).
fn version_of(mdbook: &Path) -> Option<String> {
    let output = Command::new(mdbook).arg("--version").output().ok()?;
    if !output.status.success() {
        return None;
    }
    parse_version(&String::from_utf8_lossy(&output.stdout))
}

fn parse_version(text: &str) -> Option<String> {
    let last = text.split_whitespace().last()?;
    Some(last.strip_prefix('v').unwrap_or(last).to_owned())
}

#[cfg(test)]
mod tests {
    use super::parse_version;

    #[test]
    fn reads_mdbook_version_line() {
        assert_eq!(parse_version("mdbook v0.5.4\n").as_deref(), Some("0.5.4"));
        assert_eq!(parse_version("mdbook 0.4.52").as_deref(), Some("0.4.52"));
        assert_eq!(parse_version(""), None);
    }
}
