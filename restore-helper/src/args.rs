//! Hand-rolled argument parsing (no dependencies).

use std::path::PathBuf;
use std::time::Duration;

pub const HELP: &str = "\
Wait until every restored volume of this pod holds its restore marker, then exit.

Usage: stowage-restore-helper [OPTIONS] <RESTORE_UID>

Arguments:
  <RESTORE_UID>  UID of the Restore; each volume is complete once it holds .stowage/<RESTORE_UID>
                 (also read from $STOWAGE_RESTORE_UID)

Options:
      --volumes-dir <DIR>     Directory where each restored volume is mounted as a subdirectory
                              [default: /restores]
      --interval <SECONDS>    How often to look for markers [default: 1]
  -h, --help                  Print help
  -V, --version               Print version
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Help,
    Version,
    Run(Args),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub restore_uid: String,
    pub volumes_dir: PathBuf,
    pub interval: Duration,
}

pub fn parse(argv: &[String]) -> Result<Action, String> {
    parse_with_env(argv, std::env::var("STOWAGE_RESTORE_UID").ok())
}

fn parse_with_env(argv: &[String], env_uid: Option<String>) -> Result<Action, String> {
    let mut restore_uid = None;
    let mut volumes_dir = PathBuf::from("/restores");
    let mut interval = Duration::from_secs(1);
    let mut iter = argv.iter();
    while let Some(arg) = iter.next() {
        // Accept both `--flag value` and `--flag=value`.
        let (flag, inline) = match arg.split_once('=') {
            Some((f, v)) if f.starts_with("--") => (f, Some(v.to_string())),
            _ => (arg.as_str(), None),
        };
        let mut value =
            |name: &str| inline.clone().or_else(|| iter.next().cloned()).ok_or_else(|| format!("{name} needs a value"));
        match flag {
            "-h" | "--help" => return Ok(Action::Help),
            "-V" | "--version" => return Ok(Action::Version),
            "--volumes-dir" => volumes_dir = PathBuf::from(value("--volumes-dir")?),
            "--interval" => {
                let v = value("--interval")?;
                let secs: u64 = v.parse().map_err(|_| format!("--interval {v:?} is not a whole number of seconds"))?;
                if secs == 0 {
                    return Err("--interval must be at least 1 second".into());
                }
                interval = Duration::from_secs(secs);
            }
            f if f.starts_with('-') => return Err(format!("unknown option {f:?}")),
            uid => {
                if restore_uid.replace(uid.to_string()).is_some() {
                    return Err(format!("unexpected extra argument {uid:?}: give one restore UID"));
                }
            }
        }
    }
    let restore_uid = restore_uid
        .or(env_uid)
        .filter(|u| !u.is_empty())
        .ok_or("the restore UID is required (argument or $STOWAGE_RESTORE_UID)")?;
    if restore_uid.contains('/') || restore_uid.starts_with('.') {
        return Err(format!("{restore_uid:?} is not a restore UID"));
    }
    Ok(Action::Run(Args { restore_uid, volumes_dir, interval }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_with_env(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), None)
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Action::Help));
        assert_eq!(parse(&["uid", "-h"]), Ok(Action::Help));
        assert_eq!(parse(&["-V"]), Ok(Action::Version));
        assert!(HELP.contains("Usage: stowage-restore-helper"));
    }

    #[test]
    fn run_arguments() {
        let expected =
            Args { restore_uid: "4b4a6a3c".into(), volumes_dir: "/vols".into(), interval: Duration::from_secs(3) };
        assert_eq!(parse(&["--volumes-dir", "/vols", "--interval=3", "4b4a6a3c"]), Ok(Action::Run(expected)));
        let Ok(Action::Run(defaults)) = parse(&["u"]) else { panic!() };
        assert_eq!(defaults.volumes_dir, PathBuf::from("/restores"));
        let from_env = parse_with_env(&[], Some("from-env".into()));
        assert!(matches!(from_env, Ok(Action::Run(Args { ref restore_uid, .. })) if restore_uid == "from-env"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse(&[]).unwrap_err().contains("restore UID is required"));
        assert!(parse(&["--bogus", "u"]).unwrap_err().contains("unknown option \"--bogus\""));
        assert!(parse(&["u", "--interval"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["u", "--interval", "0"]).unwrap_err().contains("at least 1"));
        assert!(parse(&["a", "b"]).unwrap_err().contains("extra argument"));
        assert!(parse(&["../x"]).unwrap_err().contains("not a restore UID"));
    }
}
