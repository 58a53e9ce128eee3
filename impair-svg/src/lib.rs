//! The one SVG writer of the project: the sweep's plot, the benchmark
//! report's plots and the accuracy plots all draw with it. A plot is a
//! [`Svg`] document: a white page, then text, lines, polylines and
//! rectangles in page coordinates; [`Svg::finish`] closes it.
use std::fmt::Write as _;

/// An SVG document under construction.
#[derive(Debug)]
pub struct Svg {
    out: String,
}

/// Escapes text for SVG character data and attribute values.
pub fn escape(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

impl Svg {
    /// A `w` × `h` page with a white background, sans-serif 12 px text.
    pub fn new(w: f64, h: f64) -> Self {
        let mut out = String::new();
        let _ = writeln!(
            out,
            r#"<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" font-family="sans-serif" font-size="12">"#
        );
        let _ = writeln!(out, r#"<rect width="{w}" height="{h}" fill="white"/>"#);
        Svg { out }
    }

    /// Raw SVG elements (already escaped), for shapes the helpers lack.
    pub fn raw(&mut self, element: &str) -> &mut Self {
        self.out.push_str(element);
        if !element.ends_with('\n') {
            self.out.push('\n');
        }
        self
    }

    /// Text at (x, y); `anchor` is start, middle or end; `attrs` are extra
    /// attributes such as `font-size="14"` (already escaped).
    pub fn text(&mut self, x: f64, y: f64, anchor: &str, attrs: &str, text: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            r#"<text x="{x:.1}" y="{y:.1}" text-anchor="{anchor}" {attrs}>{}</text>"#,
            escape(text)
        );
        self
    }

    /// A straight line; `style` holds stroke attributes.
    pub fn line(&mut self, (x1, y1): (f64, f64), (x2, y2): (f64, f64), style: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            r#"<line x1="{x1:.1}" y1="{y1:.1}" x2="{x2:.1}" y2="{y2:.1}" {style}/>"#
        );
        self
    }

    /// A polyline through `points`; `style` holds stroke attributes.
    pub fn polyline(&mut self, points: &[(f64, f64)], style: &str) -> &mut Self {
        let pts: Vec<String> = points
            .iter()
            .map(|(x, y)| format!("{x:.1},{y:.1}"))
            .collect();
        let _ = writeln!(
            self.out,
            r#"<polyline fill="none" points="{}" {style}/>"#,
            pts.join(" ")
        );
        self
    }

    /// A rectangle; `style` holds fill and stroke attributes.
    pub fn rect(&mut self, x: f64, y: f64, w: f64, h: f64, style: &str) -> &mut Self {
        let _ = writeln!(
            self.out,
            r#"<rect x="{x:.1}" y="{y:.1}" width="{w:.1}" height="{h:.1}" {style}/>"#
        );
        self
    }

    /// The finished document.
    pub fn finish(mut self) -> String {
        self.out.push_str("</svg>\n");
        self.out
    }
}

/// One line of a [`Chart`].
#[derive(Debug, Clone)]
pub struct Series {
    pub name: String,
    /// (x, y) in data units, in drawing order.
    pub points: Vec<(f64, f64)>,
    /// An SVG color such as `#1f77b4`.
    pub color: &'static str,
    pub dashed: bool,
}

/// An XY line chart: axes with ticks, one polyline per series, a legend,
/// and an optional horizontal reference line (a configured value).
#[derive(Debug, Clone, Default)]
pub struct Chart {
    pub title: String,
    pub x_label: String,
    pub y_label: String,
    pub series: Vec<Series>,
    /// The y range; by default from the data (and the reference line).
    pub y_range: Option<(f64, f64)>,
    /// A horizontal reference line at y, with its label.
    pub reference: Option<(f64, String)>,
}

/// About five round tick values covering `lo..=hi`.
pub fn ticks(lo: f64, hi: f64) -> Vec<f64> {
    if hi <= lo || !lo.is_finite() || !hi.is_finite() {
        return vec![lo];
    }
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 2.5, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let first = (lo / step).ceil() * step;
    (0..)
        .map(|i| first + f64::from(i) * step)
        .take_while(|v| *v <= hi + step * 1e-9)
        .collect()
}

/// A tick value without needless digits.
fn tick_text(v: f64) -> String {
    let s = format!("{v:.3}");
    s.trim_end_matches('0').trim_end_matches('.').to_owned()
}

