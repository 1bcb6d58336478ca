//! `ivaldi-sim`: runs one simulation from the command line.
//!
//! Prints the seed first, then the trace (one line per node event), then a
//! summary. Exits with status 1 if an invariant was violated.

use std::process::ExitCode;

use ivaldi_sim::config::{SimConfig, USAGE};

fn main() -> ExitCode {
    let (mut cfg, seeded) = match SimConfig::from_args(std::env::args().skip(1)) {
        Ok(c) => c,
        Err(e) if e == USAGE => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("ivaldi-sim: {e}");
            return ExitCode::from(2);
        }
    };
    if !seeded {
        // The only clock read: choosing a seed. The run itself never reads one.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        cfg.seed = t % 1_000_000_007;
    }
    println!("seed: {}", cfg.seed);
    println!("command: {}", cfg.command());
    let report = ivaldi_sim::run(&cfg);
    println!("{}", report.summary());
    if report.ok() {
        ExitCode::SUCCESS
    } else {
        println!("reproduce with:\n  {}", cfg.command());
        ExitCode::FAILURE
    }
}
