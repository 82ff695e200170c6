//! The run as a picture: buckets held by each engine over time, one line per engine, with
//! the steps marked, drawn by plotters' SVG backend.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::view::COLOURS;

/// Writes the chart of `history` ((seconds, buckets per engine)) to `path`; `names` are the
/// engines' labels and `marks` the steps' start times and names.
pub fn write(
    path: &Path,
    names: &[String],
    history: &[(f64, Vec<u64>)],
    marks: &[(f64, String)],
) -> Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let end = history.last().map_or(1.0, |h| h.0).max(1.0);
    let root = SVGBackend::new(path, (1000, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| anyhow!("{e}"))?;
    let mut chart = ChartBuilder::on(&root)
        .caption("WCCP lab: buckets per engine", ("sans-serif", 22))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end, 0u64..260u64)
        .map_err(|e| anyhow!("{e}"))?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("buckets")
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    for (t, name) in marks {
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (*t, 250u64),
                ("sans-serif", 12).into_font().color(&BLACK.mix(0.7)),
            )))
            .map_err(|e| anyhow!("{e}"))?;
    }
    for (i, name) in names.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = RGBColor(r, g, b);
        let points: Vec<(f64, u64)> = history
            .iter()
            .map(|(t, per)| (*t, per.get(i).copied().unwrap_or(0)))
            .collect();
        chart
            .draw_series(LineSeries::new(points, colour.stroke_width(2)))
            .map_err(|e| anyhow!("{e}"))?
            .label(name.clone())
            .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 15, y + 5)], colour.filled()));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::UpperRight)
        .draw()
        .map_err(|e| anyhow!("{e}"))?;
    root.present().map_err(|e| anyhow!("{e}"))?;
    Ok(())
}
