//! Small line plots as inline SVG, drawn on the server: no script, no external asset, so the
//! page works behind `kubectl port-forward` and under a Content-Security-Policy without scripts.

use super::html::{esc, Html};

/// One point: when (Unix seconds), how much, and what to say on hover.
pub struct Point {
    pub at: f64,
    pub value: f64,
    pub label: String,
    /// `ok`, `warn` or `bad`: the point's colour.
    pub tone: &'static str,
}

const WIDTH: f64 = 560.0;
const HEIGHT: f64 = 190.0;
const LEFT: f64 = 64.0;
const RIGHT: f64 = 16.0;
const TOP: f64 = 12.0;
const BOTTOM: f64 = 28.0;

/// How the y axis is rounded: to 1, 2, 5 times a power of ten, or of ten within a power of
/// 1024 (bytes: 250 KiB steps rather than 244.1 KiB).
#[derive(Clone, Copy)]
pub enum Scale {
    Decimal,
    Binary,
}

/// A plot of `points` over time, its y axis labelled with `format`; a note when there are none.
pub fn over_time(title: &str, points: &[Point], scale: Scale, format: impl Fn(f64) -> String) -> Html {
    let mut svg = format!(
        r#"<svg class="plot" role="img" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" xmlns="http://www.w3.org/2000/svg"><title>{}</title>"#,
        esc(title)
    );
    let (plot_w, plot_h) = (WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM);
    if points.is_empty() {
        svg += &format!(
            r#"<rect x="{LEFT}" y="{TOP}" width="{plot_w}" height="{plot_h}" class="frame"/><text x="{}" y="{}" class="empty" text-anchor="middle">no finished backups yet</text></svg>"#,
            LEFT + plot_w / 2.0,
            TOP + plot_h / 2.0
        );
        return Html::trusted(svg);
    }
    let (t0, t1) = points.iter().fold((f64::MAX, f64::MIN), |(lo, hi), p| (lo.min(p.at), hi.max(p.at)));
    let max = points.iter().map(|p| p.value).fold(0.0, f64::max);
    let top = match scale {
        Scale::Decimal => nice_ceiling(max),
        Scale::Binary => {
            let unit = 1024f64.powf((max.max(1.0).log2() / 10.0).floor());
            nice_ceiling(max / unit) * unit
        }
    };
    let x = |t: f64| if t1 > t0 { LEFT + (t - t0) / (t1 - t0) * plot_w } else { LEFT + plot_w / 2.0 };
    let y = |v: f64| TOP + plot_h - v / top * plot_h;
    for i in 0..=4 {
        let v = top * f64::from(i) / 4.0;
        svg += &format!(
            r#"<line x1="{LEFT}" x2="{}" y1="{y:.1}" y2="{y:.1}" class="grid"/><text x="{}" y="{:.1}" class="axis" text-anchor="end">{}</text>"#,
            WIDTH - RIGHT,
            LEFT - 6.0,
            y(v) + 4.0,
            esc(&format(v)),
            y = y(v)
        );
    }
    // Seconds when the backups span less than a day, the day when they span more.
    let pattern = if t1 - t0 < 86_400.0 { "%H:%M:%S" } else { "%m-%d %H:%M" };
    let date = |t: f64| jiff::Timestamp::from_second(t as i64).map(|ts| ts.strftime(pattern).to_string()).unwrap_or_default();
    svg += &format!(
        r#"<text x="{LEFT}" y="{}" class="axis">{}</text><text x="{}" y="{}" class="axis" text-anchor="end">{}</text>"#,
        HEIGHT - 8.0,
        esc(&date(t0)),
        WIDTH - RIGHT,
        HEIGHT - 8.0,
        esc(&date(t1))
    );
    let mut sorted: Vec<&Point> = points.iter().collect();
    sorted.sort_by(|a, b| a.at.total_cmp(&b.at));
    let line: Vec<String> = sorted.iter().map(|p| format!("{:.1},{:.1}", x(p.at), y(p.value))).collect();
    svg += &format!(r#"<polyline points="{}" class="line"/>"#, line.join(" "));
    for p in sorted {
        svg += &format!(
            r#"<circle cx="{:.1}" cy="{:.1}" r="3.5" class="dot {}"><title>{}</title></circle>"#,
            x(p.at),
            y(p.value),
            p.tone,
            esc(&format!("{}: {}", p.label, format(p.value)))
        );
    }
    svg += "</svg>";
    Html::trusted(svg)
}

/// The axis top: the largest value rounded up to 1, 2 or 5 times a power of ten.
fn nice_ceiling(max: f64) -> f64 {
    if max <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(max.log10().floor());
    [1.0, 2.0, 5.0, 10.0].iter().map(|m| m * magnitude).find(|c| *c >= max).unwrap_or(10.0 * magnitude)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axis_tops_are_round() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(17.0), 20.0);
        assert_eq!(nice_ceiling(100.0), 100.0);
    }

    #[test]
    fn points_become_dots_on_a_line_with_escaped_titles() {
        let points = [
            Point { at: 1_700_000_000.0, value: 2.0, label: "a".into(), tone: "ok" },
            Point { at: 1_700_000_600.0, value: 8.0, label: "<b>".into(), tone: "bad" },
        ];
        let svg = over_time("Duration", &points, Scale::Decimal, |v| format!("{v}s")).0;
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"), "{svg}");
        assert_eq!(svg.matches("<circle").count(), 2, "{svg}");
        assert!(svg.contains("<polyline"), "{svg}");
        assert!(svg.contains("&lt;b&gt;: 8s") && !svg.contains("<b>"), "{svg}");
        let empty = over_time("Duration", &[], Scale::Decimal, |v| format!("{v}")).0;
        let bytes = [Point { at: 0.0, value: 768.0 * 1024.0, label: "b".into(), tone: "ok" }];
        let svg = over_time("Size", &bytes, Scale::Binary, |v| format!("{}K", v / 1024.0)).0;
        assert!(svg.contains(">1000K<") && svg.contains(">250K<"), "steps of whole KiB: {svg}");
        assert!(empty.contains("no finished backups yet"), "{empty}");
    }
}
