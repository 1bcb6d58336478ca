//! Reading and checking `config.json` so that a bad configuration fails
//! closed: it is refused whole, with a reason that names the key, instead of
//! being half-applied, silently ignored, or turned into a panic later.
//!
//! - The file must be one JSON object whose keys are the settings' fields.
//!   The list of fields comes from the section structs themselves
//!   ([`keys_of`]), so a new field is known without touching this file; an unknown key is refused with
//!   the nearest known one as a suggestion, because a misspelt key would
//!   otherwise leave the default in force without anyone noticing.
//! - Each value is read on its own first, so a wrong type names its key.
//! - Each section's `validate` bounds its durations, sizes and counts
//!   ([`durations`], [`counts`]). The bounds are far
//!   above any sensible setting and far below what the protocol's time and
//!   rate arithmetic can hold, so no accepted value can overflow it.

use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Visitor};
use serde_json::Value;

use super::{ConfigError, NodeConfig, Settings, format_duration, invalid};

/// Largest `config.json` read; a real one is a few kilobytes.
pub const MAX_FILE_BYTES: usize = 1024 * 1024;
/// Most peer connections a node may be configured for.
pub const MAX_PEERS: usize = 10_000;
/// Most concurrent syncs a node may be configured for.
pub const MAX_CONCURRENT_SYNCS: usize = 1_000;
/// Largest frame limit: 1 GiB (a frame is buffered whole).
pub const MAX_MESSAGE_SIZE: u32 = 1 << 30;
/// Most missed heartbeats before a peer is declared lost.
pub const MAX_HEARTBEAT_MISSES: u32 = 100;
/// Largest accept burst and accept rate (connections, per second).
pub const MAX_ACCEPT: u32 = 100_000;
/// Largest bandwidth cap, 1 TiB/s: a cap above it is no cap, and the token
/// buckets' arithmetic (bytes × microseconds) stays far inside `i128`.
pub const MAX_RATE: u64 = 1 << 40;
/// Largest `max_new_timelines_per_sync` and `max_new_timelines_per_peer`: a
/// handshake of this many heads is a few megabytes, near the frame limit.
pub const MAX_NEW_TIMELINES: u32 = 100_000;

pub(super) const HOUR: Duration = Duration::from_secs(3600);
pub(super) const DAY: Duration = Duration::from_secs(86_400);
pub(super) const WEEK: Duration = Duration::from_secs(7 * 86_400);

/// The shortest interval or timeout: shorter ones would spin the node.
pub const MIN_DURATION: Duration = Duration::from_millis(10);

/// The level names `log_level` accepts (as `tracing`'s `EnvFilter` does).
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Reads a configuration file's bytes as the node's settings (the daemon
/// reads its whole file with [`read_json`]).
pub fn from_json(bytes: &[u8]) -> Result<NodeConfig, ConfigError> {
    read_json(bytes)
}

/// Reads a configuration file's bytes: a JSON object with known keys whose
/// values all validate.
pub fn read_json<T: Settings>(bytes: &[u8]) -> Result<T, ConfigError> {
    if bytes.len() > MAX_FILE_BYTES {
        return Err(ConfigError::File(format!(
            "config.json is {} bytes; at most {MAX_FILE_BYTES} are read",
            bytes.len()
        )));
    }
    let value: Value = serde_json::from_slice(bytes)
        .map_err(|e| ConfigError::File(format!("config.json is not valid JSON: {e}")))?;
    let map = match value {
        Value::Object(map) => map,
        other => {
            return Err(ConfigError::File(format!(
                "config.json must be a JSON object of settings, not {}",
                kind(&other)
            )));
        }
    };
    let known = T::keys();
    for key in map.keys() {
        if !known.contains(&key.as_str()) {
            return Err(ConfigError::UnknownKey {
                key: key.clone(),
                suggestion: suggest(key, known.iter().copied()).map(str::to_owned),
            });
        }
    }
    // One key at a time first: serde's own message for a wrong type does not
    // say which key held it.
    for (key, v) in &map {
        let one = serde_json::Map::from_iter([(key.clone(), v.clone())]);
        if let Err(e) = T::deserialize(Value::Object(one)) {
            return Err(ConfigError::BadValue {
                key: key.clone(),
                reason: e.to_string(),
            });
        }
    }
    let cfg = T::deserialize(Value::Object(map)).map_err(|e| ConfigError::BadValue {
        key: "config.json".into(),
        reason: e.to_string(),
    })?;
    cfg.validate()?;
    Ok(cfg)
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// The keys the node's settings may hold (see [`Settings::keys`]).
pub fn field_names() -> &'static [&'static str] {
    NodeConfig::keys()
}

/// A plain struct's serde field names, read from its `Deserialize`
/// implementation so they can never disagree with it. (A struct of flattened
/// sections does not list its keys; [`Settings::keys`] joins its sections'.)
pub fn keys_of<'de, T: Deserialize<'de>>() -> &'static [&'static str] {
    let mut names: &'static [&'static str] = &[];
    // The probe always ends in an error once it has seen the field list.
    let _ = T::deserialize(FieldNames(&mut names));
    names
}

