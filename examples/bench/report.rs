//! Samples, medians, the Markdown table, results.json and the SVG chart.

use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Every sample, by variant key, one per measured repetition (in order, so
/// samples of different variants from the same repetition can be paired).
#[derive(Default)]
pub struct Samples {
    values: BTreeMap<String, Vec<f64>>,
}

impl Samples {
    pub fn push(&mut self, key: &str, value: f64) {
        self.values.entry(key.to_string()).or_default().push(value);
    }

    pub fn get(&self, key: &str) -> Option<&[f64]> {
        self.values.get(key).map(Vec::as_slice).filter(|v| !v.is_empty())
    }

    pub fn median(&self, key: &str) -> Option<f64> {
        self.get(key).map(median)
    }

    /// Median over repetitions of `f(a_r, b_r)`: a ratio measured within
    /// one repetition, so slow drift of the machine cancels out.
    pub fn paired(&self, a: &str, b: &str, f: impl Fn(f64, f64) -> f64) -> Option<f64> {
        let (a, b) = (self.get(a)?, self.get(b)?);
        let ratios: Vec<f64> = a.iter().zip(b).map(|(&x, &y)| f(x, y)).collect();
        (!ratios.is_empty()).then(|| median(&ratios))
    }

    pub fn to_json(&self) -> serde_json::Value {
        serde_json::Value::Object(
            self.values
                .iter()
                .map(|(k, v)| (k.clone(), serde_json::json!(v)))
                .collect(),
        )
    }
}

pub fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// One row of the table.
pub struct Row {
    pub key: String,
    pub label: String,
    pub unit: &'static str,
    /// Key of the floor variant this one is compared with, if any.
    pub versus: Option<String>,
}

pub fn row(
    key: impl Into<String>,
    label: impl Into<String>,
    unit: &'static str,
    versus: Option<String>,
) -> Row {
    Row {
        key: key.into(),
        label: label.into(),
        unit,
        versus,
    }
}

pub fn fmt_value(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        group_thousands(v.round() as i64)
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Three significant digits, so that 0.0071 does not print as 0.01.
pub fn fmt_ratio(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = (2 - v.abs().log10().floor() as i32).max(0) as usize;
    format!("{v:.digits$}")
}

fn group_thousands(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 { format!("-{out}") } else { out }
}

/// The Markdown table of medians, with the spread over repetitions and,
/// for our rows, the ratio to the floor's median.
pub fn table(samples: &Samples, rows: &[Row]) -> String {
    let mut out = String::new();
    out.push_str("| variant | median | unit | min – max | vs floor |\n|---|---:|---|---:|---:|\n");
    for r in rows {
        let Some(values) = samples.get(&r.key) else {
            continue;
        };
        let med = median(values);
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let versus = r
            .versus
            .as_deref()
            .and_then(|k| samples.median(k))
            .map(|f| format!("{}×", fmt_ratio(med / f)))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} – {} | {} |",
            r.label,
            fmt_value(med),
            r.unit,
            fmt_value(min),
            fmt_value(max),
            versus
        );
    }
    out
}

/// A series of the chart: requests/s at each number in flight (None where
/// not measured).
pub struct Series {
    pub name: String,
    pub color: &'static str,
    pub points: Vec<Option<f64>>,
}

/// requests/s against requests in flight, log-log, hand-written SVG.
pub fn svg(in_flight: &[usize], series: &[Series], subtitle: &str) -> String {
    let (w, h) = (760.0_f64, 470.0_f64);
    let (left, right, top, bottom) = (90.0, 220.0, 60.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let xs: Vec<f64> = in_flight.iter().map(|&n| (n as f64).log10()).collect();
    let (x0, x1) = (xs[0], xs[xs.len() - 1].max(xs[0] + 1.0));
    let ys: Vec<f64> = series
        .iter()
        .flat_map(|s| s.points.iter().flatten().copied())
        .collect();
    let ymin = ys.iter().copied().fold(f64::INFINITY, f64::min).max(1.0);
    let ymax = ys.iter().copied().fold(0.0, f64::max).max(10.0);
    let (y0, y1) = (
        ymin.log10().floor(),
        ymax.log10().ceil().max(ymin.log10().floor() + 1.0),
    );
    let px = |x: f64| left + (x - x0) / (x1 - x0) * pw;
    let py = |y: f64| top + ph - (y.log10() - y0) / (y1 - y0) * ph;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(s, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
    let _ = writeln!(
        s,
        r#"<text x="{}" y="24" font-size="15" font-weight="bold">Requests/s against requests in flight (echo, small payloads)</text>"#,
        left
    );
    let _ = writeln!(
        s,
        r##"<text x="{left}" y="42" fill="#555">{}</text>"##,
        xml_escape(subtitle)
    );
    // Horizontal grid: every power of ten, with 2 and 5 as faint lines.
    let mut e = y0;
    while e <= y1 {
        let y = py(10f64.powf(e));
        let _ = writeln!(
            s,
            r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ccc"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left + pw,
            left - 8.0,
            y + 4.0,
            group_thousands(10f64.powf(e).round() as i64)
        );
        if e < y1 {
            for m in [2.0, 5.0] {
                let y = py(m * 10f64.powf(e));
                let _ = writeln!(
                    s,
                    r##"<line x1="{left}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#eee"/>"##,
                    left + pw
                );
            }
        }
        e += 1.0;
    }
    for (&n, &x) in in_flight.iter().zip(&xs) {
        let x = px(x);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{top}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{}</text>"##,
            top + ph,
            top + ph + 18.0,
            group_thousands(n as i64)
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#333"/>"##
    );
    let _ = writeln!(
        s,
        r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">requests in flight (log scale; 1 = sequential round trips)</text>"#,
        left + pw / 2.0,
        h - 18.0
    );
    let _ = writeln!(
        s,
        r#"<text transform="translate(22 {:.1}) rotate(-90)" text-anchor="middle">requests/s (log scale)</text>"#,
        top + ph / 2.0
    );
    for (i, ser) in series.iter().enumerate() {
        let pts: Vec<(f64, f64)> = ser
            .points
            .iter()
            .zip(&xs)
            .filter_map(|(p, &x)| p.map(|y| (px(x), py(y))))
            .collect();
        let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
        let _ = writeln!(
            s,
            r#"<polyline points="{}" fill="none" stroke="{}" stroke-width="2.5"/>"#,
            path.join(" "),
            ser.color
        );
        for (x, y) in &pts {
            let _ = writeln!(
                s,
                r#"<circle cx="{x:.1}" cy="{y:.1}" r="4" fill="{}"/>"#,
                ser.color
            );
        }
        let ly = top + 10.0 + i as f64 * 22.0;
        let lx = left + pw + 16.0;
        let _ = writeln!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{:.1}" y2="{ly}" stroke="{}" stroke-width="3"/><text x="{:.1}" y="{:.1}">{}</text>"#,
            lx + 22.0,
            ser.color,
            lx + 28.0,
            ly + 4.0,
            xml_escape(&ser.name)
        );
    }
    s.push_str("</svg>\n");
    s
}

fn xml_escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
