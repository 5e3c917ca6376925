//! Printing the install's objects: multi-document YAML, or a JSON `List`.

use anyhow::Context;
use serde::Serialize;

use super::objects::InstallObject;
use super::options::OutputFormat;

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct List<'a> {
    api_version: &'static str,
    kind: &'static str,
    items: &'a [InstallObject],
}

pub fn render(objects: &[InstallObject], format: OutputFormat) -> anyhow::Result<String> {
    match format {
        OutputFormat::Yaml => {
            let mut out = String::new();
            for object in objects {
                let yaml =
                    serde_yaml::to_string(object).with_context(|| format!("serialising {}", object.describe()))?;
                out.push_str("---\n");
                out.push_str(&yaml);
            }
            Ok(out)
        }
        OutputFormat::Json => {
            let list = List { api_version: "v1", kind: "List", items: objects };
            let mut json = serde_json::to_string_pretty(&list).context("serialising the install")?;
            json.push('\n');
            Ok(json)
        }
    }
}
