//! The printed report: the goal table, the text-heavy history's table, notes.
//! Every value, ratio and verdict is computed from the samples of this run.

use crate::Config;
use crate::stats::{Row, Samples, fmt_ms, human_bytes, verdict};
use crate::timelines;

const KIB: f64 = 1024.0;
const MIB: f64 = 1024.0 * 1024.0;

fn row(
    case: impl Into<String>,
    ivaldi: String,
    git: String,
    ratio: String,
    goal: &str,
    met: Option<bool>,
) -> Row {
    Row {
        case: case.into(),
        ivaldi,
        git,
        ratio,
        goal: goal.into(),
        met: verdict(met),
    }
}

/// A time row: ratio ivaldi / git, met when at most `limit`.
fn time_row(case: impl Into<String>, a: f64, b: f64, goal: &str, limit: Option<f64>) -> Row {
    let r = a / b;
    row(
        case,
        fmt_ms(a),
        fmt_ms(b),
        format!("{r:.2}×"),
        goal,
        limit.map(|l| r <= l),
    )
}

/// A size row: ratio ivaldi / git, met when at most `limit`.
fn size_row(case: impl Into<String>, a: f64, b: f64, goal: &str, limit: Option<f64>) -> Row {
    let r = a / b;
    row(
        case,
        human_bytes(a),
        human_bytes(b),
        format!("{r:.2}×"),
        goal,
        limit.map(|l| r <= l),
    )
}

/// Both directions of a proxied exchange: "total (down ↓ / up ↑)".
fn both_ways(down: f64, up: f64) -> String {
    format!(
        "{} ({} ↓ / {} ↑)",
        human_bytes(down + up),
        human_bytes(down),
        human_bytes(up)
    )
}

/// A wire-bytes row from `{k} ivaldi bytes down/up` and `{k} git bytes down/up`.
fn wire_row(s: &Samples, case: impl Into<String>, k: &str, goal: &str, limit: Option<f64>) -> Row {
    let (id, iu, gd, gu) = (
        s.med(&format!("{k} ivaldi bytes down")),
        s.med(&format!("{k} ivaldi bytes up")),
        s.med(&format!("{k} git bytes down")),
        s.med(&format!("{k} git bytes up")),
    );
    let r = (id + iu) / (gd + gu);
    row(
        case,
        both_ways(id, iu),
        both_ways(gd, gu),
        format!("{r:.2}×"),
        goal,
        limit.map(|l| r <= l),
    )
}

fn print_rows(rows: &[Row]) {
    println!("| measure | ivaldi | git | ratio | goal | met? |");
    println!("|---|---:|---:|---:|---|---|");
    for r in rows {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            r.case, r.ivaldi, r.git, r.ratio, r.goal, r.met
        );
    }
}

