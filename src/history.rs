//! The last minutes of every backend, for the status page: once a second the
//! counters that requests already keep are read and turned into a sample
//! (requests/s, error share, p50/p99 time to the response head), kept in a
//! ring per backend; health changes and reloads become events. Nothing is
//! added to the request path, and memory is bounded: `SAMPLES` per backend
//! and `EVENTS` in all.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::proto::MetricFamily;
use serde_json::{Value, json};

use crate::control::Control;

/// Five minutes of one-second samples.
pub const SAMPLES: usize = 300;
pub const EVENTS: usize = 100;
pub const EVERY: Duration = Duration::from_secs(1);

/// One second of one backend.
/// A backend: (upstream, address).
type BackendKey = (String, String);
/// A backend's health as seen: (healthy, ejected).
type Health = (bool, bool);

#[derive(Debug, Clone, Copy, PartialEq)]
struct Sample {
    /// Unix seconds.
    time: u64,
    per_second: f64,
    /// Share of tries answered 5xx (or failed), 0 to 1.
    errors: f64,
    /// Seconds; `None` in a second without a try.
    p50: Option<f64>,
    p99: Option<f64>,
}

/// Cumulative counts of one backend as last read.
#[derive(Debug, Clone, Default)]
struct Counts {
    tries: u64,
    errors: u64,
    /// Cumulative count at each bucket's upper bound.
    buckets: Vec<(f64, u64)>,
}

#[derive(Debug, Default)]
struct Series {
    samples: VecDeque<Sample>,
    last: Option<Counts>,
    /// Health as last seen: (healthy, ejected).
    state: Option<(bool, bool)>,
    /// Still in the running config at the last read.
    seen: bool,
}

#[derive(Debug, Default)]
struct Inner {
    /// By (upstream, backend address).
    series: HashMap<BackendKey, Series>,
    events: VecDeque<(u64, String)>,
    reloads: Option<u64>,
}

