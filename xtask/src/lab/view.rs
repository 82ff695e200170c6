//! How the lab shows itself: a terminal view that refreshes (ratatui on crossterm) when run
//! interactively, plain narrated lines otherwise (CI, pipes, `--non-interactive`).
//!
//! The view only reads the shared [`State`]; the steps and the monitor write it. In the
//! terminal view, `q`, Esc or Ctrl-C ask the lab to stop (raw mode turns Ctrl-C into a
//! key, not a signal), and the lab then tears everything down as on any other error.

use std::io::{Stdout, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::crossterm::terminal::{
    disable_raw_mode, enable_raw_mode, EnterAlternateScreen, LeaveAlternateScreen,
};
use ratatui::crossterm::ExecutableCommand;
use ratatui::layout::{Constraint, Direction, Layout};
use ratatui::prelude::CrosstermBackend;
use ratatui::style::{Color, Modifier, Style};
use ratatui::text::{Line, Span};
use ratatui::widgets::{Block, Borders, Cell, Paragraph, Row, Table};
use ratatui::{Frame, Terminal};

use super::monitor::State;

/// Colours of engines 0, 1, ... in the bucket map (and the SVG).
pub const COLOURS: [(u8, u8, u8); 6] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
];

/// Narrates: into the shared state (the terminal view shows it) and, in plain mode, as a
/// line on stdout.
#[derive(Clone)]
pub struct Narrator {
    state: Arc<Mutex<State>>,
    plain: bool,
    stderr: bool,
    t0: Instant,
}

impl Narrator {
    /// A narrator writing to `state`, and when `plain` to stdout (to stderr with `stderr`,
    /// which keeps stdout for the JSON summary).
    pub fn new(state: Arc<Mutex<State>>, plain: bool, stderr: bool, t0: Instant) -> Narrator {
        Narrator {
            state,
            plain,
            stderr,
            t0,
        }
    }

    /// Says `msg`.
    pub fn say(&self, msg: impl Into<String>) {
        let msg = msg.into();
        let t = self.t0.elapsed().as_secs_f64();
        // Written, not printed: a closed terminal must not panic the lab before teardown.
        if self.plain && self.stderr {
            let _ = writeln!(std::io::stderr(), "[{t:6.1}s] {msg}");
        } else if self.plain {
            let _ = writeln!(std::io::stdout(), "[{t:6.1}s] {msg}");
        }
        self.state.lock().unwrap().log.push((t, msg));
    }

    /// Starts step `name`.
    pub fn step(&self, name: &str, msg: impl Into<String>) {
        self.state.lock().unwrap().step = name.to_string();
        self.say(format!("== {name}: {}", msg.into()));
    }
}

/// The terminal view's thread.
pub struct Tui {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

type Term = Terminal<CrosstermBackend<Stdout>>;

fn restore() {
    let _ = disable_raw_mode();
    let _ = std::io::stdout().execute(LeaveAlternateScreen);
}

impl Tui {
    /// Takes over the terminal and redraws every 200 ms until stopped; sets `abort` when
    /// the user asks to quit.
    pub fn start(state: Arc<Mutex<State>>, abort: Arc<AtomicBool>) -> anyhow::Result<Tui> {
        enable_raw_mode()?;
        std::io::stdout().execute(EnterAlternateScreen)?;
        let mut term: Term = Terminal::new(CrosstermBackend::new(std::io::stdout()))?;
        term.clear()?;
        // A panic must not leave the terminal raw.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore();
            hook(info);
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let s2 = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s2.load(Ordering::Relaxed) {
                let drawn = {
                    let st = state.lock().unwrap();
                    term.draw(|f| draw(f, &st)).is_ok()
                };
                let polled = event::poll(Duration::from_millis(200));
                if !drawn || polled.is_err() {
                    // The terminal is gone (closed window, hang-up): nothing more to show,
                    // and the lab must not keep running unseen.
                    abort.store(true, Ordering::SeqCst);
                    break;
                }
                if polled.unwrap_or(false) {
                    if let Ok(Event::Key(k)) = event::read() {
                        let ctrl_c = k.code == KeyCode::Char('c')
                            && k.modifiers.contains(KeyModifiers::CONTROL);
                        if k.kind == KeyEventKind::Press
                            && (ctrl_c || matches!(k.code, KeyCode::Char('q') | KeyCode::Esc))
                        {
                            abort.store(true, Ordering::SeqCst);
                        }
                    }
                }
            }
            restore();
        });
        Ok(Tui {
            stop,
            thread: Some(thread),
        })
    }

    /// Gives the terminal back.
    pub fn stop(mut self) {
        self.finish();
    }

    /// Stops the thread, waiting at most a second: after a hang-up crossterm's event poll
    /// can spin on the dead terminal without returning, and teardown must not wait on it.
    fn finish(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let until = Instant::now() + Duration::from_secs(1);
            while !t.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
            if t.is_finished() {
                let _ = t.join();
            } else {
                restore();
            }
        }
    }
}

