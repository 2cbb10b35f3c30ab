//! Tables and plots of one run: printed, and (unless `--quick`) written to
//! `BENCHMARKS.md` and `docs/bench-*.svg` at the repository's root.

use std::fmt::Write as _;
use std::path::PathBuf;

use plotters::prelude::*;

pub(crate) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted[sorted.len() / 2]
}

pub(crate) struct Table {
    title: String,
    headers: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(crate) fn new(title: &str, headers: &[&str]) -> Self {
        Table { title: title.to_string(), headers: headers.iter().map(|h| h.to_string()).collect(), rows: Vec::new() }
    }

    pub(crate) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn markdown(&self) -> String {
        let mut out =
            format!("### {}\n\n| {} |\n|{}\n", self.title, self.headers.join(" | "), "---|".repeat(self.headers.len()));
        for row in &self.rows {
            let _ = writeln!(out, "| {} |", row.join(" | "));
        }
        out
    }
}

/// One hit-ratio panel: a line per cache (and Che), over capacities.
type Series = Vec<Vec<(usize, f64)>>;

pub(crate) struct Report {
    quick: bool,
    sections: Vec<String>,
    /// (case, names, median ns/op per name)
    throughput: Vec<(usize, Vec<&'static str>, Vec<f64>)>,
    hit_ratio: Vec<(String, Vec<&'static str>, Series)>,
}

const CASES: [&str; 4] = ["mixed, 2 threads", "get-hit, 1 thread", "get-hit, 2 threads", "insert + evict"];

impl Report {
    pub(crate) fn new(quick: bool) -> Self {
        Report { quick, sections: Vec::new(), throughput: Vec::new(), hit_ratio: Vec::new() }
    }

    pub(crate) fn table(&mut self, table: Table) {
        let markdown = table.markdown();
        println!("{markdown}");
        self.sections.push(markdown);
    }

    pub(crate) fn note(&mut self, note: String) {
        println!("{note}\n");
        self.sections.push(format!("{note}\n"));
    }

    /// Throughput for the plot: case 0 mixed, 1 and 2 get-hit on that many
    /// threads, 3 insert.
    pub(crate) fn throughput(&mut self, case: usize, names: &[&'static str], ns: &[Vec<f64>]) {
        self.throughput.push((case, names.to_vec(), ns.iter().map(|n| median(n)).collect()));
    }

    /// A panel `title`: a line per name (bounds, whose names start with
    /// "Che" or "optimal", dashed; an empty series is left out).
    pub(crate) fn hit_ratio_series(&mut self, title: String, names: Vec<&'static str>, series: Series) {
        self.hit_ratio.push((title, names, series));
    }

    pub(crate) fn finish(self) {
        if self.quick {
            return;
        }
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        std::fs::create_dir_all(root.join("docs")).unwrap();
        self.plot_throughput(&root.join("docs/bench-throughput.svg"));
        self.plot_hit_ratio(&root.join("docs/bench-hit-ratio.svg"));
        let mut doc = String::from(HEADER);
        let _ = writeln!(doc, "Machine: {}; {}.\n", machine(), rustc());
        doc.push_str("![throughput against peers](docs/bench-throughput.svg)\n\n![hit ratio against capacity](docs/bench-hit-ratio.svg)\n\n");
        for section in &self.sections {
            doc.push_str(section);
            doc.push('\n');
        }
        // The sections other benches wrote, as they last wrote them.
        doc.push_str(&benches::sections(&std::fs::read_to_string(root.join("BENCHMARKS.md")).unwrap_or_default()));
        std::fs::write(root.join("BENCHMARKS.md"), doc).unwrap();
        println!("wrote BENCHMARKS.md and docs/bench-*.svg");
    }

    fn plot_throughput(&self, path: &std::path::Path) {
        let names = &self.throughput[0].1;
        let root = SVGBackend::new(path, (900, 420)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let top =
            self.throughput.iter().flat_map(|(_, _, ns)| ns.iter().map(|n| 1_000.0 / n)).fold(0.0, f64::max) * 1.15;
        let mut chart = ChartBuilder::on(&root)
            .caption("Throughput, millions of operations per second (higher is better)", ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(30)
            .y_label_area_size(45)
            .build_cartesian_2d(0.0..CASES.len() as f64, 0.0..top)
            .unwrap();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(CASES.len() * 2 + 1)
            .x_label_formatter(&|x| {
                let i = (x - 0.5).round();
                if (x - 0.5 - i).abs() < 0.01 && (0.0..CASES.len() as f64).contains(&i) {
                    CASES[i as usize].to_string()
                } else {
                    String::new()
                }
            })
            .y_desc("Mops/s")
            .draw()
            .unwrap();
        let width = 0.8 / names.len() as f64;
        for (c, name) in names.iter().enumerate() {
            let color = Palette99::pick(c).to_rgba();
            let bars = self.throughput.iter().map(|(case, _, ns)| {
                let x = *case as f64 + 0.1 + width * c as f64;
                Rectangle::new([(x, 0.0), (x + width * 0.9, 1_000.0 / ns[c])], color.filled())
            });
            chart
                .draw_series(bars)
                .unwrap()
                .label(*name)
                .legend(move |(x, y)| Rectangle::new([(x, y - 5), (x + 12, y + 5)], color.filled()));
        }
        chart.configure_series_labels().border_style(BLACK).background_style(WHITE.mix(0.8)).draw().unwrap();
        root.present().unwrap();
    }

    fn plot_hit_ratio(&self, path: &std::path::Path) {
        let root = SVGBackend::new(path, (1500, 900)).into_drawing_area();
        root.fill(&WHITE).unwrap();
        let (title, body) = root.split_vertically(30);
        title
            .titled(
                "Hit ratio against capacity (async-cache's Lru, Mutex<lru> and Che's approximation of LRU coincide; dashed grey: Belady's optimum)",
                ("sans-serif", 16),
            )
            .unwrap();
        let panels = body.split_evenly((2, self.hit_ratio.len().div_ceil(2)));
        for (panel, (title, names, series)) in panels.iter().zip(&self.hit_ratio) {
            let xs: Vec<usize> = series[0].iter().map(|(c, _)| *c).collect();
            let (lo, hi) = (*xs.first().unwrap() as f64, *xs.last().unwrap() as f64);
            let mut chart = ChartBuilder::on(panel)
                .caption(title, ("sans-serif", 14))
                .margin(10)
                .x_label_area_size(30)
                .y_label_area_size(40)
                .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)
                .unwrap();
            chart
                .configure_mesh()
                .x_labels(4)
                .x_label_formatter(&|x| format!("{}k", (*x / 1_000.0 * 10.0).round() / 10.0))
                .x_desc("capacity")
                .y_desc("hit ratio")
                .draw()
                .unwrap();
            for (i, (name, points)) in names.iter().zip(series).enumerate() {
                let line = points.iter().map(|(c, r)| (*c as f64, *r));
                if points.is_empty() {
                    continue;
                }
                if name.starts_with("Che") || name.starts_with("optimal") {
                    let color = if name.starts_with("Che") { BLACK } else { RGBColor(120, 120, 120) };
                    let style = ShapeStyle { color: color.to_rgba(), filled: false, stroke_width: 1 };
                    chart
                        .draw_series(DashedLineSeries::new(line, 6, 4, style))
                        .unwrap()
                        .label(*name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                } else {
                    let color = Palette99::pick(i).to_rgba();
                    let style = ShapeStyle { color, filled: false, stroke_width: if i < 2 { 4 } else { 2 } };
                    chart
                        .draw_series(LineSeries::new(line, style))
                        .unwrap()
                        .label(*name)
                        .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 16, y)], style));
                }
            }
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::LowerRight)
                .border_style(BLACK)
                .background_style(WHITE.mix(0.8))
                .draw()
                .unwrap();
        }
        root.present().unwrap();
    }
}

