//! The deterministic simulation, for longer runs than CI's (see the book's Architecture
//! chapter, "Deterministic simulation").
//!
//! ```sh
//! cargo xtask sim --seconds 60              # seeds 1, 2, 3, … for a minute
//! cargo xtask sim --seeds 10                # seeds 1 to 10 (what CI runs)
//! cargo xtask sim --seed 42 --ops 200000    # one seed, replayed exactly
//! cargo run --release -p agora-server --example sim -- --seed 42 --ops 200000
//! cargo xtask sim --cluster --seeds 10      # the cluster simulation (a Raft group)
//! ```

use std::process::ExitCode;
use std::time::{Duration, Instant};

use agora_server::sim::{run, Options};

fn main() -> ExitCode {
    let mut seed: Option<u64> = None;
    let mut ops: u64 = 20_000;
    let mut seconds: Option<u64> = None;
    let mut seeds: Option<u64> = None;
    let mut cluster = false;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--cluster" {
            cluster = true;
            continue;
        }
        let value = args.next().and_then(|v| v.parse::<u64>().ok());
        match (a.as_str(), value) {
            ("--seed", Some(v)) => seed = Some(v),
            ("--ops", Some(v)) => ops = v,
            ("--seconds", Some(v)) => seconds = Some(v),
            ("--seeds", Some(v)) if v > 0 => seeds = Some(v),
            _ => {
                eprintln!("usage: sim [--cluster] [--seed S] [--ops N] [--seconds T | --seeds K]");
                return ExitCode::from(2);
            }
        }
    }
    let started = Instant::now();
    let budget = Duration::from_secs(seconds.unwrap_or(0));
    let first = seed.unwrap_or(1);
    let (mut total, mut runs) = (0u64, 0u64);
    // One seed when given alone; else consecutive seeds, K of them or until the time is up.
    let alone = seed.is_some() && seconds.is_none() && seeds.is_none();
    for s in first.. {
        let outcome = match cluster {
            false => run(Options { seed: s, ops }).map(|r| (r.ops, format!("{r:?}"))),
            true => agora_server::sim::cluster::run(s, ops).map(|r| (r.steps, format!("{r:?}"))),
        };
        match outcome {
            Ok((n, r)) => {
                total += n;
                runs += 1;
                if alone {
                    println!("seed {s}: {r}");
                }
            }
            Err(f) => {
                eprintln!("{f}");
                return ExitCode::FAILURE;
            }
        }
        let done = match seeds {
            Some(k) => runs >= k,
            None => alone || started.elapsed() >= budget,
        };
        if done {
            break;
        }
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "{runs} seeds from {first}, {total} operations in {secs:.1} s: {:.0} operations/s, every invariant held",
        total as f64 / secs
    );
    ExitCode::SUCCESS
}