impl Drop for Tui {
    fn drop(&mut self) {
        self.finish();
    }
}

fn colour(i: usize) -> Color {
    let (r, g, b) = COLOURS[i % COLOURS.len()];
    Color::Rgb(r, g, b)
}

fn draw(f: &mut Frame, st: &State) {
    let rows = Layout::default()
        .direction(Direction::Vertical)
        .constraints([
            Constraint::Length(4),
            Constraint::Length(st.engines.len() as u16 + 3),
            Constraint::Length(10),
            Constraint::Min(5),
        ])
        .split(f.area());

    let head = Paragraph::new(vec![
        Line::from(vec![
            Span::styled(
                " WCCP lab ",
                Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED),
            ),
            Span::styled(
                format!("  step: {}", st.step),
                Style::default().add_modifier(Modifier::BOLD),
            ),
            Span::raw(format!(
                "   service group {}: {}   designated engine: {}",
                super::monitor::SERVICE,
                st.group_state,
                st.designated
            )),
        ]),
        Line::from(format!(
            " client: requests ok {} / failed {}   long-lived connections alive {} / broken {}   \
             router: security drops {}, packets failed open {}",
            st.requests_ok,
            st.requests_failed,
            st.long_alive,
            st.long_broken,
            st.security_drops,
            st.failed_open
        )),
    ])
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" q: quit (tears down) "),
    );
    f.render_widget(head, rows[0]);

    let header = Row::new(
        [
            "engine",
            "address",
            "lab",
            "router",
            "buckets",
            "redirected",
            "returned",
            "requests",
            "engine data plane",
        ]
        .map(|h| Cell::from(h).style(Style::default().add_modifier(Modifier::BOLD))),
    );
    let body: Vec<Row> = st
        .engines
        .iter()
        .enumerate()
        .map(|(i, e)| {
            let counters: Vec<String> = e
                .counters
                .iter()
                .filter(|(k, _)| {
                    [
                        "proxied_syn",
                        "established",
                        "return_rule",
                        "return_no_socket",
                    ]
                    .contains(&k.as_str())
                })
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let designated = e.address.is_some_and(|a| a.to_string() == st.designated);
            Row::new(vec![
                Cell::from(format!("{}{}", e.name, if designated { " *" } else { "" }))
                    .style(Style::default().fg(colour(i))),
                Cell::from(e.address.map(|a| a.to_string()).unwrap_or_default()),
                Cell::from(e.role.clone()),
                Cell::from(e.router_state.clone()),
                Cell::from(e.buckets.to_string()),
                Cell::from(e.redirected.to_string()),
                Cell::from(e.returned.to_string()),
                Cell::from(e.requests.to_string()),
                Cell::from(counters.join(" ")),
            ])
        })
        .collect();
    let table = Table::new(
        body,
        [
            Constraint::Length(6),
            Constraint::Length(12),
            Constraint::Length(10),
            Constraint::Length(8),
            Constraint::Length(8),
            Constraint::Length(11),
            Constraint::Length(9),
            Constraint::Length(9),
            Constraint::Min(20),
        ],
    )
    .header(header)
    .block(
        Block::default()
            .borders(Borders::ALL)
            .title(" engines (* designated; router: the router's state for it) "),
    );
    f.render_widget(table, rows[1]);

    // The bucket map: 256 cells, 32 per line, coloured by owner.
    let mut lines = Vec::new();
    for chunk in st.owners.chunks(32) {
        let spans: Vec<Span> = chunk
            .iter()
            .map(|o| match o {
                Some(i) => Span::styled("██", Style::default().fg(colour(*i))),
                None => Span::styled("··", Style::default().fg(Color::DarkGray)),
            })
            .collect();
        lines.push(Line::from(spans));
    }
    let legend: Vec<Span> = st
        .engines
        .iter()
        .enumerate()
        .map(|(i, e)| Span::styled(format!(" ██ {} ", e.name), Style::default().fg(colour(i))))
        .collect();
    lines.push(Line::from(legend));
    f.render_widget(
        Paragraph::new(lines).block(
            Block::default()
                .borders(Borders::ALL)
                .title(" bucket map (256 buckets, by owner) "),
        ),
        rows[2],
    );

    // The newest lines that fit, wrapped here (by characters) so the count is exact.
    let height = rows[3].height.saturating_sub(2) as usize;
    let width = rows[3].width.saturating_sub(2).max(1) as usize;
    let mut log: Vec<Line> = Vec::new();
    for (t, m) in st.log.iter().rev() {
        let chars: Vec<char> = format!("[{t:6.1}s] {m}").chars().collect();
        let pieces: Vec<String> = chars.chunks(width).map(|c| c.iter().collect()).collect();
        if log.len() + pieces.len() > height {
            break;
        }
        for p in pieces.into_iter().rev() {
            log.push(Line::from(p));
        }
    }
    log.reverse();
    f.render_widget(
        Paragraph::new(log).block(Block::default().borders(Borders::ALL).title(" narration ")),
        rows[3],
    );
}
