//! What the examples that drive real broker processes share: their command line and
//! how a broker process is killed.

use std::path::PathBuf;
use std::process::{Child, Command};

/// `--<count> N --seed S --bin AGORA --dir DIR`.
pub struct Args {
    pub count: u32,
    pub seed: u64,
    /// The `agora` binary: by default beside the example's folder
    /// (target/release/examples/x → target/release/agora).
    pub bin: PathBuf,
    /// Where its data goes: by default `target/<dir>`.
    pub dir: PathBuf,
}

/// Reads the command line; `None` (after printing `usage`) when it is not one.
pub fn args(count_flag: &str, count: u32, dir: &str, usage: &str) -> Option<Args> {
    let exe = std::env::current_exe().unwrap_or_default();
    let release = exe.parent().and_then(|p| p.parent());
    let mut a = Args {
        count,
        seed: 1,
        bin: release.map(|p| p.join("agora")).unwrap_or_default(),
        dir: release
            .and_then(|p| p.parent())
            .map(|p| p.join(dir))
            .unwrap_or_default(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match (flag.as_str(), args.next()) {
            (f, Some(v)) if f == count_flag => a.count = v.parse().unwrap_or(a.count),
            ("--seed", Some(v)) => a.seed = v.parse().unwrap_or(a.seed),
            ("--bin", Some(v)) => a.bin = v.into(),
            ("--dir", Some(v)) => a.dir = v.into(),
            _ => {
                eprintln!("usage: {usage}");
                return None;
            }
        }
    }
    Some(a)
}

/// Kills a broker process with SIGKILL, by its PID, and reaps it.
pub fn kill(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-KILL", &child.id().to_string()])
        .status();
    let _ = child.wait();
}