/// A deserializer that only records the field list a struct asks for.
struct FieldNames<'a>(&'a mut &'static [&'static str]);

impl<'de> de::Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("only a struct's field names are read"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = fields;
        Err(de::Error::custom("only a struct's field names are read"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The candidate nearest to `word` by edit distance, if it is near enough to
/// be the likely intent (a typo, a dash for an underscore, a missing letter).
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    let limit = (word.chars().count() / 3).clamp(1, 3);
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, _)| *d <= limit)
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

/// Edit distance counting an insertion, a deletion, a substitution or a swap
/// of two neighbouring characters as one edit (optimal string alignment), so
/// the commonest typos (`prot` for `port`) are one edit away.
pub fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let w = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * w];
    for (i, cell) in d.iter_mut().step_by(w).enumerate() {
        *cell = i;
    }
    for (j, cell) in d.iter_mut().take(w).enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut v = (d[(i - 1) * w + j] + 1)
                .min(d[i * w + j - 1] + 1)
                .min(d[(i - 1) * w + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                v = v.min(d[(i - 2) * w + j - 2] + 1);
            }
            d[i * w + j] = v;
        }
    }
    d[a.len() * w + b.len()]
}

/// Checks a `log_level` filter: comma-separated level names (`info`) or
/// `target=level` pairs (`ivaldi=debug`). Stricter than `EnvFilter`, which
/// reads a bare word as a target to trace: a misspelt level (`inof`) would
/// then silence the log instead of being refused.
pub fn check_log_level(filter: &str) -> Result<(), String> {
    let directives: Vec<&str> = filter
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .collect();
    if directives.is_empty() {
        return Err("is empty; use a level such as \"info\"".into());
    }
    for d in directives {
        let (target, level) = match d.split_once('=') {
            Some((t, l)) => (Some(t.trim()), l.trim()),
            None => (None, d),
        };
        if let Some(t) = target
            && (t.is_empty()
                || !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_:-.".contains(c)))
        {
            return Err(format!(
                "{d:?}: {t:?} is not a target (a module path such as ivaldi_core::node)"
            ));
        }
        if !LEVELS.contains(&level.to_ascii_lowercase().as_str()) {
            let hint = suggest(&level.to_ascii_lowercase(), LEVELS)
                .map(|s| format!("; did you mean {s:?}?"))
                .unwrap_or_default();
            return Err(format!(
                "{d:?} is not a level (trace, debug, info, warn, error, off) or target=level{hint}"
            ));
        }
    }
    Ok(())
}

/// Refuses a duration below [`MIN_DURATION`] or above its maximum, naming
/// the field.
pub(super) fn durations(list: &[(&'static str, Duration, Duration)]) -> Result<(), ConfigError> {
    for &(field, d, max) in list {
        if d < MIN_DURATION {
            return Err(invalid(field, "must be at least 10ms"));
        }
        if d > max {
            return Err(invalid(
                field,
                format!(
                    "{} is too long; at most {}",
                    format_duration(d),
                    format_duration(max)
                ),
            ));
        }
    }
    Ok(())
}

/// Refuses a size, count or rate above its maximum, naming the field.
pub(super) fn counts(list: &[(&'static str, u64, u64)]) -> Result<(), ConfigError> {
    for &(field, n, max) in list {
        if n > max {
            return Err(invalid(field, format!("{n} is too large; at most {max}")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn field_names_come_from_the_struct() {
        let names = field_names();
        assert!(names.contains(&"heartbeat_interval"));
        // Skipped when serialising, still a key the file may hold.
        assert!(names.contains(&"fault_relay"));
        let serialised = serde_json::to_value(NodeConfig::default()).unwrap();
        for k in serialised.as_object().unwrap().keys() {
            assert!(names.contains(&k.as_str()), "{k} missing");
        }
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let e = from_json(br#"{"heartbeat_intervall": "30s"}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown key "heartbeat_intervall" in config.json; did you mean "heartbeat_interval"?"#
        );
        let e = from_json(br#"{"sync-interval": "30s"}"#).unwrap_err();
        assert!(e.to_string().contains(r#"did you mean "sync_interval""#));
        let e = from_json(br#"{"zzzzzzzzzzzz": 1}"#).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"unknown key "zzzzzzzzzzzz" in config.json"#
        );
    }

    #[test]
    fn wrong_types_and_shapes_name_the_problem() {
        let e = from_json(br#"{"max_peers": -1}"#).unwrap_err();
        assert!(e.to_string().starts_with("max_peers: "), "{e}");
        let e = from_json(br#"{"sync_interval": 30}"#).unwrap_err();
        assert!(e.to_string().starts_with("sync_interval: "), "{e}");
        for (text, what) in [
            ("[1]", "an array"),
            ("42", "a number"),
            ("null", "null"),
            ("\"x\"", "a string"),
        ] {
            let e = from_json(text.as_bytes()).unwrap_err();
            assert!(e.to_string().contains(what), "{e}");
        }
        assert!(from_json(b"{").is_err());
        assert!(from_json(b"{}").is_ok());
    }

    #[test]
    fn bounds_name_their_key() {
        for (json, key) in [
            (
                r#"{"heartbeat_interval": "18446744073709551615s"}"#,
                "heartbeat_interval",
            ),
            (r#"{"sync_interval": "8d"}"#, "sync_interval"),
            (r#"{"topology_interval": "0s"}"#, "topology_interval"),
            (r#"{"max_peers": 10001}"#, "max_peers"),
            (r#"{"max_message_size": 2147483648}"#, "max_message_size"),
            (r#"{"upload_rate": "2048G"}"#, "upload_rate"),
            (
                r#"{"allowed_networks": ["10.0.0.0/8", "10.0.0.0/99"]}"#,
                "allowed_networks",
            ),
            (r#"{"allowed_networks": ["bogus"]}"#, "allowed_networks"),
            (r#"{"known_peers": ["127.0.0.1:0"]}"#, "known_peers"),
            (
                r#"{"max_new_timelines_per_sync": 100001}"#,
                "max_new_timelines_per_sync",
            ),
            (
                r#"{"max_new_timelines_per_sync": 0}"#,
                "max_new_timelines_per_sync",
            ),
            (
                r#"{"max_new_timelines_per_peer": 100001}"#,
                "max_new_timelines_per_peer",
            ),
        ] {
            let e = from_json(json.as_bytes()).unwrap_err();
            assert!(
                e.to_string().starts_with(&format!("{key}: ")),
                "{json}: {e}"
            );
        }
        let top = from_json(
            br#"{"sync_interval": "7d", "heartbeat_interval": "1d", "max_peers": 10000,
                 "max_message_size": 1073741824, "upload_rate": "1024G",
                 "max_new_timelines_per_sync": 100000, "max_new_timelines_per_peer": 0}"#,
        );
        assert!(top.is_ok(), "{top:?}");
    }

    #[test]
    fn log_levels() {
        for ok in [
            "info",
            "WARN",
            "ivaldi=debug",
            "info,ivaldi_core::node=trace",
            "off",
        ] {
            assert_eq!(check_log_level(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " , ",
            "inof",
            "ivaldi",
            "=debug",
            "a=loud",
            "x[span]=info",
        ] {
            assert!(check_log_level(bad).is_err(), "{bad}");
        }
        assert!(
            check_log_level("debg")
                .unwrap_err()
                .contains("did you mean \"debug\"?")
        );
    }

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("kitten", "sitting"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
        assert_eq!(edit_distance("prot", "port"), 1);
        assert_eq!(suggest("prot", ["port", "relay"]), Some("port"));
        assert_eq!(suggest("xyz", ["port", "relay"]), None);
    }
}
