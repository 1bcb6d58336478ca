//! Who a seal's author is, looked up as git does, first answer wins:
//!
//! 1. `seal --author`;
//! 2. `$IVALDI_AUTHOR` (an override for scripts and tests);
//! 3. the repository's `.ivaldi/config.json` (`ivaldi config user.name ...`,
//!    or its older `author` field);
//! 4. the user's Ivaldi config, `$XDG_CONFIG_HOME/ivaldi/config.json` or
//!    `~/.config/ivaldi/config.json` (`ivaldi config --global user.name ...`);
//! 5. git's `user.name` and `user.email`, from `~/.gitconfig` and
//!    `$XDG_CONFIG_HOME/git/config` (or `~/.config/git/config`), read as
//!    files: git is never run.
//!
//! Otherwise the command refuses and says how to set a name.

use std::path::{Path, PathBuf};

use ivaldi_shell_smol::repo::{Repository, write_atomic};
use serde_json::{Map, Value};

use crate::{Failed, fail};

/// A name and an email, either possibly unset.
#[derive(Default, Clone, Debug, PartialEq, Eq)]
pub(crate) struct Identity {
    pub name: Option<String>,
    pub email: Option<String>,
}

impl Identity {
    /// `Name <email>`, or the name alone; nothing without a name.
    fn author(&self) -> Option<String> {
        let name = self
            .name
            .as_deref()
            .map(str::trim)
            .filter(|n| !n.is_empty())?;
        Some(
            match self
                .email
                .as_deref()
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                Some(e) => format!("{name} <{e}>"),
                None => name.to_owned(),
            },
        )
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CONFIG_HOME`, else `~/.config`.
fn config_home() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .filter(|x| !x.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".config")))
}

/// The user's Ivaldi config file.
pub(crate) fn global_path() -> Option<PathBuf> {
    config_home().map(|c| c.join("ivaldi").join("config.json"))
}

/// `user.name`/`user.email` of a JSON config object.
fn identity_of(v: &Value) -> Identity {
    let get = |k: &str| v["user"][k].as_str().map(str::to_owned);
    Identity {
        name: get("name"),
        email: get("email"),
    }
}

fn read_json(path: &Path) -> Result<Value, Failed> {
    match std::fs::read(path) {
        Ok(b) => serde_json::from_slice(&b)
            .map_err(|e| fail(format!("{}: not valid JSON: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Value::Object(Map::new())),
        Err(e) => Err(fail(format!("{}: {e}", path.display()))),
    }
}

/// git's identity from its config files; later files win, as in git
/// (`$XDG_CONFIG_HOME/git/config`, then `~/.gitconfig`).
fn git_identity() -> Identity {
    let mut id = Identity::default();
    let files = [
        config_home().map(|c| c.join("git").join("config")),
        home().map(|h| h.join(".gitconfig")),
    ];
    for f in files.into_iter().flatten() {
        if let Ok(text) = std::fs::read_to_string(&f) {
            let g = parse_git_config(&text);
            id.name = g.name.or(id.name);
            id.email = g.email.or(id.email);
        }
    }
    id
}

/// `[user] name = ... / email = ...` from git's ini format: sections and keys
/// case-insensitive, `#` and `;` comments, values optionally quoted.
pub(crate) fn parse_git_config(text: &str) -> Identity {
    let mut id = Identity::default();
    let mut in_user = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            let section = line.trim_start_matches('[').split(']').next().unwrap_or("");
            in_user = section.trim().eq_ignore_ascii_case("user");
            continue;
        }
        if !in_user || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(value.trim());
        match key.trim().to_ascii_lowercase().as_str() {
            "name" => id.name = Some(value),
            "email" => id.email = Some(value),
            _ => {}
        }
    }
    id
}

/// A git config value: quotes removed, a comment outside quotes cut off.
fn unquote(v: &str) -> String {
    let mut out = String::new();
    let mut quoted = false;
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => quoted = !quoted,
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(match n {
                        'n' => '\n',
                        't' => '\t',
                        other => other,
                    });
                }
            }
            '#' | ';' if !quoted => break,
            c => out.push(c),
        }
    }
    out.trim().to_owned()
}

/// The author for a new seal, by the precedence in this module's doc.
pub(crate) fn author(repo: &Repository, flag: Option<String>) -> Result<String, Failed> {
    if let Some(a) = flag.filter(|a| !a.trim().is_empty()) {
        return Ok(a);
    }
    if let Some(a) = std::env::var("IVALDI_AUTHOR")
        .ok()
        .filter(|a| !a.trim().is_empty())
    {
        return Ok(a);
    }
    let local = read_json(&repo.dot_dir().join("config.json"))?;
    if let Some(a) = identity_of(&local).author() {
        return Ok(a);
    }
    if let Some(a) = repo.user_config()?.author.filter(|a| !a.trim().is_empty()) {
        return Ok(a);
    }
    if let Some(p) = global_path()
        && let Some(a) = identity_of(&read_json(&p)?).author()
    {
        return Ok(a);
    }
    if let Some(a) = git_identity().author() {
        return Ok(a);
    }
    Err(fail(
        "no author name: tell Ivaldi who you are with\n\n  \
         ivaldi config --global user.name \"Your Name\"\n  \
         ivaldi config --global user.email you@example.org\n\n\
         (or `ivaldi config user.name ...` for this repository only; git's user.name is used too)",
    ))
}

/// `ivaldi config [--global] KEY [VALUE]`.
pub(crate) fn config(
    repo_dir: Option<&Path>,
    key: &str,
    value: Option<&str>,
) -> Result<(), Failed> {
    let field = match key {
        "user.name" => "name",
        "user.email" => "email",
        other => {
            return Err(fail(format!(
                "unknown setting {other:?}: the settings are user.name and user.email"
            )));
        }
    };
    let path = match repo_dir {
        Some(dot) => dot.join("config.json"),
        None => global_path().ok_or_else(|| fail("neither $XDG_CONFIG_HOME nor $HOME is set"))?,
    };
    let mut v = read_json(&path)?;
    let Some(value) = value else {
        match v["user"][field].as_str() {
            Some(s) => println!("{s}"),
            None => return Err(Failed(1)),
        }
        return Ok(());
    };
    if value.trim().is_empty() || value.contains(['\n', '<', '>']) {
        return Err(fail(format!(
            "{key} {value:?} is not allowed: give a non-empty value without '<', '>' or a line break"
        )));
    }
    let Some(obj) = v.as_object_mut() else {
        return Err(fail(format!("{}: not a JSON object", path.display())));
    };
    let user = obj
        .entry("user")
        .or_insert_with(|| Value::Object(Map::new()));
    let Some(user) = user.as_object_mut() else {
        return Err(fail(format!(
            "{}: \"user\" is not an object",
            path.display()
        )));
    };
    user.insert(field.to_owned(), Value::String(value.to_owned()));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    }
    let bytes = serde_json::to_vec_pretty(&v).map_err(|e| fail(e.to_string()))?;
    write_atomic(&path, &bytes, true)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn git_config_user_section() {
        let id = parse_git_config(
            "[core]\n\tname = not me\n[User]\n\tname = \"Ada Lovelace\" # comment\n\temail = ada@example.org\n[user \"x\"]\n\tname = sub\n",
        );
        assert_eq!(id.name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(id.email.as_deref(), Some("ada@example.org"));
        assert_eq!(
            id.author().as_deref(),
            Some("Ada Lovelace <ada@example.org>")
        );
        assert_eq!(parse_git_config("name = x\n"), Identity::default());
        assert_eq!(parse_git_config("[user]\nemail=a@b\n").author(), None);
    }
}
