//! Who a seal's author is: `--author`, `$IVALDI_AUTHOR`, the repository's
//! config, the user's global Ivaldi config, git's user.name/user.email, or a
//! refusal that says how to fix it. Each level with its own temporary HOME and
//! XDG_CONFIG_HOME.

use std::path::Path;
use std::process::Output;

use ivaldi_tests::Repo;

/// Runs ivaldi with HOME and XDG_CONFIG_HOME in `home`, without IVALDI_AUTHOR
/// unless `env_author` is given.
fn run(r: &Repo, home: &Path, xdg: bool, env_author: Option<&str>, args: &[&str]) -> Output {
    let mut c = r.command(args);
    c.env_remove("IVALDI_AUTHOR").env("HOME", home);
    if xdg {
        c.env("XDG_CONFIG_HOME", home.join("xdg"));
    } else {
        c.env_remove("XDG_CONFIG_HOME");
    }
    if let Some(a) = env_author {
        c.env("IVALDI_AUTHOR", a);
    }
    c.output().expect("ivaldi runs")
}

fn ok(out: Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        ivaldi_tests::describe_output(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Seals a change and returns the new seal's author.
fn seal_author(
    r: &Repo,
    home: &Path,
    xdg: bool,
    env_author: Option<&str>,
) -> Result<String, String> {
    let n = r.log(None).len();
    r.write("f.txt", format!("{n}\n"));
    let out = run(r, home, xdg, env_author, &["seal", "-m", "x"]);
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).into_owned());
    }
    Ok(r.log(None)[0]["author"]
        .as_str()
        .expect("author")
        .to_owned())
}

#[test]
fn each_level_in_order() {
    let r = Repo::forged();
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    // Nothing configured: refused, with the command to fix it; nothing sealed.
    let err = seal_author(&r, h, true, None).unwrap_err();
    assert!(err.contains("ivaldi config --global user.name"), "{err}");
    assert!(r.log(None).is_empty());
    // git's ~/.gitconfig.
    std::fs::write(
        h.join(".gitconfig"),
        "[user]\n\tname = Git User\n\temail = git@example.org\n",
    )
    .expect("write gitconfig");
    assert_eq!(
        seal_author(&r, h, true, None).unwrap(),
        "Git User <git@example.org>"
    );
    // git's XDG file is read too (~/.gitconfig wins over it, as in git).
    std::fs::create_dir_all(h.join("xdg/git")).expect("mkdir");
    std::fs::write(h.join("xdg/git/config"), "[user]\nname = Xdg Git\n").expect("write");
    assert_eq!(
        seal_author(&r, h, true, None).unwrap(),
        "Git User <git@example.org>"
    );
    std::fs::remove_file(h.join(".gitconfig")).expect("rm");
    assert_eq!(seal_author(&r, h, true, None).unwrap(), "Xdg Git");
    // The global Ivaldi config beats git's, under $XDG_CONFIG_HOME...
    ok(run(
        &r,
        h,
        true,
        None,
        &["config", "--global", "user.name", "Global Ivaldi"],
    ));
    ok(run(
        &r,
        h,
        true,
        None,
        &["config", "--global", "user.email", "g@example.org"],
    ));
    assert!(h.join("xdg/ivaldi/config.json").exists());
    assert_eq!(
        ok(run(&r, h, true, None, &["config", "--global", "user.name"])),
        "Global Ivaldi\n"
    );
    assert_eq!(
        seal_author(&r, h, true, None).unwrap(),
        "Global Ivaldi <g@example.org>"
    );
    // ...or ~/.config without it.
    ok(run(
        &r,
        h,
        false,
        None,
        &["config", "--global", "user.name", "Dot Config"],
    ));
    assert!(h.join(".config/ivaldi/config.json").exists());
    assert_eq!(seal_author(&r, h, false, None).unwrap(), "Dot Config");
    // The repository's config beats the global one.
    ok(run(
        &r,
        h,
        true,
        None,
        &["config", "user.name", "Repo Person"],
    ));
    assert_eq!(seal_author(&r, h, true, None).unwrap(), "Repo Person");
    // $IVALDI_AUTHOR overrides the configs (scripts and tests set it).
    assert_eq!(
        seal_author(&r, h, true, Some("Env <e@x>")).unwrap(),
        "Env <e@x>"
    );
    // --author overrides everything.
    r.write("f.txt", "flag\n");
    ok(run(
        &r,
        h,
        true,
        Some("Env <e@x>"),
        &["seal", "-m", "y", "--author", "Flag <f@x>"],
    ));
    assert_eq!(r.log(None)[0]["author"], "Flag <f@x>");
}

#[test]
fn bad_settings_are_refused() {
    let r = Repo::forged();
    let home = tempfile::tempdir().expect("tempdir");
    let h = home.path();
    for args in [
        &["config", "user.nmae", "x"][..],
        &["config", "--global", "user.name", ""],
        &["config", "--global", "user.name", "a\nb"],
        &["config", "--global", "user.email", "<x>"],
    ] {
        let out = run(&r, h, true, None, args);
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.starts_with("error: "), "{args:?}: {err}");
    }
    assert!(
        !h.join("xdg/ivaldi/config.json").exists(),
        "nothing was written"
    );
}
