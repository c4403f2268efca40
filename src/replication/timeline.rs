//! The replication timeline: what the leader's own bookkeeping saw of each
//! follower since it took office — when it connected, when it caught up,
//! and how its acknowledged LSN moved (`kv_client status --timeline`,
//! lessons 4 and 5).
//!
//! ```text
//! replication timeline of term 1, leader 127.0.0.1:9001: 0 to 1.52 s, one column = 25 ms
//! bar height = LSN: ▁ 0 .. █ 10 (the leader's last LSN); C connected, U caught up, X disconnected
//! leader           ▁▁▁▁▁▁▁▁▁▁▁▁▂▃▄▅▆▇██████████████████████████████████████████  last_lsn 10
//! 127.0.0.1:9002   CU▁▁▁▁▁▁▁▁▁▂▃▄▅▆▇██████████████████████████████████████████  connected 0.08 s, caught up 0.09 s, acked 10
//! 127.0.0.1:9003                                       CU█████████████████████  connected 1.02 s, caught up 1.03 s, acked 10
//! ```
//!
//! The hub records it under the lock it already holds for every ACK
//! ([`crate::replication::hub`]); this module keeps it bounded and draws it.
//!
//! ## Bounded, whatever the uptime
//!
//! A position is a series of `(ms since the term began, LSN)` points, a step
//! function: the LSN holds until the next point. A new point closer than
//! the series' interval to the one before replaces its LSN instead of
//! adding a point. When [`TIMELINE_POINTS_MAX`] points are held, every
//! second one goes and the interval doubles: the series always spans the
//! whole term, at a resolution that halves as it grows, in a fixed amount
//! of memory. Events (connected, caught up, disconnected) keep the latest
//! [`TIMELINE_EVENTS_MAX`] per follower.

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{Lsn, Term};

/// Points kept per series: enough for a smooth row of [`TIMELINE_COLUMNS`].
pub const TIMELINE_POINTS_MAX: usize = 256;

/// Shortest interval between two points of a series, in ms: finer than a
/// column of any timeline shorter than a few seconds.
pub const TIMELINE_INTERVAL_MS_MIN: u64 = 10;

/// Events kept per follower (each reconnection adds two or three).
pub const TIMELINE_EVENTS_MAX: usize = 32;

/// Columns of the drawn rows: fits an 80-column terminal beside the names.
pub const TIMELINE_COLUMNS: usize = 60;

/// Bar heights, lowest LSN to highest.
const LEVELS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A position over time, bounded (see the module docs).
#[derive(Debug, Clone)]
pub struct Series {
    points: Vec<(u64, Lsn)>,
    interval_ms: u64,
}

impl Default for Series {
    fn default() -> Series {
        Series { points: Vec::new(), interval_ms: TIMELINE_INTERVAL_MS_MIN }
    }
}

impl Series {
    /// The position is `lsn` at `ms`.
    pub fn note(&mut self, ms: u64, lsn: Lsn) {
        match self.points.as_mut_slice() {
            [.., (_, last)] if *last == lsn => return,
            [.., (before, _), (at, last)] if ms < *before + self.interval_ms => {
                // Too close to the point before: move the latest point.
                *at = ms;
                *last = lsn;
                return;
            }
            _ => {}
        }
        self.points.push((ms, lsn));
        if self.points.len() >= TIMELINE_POINTS_MAX {
            // Keep the later point of each pair: the LSN it reached.
            self.points = self.points.chunks(2).map(|pair| pair[pair.len() - 1]).collect();
            self.interval_ms *= 2;
        }
    }

    pub fn points(&self) -> &[(u64, Lsn)] {
        &self.points
    }
}

/// What happened to a follower's link, as the timeline marks it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EventKind {
    Connected,
    CaughtUp,
    Disconnected,
}

impl EventKind {
    fn mark(self) -> char {
        match self {
            EventKind::Connected => 'C',
            EventKind::CaughtUp => 'U',
            EventKind::Disconnected => 'X',
        }
    }

    fn words(self) -> &'static str {
        match self {
            EventKind::Connected => "connected",
            EventKind::CaughtUp => "caught up",
            EventKind::Disconnected => "disconnected",
        }
    }
}

/// One event: when (ms since the term began), what, and the LSN then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub ms: u64,
    pub what: EventKind,
    pub lsn: Lsn,
}

/// The latest events of one follower, bounded.
#[derive(Debug, Clone, Default)]
pub struct Events(VecDeque<Event>);

impl Events {
    pub fn note(&mut self, ms: u64, what: EventKind, lsn: Lsn) {
        if self.0.len() == TIMELINE_EVENTS_MAX {
            self.0.pop_front();
        }
        self.0.push_back(Event { ms, what, lsn });
    }

