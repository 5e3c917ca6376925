//! The wait loop: look for a marker in every volume, announce each volume as it completes, and
//! remove the markers once all are there.

use std::collections::BTreeSet;
use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::args::Args;

/// The directory, inside each restored volume, holding the node agent's markers. This is
/// `stowage_api::names::RESTORE_MARKER_DIR`, repeated because this crate has no dependencies.
pub const MARKER_DIR: &str = ".stowage";
/// Velero's node agent writes `.velero/<restore-uid>`; accepting it lets Velero-style restores
/// through too.
pub const VELERO_MARKER_DIR: &str = ".velero";
const MARKER_DIRS: [&str; 2] = [MARKER_DIR, VELERO_MARKER_DIR];

/// How often, in checks, the helper repeats which volumes it still waits for.
const WAITING_EVERY: u64 = 10;

/// Time as the loop sees it, so tests can run it without sleeping.
pub trait Clock {
    /// Time since the wait started.
    fn elapsed(&self) -> Duration;
    fn sleep(&mut self, duration: Duration);
}

pub struct RealClock(Instant);

impl RealClock {
    pub fn start() -> RealClock {
        RealClock(Instant::now())
    }
}

impl Clock for RealClock {
    fn elapsed(&self) -> Duration {
        self.0.elapsed()
    }
    fn sleep(&mut self, duration: Duration) {
        std::thread::sleep(duration);
    }
}

/// One restored volume: a directory directly under the volumes directory.
struct Volume {
    name: String,
    path: PathBuf,
}

enum Marker {
    Present,
    Absent,
    /// The marker could not be looked for (e.g. permission denied).
    Unknown(String),
}

/// Waits until every volume holds its marker, then removes the markers. `Err` carries the
/// message for the exit-1 paths: nothing to wait for, or the timeout.
pub fn run(args: &Args, clock: &mut dyn Clock, out: &mut dyn Write) -> Result<(), String> {
    let mut announced = BTreeSet::new();
    let mut checks: u64 = 0;
    loop {
        let volumes = list_volumes(&args.volumes_dir)?;
        let mut pending = Vec::new();
        for volume in &volumes {
            match marker(volume, &args.restore_uid) {
                Marker::Present => {
                    if announced.insert(volume.name.clone()) {
                        say(out, format_args!("volume data is restored: {}", volume.name));
                    }
                }
                Marker::Absent => pending.push(volume.name.clone()),
                Marker::Unknown(why) => pending.push(format!("{} ({why})", volume.name)),
            }
        }
        if pending.is_empty() {
            for volume in &volumes {
                remove_markers(volume, &args.restore_uid, out);
            }
            say(out, format_args!("all volumes restored"));
            return Ok(());
        }
        if checks.is_multiple_of(WAITING_EVERY) {
            say(
                out,
                format_args!(
                    "waiting for the restored data of {} of {} volume(s) under {}: {}",
                    pending.len(),
                    volumes.len(),
                    args.volumes_dir.display(),
                    pending.join(", ")
                ),
            );
        }
        checks += 1;
        let mut nap = args.interval;
        if !args.timeout.is_zero() {
            let elapsed = clock.elapsed();
            if elapsed >= args.timeout {
                return Err(format!(
                    "timed out after {}: {} volume(s) under {} still have no {MARKER_DIR}/{uid} marker: {}. \
                     Their data was not restored; check `stowage restore describe` for the restore with UID {uid} \
                     and the node-agent logs on this pod's node",
                    show(args.timeout),
                    pending.len(),
                    args.volumes_dir.display(),
                    pending.join(", "),
                    uid = args.restore_uid,
                ));
            }
            nap = nap.min(args.timeout - elapsed);
        }
        clock.sleep(nap);
    }
}

/// The restored volumes, sorted by name. None at all means the pod was given the helper without
/// the volume mounts it needs: a configuration error, not something to wait out.
fn list_volumes(dir: &Path) -> Result<Vec<Volume>, String> {
    let misconfigured = "this pod was given the restore helper but no restored volumes to wait for; \
                         its init container needs a volume mount under that directory for each restored volume";
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(format!("the volumes directory {} does not exist: {misconfigured}", dir.display()))
        }
        Err(e) => return Err(format!("cannot list the volumes directory {}: {e}", dir.display())),
    };
    let mut volumes = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| format!("cannot list the volumes directory {}: {e}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // Follows symlinks: a mount may be one (kube-sim links each mount path to its volume).
        let is_dir = fs::metadata(entry.path()).map(|m| m.is_dir()).unwrap_or(false);
        // Volume names are DNS labels; dot entries are never volumes.
        if is_dir && !name.starts_with('.') {
            volumes.push(Volume { name, path: entry.path() });
        }
    }
    if volumes.is_empty() {
        return Err(format!("no volumes are mounted under {}: {misconfigured}", dir.display()));
    }
    volumes.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(volumes)
}

