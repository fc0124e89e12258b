//! Running tools: echo the command line, pass its output through, and turn a non-zero
//! exit into an error that names the command.

use std::env;
use std::ffi::OsString;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};

pub(crate) type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

/// The cargo that runs this xtask, so nested builds use the same toolchain.
pub(crate) fn cargo() -> Command {
    Command::new(env::var_os("CARGO").unwrap_or_else(|| OsString::from("cargo")))
}

/// Runs `cmd` with its output going straight to ours.
pub(crate) fn run(cmd: &mut Command) -> Result<()> {
    let shown = announce(cmd);
    let status = cmd
        .status()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    check(&shown, status)
}

/// Which of a child's output streams [`run_watching`] reads.
#[derive(Clone, Copy)]
pub(crate) enum Stream {
    Stdout,
    Stderr,
}

/// Runs `cmd`, copying `stream` to ours line by line and handing each line to `on_line`
/// (so a caller can pick numbers out of a tool's report while the user still sees it).
/// The other stream goes straight through.
pub(crate) fn run_watching(
    cmd: &mut Command,
    stream: Stream,
    mut on_line: impl FnMut(&str),
) -> Result<()> {
    let shown = announce(cmd);
    match stream {
        Stream::Stdout => cmd.stdout(Stdio::piped()),
        Stream::Stderr => cmd.stderr(Stdio::piped()),
    };
    let mut child = cmd
        .spawn()
        .map_err(|err| format!("could not start `{shown}`: {err}"))?;
    let pipe: Box<dyn Read> = match stream {
        Stream::Stdout => Box::new(child.stdout.take().expect("stdout is piped")),
        Stream::Stderr => Box::new(child.stderr.take().expect("stderr is piped")),
    };
    let mut pipe = BufReader::new(pipe);
    let mut line = Vec::new();
    loop {
        line.clear();
        // Bytes, not `lines()`: a tool may print something that is not UTF-8.
        if pipe.read_until(b'\n', &mut line)? == 0 {
            break;
        }
        // A closed terminal must not stop us from reaping the child, so writes are best effort.
        let _ = match stream {
            Stream::Stdout => io::stdout().lock().write_all(&line),
            Stream::Stderr => io::stderr().lock().write_all(&line),
        };
        on_line(String::from_utf8_lossy(&line).trim_end());
    }
    let status = child.wait()?;
    check(&shown, status)
}

/// Prints the command line the way a person would type it, and returns that text.
fn announce(cmd: &Command) -> String {
    // The program may be a toolchain's full path (from $CARGO); its name is what people know.
    let program = Path::new(cmd.get_program());
    let mut shown = program
        .file_name()
        .unwrap_or(program.as_os_str())
        .to_string_lossy()
        .into_owned();
    for arg in cmd.get_args() {
        shown.push(' ');
        shown.push_str(&arg.to_string_lossy());
    }
    println!("$ {shown}");
    shown
}

fn check(shown: &str, status: ExitStatus) -> Result<()> {
    if status.success() {
        Ok(())
    } else {
        Err(format!("`{shown}` failed ({status})").into())
    }
}

/// Finds an executable by name on PATH, then in cargo's bin folder (where `cargo install`
/// puts things, and which a fresh shell may not have on PATH yet). Every match, in order.
pub(crate) fn find_executables(name: &str) -> Vec<PathBuf> {
    let file = format!("{name}{}", env::consts::EXE_SUFFIX);
    let path = env::var_os("PATH").unwrap_or_default();
    let mut found: Vec<PathBuf> = Vec::new();
    for dir in env::split_paths(&path).chain(cargo_bin()) {
        let candidate = dir.join(&file);
        if candidate.is_file() && !found.contains(&candidate) {
            found.push(candidate);
        }
    }
    found
}

/// `$CARGO_HOME/bin`, defaulting to `~/.cargo/bin` as cargo does.
fn cargo_bin() -> Option<PathBuf> {
    let home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|home| home.join(".cargo")))?;
    Some(home.join("bin"))
}

fn home_dir() -> Option<PathBuf> {
    env::var_os("HOME")
        .or_else(|| env::var_os("USERPROFILE"))
        .filter(|home| !home.is_empty())
        .map(PathBuf::from)
}
