//! A circuit breaker per provider route and process.
//!
//! Closed: calls flow; `failures_to_open` outage-like failures in a row (5xx, timeouts,
//! connection errors — not a refused token, not a rate limit) open it. Open: no call is made
//! for `open_for`; deliveries wait (the runner holds them without spending attempts). Then
//! half-open: one probe call at a time; its success closes the breaker, its failure opens it
//! again. Every change of state is an alert on `herald.alerts`, so operators hear of an outage
//! once, not once per delivery.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use herald_schemas::AlertKind;
use serde::{Deserialize, Serialize};

/// A breaker's settings (`[deliver.<provider>.breaker]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BreakerConfig {
    /// Outage-like failures in a row that open the breaker.
    pub failures_to_open: u32,
    /// How long an open breaker stops calls before it lets a probe through.
    #[serde(with = "humantime_serde")]
    pub open_for: Duration,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig { failures_to_open: 10, open_for: Duration::from_secs(10) }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Closed {
        failures: u32,
    },
    Open {
        until: Instant,
    },
    /// A probe is out (since when), or may go.
    HalfOpen {
        probing_since: Option<Instant>,
    },
}

/// Whether a call may be made now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Go ahead; report the outcome with [`Breaker::record`].
    Call { probe: bool },
    /// Not now: try again after this long.
    Wait(Duration),
}

/// The breaker.
#[derive(Debug)]
pub struct Breaker {
    config: BreakerConfig,
    state: Mutex<State>,
}

