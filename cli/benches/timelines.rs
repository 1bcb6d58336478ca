//! What one new seal costs to sync as the number of timelines grows: the same
//! `ivaldi p2p sync` in a repository with 10 timelines and with 1,000.
//!
//! ```text
//! cargo bench -p ivaldi-cli --bench timelines                        # full run
//! IVALDI_BENCH_QUICK=1 cargo bench -p ivaldi-cli --bench timelines   # smoke run
//! ```
//!
//! The measurement lives in `daemon_vs_git/timelines.rs` (the daemon_vs_git
//! benchmark runs it too, as two rows of its goal table); see there for what
//! it does. Medians of the repetitions (9, or 1 in a quick run) are reported,
//! with the ratio of 1,000 timelines to 10 (goal: at most 1.2 for both).
//! Network safety: everything binds and connects to 127.0.0.1 only; every
//! ivaldi process gets `IVALDI_DISCOVERY_ADDRS=127.255.255.255`; the daemons
//! are stopped by their guards.

#[path = "daemon_vs_git/timelines.rs"]
mod case;

fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    case::use_binary(env!("CARGO_BIN_EXE_ivaldi"));
    let quick = std::env::var_os("IVALDI_BENCH_QUICK").is_some();
    let reps = if quick { 1 } else { 9 };
    println!("one new seal, `ivaldi p2p sync`: {reps} repetition(s) per row, medians");
    println!();
    let m = case::measure(reps);
    println!("| timelines | first sync after start | later sync |");
    println!("|---:|---:|---:|");
    let mut rows = Vec::new();
    for (k, n) in case::SIZES.iter().enumerate() {
        let (first, later) = (median(&m.first[k]), median(&m.later[k]));
        println!("| {n} | {first:.1} ms | {later:.1} ms |");
        rows.push((first, later));
    }
    let (r_first, r_later) = (rows[1].0 / rows[0].0, rows[1].1 / rows[0].1);
    println!();
    println!("| measure | ratio 1,000 / 10 | goal | met |");
    println!("|---|---:|---|---|");
    for (what, r) in [("first sync after start", r_first), ("later sync", r_later)] {
        println!(
            "| {what} | {r:.2}× | ≤ {:.1}× | {} |",
            case::GOAL,
            if r <= case::GOAL { "yes" } else { "**no**" }
        );
    }
}