fn marker(volume: &Volume, uid: &str) -> Marker {
    let mut unknown = None;
    for dir in MARKER_DIRS {
        let path = volume.path.join(dir).join(uid);
        match fs::symlink_metadata(&path) {
            Ok(_) => return Marker::Present,
            Err(e) if matches!(e.kind(), io::ErrorKind::NotFound | io::ErrorKind::NotADirectory) => {}
            Err(e) => unknown = Some(format!("cannot check {dir}/{uid}: {e}")),
        }
    }
    unknown.map_or(Marker::Absent, Marker::Unknown)
}

/// Removes the volume's markers, and a marker directory they leave empty; nothing else. A marker
/// that cannot be removed is reported but does not fail the pod: its data is complete.
fn remove_markers(volume: &Volume, uid: &str, out: &mut dyn Write) {
    for dir in MARKER_DIRS {
        let marker_dir = volume.path.join(dir);
        let path = marker_dir.join(uid);
        if fs::symlink_metadata(&path).is_err() {
            continue;
        }
        if let Err(e) = fs::remove_file(&path) {
            say(out, format_args!("warning: cannot remove the marker {}: {e}", path.display()));
            continue;
        }
        match fs::remove_dir(&marker_dir) {
            Ok(()) => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::DirectoryNotEmpty | io::ErrorKind::NotFound) => {}
            Err(e) => say(out, format_args!("warning: cannot remove {}: {e}", marker_dir.display())),
        }
    }
}

/// `4h0m0s`, `1m30s`, `1s` as Go prints durations (the form the API uses); `2.5s`, `50ms` otherwise.
fn show(duration: Duration) -> String {
    let secs = duration.as_secs();
    if duration.subsec_nanos() != 0 {
        format!("{duration:?}")
    } else if secs >= 3600 {
        format!("{}h{}m{}s", secs / 3600, secs / 60 % 60, secs % 60)
    } else if secs >= 60 {
        format!("{}m{}s", secs / 60, secs % 60)
    } else {
        format!("{secs}s")
    }
}

