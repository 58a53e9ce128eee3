//! The sweep's SVG plot: success (and, with the probe, measured loss) per
//! level, the first failing level marked.
use std::fmt::Write as _;

use super::{LevelResult, Report};
use crate::svg;

/// An SVG plot of success rate (left axis) and median duration (right axis)
/// against the first swept axis; one pair of lines per value of a second
/// swept axis.
pub fn plot_svg(r: &Report) -> String {
    let (w, h) = (760.0, 420.0);
    let (left, right, top, bottom) = (70.0, 80.0, 40.0, 60.0);
    let (pw, ph) = (w - left - right, h - top - bottom);
    let swept: Vec<usize> = r
        .axes
        .iter()
        .enumerate()
        .filter(|(_, a)| a.values.len() > 1)
        .map(|(i, _)| i)
        .collect();
    let xi = swept.first().copied().unwrap_or(0);
    let series_axis = swept.get(1).copied();
    let (xmin, xmax) = r.axes[xi]
        .values
        .iter()
        .fold((f64::MAX, f64::MIN), |(a, b), v| (a.min(*v), b.max(*v)));
    let xspan = if xmax > xmin { xmax - xmin } else { 1.0 };
    let dmax = r
        .levels
        .iter()
        .filter_map(|l| l.median_duration_s)
        .fold(0.0f64, f64::max)
        .max(1e-3)
        * 1.1;
    let px = |x: f64| {
        let t = (x - xmin) / xspan;
        // Rates sweep downwards: draw them from high to low, left to right.
        let t = if r.axes[xi].values.first() > r.axes[xi].values.last() {
            1.0 - t
        } else {
            t
        };
        left + t * pw
    };
    let py_rate = |s: f64| top + (1.0 - s) * ph;
    let py_dur = |d: f64| top + (1.0 - d / dmax) * ph;
    let mut doc = svg::Svg::new(w, h);
    let mut s = String::new();
    let title = format!(
        "impair sweep on {}: success rate and median duration vs {}",
        r.interface,
        &r.axes[xi].knob.flag()[2..]
    );
    let _ = writeln!(
        s,
        r#"<text x="{}" y="22" text-anchor="middle" font-size="14">{}</text>"#,
        w / 2.0,
        xml(&title)
    );
    // Axes and grid.
    let _ = writeln!(
        s,
        r##"<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#444"/>"##
    );
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let y = py_rate(f);
        let _ = writeln!(
            s,
            r##"<line x1="{left}" x2="{}" y1="{y}" y2="{y}" stroke="#ddd"/>"##,
            left + pw
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="end">{}%</text>"#,
            left - 6.0,
            y + 4.0,
            (f * 100.0) as u32
        );
        let _ = writeln!(
            s,
            r#"<text x="{}" y="{}" text-anchor="start">{:.2}s</text>"#,
            left + pw + 6.0,
            y + 4.0,
            dmax * f
        );
    }
    let vals = &r.axes[xi].values;
    let every = vals.len().div_ceil(10).max(1);
    for (k, v) in vals.iter().enumerate() {
        if k % every != 0 && k != vals.len() - 1 {
            continue;
        }
        let x = px(*v);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{}" y2="{}" stroke="#444"/>"##,
            top + ph,
            top + ph + 4.0
        );
        let _ = writeln!(
            s,
            r#"<text x="{x}" y="{}" text-anchor="middle">{}</text>"#,
            top + ph + 18.0,
            xml(&r.axes[xi].knob.format(*v))
        );
    }
    let _ = writeln!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle">{}</text>"#,
        left + pw / 2.0,
        h - 18.0,
        xml(&r.axes[xi].knob.flag()[2..])
    );
    let _ = writeln!(
        s,
        r##"<text x="18" y="{}" transform="rotate(-90 18 {})" text-anchor="middle" fill="#1f6feb">success rate</text>"##,
        top + ph / 2.0,
        top + ph / 2.0
    );
    let _ = writeln!(
        s,
        r##"<text x="{}" y="{}" transform="rotate(90 {} {})" text-anchor="middle" fill="#d9480f">median duration</text>"##,
        w - 14.0,
        top + ph / 2.0,
        w - 14.0,
        top + ph / 2.0
    );
    // First failing level.
    if let Some(f) = r.levels.iter().find(|l| !l.passed) {
        let x = px(f.values[xi]);
        let _ = writeln!(
            s,
            r##"<line x1="{x}" x2="{x}" y1="{top}" y2="{}" stroke="#c92a2a" stroke-dasharray="4 3"/>"##,
            top + ph
        );
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" fill="#c92a2a">first failing: {}</text>"##,
            x + 4.0,
            top + 14.0,
            xml(&f.label)
        );
    }
    // Series.
    let keys: Vec<Option<f64>> = match series_axis {
        None => vec![None],
        Some(si) => r.axes[si].values.iter().map(|v| Some(*v)).collect(),
    };
    let dashes = ["", "6 3", "2 3", "8 3 2 3"];
    for (k, key) in keys.iter().enumerate() {
        let pts: Vec<&LevelResult> = r
            .levels
            .iter()
            .filter(|l| match (key, series_axis) {
                (Some(v), Some(si)) => (l.values[si] - v).abs() < 1e-12,
                _ => true,
            })
            .collect();
        if pts.is_empty() {
            continue;
        }
        let dash = dashes[k % dashes.len()];
        let rate: Vec<String> = pts
            .iter()
            .map(|l| format!("{:.1},{:.1}", px(l.values[xi]), py_rate(l.success_rate)))
            .collect();
        let _ = writeln!(
            s,
            r##"<polyline points="{}" fill="none" stroke="#1f6feb" stroke-width="2" stroke-dasharray="{dash}"/>"##,
            rate.join(" ")
        );
        for l in &pts {
            let _ = writeln!(
                s,
                r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="{}"/>"##,
                px(l.values[xi]),
                py_rate(l.success_rate),
                if l.passed { "#1f6feb" } else { "#c92a2a" }
            );
        }
        let dur: Vec<String> = pts
            .iter()
            .filter_map(|l| {
                l.median_duration_s
                    .map(|d| format!("{:.1},{:.1}", px(l.values[xi]), py_dur(d)))
            })
            .collect();
        if !dur.is_empty() {
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="#d9480f" stroke-width="2" stroke-dasharray="{dash}"/>"##,
                dur.join(" ")
            );
        }
        if let (Some(v), Some(si)) = (key, series_axis) {
            let _ = writeln!(
                s,
                r#"<text x="{}" y="{}" font-size="11">{} {} {}</text>"#,
                left + 8.0,
                top + 16.0 + 14.0 * k as f64,
                if dash.is_empty() { "solid" } else { "dashed" },
                &r.axes[si].knob.flag()[2..],
                xml(&r.axes[si].knob.format(*v))
            );
        }
    }
    doc.raw(&s);
    doc.finish()
}

fn xml(t: &str) -> String {
    svg::escape(t)
}
