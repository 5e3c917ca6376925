//! `stowage install`: flags → checked plan → typed objects → printed (dry run) or applied.
//!
//! Building the objects is pure and tested here; applying is a thin layer over kube.

mod apply;
mod credentials;
mod error;
mod location_config;
mod master_key;
pub(crate) mod objects;
mod options;
mod rbac;
mod render;
mod uninstall;
mod workloads;

#[cfg(test)]
mod tests;

pub use credentials::CredentialsFile;
pub use error::InstallError;
pub use master_key::MasterKey;
pub use objects::{build, InstallObject};
pub use options::{InstallArgs, InstallPlan, OutputFormat, DEFAULT_IMAGE};
pub use render::render;
pub use uninstall::{targets as uninstall_targets, Target as UninstallTarget, UninstallArgs};
pub use uninstall::run as uninstall;

use anyhow::Context;

use crate::cluster::ClusterArgs;

/// Runs `stowage install`.
pub async fn run(args: InstallArgs, cluster: &ClusterArgs) -> anyhow::Result<()> {
    let plan = args.resolve()?;
    for warning in &plan.warnings {
        eprintln!("warning: {warning}");
    }
    let master_key = MasterKey::generate()?;
    let objects = build(&plan, &master_key);

    let format = args.output.or(args.dry_run.then_some(OutputFormat::Yaml));
    if let Some(format) = format {
        crate::cli::write_stdout(render(&objects, format)?.as_bytes()).context("writing to stdout")?;
    }
    if args.dry_run {
        eprintln!("{}", master_key::dry_run_notice(&plan.namespace));
        return Ok(());
    }

    let client = cluster.client().await?;
    let mut report = |line: String| eprintln!("{line}");
    let outcome = apply::apply(&client, &objects, args.timeout, &mut report).await?;
    if args.wait {
        eprintln!("waiting for the server and node agents to be ready...");
        apply::wait_for_pods(&client, &plan.namespace, plan.node_agent.is_some(), args.timeout).await?;
    }
    if outcome.master_key_created {
        eprintln!("\n{}", master_key::created_notice(&plan.namespace));
    } else {
        eprintln!("\n{}", master_key::kept_notice(&plan.namespace));
    }
    eprintln!(
        "\nStowage is installed in namespace {ns}. Check the server with `kubectl -n {ns} logs deployment/{server}`.",
        ns = plan.namespace,
        server = stowage_api::names::SERVER,
    );
    Ok(())
}