    pub fn to_vec(&self) -> Vec<Event> {
        self.0.iter().copied().collect()
    }
}

/// The timeline as the leader reports it in `status` (`timeline`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Timeline {
    /// The leader's term; times count from when it took office.
    pub term: Term,
    pub leader: String,
    /// How long ago the term began, in ms: the right end of the rows.
    pub now_ms: u64,
    /// The leader's last LSN: the top of the scale.
    pub last_lsn: Lsn,
    /// The leader's last LSN over time, `[ms, lsn]`.
    pub leader_points: Vec<(u64, Lsn)>,
    pub rows: Vec<TimelineRow>,
}

/// One follower (or observer) on the timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimelineRow {
    pub address: String,
    /// `follower` (in `--peers`), `extra` (a follower that is not) or `observer`.
    pub kind: String,
    pub events: Vec<Event>,
    /// Its acknowledged LSN over time, `[ms, lsn]`.
    pub acks: Vec<(u64, Lsn)>,
}

impl Timeline {
    /// The drawing of the module docs: a heading, one row for the leader,
    /// one per follower, `columns` wide.
    pub fn render(&self, columns: usize) -> String {
        let columns = columns.max(2);
        let span_ms = self.now_ms.max(1);
        let column_ms = span_ms as f64 / columns as f64;
        let mut out = format!(
            "replication timeline of term {}, leader {}: 0 to {:.2} s, one column = {}\n",
            self.term,
            self.leader,
            span_ms as f64 / 1000.0,
            duration_text(column_ms)
        );
        out.push_str(&format!(
            "bar height = LSN: {} 0 .. {} {} (the leader's last LSN); C connected, U caught up, \
             X disconnected\n",
            LEVELS[0],
            LEVELS[LEVELS.len() - 1],
            self.last_lsn
        ));
        let name_width = self.rows.iter().map(|r| row_name(r).len()).max().unwrap_or(0).max(6);
        let always = [(0, EventKind::Connected)];
        let bars = self.bars(&self.leader_points, &always, columns);
        out.push_str(&format!(
            "{:<name_width$}  {bars}  last_lsn {}\n",
            "leader",
            self.leader_points.last().map_or(0, |p| p.1)
        ));
        for row in &self.rows {
            let links: Vec<(u64, EventKind)> = row.events.iter().map(|e| (e.ms, e.what)).collect();
            let mut bars: Vec<char> = self.bars(&row.acks, &links, columns).chars().collect();
            for event in &row.events {
                let column = ((event.ms as f64 / column_ms) as usize).min(columns - 1);
                bars[column] = event.what.mark();
            }
            let bars: String = bars.into_iter().collect();
            out.push_str(&format!("{:<name_width$}  {bars}  {}\n", row_name(row), summary(row)));
        }
        if self.rows.is_empty() {
            out.push_str("(no follower has connected in this term)\n");
        }
        out
    }

    /// One bar per column: the LSN held at the column's end, blank where
    /// the link was down then (from `links`, the connect and disconnect
    /// times). Column `c` covers `[c, c + 1)` column widths.
    fn bars(&self, points: &[(u64, Lsn)], links: &[(u64, EventKind)], columns: usize) -> String {
        let span_ms = self.now_ms.max(1) as f64;
        (0..columns)
            .map(|c| {
                let end = (span_ms * (c + 1) as f64 / columns as f64) as u64;
                let up = links
                    .iter()
                    .rev()
                    .find(|(ms, what)| *ms < end && *what != EventKind::CaughtUp)
                    .is_some_and(|(_, what)| *what == EventKind::Connected);
                let lsn = points.iter().take_while(|(ms, _)| *ms < end).last().map(|p| p.1);
                match (up, lsn) {
                    (true, Some(lsn)) => self.level(lsn),
                    (true, None) => LEVELS[0],
                    (false, _) => ' ',
                }
            })
            .collect()
    }

    fn level(&self, lsn: Lsn) -> char {
        if self.last_lsn == 0 {
            return LEVELS[0];
        }
        let top = (LEVELS.len() - 1) as u128;
        let index = (u128::from(lsn.min(self.last_lsn)) * top).div_ceil(u128::from(self.last_lsn));
        LEVELS[index as usize]
    }
}

fn row_name(row: &TimelineRow) -> String {
    match row.kind.as_str() {
        "follower" => row.address.clone(),
        kind => format!("{} ({kind})", row.address),
    }
}