impl Chart {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let (w, h) = (640.0, 360.0);
        let (left, right, top, bottom) = (64.0, 150.0, 36.0, 48.0);
        let (pw, ph) = (w - left - right, h - top - bottom);
        let all = self.series.iter().flat_map(|s| s.points.iter());
        let (mut x0, mut x1, mut y0, mut y1) = (f64::MAX, f64::MIN, f64::MAX, f64::MIN);
        for &(x, y) in all {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
        if let Some((r, _)) = &self.reference {
            y0 = y0.min(*r);
            y1 = y1.max(*r);
        }
        if let Some((a, b)) = self.y_range {
            (y0, y1) = (a, b);
        }
        if x1 <= x0 {
            x1 = x0 + 1.0;
        }
        if y1 <= y0 {
            y1 = y0 + 1.0;
        }
        let px = |x: f64| left + (x - x0) / (x1 - x0) * pw;
        let py = |y: f64| top + (1.0 - (y - y0) / (y1 - y0)) * ph;
        let mut doc = Svg::new(w, h);
        doc.text(w / 2.0, 22.0, "middle", r#"font-size="14""#, &self.title);
        let axis = r##"stroke="#444" stroke-width="1""##;
        doc.line((left, top), (left, top + ph), axis).line(
            (left, top + ph),
            (left + pw, top + ph),
            axis,
        );
        let grid = r##"stroke="#ddd" stroke-width="1""##;
        for t in ticks(x0, x1) {
            doc.line((px(t), top), (px(t), top + ph), grid).text(
                px(t),
                top + ph + 16.0,
                "middle",
                "",
                &tick_text(t),
            );
        }
        for t in ticks(y0, y1) {
            doc.line((left, py(t)), (left + pw, py(t)), grid).text(
                left - 6.0,
                py(t) + 4.0,
                "end",
                "",
                &tick_text(t),
            );
        }
        doc.text(left + pw / 2.0, h - 8.0, "middle", "", &self.x_label);
        doc.text(
            14.0,
            top + ph / 2.0,
            "middle",
            &format!(r#"transform="rotate(-90 14 {})""#, top + ph / 2.0),
            &self.y_label,
        );
        if let Some((r, label)) = &self.reference {
            doc.line(
                (left, py(*r)),
                (left + pw, py(*r)),
                r##"stroke="#888" stroke-width="1" stroke-dasharray="2 3""##,
            );
            doc.text(
                left + pw + 6.0,
                py(*r) + 4.0,
                "start",
                r##"fill="#666""##,
                label,
            );
        }
        for (i, s) in self.series.iter().enumerate() {
            let pts: Vec<(f64, f64)> = s.points.iter().map(|&(x, y)| (px(x), py(y))).collect();
            let dash = if s.dashed {
                r#" stroke-dasharray="6 3""#
            } else {
                ""
            };
            doc.polyline(
                &pts,
                &format!(r#"stroke="{}" stroke-width="1.8"{dash}"#, s.color),
            );
            let ly = top + 10.0 + 18.0 * i as f64;
            doc.line(
                (left + pw + 8.0, ly),
                (left + pw + 30.0, ly),
                &format!(r#"stroke="{}" stroke-width="2"{dash}"#, s.color),
            )
            .text(left + pw + 34.0, ly + 4.0, "start", "", &s.name);
        }
        doc.finish()
    }
}

/// One series of a [`GroupedBars`] chart: a value (or none) per category.
#[derive(Debug, Clone)]
pub struct BarSeries {
    pub name: String,
    /// One entry per category; `None` draws no bar.
    pub values: Vec<Option<f64>>,
    /// An SVG color such as `#1f77b4`.
    pub color: &'static str,
}

/// A horizontal grouped bar chart: one group per category, one bar per
/// series in each group, each bar labelled with its value, and an optional
/// mark per category (a target) drawn as a red tick across the group.
#[derive(Debug, Clone, Default)]
pub struct GroupedBars {
    pub title: String,
    pub x_label: String,
    pub categories: Vec<String>,
    pub series: Vec<BarSeries>,
    /// One entry per category (or fewer): where its mark goes, if any.
    pub marks: Vec<Option<f64>>,
    /// The mark's legend entry, such as "target".
    pub mark_label: String,
}

impl GroupedBars {
    /// The chart as an SVG document.
    pub fn render(&self) -> String {
        let n = self.series.len().max(1) as f64;
        let (bar_h, gap) = (14.0, 10.0);
        let group_h = bar_h * n + gap;
        let (left, right, top) = (300.0, 70.0, 44.0 + 18.0 * n);
        let pw = 420.0;
        let w = left + pw + right;
        let h = top + group_h * self.categories.len() as f64 + 44.0;
        let vmax = self
            .series
            .iter()
            .flat_map(|s| s.values.iter().flatten())
            .chain(self.marks.iter().flatten())
            .fold(0.0f64, |a, &b| a.max(b));
        let vmax = if vmax > 0.0 { vmax * 1.05 } else { 1.0 };
        let px = |v: f64| left + v.max(0.0) / vmax * pw;
        let mut doc = Svg::new(w, h);
        doc.text(w / 2.0, 22.0, "middle", r#"font-size="14""#, &self.title);
        for (i, s) in self.series.iter().enumerate() {
            let ly = 36.0 + 18.0 * i as f64;
            doc.rect(
                left,
                ly - 10.0,
                18.0,
                12.0,
                &format!(r#"fill="{}""#, s.color),
            )
            .text(left + 24.0, ly, "start", "", &s.name);
        }
        if self.marks.iter().any(Option::is_some) {
            let ly = 36.0;
            doc.line(
                (left + 240.0, ly - 11.0),
                (left + 240.0, ly + 3.0),
                r##"stroke="#c92a2a" stroke-width="2""##,
            )
            .text(left + 246.0, ly, "start", "", &self.mark_label);
        }
        let bottom = top + group_h * self.categories.len() as f64;
        let grid = r##"stroke="#ddd" stroke-width="1""##;
        for t in ticks(0.0, vmax) {
            doc.line((px(t), top - 4.0), (px(t), bottom), grid).text(
                px(t),
                bottom + 16.0,
                "middle",
                "",
                &tick_text(t),
            );
        }
        doc.text(left + pw / 2.0, h - 8.0, "middle", "", &self.x_label);
        for (c, name) in self.categories.iter().enumerate() {
            let y0 = top + group_h * c as f64;
            doc.text(left - 8.0, y0 + bar_h * n / 2.0 + 4.0, "end", "", name);
            for (i, s) in self.series.iter().enumerate() {
                let Some(v) = s.values.get(c).copied().flatten() else {
                    continue;
                };
                let y = y0 + bar_h * i as f64;
                doc.rect(
                    left,
                    y,
                    px(v) - left,
                    bar_h - 2.0,
                    &format!(r#"fill="{}""#, s.color),
                )
                .text(
                    px(v) + 4.0,
                    y + bar_h - 4.0,
                    "start",
                    r#"font-size="10""#,
                    &tick_text((v * 10.0).round() / 10.0),
                );
            }
            if let Some(m) = self.marks.get(c).copied().flatten() {
                doc.line(
                    (px(m), y0 - 2.0),
                    (px(m), y0 + bar_h * n),
                    r##"stroke="#c92a2a" stroke-width="2""##,
                );
            }
        }
        doc.line(
            (left, top - 4.0),
            (left, bottom),
            r##"stroke="#444" stroke-width="1""##,
        );
        doc.finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_round_and_cover_the_range() {
        assert_eq!(
            ticks(0.0, 1.0),
            vec![0.0, 0.2, 0.4, 0.6000000000000001, 0.8, 1.0]
        );
        let t = ticks(95.0, 412.0);
        assert!(t.first().is_some_and(|v| *v >= 95.0) && t.last().is_some_and(|v| *v <= 412.0));
        assert!(t.len() >= 3 && t.len() <= 8, "{t:?}");
    }

    #[test]
    fn a_chart_has_a_line_per_series_and_a_legend() {
        let c = Chart {
            title: "delay".into(),
            x_label: "ms".into(),
            y_label: "CDF".into(),
            series: vec![
                Series {
                    name: "impair".into(),
                    points: vec![(1.0, 0.0), (2.0, 1.0)],
                    color: "#1f77b4",
                    dashed: false,
                },
                Series {
                    name: "netem".into(),
                    points: vec![(1.5, 0.0), (2.5, 1.0)],
                    color: "#d62728",
                    dashed: true,
                },
            ],
            y_range: Some((0.0, 1.0)),
            reference: Some((0.5, "median".into())),
        };
        let svg = c.render();
        assert_eq!(svg.matches("<polyline").count(), 2);
        assert!(svg.contains(">impair<") && svg.contains(">netem<") && svg.contains(">median<"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    #[test]
    fn a_document_is_well_formed_and_escapes_text() {
        let mut s = Svg::new(100.0, 50.0);
        s.text(10.0, 20.0, "start", "", "a < b & c")
            .line((0.0, 0.0), (1.0, 1.0), r#"stroke="black""#)
            .polyline(&[(0.0, 0.0), (2.0, 3.0)], r#"stroke="red""#)
            .rect(1.0, 1.0, 2.0, 2.0, r#"fill="blue""#);
        let doc = s.finish();
        assert!(doc.starts_with("<svg") && doc.trim_end().ends_with("</svg>"));
        assert!(doc.contains("a &lt; b &amp; c"));
        assert!(doc.contains(r#"points="0.0,0.0 2.0,3.0""#));
    }

    #[test]
    fn grouped_bars_draw_a_bar_per_value_and_the_marks() {
        let c = GroupedBars {
            title: "ns per packet".into(),
            x_label: "ns".into(),
            categories: vec!["unmatched".into(), "floor".into()],
            series: vec![
                BarSeries {
                    name: "before".into(),
                    values: vec![Some(52.0), None],
                    color: "#999999",
                },
                BarSeries {
                    name: "after".into(),
                    values: vec![Some(55.0), Some(39.0)],
                    color: "#1f6feb",
                },
            ],
            marks: vec![Some(50.0)],
            mark_label: "target".into(),
        };
        let svg = c.render();
        // Two legend swatches, three bars and the white page.
        assert_eq!(svg.matches("<rect").count(), 1 + 2 + 3);
        assert_eq!(svg.matches("#c92a2a").count(), 2, "one mark and its legend");
        assert!(svg.contains(">52<") && svg.contains(">55<") && svg.contains(">39<"));
        assert!(svg.contains(">before<") && svg.contains(">target<"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }
}
