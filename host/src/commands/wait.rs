//! `--wait`: follow a backup or restore until its phase is terminal, showing progress on
//! stderr (a bar on a terminal, a line per change otherwise): items, and for pod volumes the
//! bytes done of the total with the rate and time left, summed over its PodVolumeBackups or
//! PodVolumeRestores.

use std::fmt::Debug;
use std::io::IsTerminal;
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use futures::StreamExt;
use indicatif::{HumanBytes, HumanDuration, ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::api::{Api, ListParams};
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use stowage_api::{labels, Backup, PodVolumeBackup, PodVolumeRestore, Restore};

/// How far an operation is, as read from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: String,
    pub done: u32,
    pub total: u32,
    pub terminal: bool,
    /// Whether it ended well (Completed).
    pub succeeded: bool,
    /// Pod volume bytes copied and to copy; (0, 0) when it has no volumes (yet).
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// A kind that `--wait` can follow.
pub trait Tracked:
    Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
    + Clone
    + DeserializeOwned
    + Debug
    + Send
    + 'static
{
    /// How users name the kind: `backup`.
    const KIND: &'static str;
    fn progress(&self) -> Progress;
    /// Bytes done and total over the operation's pod volumes.
    fn volume_bytes(client: kube::Client, namespace: &str, name: &str) -> impl std::future::Future<Output = Option<(u64, u64)>> + Send;
}

/// Sums the progress of the pod volume objects labelled with the operation's name.
async fn sum_volumes<K, F>(client: kube::Client, namespace: &str, label: &str, name: &str, progress: F) -> Option<(u64, u64)>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()> + Clone + DeserializeOwned + Debug,
    F: Fn(&K) -> Option<stowage_api::podvolume::PodVolumeProgress>,
{
    // Label values are at most 63 characters; a longer name has no such label.
    if name.len() > 63 {
        return None;
    }
    let api: Api<K> = Api::namespaced(client, namespace);
    let list = api.list(&ListParams::default().labels(&format!("{label}={name}"))).await.ok()?;
    Some(list.items.iter().filter_map(&progress).fold((0, 0), |(d, t), p| (d + p.bytes_done, t + p.total_bytes)))
}

fn progress_of(phase: Option<impl Debug>, terminal: bool, done: u32, total: u32) -> Progress {
    let phase = phase.map_or_else(|| "New".to_string(), |p| format!("{p:?}"));
    Progress { succeeded: phase == "Completed", phase, done, total, terminal, bytes_done: 0, bytes_total: 0 }
}

impl Tracked for Backup {
    const KIND: &'static str = "backup";
    fn progress(&self) -> Progress {
        let status = self.status.clone().unwrap_or_default();
        let p = status.progress.unwrap_or_default();
        let terminal = status.phase.is_some_and(|p| p.is_terminal());
        progress_of(status.phase, terminal, p.items_backed_up, p.total_items)
    }

    async fn volume_bytes(client: kube::Client, namespace: &str, name: &str) -> Option<(u64, u64)> {
        sum_volumes(client, namespace, labels::BACKUP_NAME.name, name, |p: &PodVolumeBackup| p.status.as_ref()?.progress.clone()).await
    }
}

impl Tracked for Restore {
    const KIND: &'static str = "restore";
    fn progress(&self) -> Progress {
        let status = self.status.clone().unwrap_or_default();
        let p = status.progress.unwrap_or_default();
        let terminal = status.phase.is_some_and(|p| p.is_terminal());
        progress_of(status.phase, terminal, p.items_restored, p.total_items)
    }

    async fn volume_bytes(client: kube::Client, namespace: &str, name: &str) -> Option<(u64, u64)> {
        sum_volumes(client, namespace, labels::RESTORE_NAME.name, name, |p: &PodVolumeRestore| p.status.as_ref()?.progress.clone()).await
    }
}

/// Follows `name` until its phase is terminal and returns it as it ended.
pub async fn until_done<K: Tracked>(client: kube::Client, namespace: &str, name: &str) -> anyhow::Result<K> {
    eprintln!(
        "Waiting for {kind} {name:?} to finish. You may safely press ctrl-c to stop waiting: the {kind} goes on in the background.",
        kind = K::KIND
    );
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut display = Display::new(K::KIND, name);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    // Volume bytes are polled: they change too often to be worth a watch.
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut progress = Progress::default();
    loop {
        tokio::select! {
            event = events.next() => {
                let object = match event {
                    Some(Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o))) => o,
                    Some(Ok(watcher::Event::Delete(_))) => {
                        display.finish();
                        anyhow::bail!("{} {name:?} was deleted while waiting for it", K::KIND);
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(e)) => {
                        tracing::debug!("watching {} {name}: {e}", K::KIND);
                        continue;
                    }
                    None => break,
                };
                let bytes = (progress.bytes_done, progress.bytes_total);
                progress = object.progress();
                (progress.bytes_done, progress.bytes_total) = bytes;
                display.show(&progress);
                if progress.terminal {
                    display.finish();
                    return Ok(object);
                }
            }
            _ = tick.tick() => {
                if let Some((done, total)) = K::volume_bytes(client.clone(), namespace, name).await {
                    (progress.bytes_done, progress.bytes_total) = (done, total);
                    display.show(&progress);
                }
            }
        }
    }
    display.finish();
    anyhow::bail!("stopped watching {} {name:?} before it finished", K::KIND)
}

