//! Reading and changing one setting by name: `ivaldi p2p config get KEY`,
//! `set KEY VALUE` and `unset KEY`.
//!
//! Every setting used to need its own CLI flag, its own line in the code that
//! applied the flags and its own line in the test that the flags exist; a new
//! setting touched six lists. Here a key is a field name of a [`Settings`] (or
//! `field.NAME` for one entry of a map-valued field such as `peer_rates`), and
//! the change goes through [`super::check::read_json`], the same checks as
//! the file. So a setting added to a section can be set at once, and a value
//! the file would refuse is refused here with the same message: a new setting
//! is its field and its default in the section (plus one line of the
//! section's `validate` when it has bounds); reading, checking, editing by
//! name and handing the changed section to its part need nothing more.

use serde_json::{Map, Value};

use super::check::{read_json, suggest};
use super::{ConfigError, Settings};

/// The value of `key` as it would be written to `config.json`.
pub fn get<T: Settings>(cfg: &T, key: &str) -> Result<Value, ConfigError> {
    let map = as_map(cfg)?;
    let (field, entry) = split_key::<T>(key)?;
    let value = map.get(field).cloned().unwrap_or(Value::Null);
    match entry {
        None => Ok(value),
        Some(name) => Ok(map_field(field, &value)?
            .get(name)
            .cloned()
            .unwrap_or(Value::Null)),
    }
}

/// `cfg` with `key` set from command-line `text`, checked as the file is.
///
/// `text` is read as JSON when it is JSON (`9090`, `true`, `["a","b"]`),
/// otherwise as a string (`10s`, `info`, `500K`). For a list setting, text
/// that is not a JSON list is a comma-separated list, and `none` or nothing
/// is the empty list. For a yes/no setting, `on` and `off` are accepted too.
pub fn set<T: Settings>(cfg: &T, key: &str, text: &str) -> Result<T, ConfigError> {
    let mut map = as_map(cfg)?;
    let (field, entry) = split_key::<T>(key)?;
    let current = map.get(field).cloned().unwrap_or(Value::Null);
    match entry {
        None => {
            map.insert(field.to_owned(), value_for(&current, text));
        }
        Some(name) => {
            let mut entries = map_field(field, &current)?.clone();
            let old = entries.get(name).cloned().unwrap_or(Value::Null);
            entries.insert(name.to_owned(), value_for(&old, text));
            map.insert(field.to_owned(), Value::Object(entries));
        }
    }
    reread(map)
}

/// `cfg` with `key` back to its default, or with the entry `field.NAME`
/// removed from its map.
pub fn unset<T: Settings>(cfg: &T, key: &str) -> Result<T, ConfigError> {
    let mut map = as_map(cfg)?;
    let (field, entry) = split_key::<T>(key)?;
    match entry {
        None => {
            let defaults = as_map(&T::default())?;
            match defaults.get(field) {
                Some(v) => map.insert(field.to_owned(), v.clone()),
                // Optional settings (absent by default) are removed.
                None => map.remove(field),
            };
        }
        Some(name) => {
            let current = map.get(field).cloned().unwrap_or(Value::Null);
            let mut entries = map_field(field, &current)?.clone();
            if entries.remove(name).is_none() {
                return Err(ConfigError::BadValue {
                    key: key.to_owned(),
                    reason: format!("{field} has no entry {name:?}"),
                });
            }
            map.insert(field.to_owned(), Value::Object(entries));
        }
    }
    reread(map)
}

fn as_map(cfg: &impl serde::Serialize) -> Result<Map<String, Value>, ConfigError> {
    match serde_json::to_value(cfg) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => Err(ConfigError::File(
            "the configuration is not an object".into(),
        )),
        Err(e) => Err(ConfigError::File(e.to_string())),
    }
}

fn reread<T: Settings>(map: Map<String, Value>) -> Result<T, ConfigError> {
    let bytes =
        serde_json::to_vec(&Value::Object(map)).map_err(|e| ConfigError::File(e.to_string()))?;
    read_json(&bytes)
}

/// `field` or `field.NAME`; the field must be a setting. Map entries may
/// contain dots themselves (`timeline_strategies.release/1.x`), so only the
/// first dot splits.
fn split_key<T: Settings>(key: &str) -> Result<(&str, Option<&str>), ConfigError> {
    let (field, entry) = match key.split_once('.') {
        Some((f, e)) => (f, Some(e)),
        None => (key, None),
    };
    let known = T::keys();
    if !known.contains(&field) {
        return Err(ConfigError::UnknownSetting {
            key: field.to_owned(),
            suggestion: suggest(field, known.iter().copied()).map(str::to_owned),
        });
    }
    if entry == Some("") {
        return Err(ConfigError::BadValue {
            key: key.to_owned(),
            reason: "the entry name after the dot is empty".into(),
        });
    }
    Ok((field, entry))
}

