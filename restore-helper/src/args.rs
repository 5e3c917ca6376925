//! Hand-rolled argument parsing (no dependencies).

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub const HELP: &str = "\
Wait until every restored volume of this pod holds its restore marker, remove the markers, exit.

Usage: stowage-restore-helper [OPTIONS] <RESTORE_UID>
       stowage-restore-helper --hold

Arguments:
  <RESTORE_UID>  UID of the Restore; each volume is complete once it holds .stowage/<RESTORE_UID>
                 (or Velero's .velero/<RESTORE_UID>) (also read from $STOWAGE_RESTORE_UID)

Options:
      --hold                  Do nothing until stopped: the container of an access pod, which only
                              mounts claims for the node agent to back up or restore
      --volumes-dir <DIR>     Directory where each restored volume is mounted as a subdirectory
                              [default: /restores]
      --interval <DURATION>   How often to look for markers, e.g. 1s, 500ms (a bare number is
                              seconds) [default: 1s]
      --timeout <DURATION>    Give up after this long, e.g. 4h, 30m, 90s; 0 waits until the pod is
                              deleted (the server enforces the restore's own timeout) [default: 0]
  -h, --help                  Print help
  -V, --version               Print version

Environment:
  STOWAGE_RESTORE_UID   The restore UID when no argument gives one
  KUBE_SIM_ROOTFS       For tests on kube-sim: an absolute --volumes-dir is resolved under this
                        directory (the simulated container's filesystem)

Exit status: 0 when every volume is restored, 1 on timeout or when there is nothing to wait for,
2 on a usage error.
";

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Help,
    Version,
    /// Wait to be stopped (an access pod's container).
    Hold,
    Run(Args),
}

#[derive(Debug, PartialEq, Eq)]
pub struct Args {
    pub restore_uid: String,
    /// Already resolved under `$KUBE_SIM_ROOTFS` when that is set.
    pub volumes_dir: PathBuf,
    pub interval: Duration,
    /// `Duration::ZERO` waits forever.
    pub timeout: Duration,
}

/// The environment variables the helper reads.
#[derive(Debug, Default)]
pub struct Env {
    pub restore_uid: Option<String>,
    pub sim_rootfs: Option<OsString>,
}

impl Env {
    pub fn from_process() -> Env {
        Env { restore_uid: std::env::var("STOWAGE_RESTORE_UID").ok(), sim_rootfs: std::env::var_os("KUBE_SIM_ROOTFS") }
    }
}

pub fn parse(argv: &[String], env: Env) -> Result<Action, String> {
    let mut restore_uid = None;
    let mut volumes_dir = PathBuf::from("/restores");
    let mut interval = Duration::from_secs(1);
    let mut timeout = Duration::ZERO;
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
            "--hold" => return Ok(Action::Hold),
            "--volumes-dir" => volumes_dir = PathBuf::from(value("--volumes-dir")?),
            "--interval" => {
                interval = parse_duration(&value("--interval")?).map_err(|e| format!("--interval: {e}"))?;
                if interval.is_zero() {
                    return Err("--interval must be more than 0".into());
                }
            }
            "--timeout" => timeout = parse_duration(&value("--timeout")?).map_err(|e| format!("--timeout: {e}"))?,
            f if f.starts_with('-') => return Err(format!("unknown option {f:?}")),
            uid => {
                if restore_uid.replace(uid.to_string()).is_some() {
                    return Err(format!("unexpected extra argument {uid:?}: give one restore UID"));
                }
            }
        }
    }
    let restore_uid = restore_uid
        .or(env.restore_uid)
        .filter(|u| !u.is_empty())
        .ok_or("the restore UID is required (argument or $STOWAGE_RESTORE_UID)")?;
    check_uid(&restore_uid)?;
    let volumes_dir = resolve_volumes_dir(volumes_dir, env.sim_rootfs);
    Ok(Action::Run(Args { restore_uid, volumes_dir, interval, timeout }))
}

/// The UID names a file inside each volume: it must stay a single, ordinary path component.
fn check_uid(uid: &str) -> Result<(), String> {
    if uid.contains(['/', '\0']) || uid.contains("..") || uid.starts_with('.') {
        return Err(format!("{uid:?} is not a restore UID (it must not contain '/', '..' or NUL)"));
    }
    Ok(())
}

