//! The run as a picture: the 256 buckets stacked by owner over time (one band per engine,
//! so a join, a failover and a refused engine read at a glance), the steps marked, drawn
//! by plotters' SVG backend.

use std::path::Path;

use anyhow::{anyhow, Result};
use plotters::prelude::*;

use super::view::COLOURS;

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("{e}")
}

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
    let root = SVGBackend::new(path, (1100, 500)).into_drawing_area();
    root.fill(&WHITE).map_err(err)?;
    let (left, right) = root.split_horizontally(900);
    let mut chart = ChartBuilder::on(&left)
        .caption(
            "WCCP lab: the 256 buckets by engine (stacked)",
            ("sans-serif", 22),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d(0f64..end, 0u64..285u64)
        .map_err(err)?;
    chart
        .configure_mesh()
        .x_desc("seconds since start")
        .y_desc("buckets")
        .draw()
        .map_err(err)?;
    // Stacked: engine i's band lies between the sums of engines before it and through it.
    // Drawn from the top band down, each area filling to 0 over the ones above it.
    let stacked = |i: usize| -> Vec<(f64, u64)> {
        history
            .iter()
            .map(|(t, per)| (*t, per.iter().take(i + 1).sum()))
            .collect()
    };
    for i in (0..names.len()).rev() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let colour = RGBColor(r, g, b);
        // Opaque and lighter, so that the band drawn over another does not mix with it.
        let light = |c: u8| c + ((255 - c) as f64 * 0.4) as u8;
        let fill = RGBColor(light(r), light(g), light(b));
        chart
            .draw_series(
                AreaSeries::new(stacked(i), 0, fill.filled()).border_style(colour.stroke_width(2)),
            )
            .map_err(err)?;
    }
    for (t, name) in marks {
        chart
            .draw_series(LineSeries::new(
                vec![(*t, 0u64), (*t, 268u64)],
                BLACK.mix(0.5).stroke_width(1),
            ))
            .map_err(err)?;
        chart
            .draw_series(std::iter::once(Text::new(
                name.clone(),
                (*t, 282u64),
                ("sans-serif", 13).into_font().color(&BLACK),
            )))
            .map_err(err)?;
    }
    // The legend, beside the chart.
    right
        .draw(&Text::new(
            "engines",
            (10, 60),
            ("sans-serif", 16).into_font().color(&BLACK),
        ))
        .map_err(err)?;
    for (i, name) in names.iter().enumerate() {
        let (r, g, b) = COLOURS[i % COLOURS.len()];
        let y = 90 + 28 * i as i32;
        right
            .draw(&Rectangle::new(
                [(10, y), (28, y + 16)],
                RGBColor(r, g, b).mix(0.8).filled(),
            ))
            .map_err(err)?;
        right
            .draw(&Text::new(
                name.clone(),
                (36, y + 2),
                ("sans-serif", 14).into_font().color(&BLACK),
            ))
            .map_err(err)?;
    }
    root.present().map_err(err)?;
    Ok(())
}