/// `connected 0.08 s, caught up 0.09 s, acked 10`: the latest of each event.
fn summary(row: &TimelineRow) -> String {
    if row.events.is_empty() {
        return "not connected in this term".to_string();
    }
    let mut parts = Vec::new();
    for kind in [EventKind::Connected, EventKind::CaughtUp, EventKind::Disconnected] {
        if let Some(e) = row.events.iter().rev().find(|e| e.what == kind) {
            parts.push(format!("{} {:.2} s", kind.words(), e.ms as f64 / 1000.0));
        }
    }
    parts.push(format!("acked {}", row.acks.last().map_or(0, |p| p.1)));
    parts.join(", ")
}

fn duration_text(ms: f64) -> String {
    if ms >= 1000.0 {
        format!("{:.2} s", ms / 1000.0)
    } else {
        format!("{ms:.0} ms")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_series_stays_bounded_and_spans_the_whole_time() {
        // Goal: an hour of ACKs every millisecond keeps at most
        // TIMELINE_POINTS_MAX points, from near the start to the end.
        let mut series = Series::default();
        for ms in 0..3_600_000u64 {
            series.note(ms, ms / 10);
        }
        let points = series.points();
        assert!(points.len() <= TIMELINE_POINTS_MAX, "{}", points.len());
        assert!(points[0].0 < 100_000, "starts at {}", points[0].0);
        assert_eq!(points.last().unwrap().1, 359_999, "ends at the last position");
        assert!(points.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 < w[1].1));
    }

    #[test]
    fn an_unchanged_position_adds_no_point() {
        let mut series = Series::default();
        for ms in 0..1000 {
            series.note(ms, 7);
        }
        assert_eq!(series.points(), &[(0, 7)]);
    }

    #[test]
    fn events_keep_the_latest() {
        let mut events = Events::default();
        for i in 0..100 {
            events.note(i, EventKind::Connected, 0);
        }
        let kept = events.to_vec();
        assert_eq!(kept.len(), TIMELINE_EVENTS_MAX);
        assert_eq!(kept.last().unwrap().ms, 99);
    }

    fn event(ms: u64, what: EventKind, lsn: Lsn) -> Event {
        Event { ms, what, lsn }
    }

    #[test]
    fn rows_show_when_each_follower_connected_caught_up_and_acked() {
        // Goal: the demo's story, drawn: 9002 from the start, 9003 late,
        // both end at LSN 10 — bars full height, marks where events were.
        let timeline = Timeline {
            term: 1,
            leader: "127.0.0.1:9001".into(),
            now_ms: 1000,
            last_lsn: 10,
            leader_points: vec![(0, 0), (300, 5), (400, 10)],
            rows: vec![
                TimelineRow {
                    address: "127.0.0.1:9002".into(),
                    kind: "follower".into(),
                    events: vec![
                        event(0, EventKind::Connected, 0),
                        event(50, EventKind::CaughtUp, 0),
                    ],
                    acks: vec![(0, 0), (310, 5), (410, 10)],
                },
                TimelineRow {
                    address: "127.0.0.1:9003".into(),
                    kind: "follower".into(),
                    events: vec![
                        event(600, EventKind::Connected, 0),
                        event(700, EventKind::CaughtUp, 10),
                    ],
                    acks: vec![(600, 0), (700, 10)],
                },
            ],
        };
        let text = timeline.render(10);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 5, "{text}");
        assert!(lines[0].contains("0 to 1.00 s, one column = 100 ms"), "{text}");
        assert_eq!(lines[2], "leader          ▁▁▁▅██████  last_lsn 10");
        assert_eq!(
            lines[3],
            "127.0.0.1:9002  U▁▁▅██████  connected 0.00 s, caught up 0.05 s, acked 10"
        );
        assert_eq!(
            lines[4],
            "127.0.0.1:9003        CU██  connected 0.60 s, caught up 0.70 s, acked 10"
        );
    }

    #[test]
    fn a_disconnected_follower_is_blank_from_then_on() {
        let timeline = Timeline {
            term: 2,
            leader: "127.0.0.1:9001".into(),
            now_ms: 1000,
            last_lsn: 4,
            leader_points: vec![(0, 4)],
            rows: vec![TimelineRow {
                address: "127.0.0.1:55000".into(),
                kind: "observer".into(),
                events: vec![
                    event(0, EventKind::Connected, 0),
                    event(450, EventKind::Disconnected, 4),
                ],
                acks: vec![(0, 4)],
            }],
        };
        let text = timeline.render(10);
        let row = text.lines().nth(3).unwrap();
        assert!(row.starts_with("127.0.0.1:55000 (observer)  C███X     "), "{row}");
        assert!(row.ends_with("connected 0.00 s, disconnected 0.45 s, acked 4"), "{row}");
    }
}