/// The final word on a finished operation: Ok for Completed, an error that says which phase
/// and where to look otherwise.
pub fn verdict(kind: &str, name: &str, progress: &Progress) -> anyhow::Result<String> {
    let next = format!("`stowage {kind} describe {name} --details` and `stowage {kind} logs {name}`");
    if progress.succeeded {
        Ok(format!(
            "{} completed with status: {}. You may check for more information using {next}.",
            capitalised(kind),
            progress.phase
        ))
    } else {
        anyhow::bail!("{kind} {name:?} finished with status {}; see {next}", progress.phase)
    }
}

fn capitalised(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// Bytes per second over the last few seconds, for the rate and the time left.
#[derive(Debug, Default)]
struct Rate {
    samples: VecDeque<(Instant, u64)>,
}

impl Rate {
    const WINDOW: Duration = Duration::from_secs(10);

    fn record(&mut self, at: Instant, bytes_done: u64) -> Option<f64> {
        if self.samples.back().is_some_and(|&(_, b)| b > bytes_done) {
            self.samples.clear();
        }
        self.samples.push_back((at, bytes_done));
        while self.samples.len() > 2 && self.samples.front().is_some_and(|&(t, _)| at.duration_since(t) > Self::WINDOW) {
            self.samples.pop_front();
        }
        let (&(t0, b0), &(t1, b1)) = (self.samples.front()?, self.samples.back()?);
        let secs = t1.duration_since(t0).as_secs_f64();
        (secs >= 0.5 && b1 > b0).then(|| (b1 - b0) as f64 / secs)
    }
}

/// One line per change, as written when stderr is not a terminal. `rate` in bytes per second.
pub fn progress_line(kind: &str, name: &str, p: &Progress, rate: Option<f64>) -> String {
    let mut line = format!("{kind} {name}: {}", p.phase);
    if p.total > 0 {
        line.push_str(&format!(", {}/{} items", p.done, p.total));
    }
    if p.bytes_total > 0 {
        line.push_str(&format!(", volumes {}/{}", HumanBytes(p.bytes_done), HumanBytes(p.bytes_total)));
        if let Some(rate) = rate.filter(|_| p.bytes_done < p.bytes_total) {
            let left = Duration::from_secs_f64((p.bytes_total - p.bytes_done) as f64 / rate);
            line.push_str(&format!(" at {}/s, about {} left", HumanBytes(rate as u64), HumanDuration(left)));
        }
    }
    line
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {msg:<18} [{bar:30}] {pos}/{len} items")
        .expect("the template is valid")
        .progress_chars("=> ")
}

/// Once there are volume bytes to copy, the bar counts them, with indicatif's rate and ETA.
fn bytes_style() -> ProgressStyle {
    ProgressStyle::with_template(
        "{spinner} {prefix} {msg:<18} [{bar:30}] {binary_bytes}/{binary_total_bytes} {binary_bytes_per_sec} ETA {eta}",
    )
    .expect("the template is valid")
    .progress_chars("=> ")
}

enum Display {
    Bar { bar: ProgressBar, counting_bytes: bool },
    Lines { kind: &'static str, name: String, last: Option<Progress>, printed: Option<Instant>, rate: Rate },
}

impl Display {
    /// A line at most this often while only the bytes change.
    const BYTES_EVERY: Duration = Duration::from_secs(5);

    fn new(kind: &'static str, name: &str) -> Display {
        if !std::io::stderr().is_terminal() {
            return Display::Lines { kind, name: name.to_string(), last: None, printed: None, rate: Rate::default() };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(bar_style());
        bar.set_prefix(format!("{kind} {name}:"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Display::Bar { bar, counting_bytes: false }
    }

    fn show(&mut self, p: &Progress) {
        match self {
            Display::Bar { bar, counting_bytes } => {
                if p.bytes_total > 0 {
                    if !*counting_bytes {
                        bar.set_style(bytes_style());
                        *counting_bytes = true;
                    }
                    bar.set_message(format!("{}, {}/{} items", p.phase, p.done, p.total));
                    bar.set_length(p.bytes_total);
                    bar.set_position(p.bytes_done);
                } else {
                    bar.set_message(p.phase.clone());
                    bar.set_length(u64::from(p.total));
                    bar.set_position(u64::from(p.done));
                }
            }
            Display::Lines { kind, name, last, printed, rate } => {
                let now = Instant::now();
                let speed = rate.record(now, p.bytes_done);
                let changed = match last.as_ref() {
                    None => true,
                    Some(l) => {
                        (l.phase.as_str(), l.done, l.total, l.bytes_total) != (p.phase.as_str(), p.done, p.total, p.bytes_total)
                            || (l.bytes_done != p.bytes_done
                                && printed.is_none_or(|t| now.duration_since(t) >= Self::BYTES_EVERY))
                    }
                };
                if changed {
                    eprintln!("{}", progress_line(kind, name, p, speed));
                    *last = Some(p.clone());
                    *printed = Some(now);
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bar { bar, .. } = self {
            bar.finish_and_clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use stowage_api::backup::{BackupPhase, BackupProgress, BackupStatus};
    use stowage_api::restore::{RestorePhase, RestoreStatus};

    fn backup(phase: Option<BackupPhase>, done: u32, total: u32) -> Backup {
        let mut b = Backup::new("b", Default::default());
        let progress = Some(BackupProgress { total_items: total, items_backed_up: done });
        b.status = Some(BackupStatus { phase, progress, ..Default::default() });
        b
    }

    #[test]
    fn progress_reads_the_status() {
        let p = backup(Some(BackupPhase::InProgress), 3, 10).progress();
        assert_eq!((p.phase.as_str(), p.done, p.total, p.terminal), ("InProgress", 3, 10, false));
        assert_eq!(progress_line("backup", "b", &p, None), "backup b: InProgress, 3/10 items");
        let p = Backup::new("b", Default::default()).progress();
        assert_eq!(progress_line("backup", "b", &p, None), "backup b: New");
        let mut r = Restore::new("r", Default::default());
        r.status = Some(RestoreStatus { phase: Some(RestorePhase::Completed), ..Default::default() });
        assert!(r.progress().terminal && r.progress().succeeded);
    }

    #[test]
    fn the_bar_template_is_valid() {
        let bar = ProgressBar::hidden();
        bar.set_style(bar_style());
        bar.set_length(10);
        bar.set_position(4);
        assert_eq!(bar.position(), 4);
    }

    #[test]
    fn volume_bytes_show_with_rate_and_time_left() {
        let mut p = backup(Some(BackupPhase::WaitingForVolumes), 12, 12).progress();
        (p.bytes_done, p.bytes_total) = (512 << 20, 2 << 30);
        let line = progress_line("backup", "b", &p, Some(f64::from(64u32 << 20)));
        assert_eq!(line, "backup b: WaitingForVolumes, 12/12 items, volumes 512.00 MiB/2.00 GiB at 64.00 MiB/s, about 24 seconds left");
        assert_eq!(progress_line("backup", "b", &p, None), "backup b: WaitingForVolumes, 12/12 items, volumes 512.00 MiB/2.00 GiB");
        p.bytes_done = p.bytes_total;
        assert!(!progress_line("backup", "b", &p, Some(1.0)).contains("left"), "nothing left when done");

        let bar = ProgressBar::hidden();
        bar.set_style(bytes_style());
        bar.set_length(p.bytes_total);
        bar.set_position(p.bytes_done);
        assert_eq!(bar.position(), p.bytes_total);
    }

    #[test]
    fn the_rate_follows_the_last_seconds_and_restarts_when_bytes_go_back() {
        let t0 = Instant::now();
        let mut rate = Rate::default();
        assert_eq!(rate.record(t0, 0), None, "one sample says nothing");
        assert_eq!(rate.record(t0 + Duration::from_secs(2), 200), Some(100.0));
        assert_eq!(rate.record(t0 + Duration::from_secs(4), 600), Some(150.0));
        // Samples older than the window are dropped: the rate is the recent one.
        assert_eq!(rate.record(t0 + Duration::from_secs(30), 600 + 26 * 10), Some(10.0));
        // A retried volume starts over: no negative rate.
        assert_eq!(rate.record(t0 + Duration::from_secs(31), 5), None);
    }

    #[test]
    fn verdicts_name_the_phase_and_what_to_run() {
        let ok = verdict("backup", "b", &backup(Some(BackupPhase::Completed), 5, 5).progress()).unwrap();
        assert!(ok.starts_with("Backup completed with status: Completed."), "{ok}");
        for phase in [BackupPhase::PartiallyFailed, BackupPhase::Failed, BackupPhase::FailedValidation] {
            let p = backup(Some(phase), 0, 0).progress();
            assert!(p.terminal);
            let err = verdict("backup", "b", &p).unwrap_err().to_string();
            assert!(err.contains(&format!("{phase:?}")) && err.contains("stowage backup describe b"), "{err}");
        }
    }
}
