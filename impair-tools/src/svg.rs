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

#[cfg(test)]
mod tests {
    use super::*;

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
}
