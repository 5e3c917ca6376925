//! `--wait`: follow a backup or restore until its phase is terminal, showing progress on
//! stderr (a bar on a terminal, a line per change otherwise).

use std::fmt::Debug;
use std::io::IsTerminal;
use std::time::Duration;

use futures::StreamExt;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use kube::api::Api;
use kube::runtime::{watcher, WatchStreamExt};
use kube::Resource;
use serde::de::DeserializeOwned;
use stowage_api::{Backup, Restore};

/// How far an operation is, as read from its status.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Progress {
    pub phase: String,
    pub done: u32,
    pub total: u32,
    pub terminal: bool,
    /// Whether it ended well (Completed).
    pub succeeded: bool,
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
}

fn progress_of(phase: Option<impl Debug>, terminal: bool, done: u32, total: u32) -> Progress {
    let phase = phase.map_or_else(|| "New".to_string(), |p| format!("{p:?}"));
    Progress { succeeded: phase == "Completed", phase, done, total, terminal }
}

impl Tracked for Backup {
    const KIND: &'static str = "backup";
    fn progress(&self) -> Progress {
        let status = self.status.clone().unwrap_or_default();
        let p = status.progress.unwrap_or_default();
        let terminal = status.phase.is_some_and(|p| p.is_terminal());
        progress_of(status.phase, terminal, p.items_backed_up, p.total_items)
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
}

/// Follows `name` until its phase is terminal and returns it as it ended.
pub async fn until_done<K: Tracked>(api: Api<K>, name: &str) -> anyhow::Result<K> {
    eprintln!(
        "Waiting for {kind} {name:?} to finish. You may safely press ctrl-c to stop waiting: the {kind} goes on in the background.",
        kind = K::KIND
    );
    let mut display = Display::new(K::KIND, name);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api, config).default_backoff().boxed();
    while let Some(event) = events.next().await {
        let object = match event {
            Ok(watcher::Event::Apply(o) | watcher::Event::InitApply(o)) => o,
            Ok(watcher::Event::Delete(_)) => {
                display.finish();
                anyhow::bail!("{} {name:?} was deleted while waiting for it", K::KIND);
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!("watching {} {name}: {e}", K::KIND);
                continue;
            }
        };
        let progress = object.progress();
        display.show(&progress);
        if progress.terminal {
            display.finish();
            return Ok(object);
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

/// One line per change, as written when stderr is not a terminal.
pub fn progress_line(kind: &str, name: &str, p: &Progress) -> String {
    if p.total > 0 {
        format!("{kind} {name}: {}, {}/{} items", p.phase, p.done, p.total)
    } else {
        format!("{kind} {name}: {}", p.phase)
    }
}

fn bar_style() -> ProgressStyle {
    ProgressStyle::with_template("{spinner} {prefix} {msg:<18} [{bar:30}] {pos}/{len} items")
        .expect("the template is valid")
        .progress_chars("=> ")
}

enum Display {
    Bar(ProgressBar),
    Lines { kind: &'static str, name: String, last: Option<Progress> },
}

impl Display {
    fn new(kind: &'static str, name: &str) -> Display {
        if !std::io::stderr().is_terminal() {
            return Display::Lines { kind, name: name.to_string(), last: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        bar.set_style(bar_style());
        bar.set_prefix(format!("{kind} {name}:"));
        bar.enable_steady_tick(Duration::from_millis(120));
        Display::Bar(bar)
    }

    fn show(&mut self, p: &Progress) {
        match self {
            Display::Bar(bar) => {
                bar.set_message(p.phase.clone());
                bar.set_length(u64::from(p.total));
                bar.set_position(u64::from(p.done));
            }
            Display::Lines { kind, name, last } => {
                if last.as_ref() != Some(p) {
                    eprintln!("{}", progress_line(kind, name, p));
                    *last = Some(p.clone());
                }
            }
        }
    }

    fn finish(&self) {
        if let Display::Bar(bar) = self {
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
        assert_eq!(progress_line("backup", "b", &p), "backup b: InProgress, 3/10 items");
        let p = Backup::new("b", Default::default()).progress();
        assert_eq!(progress_line("backup", "b", &p), "backup b: New");
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
