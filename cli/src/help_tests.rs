//! Every command's help is right: each command and subcommand has a one-line
//! description of its own, so `ivaldi --help` and `ivaldi help CMD` never show
//! an empty line or a neighbour's doc text run into it.

use clap::CommandFactory;

use crate::Cli;

/// `(path, about)` of every subcommand under `cmd`, depth first.
fn walk(cmd: &clap::Command, path: &str, out: &mut Vec<(String, String)>) {
    for sub in cmd.get_subcommands() {
        if sub.get_name() == "help" {
            continue;
        }
        let p = format!("{path} {}", sub.get_name());
        let about = sub.get_about().map(|a| a.to_string()).unwrap_or_default();
        out.push((p.clone(), about));
        walk(sub, &p, out);
    }
}

fn all_commands() -> Vec<(String, String)> {
    let mut out = Vec::new();
    walk(&Cli::command(), "ivaldi", &mut out);
    out
}

#[test]
fn the_command_tree_is_valid() {
    Cli::command().debug_assert();
}

#[test]
fn every_command_has_a_description() {
    let cmds = all_commands();
    assert!(cmds.len() > 40, "expected the whole tree, got {cmds:?}");
    let missing: Vec<&String> = cmds
        .iter()
        .filter(|(_, a)| a.trim().is_empty())
        .map(|(p, _)| p)
        .collect();
    assert!(missing.is_empty(), "no description: {missing:?}");
}

#[test]
fn every_description_is_one_sentence() {
    for (path, about) in all_commands() {
        let a = about.trim();
        // clap drops the closing period of a one-line description.
        assert!(
            a.chars().next().is_some_and(|c| c.is_uppercase()) && a.len() >= 10,
            "{path}: {a:?} is not a sentence"
        );
        // A second sentence in the first paragraph is a doc comment running
        // into the next one (a blank `///` line starts the long help).
        let body = a.strip_suffix('.').unwrap_or(a);
        let second = body
            .match_indices(". ")
            .any(|(i, _)| body[i + 2..].starts_with(|c: char| c.is_uppercase()));
        assert!(!second, "{path}: {a:?} holds more than one sentence");
        assert!(!a.contains('\n'), "{path}: {a:?} spans lines");
    }
}

#[test]
fn update_and_p2p_describe_themselves() {
    let cmds = all_commands();
    let about = |p: &str| {
        cmds.iter()
            .find(|(c, _)| c == p)
            .map(|(_, a)| a.clone())
            .unwrap_or_default()
    };
    assert!(about("ivaldi update").starts_with("Bring the working tree forward"));
    assert!(!about("ivaldi update").contains("Peer-to-peer"));
    assert!(about("ivaldi p2p").starts_with("Peer-to-peer"));
}