impl Breaker {
    pub fn new(config: BreakerConfig) -> Self {
        Breaker { config, state: Mutex::new(State::Closed { failures: 0 }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Asks to make a call. Returns the admission and, when the breaker just turned half-open,
    /// the alert to raise.
    pub fn admit(&self) -> (Admission, Option<AlertKind>) {
        let mut state = self.lock();
        match *state {
            State::Closed { .. } => (Admission::Call { probe: false }, None),
            State::Open { until } => {
                let now = Instant::now();
                if now < until {
                    return (Admission::Wait(until - now), None);
                }
                *state = State::HalfOpen { probing_since: Some(now) };
                (Admission::Call { probe: true }, Some(AlertKind::BreakerHalfOpen))
            }
            // A probe that never reports (its task died) does not hold the breaker forever.
            State::HalfOpen { probing_since: Some(since) } if since.elapsed() < self.config.open_for => {
                (Admission::Wait(Duration::from_millis(500)), None)
            }
            State::HalfOpen { .. } => {
                *state = State::HalfOpen { probing_since: Some(Instant::now()) };
                (Admission::Call { probe: true }, None)
            }
        }
    }

    /// Reports a call's outcome: `outage` for a failure that says the provider is unwell.
    /// Returns the alert to raise when the state changed.
    pub fn record(&self, probe: bool, outage: bool) -> Option<AlertKind> {
        let mut state = self.lock();
        match (*state, outage) {
            (State::Closed { .. }, false) => {
                *state = State::Closed { failures: 0 };
                None
            }
            (State::Closed { failures }, true) => {
                let failures = failures + 1;
                if failures >= self.config.failures_to_open.max(1) {
                    *state = State::Open { until: Instant::now() + self.config.open_for };
                    Some(AlertKind::BreakerOpened)
                } else {
                    *state = State::Closed { failures };
                    None
                }
            }
            (State::HalfOpen { .. }, false) if probe => {
                *state = State::Closed { failures: 0 };
                Some(AlertKind::BreakerClosed)
            }
            (State::HalfOpen { .. }, true) if probe => {
                *state = State::Open { until: Instant::now() + self.config.open_for };
                Some(AlertKind::BreakerOpened)
            }
            // A call admitted before the breaker opened, answering late: it changes nothing.
            _ => None,
        }
    }

    /// Gives the probe slot back when an admitted probe never reached the provider (the
    /// delivery was already sent, expired …). A no-op once its outcome was recorded.
    pub fn abandon(&self, probe: bool) {
        let mut state = self.lock();
        if probe && matches!(*state, State::HalfOpen { probing_since: Some(_) }) {
            *state = State::HalfOpen { probing_since: None };
        }
    }

    pub fn config(&self) -> &BreakerConfig {
        &self.config
    }

    /// Whether calls are stopped right now.
    pub fn is_open(&self) -> bool {
        matches!(*self.lock(), State::Open { until } if Instant::now() < until)
    }
}

/// When a provider fails too often (`[deliver.failure_alert]`): more than `rate` of its calls
/// in a window of `window` failed (an outage, a timeout or a refusal; not a recipient's opt-out
/// or a dead token), with at least `min_calls` calls in it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FailureAlertConfig {
    pub rate: f64,
    #[serde(with = "humantime_serde")]
    pub window: Duration,
    pub min_calls: u32,
}

impl Default for FailureAlertConfig {
    fn default() -> Self {
        FailureAlertConfig { rate: 0.2, window: Duration::from_secs(60), min_calls: 20 }
    }
}

#[derive(Debug)]
struct Window {
    start: Instant,
    calls: u32,
    failures: u32,
    alerting: bool,
}

/// A provider's calls per window of `window` (one after another): the first call that takes
/// the window's share of failures over the limit raises `failure_rate`, once; a window that
/// ends under the limit lets it be raised again.
#[derive(Debug)]
pub struct FailureRate {
    config: FailureAlertConfig,
    window: Mutex<Window>,
}

impl FailureRate {
    pub fn new(config: FailureAlertConfig) -> Self {
        FailureRate { config, window: Mutex::new(Window { start: Instant::now(), calls: 0, failures: 0, alerting: false }) }
    }

    /// Counts a call; returns `(failures, calls)` of the window when the alert is due.
    pub fn record(&self, failed: bool) -> Option<(u32, u32)> {
        let mut w = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if w.start.elapsed() >= self.config.window {
            let over = w.calls > 0 && f64::from(w.failures) / f64::from(w.calls) > self.config.rate;
            *w = Window { start: Instant::now(), calls: 0, failures: 0, alerting: w.alerting && over };
        }
        w.calls += 1;
        w.failures += u32::from(failed);
        let over = f64::from(w.failures) / f64::from(w.calls) > self.config.rate;
        if !w.alerting && over && w.calls >= self.config.min_calls {
            w.alerting = true;
            return Some((w.failures, w.calls));
        }
        None
    }

    pub fn config(&self) -> &FailureAlertConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_over_the_failure_rate_alerts_once_and_again_after_a_good_window() {
        let rate = FailureRate::new(FailureAlertConfig { rate: 0.5, window: Duration::from_millis(100), min_calls: 4 });
        assert_eq!(rate.record(true), None);
        assert_eq!(rate.record(true), None);
        assert_eq!(rate.record(true), None, "too few calls to judge");
        assert_eq!(rate.record(false), Some((3, 4)), "3 of 4 failed: over a half");
        assert_eq!(rate.record(true), None, "raised once per bad spell");
        std::thread::sleep(Duration::from_millis(110));
        // A new window, still bad: the spell goes on, no new alert.
        for _ in 0..4 {
            assert_eq!(rate.record(true), None);
        }
        std::thread::sleep(Duration::from_millis(110));
        for _ in 0..4 {
            assert_eq!(rate.record(false), None, "a good window");
        }
        std::thread::sleep(Duration::from_millis(110));
        let raised: Vec<_> = (0..4).filter_map(|_| rate.record(true)).collect();
        assert_eq!(raised, [(4, 4)], "bad again after a good window: raised again");
        let healthy = FailureRate::new(FailureAlertConfig { rate: 0.5, window: Duration::from_secs(60), min_calls: 4 });
        assert!((0..100).all(|i| healthy.record(i % 3 == 0).is_none()), "a third failing is under a half");
    }

    #[test]
    fn opens_after_failures_in_a_row_probes_then_closes() {
        let breaker = Breaker::new(BreakerConfig { failures_to_open: 3, open_for: Duration::from_millis(50) });
        assert_eq!(breaker.record(false, true), None);
        assert_eq!(breaker.record(false, false), None, "a success resets the count");
        assert_eq!(breaker.record(false, true), None);
        assert_eq!(breaker.record(false, true), None);
        assert_eq!(breaker.record(false, true), Some(AlertKind::BreakerOpened));
        assert!(matches!(breaker.admit().0, Admission::Wait(_)));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(breaker.admit(), (Admission::Call { probe: true }, Some(AlertKind::BreakerHalfOpen)));
        assert!(matches!(breaker.admit().0, Admission::Wait(_)), "one probe at a time");
        assert_eq!(breaker.record(true, true), Some(AlertKind::BreakerOpened), "a failed probe opens it again");
        std::thread::sleep(Duration::from_millis(60));
        let (admission, _) = breaker.admit();
        assert_eq!(admission, Admission::Call { probe: true });
        assert_eq!(breaker.record(true, false), Some(AlertKind::BreakerClosed));
        assert_eq!(breaker.admit(), (Admission::Call { probe: false }, None));
    }

    #[test]
    fn late_answers_of_calls_admitted_before_opening_change_nothing() {
        let breaker = Breaker::new(BreakerConfig { failures_to_open: 1, open_for: Duration::from_secs(60) });
        assert_eq!(breaker.record(false, true), Some(AlertKind::BreakerOpened));
        assert_eq!(breaker.record(false, true), None);
        assert_eq!(breaker.record(false, false), None);
        assert!(breaker.is_open());
    }
}