#[derive(Debug, Default)]
pub struct History {
    inner: Mutex<Inner>,
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl History {
    /// Samples `control` every second until the history is dropped.
    pub fn follow(control: Arc<Control>) -> Arc<History> {
        let history = Arc::new(History::default());
        let weak = Arc::downgrade(&history);
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(EVERY);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(history) = weak.upgrade() else { break };
                history.sample(&control);
            }
        });
        history
    }

    fn sample(&self, control: &Control) {
        let families = control.metrics().gather();
        let snapshot = control.snapshot();
        let states: Vec<(BackendKey, Health)> = snapshot
            .upstreams
            .iter()
            .flat_map(|u| {
                u.backends.iter().map(|b| {
                    (
                        (u.name.clone(), b.address.to_string()),
                        (b.state.is_healthy(), b.state.is_ejected()),
                    )
                })
            })
            .collect();
        self.record(now(), &families, &states);
    }

    /// Takes one reading: the metric families as they stand, and each
    /// backend of the running config with its (healthy, ejected).
    fn record(&self, time: u64, families: &[MetricFamily], states: &[(BackendKey, Health)]) {
        let counts = read_counts(families);
        let reloads = families
            .iter()
            .find(|f| f.name() == "weir_config_reloads_total")
            .map(|f| {
                f.get_metric()
                    .iter()
                    .map(|m| m.get_counter().get_value() as u64)
                    .sum::<u64>()
            });
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let inner = &mut *inner;
        if let (Some(before), Some(after)) = (inner.reloads, reloads)
            && after > before
        {
            push_event(&mut inner.events, time, "config reloaded".to_owned());
        }
        if reloads.is_some() {
            inner.reloads = reloads;
        }
        for series in inner.series.values_mut() {
            series.seen = false;
        }
        for (key, state) in states {
            let series = inner.series.entry(key.clone()).or_default();
            series.seen = true;
            if let Some(before) = series.state
                && before != *state
            {
                let what = match state {
                    (_, true) => "ejected",
                    (false, _) => "unhealthy",
                    (true, false) => "healthy",
                };
                push_event(
                    &mut inner.events,
                    time,
                    format!("{} {}: {what}", key.0, key.1),
                );
            }
            series.state = Some(*state);
            let current = counts.get(key).cloned().unwrap_or_default();
            if let Some(last) = &series.last {
                let sample = difference(time, last, &current);
                if series.samples.len() == SAMPLES {
                    series.samples.pop_front();
                }
                series.samples.push_back(sample);
            }
            series.last = Some(current);
        }
        // Backends a reload removed go with their history.
        inner.series.retain(|_, series| series.seen);
    }

    /// `/status/history`: each backend's samples, oldest first, and the events.
    pub fn to_json(&self) -> Value {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let mut series: Vec<(&BackendKey, &Series)> = inner.series.iter().collect();
        series.sort_by(|a, b| a.0.cmp(b.0));
        let round = |x: f64| (x * 1000.0).round() / 1000.0;
        json!({
            "now": now(),
            "interval_seconds": EVERY.as_secs(),
            "columns": ["time", "requests_per_second", "error_ratio", "p50_seconds", "p99_seconds"],
            "backends": series.iter().map(|((upstream, backend), series)| json!({
                "upstream": upstream,
                "backend": backend,
                "samples": series.samples.iter().map(|s| json!([
                    s.time,
                    round(s.per_second),
                    round(s.errors),
                    s.p50.map(|v| (v * 1e6).round() / 1e6),
                    s.p99.map(|v| (v * 1e6).round() / 1e6),
                ])).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "events": inner.events.iter().map(|(time, text)| json!({"time": time, "text": text})).collect::<Vec<_>>(),
        })
    }
}

fn push_event(events: &mut VecDeque<(u64, String)>, time: u64, text: String) {
    if events.len() == EVENTS {
        events.pop_front();
    }
    events.push_back((time, text));
}

/// Each backend's cumulative tries, failed tries and duration buckets.
fn read_counts(families: &[MetricFamily]) -> HashMap<BackendKey, Counts> {
    let mut counts: HashMap<BackendKey, Counts> = HashMap::new();
    let key_of = |metric: &prometheus::proto::Metric| {
        let label = |name: &str| {
            metric
                .get_label()
                .iter()
                .find(|l| l.name() == name)
                .map(|l| l.value().to_owned())
        };
        (label("upstream"), label("backend"), label("code"))
    };
    for family in families {
        match family.name() {
            "weir_upstream_requests_total" => {
                for metric in family.get_metric() {
                    let (Some(upstream), Some(backend), code) = key_of(metric) else {
                        continue;
                    };
                    let n = metric.get_counter().get_value() as u64;
                    let entry = counts.entry((upstream, backend)).or_default();
                    entry.tries += n;
                    if code.is_some_and(|c| c.starts_with('5')) {
                        entry.errors += n;
                    }
                }
            }
            "weir_upstream_request_duration_seconds" => {
                for metric in family.get_metric() {
                    let (Some(upstream), Some(backend), _) = key_of(metric) else {
                        continue;
                    };
                    counts.entry((upstream, backend)).or_default().buckets = metric
                        .get_histogram()
                        .get_bucket()
                        .iter()
                        .map(|b| (b.upper_bound(), b.cumulative_count()))
                        .collect();
                }
            }
            _ => {}
        }
    }
    counts
}

/// The second between two readings.
fn difference(time: u64, before: &Counts, after: &Counts) -> Sample {
    let tries = after.tries.saturating_sub(before.tries);
    let errors = after.errors.saturating_sub(before.errors);
    let seconds = EVERY.as_secs_f64();
    // Tries that ended in this second, by bucket.
    let deltas: Vec<(f64, u64)> = after
        .buckets
        .iter()
        .map(|&(bound, count)| {
            let earlier = before
                .buckets
                .iter()
                .find(|(b, _)| *b == bound)
                .map_or(0, |(_, c)| *c);
            (bound, count.saturating_sub(earlier))
        })
        .collect();
    Sample {
        time,
        per_second: tries as f64 / seconds,
        errors: if tries == 0 {
            0.0
        } else {
            errors as f64 / tries as f64
        },
        p50: quantile(&deltas, 0.5),
        p99: quantile(&deltas, 0.99),
    }
}

/// The `q` quantile of cumulative bucket counts, interpolated within its
/// bucket (as Prometheus's `histogram_quantile`); past the last bound, the
/// last bound.
fn quantile(buckets: &[(f64, u64)], q: f64) -> Option<f64> {
    let total = buckets.last()?.1;
    if total == 0 {
        return None;
    }
    let rank = q * total as f64;
    let mut lower = (0.0, 0u64);
    for &(bound, count) in buckets {
        if count as f64 >= rank {
            let within = count - lower.1;
            if within == 0 {
                return Some(bound);
            }
            let share = (rank - lower.1 as f64) / within as f64;
            return Some(lower.0 + (bound - lower.0) * share);
        }
        lower = (bound, count);
    }
    Some(lower.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(tries: u64, errors: u64, buckets: &[(f64, u64)]) -> Counts {
        Counts {
            tries,
            errors,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn a_second_is_the_difference_of_two_readings() {
        let before = counts(100, 1, &[(0.01, 50), (0.1, 90), (1.0, 100)]);
        let after = counts(300, 21, &[(0.01, 150), (0.1, 290), (1.0, 300)]);
        let sample = difference(7, &before, &after);
        assert_eq!(sample.per_second, 200.0);
        assert_eq!(sample.errors, 0.1);
        // 100 of the 200 under 10 ms: the median at the first bound.
        assert!((sample.p50.unwrap() - 0.01).abs() < 1e-9);
        // The 198th of 200 falls in (0.01, 0.1]: 98 of its 100.
        assert!((sample.p99.unwrap() - (0.01 + 0.09 * 0.98)).abs() < 1e-9);
    }

    #[test]
    fn a_quiet_second_has_no_latency() {
        let both = counts(5, 0, &[(0.1, 5)]);
        let sample = difference(1, &both, &both);
        assert_eq!((sample.per_second, sample.p50), (0.0, None));
    }

    #[test]
    fn rings_and_events_stay_bounded_and_removed_backends_go() {
        let history = History::default();
        let a = (("app".to_owned(), "10.0.0.1:80".to_owned()), (true, false));
        let b = (("app".to_owned(), "10.0.0.2:80".to_owned()), (true, false));
        for second in 0..(SAMPLES as u64 + 50) {
            // b flaps every second: an event each time.
            let b = (b.0.clone(), (second % 2 == 0, false));
            history.record(second, &[], &[a.clone(), b]);
        }
        let json = history.to_json();
        let backends = json["backends"].as_array().unwrap();
        assert_eq!(backends.len(), 2);
        assert_eq!(backends[0]["samples"].as_array().unwrap().len(), SAMPLES);
        let events = json["events"].as_array().unwrap();
        assert_eq!(events.len(), EVENTS);
        assert!(
            events.last().unwrap()["text"]
                .as_str()
                .unwrap()
                .starts_with("app 10.0.0.2:80: ")
        );
        history.record(1_000, &[], &[a]);
        assert_eq!(history.to_json()["backends"].as_array().unwrap().len(), 1);
    }
}
