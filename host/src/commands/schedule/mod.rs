//! `stowage schedule create|get|describe|delete|pause|unpause`.

mod view;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use stowage_api::schedule::Retention;
use stowage_api::{Schedule, ScheduleSpec};

pub use view::{describe, table};

use super::backup::{check_location, BackupSettings};
use super::output::{self, ObjectFormat, OutputFormat};
use super::{filters, selector, Context, Explain, InstallNamespace};
use crate::cluster::ClusterArgs;
use crate::schedules::cadence::Cadence;
use crate::schedules::plan::MAX_SCHEDULE_NAME;

const LIST_HINT: &str = "stowage schedule get";

#[derive(Debug, clap::Args)]
pub struct ScheduleArgs {
    #[command(flatten)]
    pub namespace: InstallNamespace,
    #[command(subcommand)]
    pub command: ScheduleCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ScheduleCommand {
    /// Take backups on a schedule.
    Create(Box<CreateArgs>),
    /// List schedules, with their next run and last backup.
    Get(GetArgs),
    /// Show a schedule's settings and state.
    Describe(NamesArg),
    /// Delete schedules (their backups stay, unless they are owned by the schedule).
    Delete(DeleteArgs),
    /// Stop schedules from taking backups.
    Pause(NamesArg),
    /// Let paused schedules take backups again, from their next due time (missed runs are
    /// not made up).
    Unpause(NamesArg),
}

#[derive(Debug, clap::Args)]
#[command(after_help = "\
Examples:
  stowage schedule create nightly --schedule \"0 3 * * *\" --include-namespaces shop --ttl 720h
  stowage schedule create nightly --schedule \"CRON_TZ=Europe/Paris 0 3 * * *\" --keep-daily 7 --keep-weekly 4
  stowage schedule create often --schedule \"@every 6h\" --skip-immediately=false")]
pub struct CreateArgs {
    pub name: String,
    /// When to back up: a 5-field cron expression ("0 3 * * *"), a macro (@daily, @hourly,
    /// @weekly, @monthly) or "@every <duration>"; may start with CRON_TZ=<zone>.
    #[arg(long)]
    pub schedule: String,
    #[command(flatten)]
    pub settings: BackupSettings,
    /// Create the schedule paused.
    #[arg(long)]
    pub paused: bool,
    /// Wait for the first due time before the first backup; `--skip-immediately=false` takes
    /// one at once [default: true].
    #[arg(long, value_name = "BOOL", num_args = 0..=1, default_missing_value = "true")]
    pub skip_immediately: Option<bool>,
    /// Make the schedule the owner of its backups: deleting the schedule deletes them.
    #[arg(long)]
    pub use_owner_references_in_backup: bool,
    /// Keep only the newest N backups (on top of each backup's TTL).
    #[arg(long, value_name = "N")]
    pub keep_last: Option<u32>,
    /// Keep the newest backup of each of the last N hours.
    #[arg(long, value_name = "N")]
    pub keep_hourly: Option<u32>,
    /// Keep the newest backup of each of the last N days.
    #[arg(long, value_name = "N")]
    pub keep_daily: Option<u32>,
    /// Keep the newest backup of each of the last N weeks.
    #[arg(long, value_name = "N")]
    pub keep_weekly: Option<u32>,
    /// Keep the newest backup of each of the last N months.
    #[arg(long, value_name = "N")]
    pub keep_monthly: Option<u32>,
    /// Labels to put on the schedule (KEY=VALUE,...).
    #[arg(long, value_name = "KEY=VALUE,...")]
    pub labels: Vec<String>,
    /// Print the created schedule.
    #[arg(short, long, value_enum)]
    pub output: Option<ObjectFormat>,
}

#[derive(Debug, clap::Args)]
pub struct GetArgs {
    /// Schedules to show [default: all].
    pub names: Vec<String>,
    #[arg(short = 'l', long, value_parser = selector::parse)]
    pub selector: Option<LabelSelector>,
    #[arg(short, long, value_enum, default_value_t)]
    pub output: OutputFormat,
}

#[derive(Debug, clap::Args)]
pub struct NamesArg {
    #[arg(required = true)]
    pub names: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    #[arg(required = true)]
    pub names: Vec<String>,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub confirm: bool,
}

impl CreateArgs {
    /// The schedule the flags describe, checked as the server will check it.
    pub fn schedule(&self) -> Result<Schedule, String> {
        filters::check_name("schedule name", &self.name)?;
        if self.name.len() > MAX_SCHEDULE_NAME {
            return Err(format!(
                "schedule name {:?} is longer than {MAX_SCHEDULE_NAME} characters: its backups are named NAME-YYYYMMDDhhmmss; choose a shorter name",
                self.name
            ));
        }
        Cadence::parse(&self.schedule).map_err(|e| format!("--schedule {}", e.to_string().trim_start_matches("spec.schedule ")))?;
        let keeps = [self.keep_last, self.keep_hourly, self.keep_daily, self.keep_weekly, self.keep_monthly];
        let retention = keeps.iter().any(Option::is_some).then(|| Retention {
            keep_last: self.keep_last,
            keep_hourly: self.keep_hourly,
            keep_daily: self.keep_daily,
            keep_weekly: self.keep_weekly,
            keep_monthly: self.keep_monthly,
        });
        let spec = ScheduleSpec {
            schedule: self.schedule.trim().to_string(),
            template: self.settings.spec()?,
            paused: self.paused,
            skip_immediately: self.skip_immediately,
            use_owner_references_in_backup: self.use_owner_references_in_backup.then_some(true),
            retention,
        };
        let mut schedule = Schedule::new(&self.name, spec);
        let labels = filters::parse_key_values("--labels", &self.labels)?;
        if !labels.is_empty() {
            schedule.metadata.labels = Some(labels);
        }
        Ok(schedule)
    }