/// Log lines go to stdout (the container log); a closed stdout must not stop the helper.
fn say(out: &mut dyn Write, line: std::fmt::Arguments) {
    let _ = writeln!(out, "{line}");
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A clock that moves only when slept on, running a hook at each sleep (the "node agent").
    struct FakeClock<F: FnMut(u32)> {
        now: Duration,
        sleeps: u32,
        on_sleep: F,
    }

    impl<F: FnMut(u32)> Clock for FakeClock<F> {
        fn elapsed(&self) -> Duration {
            self.now
        }
        fn sleep(&mut self, duration: Duration) {
            self.now += duration;
            self.sleeps += 1;
            (self.on_sleep)(self.sleeps);
        }
    }

    fn clock<F: FnMut(u32)>(on_sleep: F) -> FakeClock<F> {
        FakeClock { now: Duration::ZERO, sleeps: 0, on_sleep }
    }

    const UID: &str = "3f0c9a4e";

    fn args(dir: &Path, timeout: Duration) -> Args {
        Args { restore_uid: UID.into(), volumes_dir: dir.into(), interval: Duration::from_secs(1), timeout }
    }

    fn volumes(names: &[&str]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        for name in names {
            fs::create_dir(dir.path().join(name)).unwrap();
        }
        dir
    }

    fn mark(dir: &Path, volume: &str, marker_dir: &str) {
        fs::create_dir_all(dir.join(volume).join(marker_dir)).unwrap();
        fs::write(dir.join(volume).join(marker_dir).join(UID), "").unwrap();
    }

    fn run_it(args: &Args, clock: &mut dyn Clock) -> (Result<(), String>, String) {
        let mut out = Vec::new();
        let result = run(args, clock, &mut out);
        (result, String::from_utf8(out).unwrap())
    }

    #[test]
    fn waits_for_every_volume_then_removes_only_the_markers() {
        let tmp = volumes(&["data", "logs"]);
        let root = tmp.path().to_path_buf();
        fs::write(root.join("data/keep.txt"), "user data").unwrap();
        // A marker of another restore shares the directory: it must survive.
        mark(&root, "logs", MARKER_DIR);
        fs::write(root.join("logs/.stowage/other-restore"), "").unwrap();
        let mut clock = clock(|n| match n {
            3 => mark(&root, "data", MARKER_DIR),
            n if n > 3 => panic!("still waiting after both markers were written"),
            _ => {}
        });
        let (result, out) = run_it(&args(&root, Duration::ZERO), &mut clock);
        assert_eq!(result, Ok(()));
        assert_eq!(clock.sleeps, 3);
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(
            lines,
            [
                "volume data is restored: logs",
                &format!("waiting for the restored data of 1 of 2 volume(s) under {}: data", root.display()),
                "volume data is restored: data",
                "all volumes restored",
            ]
        );
        assert!(!root.join("data/.stowage").exists(), "an emptied marker directory is removed");
        assert!(!root.join("logs/.stowage").join(UID).exists());
        assert!(root.join("logs/.stowage/other-restore").exists());
        assert_eq!(fs::read_to_string(root.join("data/keep.txt")).unwrap(), "user data");
    }

    #[test]
    fn repeats_the_waiting_line_every_ten_checks() {
        let tmp = volumes(&["data"]);
        let root = tmp.path().to_path_buf();
        let mut clock = clock(|n| {
            if n == 25 {
                mark(&root, "data", MARKER_DIR)
            }
        });
        let (result, out) = run_it(&args(&root, Duration::ZERO), &mut clock);
        assert_eq!(result, Ok(()));
        // Checks 1, 11 and 21 report; the 26th finds the marker.
        assert_eq!(out.matches("waiting for the restored data of 1 of 1 volume(s)").count(), 3, "{out}");
    }

    #[test]
    fn velero_markers_count_and_both_kinds_are_removed() {
        let tmp = volumes(&["a", "b"]);
        let root = tmp.path();
        mark(root, "a", VELERO_MARKER_DIR);
        mark(root, "b", VELERO_MARKER_DIR);
        mark(root, "b", MARKER_DIR);
        let (result, out) = run_it(&args(root, Duration::ZERO), &mut clock(|_| panic!("no wait needed")));
        assert_eq!(result, Ok(()), "{out}");
        for leftover in ["a/.velero", "b/.velero", "b/.stowage"] {
            assert!(!root.join(leftover).exists(), "{leftover}");
        }
    }

    #[test]
    fn times_out_naming_the_missing_volumes() {
        let tmp = volumes(&["data", "logs", "cache"]);
        mark(tmp.path(), "logs", MARKER_DIR);
        let mut clock = clock(|_| {});
        let (result, out) = run_it(&args(tmp.path(), Duration::from_millis(2500)), &mut clock);
        let err = result.unwrap_err();
        assert!(err.starts_with("timed out after 2.5s: 2 volume(s) under"), "{err}");
        assert!(err.contains(".stowage/3f0c9a4e marker: cache, data."), "{err}");
        assert!(err.contains("stowage restore describe") && err.contains("node-agent logs"), "{err}");
        // Sleeps 1s, 1s, then only the 0.5s left, and gives up right at the deadline.
        assert_eq!((clock.sleeps, clock.now), (3, Duration::from_millis(2500)));
        assert!(tmp.path().join("logs/.stowage").join(UID).exists(), "markers stay when giving up");
        assert!(out.contains("volume data is restored: logs"));
    }

    #[test]
    fn durations_read_as_the_flags_take_them() {
        let cases = [(14_400_000, "4h0m0s"), (90_000, "1m30s"), (1_000, "1s"), (2_500, "2.5s"), (50, "50ms")];
        for (millis, shown) in cases {
            assert_eq!(show(Duration::from_millis(millis)), shown);
        }
    }

    #[test]
    fn nothing_to_wait_for_is_an_error() {
        let never = || clock(|_| panic!("must not wait"));
        let tmp = volumes(&[]);
        let missing = tmp.path().join("restores");
        let err = run_it(&args(&missing, Duration::ZERO), &mut never()).0.unwrap_err();
        assert!(err.contains(&format!("the volumes directory {} does not exist", missing.display())), "{err}");
        // Files and dot directories are not volumes.
        fs::write(tmp.path().join("README"), "").unwrap();
        fs::create_dir(tmp.path().join(".snapshot")).unwrap();
        let err = run_it(&args(tmp.path(), Duration::ZERO), &mut never()).0.unwrap_err();
        assert!(err.starts_with("no volumes are mounted under"), "{err}");
        assert!(err.contains("no restored volumes to wait for"), "{err}");
    }

    #[test]
    fn a_marker_directory_in_the_way_is_only_waited_on() {
        let tmp = volumes(&["data"]);
        // `.stowage` as a file: the marker is absent, the file is left alone.
        fs::write(tmp.path().join("data/.stowage"), "not a directory").unwrap();
        let (result, out) = run_it(&args(tmp.path(), Duration::from_secs(1)), &mut clock(|_| {}));
        assert!(result.unwrap_err().contains("marker: data."));
        assert!(out.contains(": data\n"), "{out}");
        assert!(tmp.path().join("data/.stowage").is_file());
    }
}
