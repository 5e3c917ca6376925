//! The markup the dashboard's pages are made of: the page, tables, badges, times. Every string
//! from the cluster (names, messages, labels) becomes markup only through [`esc`] or
//! `Html::from`, which escape it; [`Html::trusted`] is for the markup written here.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::model::RestoreRow;

/// A piece of markup.
#[derive(Debug, Clone, Default)]
pub struct Html(pub String);

impl Html {
    /// Markup written by this module, not text from the cluster.
    pub fn trusted(markup: String) -> Html {
        Html(markup)
    }
}

impl From<&str> for Html {
    fn from(text: &str) -> Html {
        Html(esc(text))
    }
}

impl From<String> for Html {
    fn from(text: String) -> Html {
        Html(esc(&text))
    }
}

/// Text as HTML: safe in element content and in quoted attribute values.
pub fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
:root{--fg:#1f2328;--muted:#656d76;--line:#d8dee4;--panel:#f6f8fa;--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--run:#0969da}
*{box-sizing:border-box}
body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"Noto Sans",sans-serif;color:var(--fg);background:#fff}
header{display:flex;align-items:baseline;gap:14px;padding:14px 28px;border-bottom:1px solid var(--line);background:var(--panel)}
header h1{font-size:18px;margin:0}header a{color:inherit;text-decoration:none}
main{padding:4px 28px 40px;max-width:1440px}
h2{font-size:15px;margin:28px 0 8px}
a{color:var(--run);text-decoration:none}a:hover{text-decoration:underline}
table{border-collapse:collapse;width:100%}
th,td{text-align:left;padding:6px 10px;border-bottom:1px solid var(--line);vertical-align:top}
th{font-weight:600;color:var(--muted);font-size:12px;white-space:nowrap}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
td.time{white-space:nowrap;color:var(--muted)}
.muted{color:var(--muted)}.note{color:var(--muted);font-size:12px;margin:6px 0}
.badge{display:inline-block;padding:0 8px;border-radius:10px;font-size:12px;font-weight:600;border:1px solid currentColor;white-space:nowrap}
.ok{color:var(--ok)}.warn{color:var(--warn)}.bad{color:var(--bad)}.run{color:var(--run)}.none{color:var(--muted)}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:18px}
.card{border:1px solid var(--line);border-radius:6px;padding:8px 14px;min-width:130px}
.card b{display:block;font-size:20px}.card span{color:var(--muted);font-size:12px}
.plots{display:flex;gap:28px;flex-wrap:wrap;margin-top:22px}figure{margin:0}figcaption{font-weight:600;font-size:13px;margin-bottom:4px}
svg .frame{fill:none;stroke:var(--line)}svg .grid{stroke:#eaeef2}svg .axis,svg .empty{font-size:10px;fill:var(--muted)}
svg .line{fill:none;stroke:#8c959f;stroke-width:1.5}svg .dot.ok{fill:var(--ok)}svg .dot.warn{fill:#bf8700}svg .dot.bad{fill:var(--bad)}
dl.kv{display:grid;grid-template-columns:max-content 1fr;gap:4px 18px;margin:0}dl.kv dt{color:var(--muted)}dl.kv dd{margin:0}
.cols{display:grid;grid-template-columns:1fr 1fr;gap:0 40px}
pre{background:var(--panel);border:1px solid var(--line);border-radius:6px;padding:8px 10px;white-space:pre-wrap;margin:4px 0}
code{font-size:12px}
"#;

/// A whole page around `body`.
pub fn page(title: &str, namespace: &str, body: &Html) -> String {
    format!(
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{}</title>\
         <meta name=\"viewport\" content=\"width=device-width,initial-scale=1\"><style>{STYLE}</style></head>\
         <body><header><h1><a href=\"/\">Stowage</a></h1><span class=\"muted\">namespace {}</span></header><main>{}</main></body></html>",
        esc(title),
        esc(namespace),
        body.0
    )
}

/// A table whose cells are already markup; `empty` when there are no rows. Columns whose
/// header starts with `#` are numeric (right-aligned, the `#` dropped).
pub fn table(headers: &[&str], rows: Vec<Vec<Html>>, empty: &str) -> Html {
    if rows.is_empty() {
        return Html::trusted(format!("<p class=\"muted\">{}</p>", esc(empty)));
    }
    let numeric: Vec<bool> = headers.iter().map(|h| h.starts_with('#')).collect();
    let mut out = String::from("<table><thead><tr>");
    for (h, num) in headers.iter().zip(&numeric) {
        out += &format!("<th{}>{}</th>", if *num { " class=\"num\"" } else { "" }, esc(h.trim_start_matches('#')));
    }
    out += "</tr></thead><tbody>";
    for row in rows {
        out += "<tr>";
        for (cell, num) in row.iter().zip(numeric.iter().chain(std::iter::repeat(&false))) {
            let class = if *num { " class=\"num\"" } else if cell.0.starts_with("<time") { " class=\"time\"" } else { "" };
            out += &format!("<td{class}>{}</td>", cell.0);
        }
        out += "</tr>";
    }
    out += "</tbody></table>";
    Html::trusted(out)
}

/// How a phase or state looks: green when done, amber when partly, red when failed.
pub fn tone(phase: &str) -> &'static str {
    match phase {
        "Completed" | "Available" | "Enabled" | "Active" => "ok",
        "PartiallyFailed" | "Paused" | "Deleting" => "warn",
        "Failed" | "FailedValidation" | "Unavailable" | "Quarantined" | "Canceled" => "bad",
        "InProgress" | "WaitingForVolumes" | "Finalizing" | "Queued" | "New" => "run",
        _ => "none",
    }
}

pub fn badge(phase: &str) -> Html {
    Html::trusted(format!("<span class=\"badge {}\">{}</span>", tone(phase), esc(phase)))
}

pub fn backup_link(name: &str) -> Html {
    // Object names are DNS subdomains, but a synced name is not trusted to be one.
    Html::trusted(format!("<a href=\"/backups/{}\">{}</a>", esc(&percent_encode(name)), esc(name)))
}

fn percent_encode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            b => format!("%{b:02X}"),
        })
        .collect()
}