const HEADER: &str = "# Benchmarks

async-cache, under both policies (`Policy::Lru`, the default, and
`Policy::TinyLfu`), beside [quick_cache](https://crates.io/crates/quick_cache)
0.7, [moka](https://crates.io/crates/moka) 0.12 and a `Mutex<lru::LruCache>`,
on DESIGN.md's workloads (keys `key_of(i)`, a distinct value per key, fresh
caches), measured in one run of one process, on identical inputs,
interleaved: each round runs every contender once, and each figure is a
median over the rounds (\"async-cache speed ×\" is the median of per-round
ratios against async-cache with `Lru`, above 1 when it is faster; \"speed vs
quick_cache ×\" is each row's speed over quick_cache's, above 1 when the row
is faster). The timed rows run async-cache as this bench builds it, with
its `file`, `metrics` and `redis` features (a persistence feature adds a
recency stamp to each link: a default build does 5% fewer instructions an
insert). Memory is measured in child processes, one cache each, in both
builds. Hit
ratios come with Che's approximation of LRU (Zipf) and Belady's optimum
(every workload; it may decline to store a newcomer, so it bounds
admission policies too). This machine's absolute timings drift from run to
run; the ratios are the result.

Reproduce everything (tables and plots) with:

```sh
cargo bench -p benches --bench compare
```

";

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    format!("{cpu}, {cores} cores")
}

fn rustc() -> String {
    std::process::Command::new("rustc")
        .arg("--version")
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "rustc".into())
}