/// The goal table, then the informational rows, then the text-heavy history.
pub fn report(cfg: &Config, s: &Samples) {
    let big = human_bytes(cfg.big as f64);
    let mut rows = Vec::new();
    rows.push(size_row(
        format!(
            "A. `.ivaldi` of the history ({} files, {} seals) before any gc, vs `.git` after `git repack -a -d`",
            cfg.files, cfg.seals
        ),
        s.med("0 ivaldi disk"),
        s.med("0 git disk"),
        "≤ 1.5× git",
        Some(1.5),
    ));
    rows.push(size_row(
        "B. the same after `ivaldi gc` (on a copy)",
        s.med("0 ivaldi gc disk"),
        s.med("0 git disk"),
        "≤ 1.0× git",
        Some(1.0),
    ));
    rows.push(wire_row(
        s,
        "C. full sync into an empty repository: bytes on the wire, both ways (proxy), vs `git clone --bare`",
        "1p",
        "≤ 1.0× git",
        Some(1.0),
    ));
    rows.push(time_row(
        "D. full sync: time (ivaldi: daemon pull, no checkout; git: `clone --bare`)",
        s.med("1 ivaldi ms"),
        s.med("1 git ms"),
        "≤ 0.5× git",
        Some(0.5),
    ));
    let (id, iu, gd, gu) = (
        s.med("2p ivaldi bytes down"),
        s.med("2p ivaldi bytes up"),
        s.med("2p git bytes down"),
        s.med("2p git bytes up"),
    );
    let (irt, grt) = (s.med("2p ivaldi round trips"), s.med("2p git round trips"));
    rows.push(row(
        format!(
            "E. one new seal of {} edited files: bytes both ways (proxy; ivaldi: push + sync + announcement) and round trips, vs `git fetch`",
            cfg.one_seal
        ),
        format!("{}, {irt:.0} round trip(s)", both_ways(id, iu)),
        format!("{}, {grt:.0} round trip(s)", both_ways(gd, gu)),
        format!("{:.2}× the bytes", (id + iu) / (gd + gu)),
        "≤ 4 KiB in all, 1 round trip",
        Some(id + iu <= 4.0 * KIB && irt <= 1.0),
    ));
    rows.push(time_row(
        "F. one new seal: time (`ivaldi p2p sync` vs `git fetch`)",
        s.med("2 ivaldi ms"),
        s.med("2 git ms"),
        "≤ 0.15× git",
        Some(0.15),
    ));
    let (mi, mg, mc) = (
        s.med("3 ivaldi MB/s"),
        s.med("3 git MB/s"),
        s.med("3 chacha MB/s"),
    );
    rows.push(row(
        format!(
            "G. one {big} incompressible file: throughput of the sync (`p2p sync` vs `git fetch`)"
        ),
        format!("{mi:.0} MB/s ({})", fmt_ms(s.med("3 ivaldi ms"))),
        format!("{mg:.0} MB/s ({})", fmt_ms(s.med("3 git ms"))),
        format!("{:.2}× the cipher ({:.1}× git)", mi / mc, mi / mg),
        &format!("≥ 0.8× one core's ChaCha20-Poly1305, {mc:.0} MB/s in this run"),
        Some(mi >= 0.8 * mc),
    ));
    // A peak is a peak: the RSS goal is judged on the largest repetition.
    let (rs, rd) = (
        s.max("3 ivaldi src hwm KiB") * KIB,
        s.max("3 ivaldi dst hwm KiB") * KIB,
    );
    let (gc, gs) = (
        s.max("3 git client hwm KiB") * KIB,
        s.max("3 git server hwm KiB") * KIB,
    );
    rows.push(row(
        "H. … peak RSS, largest of the repetitions (ivaldi: source / clone daemon; git: fetch side / daemon side)",
        format!("{} / {}", human_bytes(rs), human_bytes(rd)),
        format!("{} / {}", human_bytes(gc), human_bytes(gs)),
        format!("{:.2}×", rs.max(rd) / gc.max(gs)),
        "< 64 MiB per daemon",
        Some(rs.max(rd) < 64.0 * MIB),
    ));
    rows.push(time_row(
        format!(
            "I. seal {} new files ({}) vs `git add -A && git commit`",
            cfg.files,
            human_bytes(s.med("4 tree bytes"))
        ),
        s.med("4 ivaldi new ms"),
        s.med("4 git new ms"),
        "≤ 0.15× git",
        Some(0.15),
    ));
    rows.push(time_row(
        format!(
            "J. seal a change of {} of those files vs `git add -A && git commit`",
            crate::seal::CHANGED
        ),
        s.med("4 ivaldi change ms"),
        s.med("4 git change ms"),
        "≤ 0.6× git",
        Some(0.6),
    ));
    let [small, large] = timelines::SIZES;
    for (letter, what, k) in [
        ("K", "first `p2p sync` after start", "first"),
        ("L", "later `p2p sync`", "later"),
    ] {
        let (a, b) = (
            s.med(&format!("5 {k} {large} ms")),
            s.med(&format!("5 {k} {small} ms")),
        );
        let r = a / b;
        rows.push(row(
            format!("{letter}. one new seal, repository with {large} timelines: {what}"),
            format!("{} ({small} timelines: {})", fmt_ms(a), fmt_ms(b)),
            "—".into(),
            format!("{r:.2}× the {small}-timeline sync"),
            &format!("≤ {:.1}× the same with {small} timelines", timelines::GOAL),
            Some(r <= timelines::GOAL),
        ));
    }
    println!("## Goal table");
    println!();
    print_rows(&rows);
    let met = rows.iter().filter(|r| r.met == "yes").count();
    println!();
    println!("{met} of {} goals met.", rows.len());

    let mut info = Vec::new();
    info.push(time_row(
        "1b. clone with checkout (`ivaldi p2p clone` vs `git clone`)",
        s.med("1b ivaldi ms"),
        s.med("1b git ms"),
        "(informational)",
        None,
    ));
    info.push(row(
        "2. … ivaldi's bytes from `p2p sync` start to the end (sync + announcement), without the push",
        both_ways(
            s.med("2p ivaldi sync bytes down"),
            s.med("2p ivaldi sync bytes up"),
        ),
        both_ways(gd, gu),
        format!(
            "{:.2}×",
            (s.med("2p ivaldi sync bytes down") + s.med("2p ivaldi sync bytes up")) / (gd + gu)
        ),
        "(informational)",
        None,
    ));
    info.push(time_row(
        "2b. seal → clone's head moved, auto-sync (vs `git add -A && git commit` + `git fetch`)",
        s.med("2b ivaldi ms"),
        s.med("2b git ms"),
        "(informational)",
        None,
    ));
    let mx = s.med("3x ivaldi MB/s");
    info.push(row(
        "3x. the big-file sync with encryption off on both daemons",
        format!("{mx:.0} MB/s ({})", fmt_ms(s.med("3x ivaldi ms"))),
        format!("{mg:.0} MB/s"),
        format!("{:.2}× the cipher ({:.1}× git)", mx / mc, mx / mg),
        "(informational)",
        None,
    ));
    info.push(row(
        "`ivaldi gc` on the history: time",
        fmt_ms(s.med("0 ivaldi gc ms")),
        "—".into(),
        "—".into(),
        "(informational)",
        None,
    ));
    println!();
    println!("## Informational rows");
    println!();
    print_rows(&info);

    let tl = s.med("t loose git disk");
    let tp = s.med("t git disk");
    let ti = s.med("t ivaldi disk");
    let text = vec![
        row(
            "`.ivaldi` before any gc, vs `.git` loose / after `git repack -a -d`",
            human_bytes(ti),
            format!("{} / {}", human_bytes(tl), human_bytes(tp)),
            format!("{:.2}× / {:.2}×", ti / tl, ti / tp),
            "(no goal set)",
            None,
        ),
        size_row(
            "`.ivaldi` after `ivaldi gc` (on a copy), vs `.git` after `git repack -a -d`",
            s.med("t ivaldi gc disk"),
            tp,
            "(no goal set)",
            None,
        ),
        wire_row(
            s,
            "full sync into an empty repository: bytes both ways (proxy), vs `git clone --bare`",
            "tp",
            "(no goal set)",
            None,
        ),
        wire_row(
            s,
            format!(
                "sync of the last {} seals into a clone that has the rest: bytes both ways (proxy; ivaldi: connect → head moved), vs `git fetch` of {} commits",
                cfg.text_tail, cfg.text_tail
            ),
            "tt",
            "(no goal set)",
            None,
        ),
        time_row(
            "full sync: time (through the proxy)",
            s.med("tp ivaldi ms"),
            s.med("tp git ms"),
            "(informational)",
            None,
        ),
        time_row(
            format!(
                "sync of the last {} seals: time (through the proxy)",
                cfg.text_tail
            ),
            s.med("tt ivaldi ms"),
            s.med("tt git ms"),
            "(informational)",
            None,
        ),
    ];
    println!();
    println!(
        "## Text-heavy history (4 lock-file-like text files, {} seals of 1–2 files each)",
        cfg.text_seals
    );
    println!();
    print_rows(&text);
}