pub fn time(t: Option<&Time>) -> Html {
    match t {
        Some(Time(ts)) => Html::trusted(format!(
            "<time datetime=\"{}\">{}</time>",
            esc(&ts.to_string()),
            ts.strftime("%Y-%m-%d %H:%M:%S")
        )),
        None => Html::trusted("<span class=\"muted\">–</span>".into()),
    }
}

/// `850ms`, `1.5s`, `42s`, `3m 05s`, `2h 10m`.
pub fn duration(seconds: f64) -> String {
    let s = seconds.round() as u64;
    match () {
        _ if seconds < 1.0 => format!("{}ms", (seconds * 1000.0).round()),
        _ if seconds < 10.0 => format!("{seconds:.1}s"),
        _ if s < 60 => format!("{s}s"),
        _ if s < 3600 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m", s / 3600, s % 3600 / 60),
    }
}

pub fn optional(text: Option<String>) -> Html {
    text.map_or_else(|| Html::trusted("<span class=\"muted\">–</span>".into()), Html::from)
}

pub fn count(n: u32, tone_if_any: &str) -> Html {
    if n == 0 {
        return Html::trusted("<span class=\"muted\">0</span>".into());
    }
    Html::trusted(format!("<span class=\"{tone_if_any}\">{n}</span>"))
}

pub fn progress(done: u32, total: u32) -> Html {
    if total == 0 && done == 0 {
        return Html::trusted("<span class=\"muted\">–</span>".into());
    }
    Html::from(format!("{done}/{total}"))
}

pub fn restore_rows(rows: &[RestoreRow]) -> Vec<Vec<Html>> {
    rows.iter()
        .map(|r| {
            let from = match (&r.backup, &r.schedule) {
                (Some(b), _) => backup_link(b),
                (None, Some(s)) => Html::from(format!("latest of schedule {s}")),
                (None, None) => optional(None),
            };
            vec![
                Html::from(r.name.as_str()),
                from,
                badge(&r.phase),
                progress(r.items_restored, r.total_items),
                count(r.warnings, "warn"),
                count(r.errors, "bad"),
                time(r.started.as_ref()),
                optional(r.duration_seconds.map(duration)),
            ]
        })
        .collect()
}

pub const RESTORE_HEADERS: [&str; 8] = ["Name", "Backup", "Phase", "#Items", "#Warnings", "#Errors", "Started", "#Duration"];

pub fn short_digest(d: &str) -> String {
    match d.split_once(':') {
        Some((algo, hex)) => format!("{algo}:{}", &hex[..hex.len().min(12)]),
        None => d.to_string(),
    }
}

pub fn list(items: &[String], fallback: &str) -> Html {
    if items.is_empty() {
        return Html::trusted(format!("<span class=\"muted\">{}</span>", esc(fallback)));
    }
    Html::from(items.join(", "))
}

pub fn key_values(pairs: Vec<(&str, Html)>) -> Html {
    let inner: String = pairs.into_iter().map(|(k, v)| format!("<dt>{}</dt><dd>{}</dd>", esc(k), v.0)).collect();
    Html::trusted(format!("<dl class=\"kv\">{inner}</dl>"))
}

pub fn unavailable(why: &str) -> Html {
    Html::trusted(format!("<p class=\"muted\">Not available: {}</p>", esc(why)))
}

/// A page that says what is wrong and what to do.
pub fn problem(title: &str, namespace: &str, message: &str) -> String {
    let body = format!("<h2>{}</h2><p>{}</p><p><a href=\"/\">Overview</a></p>", esc(title), esc(message));
    page(title, namespace, &Html::trusted(body))
}