/// Under kube-sim a container's filesystem is a host directory named by `$KUBE_SIM_ROOTFS`.
fn resolve_volumes_dir(dir: PathBuf, sim_rootfs: Option<OsString>) -> PathBuf {
    match (sim_rootfs.filter(|r| !r.is_empty()), dir.strip_prefix("/")) {
        (Some(root), Ok(inside)) => Path::new(&root).join(inside),
        _ => dir,
    }
}

/// A Go-style duration (`90s`, `30m`, `4h0m0s`, `1.5h`, `500ms`), as the API writes them; a
/// bare whole number is seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("{text:?} is not a duration ({why}); write e.g. 90s, 30m, 4h or 500ms");
    if text.is_empty() {
        return Err(bad("it is empty"));
    }
    if text.starts_with('-') {
        return Err(bad("it is negative"));
    }
    if text.bytes().all(|b| b.is_ascii_digit()) {
        return text.parse().map(Duration::from_secs).map_err(|_| bad("it is too large"));
    }
    let is_number = |c: char| c.is_ascii_digit() || c == '.';
    let mut nanos: u128 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let (number, tail) = rest.split_at(rest.find(|c| !is_number(c)).unwrap_or(rest.len()));
        let (unit, tail) = tail.split_at(tail.find(is_number).unwrap_or(tail.len()));
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            "" => return Err(bad(&format!("{number:?} has no unit"))),
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
        if (whole.is_empty() && fraction.is_empty()) || fraction.contains('.') {
            return Err(bad(&format!("{number:?} is not a number")));
        }
        if whole.len() > 20 || fraction.len() > 20 {
            return Err(bad("it has too many digits"));
        }
        let digits = |d: &str| if d.is_empty() { 0 } else { d.parse::<u128>().unwrap_or(0) };
        let part = digits(whole) * per_unit + digits(fraction) * per_unit / 10u128.pow(fraction.len() as u32);
        nanos = nanos.checked_add(part).ok_or_else(|| bad("it is too large"))?;
        rest = tail;
    }
    let secs = u64::try_from(nanos / 1_000_000_000).map_err(|_| bad("it is too large"))?;
    Ok(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hold_needs_no_restore_uid() {
        assert_eq!(parse(&["--hold"]), Ok(Action::Hold));
    }

    fn parse_env(args: &[&str], env: Env) -> Result<Action, String> {
        super::parse(&args.iter().map(|s| s.to_string()).collect::<Vec<_>>(), env)
    }

    fn parse(args: &[&str]) -> Result<Action, String> {
        parse_env(args, Env::default())
    }

    fn run_args(args: &[&str], env: Env) -> Args {
        match parse_env(args, env) {
            Ok(Action::Run(a)) => a,
            other => panic!("{args:?}: {other:?}"),
        }
    }

    #[test]
    fn help_and_version() {
        assert_eq!(parse(&["--help"]), Ok(Action::Help));
        assert_eq!(parse(&["uid", "-h"]), Ok(Action::Help));
        assert_eq!(parse(&["-V"]), Ok(Action::Version));
        assert!(HELP.contains("Usage: stowage-restore-helper"));
        assert!(HELP.contains("--timeout <DURATION>") && HELP.contains("KUBE_SIM_ROOTFS"));
    }

    #[test]
    fn run_arguments() {
        let expected = Args {
            restore_uid: "4b4a6a3c".into(),
            volumes_dir: "/vols".into(),
            interval: Duration::from_secs(3),
            timeout: Duration::from_secs(4 * 3600),
        };
        let got = parse(&["--volumes-dir", "/vols", "--interval=3", "--timeout", "4h", "4b4a6a3c"]);
        assert_eq!(got, Ok(Action::Run(expected)));
        let defaults = run_args(&["u"], Env::default());
        assert_eq!(defaults.volumes_dir, PathBuf::from("/restores"));
        assert_eq!((defaults.interval, defaults.timeout), (Duration::from_secs(1), Duration::ZERO));
        assert_eq!(run_args(&["u", "--interval", "50ms"], Env::default()).interval, Duration::from_millis(50));
        let from_env = run_args(&[], Env { restore_uid: Some("from-env".into()), ..Env::default() });
        assert_eq!(from_env.restore_uid, "from-env");
        let argument_wins = run_args(&["arg"], Env { restore_uid: Some("from-env".into()), ..Env::default() });
        assert_eq!(argument_wins.restore_uid, "arg");
    }

    #[test]
    fn volumes_dir_is_resolved_under_the_simulated_rootfs() {
        let sim = || Env { sim_rootfs: Some("/sim/pod/rootfs".into()), ..Env::default() };
        assert_eq!(run_args(&["u"], sim()).volumes_dir, PathBuf::from("/sim/pod/rootfs/restores"));
        assert_eq!(run_args(&["u", "--volumes-dir=/a/b"], sim()).volumes_dir, PathBuf::from("/sim/pod/rootfs/a/b"));
        // A relative directory is already relative to the container's working directory.
        assert_eq!(run_args(&["u", "--volumes-dir=rel"], sim()).volumes_dir, PathBuf::from("rel"));
        let empty = Env { sim_rootfs: Some("".into()), ..Env::default() };
        assert_eq!(run_args(&["u"], empty).volumes_dir, PathBuf::from("/restores"));
    }

    #[test]
    fn errors_name_the_problem() {
        assert!(parse(&[]).unwrap_err().contains("restore UID is required"));
        assert!(parse(&["--bogus", "u"]).unwrap_err().contains("unknown option \"--bogus\""));
        assert!(parse(&["u", "--interval"]).unwrap_err().contains("needs a value"));
        assert!(parse(&["u", "--interval", "0"]).unwrap_err().contains("more than 0"));
        assert!(parse(&["u", "--interval", "0s"]).unwrap_err().contains("more than 0"));
        assert!(parse(&["u", "--timeout", "soon"]).unwrap_err().starts_with("--timeout: \"soon\" is not a duration"));
        assert!(parse(&["a", "b"]).unwrap_err().contains("extra argument"));
    }

    #[test]
    fn uids_that_would_leave_the_marker_directory_are_refused() {
        for bad in ["../x", "a/b", "..", ".", "a..b", ".hidden", "nul\0byte", "/abs"] {
            assert!(parse(&[bad]).unwrap_err().contains("is not a restore UID"), "{bad:?}");
        }
        let from_env = parse_env(&[], Env { restore_uid: Some("../../etc".into()), ..Env::default() });
        assert!(from_env.unwrap_err().contains("is not a restore UID"));
        assert!(matches!(parse(&["3f0c9a4e-1b2c-4d5e-8f90-a1b2c3d4e5f6"]), Ok(Action::Run(_))));
    }

    #[test]
    fn durations() {
        let ok = |s: &str| parse_duration(s).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ok("0"), Duration::ZERO);
        assert_eq!(ok("0s"), Duration::ZERO);
        assert_eq!(ok("90"), Duration::from_secs(90));
        assert_eq!(ok("90s"), Duration::from_secs(90));
        assert_eq!(ok("30m"), Duration::from_secs(1800));
        assert_eq!(ok("4h"), Duration::from_secs(4 * 3600));
        assert_eq!(ok("4h0m0s"), Duration::from_secs(4 * 3600));
        assert_eq!(ok("1h30m5s"), Duration::from_secs(5405));
        assert_eq!(ok("1.5h"), Duration::from_secs(5400));
        assert_eq!(ok(".5s"), Duration::from_millis(500));
        assert_eq!(ok("50ms"), Duration::from_millis(50));
        assert_eq!(ok("250us"), Duration::from_micros(250));
        assert_eq!(ok("1µs"), Duration::from_micros(1));
        assert_eq!(ok("7ns"), Duration::from_nanos(7));
        for (bad, why) in [
            ("", "empty"),
            ("-5m", "negative"),
            ("5d", "unknown unit \"d\""),
            ("m", "\"\" is not a number"),
            ("1.2.3s", "not a number"),
            ("5m3", "\"3\" has no unit"),
            ("ten minutes", "unknown unit"),
            ("99999999999999999999999h", "too many digits"),
            ("99999999999999999999h", "too large"),
        ] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.contains(why) && err.contains("write e.g."), "{bad:?}: {err}");
        }
    }
}