fn map_field<'a>(field: &str, value: &'a Value) -> Result<&'a Map<String, Value>, ConfigError> {
    value.as_object().ok_or_else(|| ConfigError::BadValue {
        key: field.to_owned(),
        reason: format!("{field} is not a map; set it whole, without .NAME"),
    })
}

fn value_for(current: &Value, text: &str) -> Value {
    let parsed = serde_json::from_str::<Value>(text).ok();
    match current {
        Value::Array(_) => match parsed {
            Some(v @ Value::Array(_)) => v,
            _ => Value::Array(
                text.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty() && *s != "none")
                    .map(|s| Value::String(s.to_owned()))
                    .collect(),
            ),
        },
        Value::Bool(_) => match text {
            "on" => Value::Bool(true),
            "off" => Value::Bool(false),
            _ => parsed.unwrap_or_else(|| Value::String(text.to_owned())),
        },
        _ => parsed.unwrap_or_else(|| Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::NodeConfig as Config;
    use crate::config::RelayFault;

    const PEER: &str = "00ff10aa00000000000000000000000000000000000000000000000000000001";

    #[test]
    fn scalars_durations_rates_and_switches_set_through_the_file_checks() {
        let c = Config::default();
        let c = set(&c, "port", "9000").unwrap();
        assert_eq!(c.connections.port, 9000);
        let c = set(&c, "sync_interval", "5s").unwrap();
        assert_eq!(c.sync.sync_interval, Duration::from_secs(5));
        let c = set(&c, "upload_rate", "10M").unwrap();
        assert_eq!(c.rates.upload_rate, 10 << 20);
        let c = set(&c, "relay", "off").unwrap();
        assert!(!c.mesh.relay);
        assert_eq!(get(&c, "port").unwrap(), Value::from(9000));
        assert_eq!(get(&c, "sync_interval").unwrap(), Value::from("5s"));
    }

    #[test]
    fn lists_take_json_or_commas_and_none_clears() {
        let c = Config::default();
        let c = set(&c, "known_peers", "127.0.0.1:9000, 127.0.0.1:9001").unwrap();
        assert_eq!(
            c.connections.known_peers,
            ["127.0.0.1:9000", "127.0.0.1:9001"]
        );
        let c = set(&c, "known_peers", r#"["127.0.0.1:9002"]"#).unwrap();
        assert_eq!(c.connections.known_peers, ["127.0.0.1:9002"]);
        let c = set(&c, "known_peers", "none").unwrap();
        assert!(c.connections.known_peers.is_empty());
    }

    #[test]
    fn map_entries_are_set_and_removed_one_by_one() {
        let c = Config::default();
        let c = set(&c, &format!("peer_rates.{PEER}"), r#"{"upload":"1M"}"#).unwrap();
        assert_eq!(c.rates.peer_upload_cap(&PEER.parse().unwrap()), 1 << 20);
        let c = set(&c, "timeline_strategies.release/*", "prefer_local").unwrap();
        assert_eq!(c.sync.timeline_strategies.len(), 1);
        let c = unset(&c, "timeline_strategies.release/*").unwrap();
        assert!(c.sync.timeline_strategies.is_empty());
        assert!(unset(&c, "timeline_strategies.nope").is_err());
        assert!(set(&c, "port.x", "1").is_err());
    }

    #[test]
    fn bad_keys_and_values_are_refused_like_the_file_refuses_them() {
        let c = Config::default();
        let e = set(&c, "sync_intervall", "5s").unwrap_err().to_string();
        assert!(e.contains("sync_interval"), "{e}");
        let e = set(&c, "port", "many").unwrap_err().to_string();
        assert!(e.contains("port"), "{e}");
        let e = set(&c, "max_peers", "0").unwrap_err().to_string();
        assert!(e.contains("max_peers"), "{e}");
        assert!(set(&c, "heartbeat_interval", "1000000000y").is_err());
        assert!(get(&c, "nope").is_err());
    }

    #[test]
    fn unset_restores_the_default() {
        let c = set(&Config::default(), "max_peers", "7").unwrap();
        let c = unset(&c, "max_peers").unwrap();
        assert_eq!(
            c.connections.max_peers,
            Config::default().connections.max_peers
        );
        // An optional setting, absent by default, is removed again.
        let c = set(&c, "fault_relay", "drop").unwrap();
        assert!(c.mesh.fault_relay == Some(RelayFault::Drop));
        assert_eq!(unset(&c, "fault_relay").unwrap().mesh.fault_relay, None);
    }
}
