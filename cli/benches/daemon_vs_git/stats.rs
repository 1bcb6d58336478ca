//! Statistics and the report.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        (s[n / 2 - 1] + s[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

pub fn fmt_ms(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.1} s", v / 1e3)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}

pub fn human_bytes(b: f64) -> String {
    if b >= (1u64 << 30) as f64 {
        format!("{:.2} GiB", b / (1u64 << 30) as f64)
    } else if b >= (1u64 << 20) as f64 {
        format!("{:.1} MiB", b / (1u64 << 20) as f64)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

/// Named series of samples, in insertion order.
#[derive(Default)]
pub struct Samples(pub BTreeMap<String, Vec<f64>>);

impl Samples {
    pub fn push(&mut self, k: &str, v: f64) {
        self.0.entry(k.to_owned()).or_default().push(v);
    }

    pub fn med(&self, k: &str) -> f64 {
        self.0.get(k).map_or(f64::NAN, |v| median(v))
    }

    pub fn max(&self, k: &str) -> f64 {
        self.0
            .get(k)
            .map_or(f64::NAN, |v| v.iter().copied().fold(f64::NAN, f64::max))
    }

    pub fn raw(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.0 {
            let list: Vec<String> = v.iter().map(|x| format!("{x:.1}")).collect();
            let _ = writeln!(out, "- {k}: [{}]", list.join(", "));
        }
        out
    }
}

pub struct Row {
    pub case: String,
    pub ivaldi: String,
    pub git: String,
    pub ratio: String,
    pub goal: String,
    pub met: String,
}

pub fn verdict(ok: Option<bool>) -> String {
    match ok {
        None => "—".into(),
        Some(true) => "yes".into(),
        Some(false) => "**no**".into(),
    }
}