    async fn run(&self, ctx: &Context) -> anyhow::Result<()> {
        let schedule = self.schedule().map_err(anyhow::Error::msg)?;
        if let Some(location) = &schedule.spec.template.storage_location {
            check_location(ctx, location, "scheduled backups").await?;
        }
        let name = &self.name;
        let created = match ctx.api::<Schedule>().create(&PostParams::default(), &schedule).await {
            Err(kube::Error::Api(s)) if s.code == 409 => anyhow::bail!(
                "schedule {name:?} already exists in namespace {}; choose another name, or see it with `stowage schedule describe {name}`",
                ctx.namespace
            ),
            r => r.explain(|| format!("creating schedule {name:?}"), &ctx.namespace)?,
        };
        let message = format!(
            "Schedule {name:?} created successfully.\nRun `stowage schedule get {name}` for its next run, \
             `stowage backup get -l stowage.io/schedule-name={name}` for its backups."
        );
        match self.output {
            Some(format) => {
                output::print(&output::render_objects(&[&created], true, format)?)?;
                eprintln!("{message}");
                Ok(())
            }
            None => output::print(&format!("{message}\n")),
        }
    }
}

pub async fn run(args: ScheduleArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let ctx = Context::connect(cluster, &args.namespace).await?;
    let now = k8s_openapi::jiff::Timestamp::now();
    match args.command {
        ScheduleCommand::Create(create) => create.run(&ctx).await,
        ScheduleCommand::Get(get) => {
            let schedules = list(&ctx, &get.names, get.selector.as_ref()).await?;
            match get.output.object_format() {
                Some(format) => output::print(&output::render_objects(&schedules, get.names.len() == 1, format)?),
                None if schedules.is_empty() => {
                    eprintln!("No schedules found in namespace {}.", ctx.namespace);
                    Ok(())
                }
                None => output::print(&table(&schedules, now)),
            }
        }
        ScheduleCommand::Describe(NamesArg { names }) => {
            let texts: Vec<String> = list(&ctx, &names, None).await?.iter().map(|s| describe(s, now)).collect();
            output::print(&texts.join("\n"))
        }
        ScheduleCommand::Delete(d) => {
            let schedules = list(&ctx, &d.names, None).await?;
            if !d.confirm {
                anyhow::bail!("refusing to delete schedule(s) {} without --confirm", d.names.join(", "));
            }
            for s in schedules {
                let name = s.metadata.name.clone().unwrap_or_default();
                ctx.api::<Schedule>()
                    .delete(&name, &DeleteParams::default())
                    .await
                    .explain(|| format!("deleting schedule {name:?}"), &ctx.namespace)?;
                println!("Schedule {name:?} deleted.");
            }
            Ok(())
        }
        ScheduleCommand::Pause(NamesArg { names }) => set_paused(&ctx, &names, true).await,
        ScheduleCommand::Unpause(NamesArg { names }) => set_paused(&ctx, &names, false).await,
    }
}

async fn list(ctx: &Context, names: &[String], selector: Option<&LabelSelector>) -> anyhow::Result<Vec<Schedule>> {
    ctx.get_or_list("schedule", names, selector, LIST_HINT).await
}

async fn set_paused(ctx: &Context, names: &[String], paused: bool) -> anyhow::Result<()> {
    for s in list(ctx, names, None).await? {
        let name = s.metadata.name.clone().unwrap_or_default();
        let patch = serde_json::json!({"spec": {"paused": paused}});
        ctx.api::<Schedule>()
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .explain(|| format!("updating schedule {name:?}"), &ctx.namespace)?;
        println!("Schedule {name:?} {}.", if paused { "paused" } else { "unpaused" });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Harness {
        #[command(flatten)]
        args: CreateArgs,
    }

    fn args(argv: &[&str]) -> Result<CreateArgs, clap::Error> {
        Harness::try_parse_from(std::iter::once("create").chain(argv.iter().copied())).map(|h| h.args)
    }

    #[test]
    fn flags_make_the_schedule() {
        let a = args(&["nightly", "--schedule", "CRON_TZ=Europe/Paris 0 3 * * *", "--include-namespaces", "shop",
            "--ttl", "720h", "--keep-daily", "30", "--skip-immediately=false", "--use-owner-references-in-backup", "--paused"])
        .unwrap();
        let s = a.schedule().unwrap();
        assert_eq!(
            serde_json::to_value(&s.spec).unwrap(),
            serde_json::json!({"schedule": "CRON_TZ=Europe/Paris 0 3 * * *", "paused": true, "skipImmediately": false,
                "useOwnerReferencesInBackup": true, "retention": {"keepDaily": 30},
                "template": {"includedNamespaces": ["shop"], "ttl": "720h0m0s"}})
        );
        let plain = args(&["n", "--schedule", "@daily"]).unwrap().schedule().unwrap();
        assert_eq!(plain.spec.skip_immediately, None);
        assert!(plain.spec.skips_immediately(), "the default waits for the first due time");
    }

    #[test]
    fn bad_input_is_refused_with_what_to_do() {
        let e = args(&["n", "--schedule", "0 3 * *"]).unwrap().schedule().unwrap_err();
        assert!(e.starts_with("--schedule \"0 3 * *\"") && e.contains("\"0 3 * * *\""), "{e}");
        let e = args(&[&"n".repeat(49), "--schedule", "@daily"]).unwrap().schedule().unwrap_err();
        assert!(e.contains("shorter name"), "{e}");
        assert!(args(&["n"]).is_err(), "--schedule is required");
    }
}