/// The notes under the tables (medians).
pub fn notes(s: &Samples) {
    println!(
        "- timed runs connect directly; bytes and round trips come from one extra run through \
         the counting proxy (case 1: first repetition; case 2: a third change each repetition; case 6: every run). \
         Proxied wall times: case 1 ivaldi {}, git {}; case 2 ivaldi {}, git {}",
        fmt_ms(s.med("1p ivaldi ms")),
        fmt_ms(s.med("1p git ms")),
        fmt_ms(s.med("2p ivaldi ms")),
        fmt_ms(s.med("2p git ms")),
    );
    println!(
        "- control, git over file:// (pipes, so no TCP delayed-ACK stalls): case 1 `clone --bare` {} \
         (ivaldi/this {:.2}×), case 2 `fetch` {} (ivaldi/this {:.2}×)",
        fmt_ms(s.med("1f git ms")),
        s.med("1 ivaldi ms") / s.med("1f git ms"),
        fmt_ms(s.med("2f git ms")),
        s.med("2 ivaldi ms") / s.med("2f git ms"),
    );
    println!(
        "- CPU user+sys, both sides: case 1 ivaldi {} (both daemons + the connect command), git {} \
         (clone + index-pack, and git daemon's upload-pack/pack-objects); case 1b ivaldi {} \
         (clone command + source daemon), git {}",
        fmt_ms(s.med("1 ivaldi cpu ms")),
        fmt_ms(s.med("1 git cpu ms")),
        fmt_ms(s.med("1b ivaldi cpu ms")),
        fmt_ms(s.med("1b git cpu ms")),
    );
    println!(
        "- case 1 round trips seen by the proxy: ivaldi {:.0} (Noise + hello included; {:.0} sync_request), \
         git {:.0}; the clone daemon's own counters: {} in, {} out",
        s.med("1p ivaldi round trips"),
        s.med("1 ivaldi sync_requests"),
        s.med("1p git round trips"),
        human_bytes(s.med("1 ivaldi stats bytes in")),
        human_bytes(s.med("1 ivaldi stats bytes out")),
    );
    println!(
        "- case 2 CPU: ivaldi {} (both daemons + the sync command), git {}; objects sent {:.0}; \
         daemons' own counters on the direct run: {:.0} B down, {:.0} B up",
        fmt_ms(s.med("2 ivaldi cpu ms")),
        fmt_ms(s.med("2 git cpu ms")),
        s.med("2 ivaldi objects"),
        s.med("2 ivaldi stats bytes down"),
        s.med("2 ivaldi stats bytes up"),
    );
    println!(
        "- case 2b split: ivaldi seal {} of {}; git add+commit {} of {}",
        fmt_ms(s.med("2b ivaldi seal ms")),
        fmt_ms(s.med("2b ivaldi ms")),
        fmt_ms(s.med("2b git commit ms")),
        fmt_ms(s.med("2b git ms")),
    );
    println!(
        "- case 3: ivaldi received {} (daemon counter); CPU source daemon {}, clone daemon {}; \
         git CPU fetch side {}, daemon side {}; RSS before the sync: source {}, clone {}",
        human_bytes(s.med("3 ivaldi bytes down")),
        fmt_ms(s.med("3 ivaldi src cpu ms")),
        fmt_ms(s.med("3 ivaldi dst cpu ms")),
        fmt_ms(s.med("3 git client cpu ms")),
        fmt_ms(s.med("3 git server cpu ms")),
        human_bytes(s.med("3 ivaldi src hwm before KiB") * 1024.0),
        human_bytes(s.med("3 ivaldi dst hwm before KiB") * 1024.0),
    );
}
