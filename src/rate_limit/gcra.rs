//! The generic cell rate algorithm (GCRA), as arithmetic on nanoseconds: the
//! whole state of a key is one number, its theoretical arrival time (TAT), the
//! time at which it would be back to a full burst after the requests it sent.
//! A request is let through when the TAT is no more than `tolerance` ahead of
//! now; each one let through moves the TAT one `interval` on. So `burst`
//! requests pass at once, and then one per `interval`.

use crate::config::Rate;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    /// Nanoseconds between two requests at the steady rate.
    pub interval: u64,
    /// How far ahead of now the TAT may be for a request to pass:
    /// `burst - 1` intervals.
    pub tolerance: u64,
}

/// What the algorithm says of one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        /// Requests that would also pass right now.
        remaining: u64,
        /// Nanoseconds until the key is back to a full burst.
        reset: u64,
    },
    Refused {
        /// Nanoseconds until a request would pass.
        retry_after: u64,
    },
}

impl Gcra {
    pub fn new(rate: Rate, burst: u32) -> Gcra {
        let period = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
        let interval = (period / u64::from(rate.count.max(1))).max(1);
        Gcra {
            interval,
            tolerance: interval.saturating_mul(u64::from(burst.max(1)) - 1),
        }
    }

    /// The verdict on a request at `now` for a key whose TAT is `tat` (0 for
    /// a key never seen), and the TAT to keep (when it passes, or when the
    /// TAT had to be brought in).
    pub fn decide(&self, tat: u64, now: u64) -> (Verdict, Option<u64>) {
        // Never further ahead than this policy itself can push a key: a TAT
        // made under a slower rate (before a reload) is brought in, so the
        // new rate applies at once.
        let bound = self.tolerance + self.interval;
        let ahead = tat.saturating_sub(now);
        let (ahead, brought_in) = if ahead > bound {
            (bound, Some(now + bound))
        } else {
            (ahead, None)
        };
        if ahead > self.tolerance {
            let retry_after = ahead - self.tolerance;
            return (Verdict::Refused { retry_after }, brought_in);
        }
        let reset = ahead + self.interval;
        (
            Verdict::Allowed {
                remaining: self.remaining(reset),
                reset,
            },
            Some(now + reset),
        )
    }

    /// Requests that would pass now, for a key `reset` nanoseconds from a full
    /// burst.
    pub fn remaining(&self, reset: u64) -> u64 {
        (self.tolerance + self.interval).saturating_sub(reset) / self.interval
    }

    /// The TAT after giving back one request let through earlier (when another
    /// policy refused the request).
    pub fn give_back(&self, tat: u64, now: u64) -> u64 {
        tat.saturating_sub(self.interval).max(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const MS: u64 = 1_000_000;

    fn per_second(count: u32, burst: u32) -> Gcra {
        Gcra::new(
            Rate {
                count,
                per: Duration::from_secs(1),
            },
            burst,
        )
    }

    /// Sends a request at `now`; returns whether it passed.
    fn send(gcra: &Gcra, tat: &mut u64, now: u64) -> bool {
        match gcra.decide(*tat, now) {
            (Verdict::Allowed { .. }, Some(next)) => {
                *tat = next;
                true
            }
            _ => false,
        }
    }

    #[test]
    fn a_burst_passes_at_once_then_the_rate_spaces_requests() {
        let gcra = per_second(100, 10);
        let mut tat = 0;
        let now = 1_000 * MS;
        let passed = (0..50).filter(|_| send(&gcra, &mut tat, now)).count();
        assert_eq!(passed, 10);
        // The next one passes 10 ms later, not before.
        assert!(!send(&gcra, &mut tat, now + 9 * MS));
        assert!(send(&gcra, &mut tat, now + 10 * MS));
        assert!(!send(&gcra, &mut tat, now + 10 * MS));
    }

    #[test]
    fn a_client_as_fast_as_it_can_gets_rate_times_time_plus_burst() {
        let gcra = per_second(100, 10);
        let mut tat = 0;
        let start = 1_000 * MS;
        // One request every 100 µs for 5 s.
        let passed = (0..50_000u64)
            .filter(|i| send(&gcra, &mut tat, start + i * MS / 10))
            .count();
        assert!((509..=510).contains(&passed), "{passed}");
    }

    #[test]
    fn burst_zero_and_one_both_mean_one_at_a_time() {
        for burst in [0, 1] {
            let gcra = per_second(10, burst);
            let mut tat = 0;
            assert!(send(&gcra, &mut tat, 1_000 * MS));
            assert!(!send(&gcra, &mut tat, 1_000 * MS));
            assert!(send(&gcra, &mut tat, 1_100 * MS));
        }
    }

    #[test]
    fn the_verdict_tells_what_is_left_and_when_to_retry() {
        let gcra = per_second(100, 10);
        let now = 1_000 * MS;
        let (verdict, tat) = gcra.decide(0, now);
        assert_eq!(
            verdict,
            Verdict::Allowed {
                remaining: 9,
                reset: 10 * MS
            }
        );
        let full = now + 100 * MS;
        assert_eq!(
            gcra.decide(full, now).0,
            Verdict::Refused {
                retry_after: 10 * MS
            }
        );
        // A request given back is one more that passes.
        let tat = tat.unwrap();
        assert_eq!(gcra.give_back(tat, now), now);
        assert_eq!(gcra.give_back(full, now), full - 10 * MS);
    }

    #[test]
    fn a_faster_rate_applies_at_once_to_a_key_counted_under_a_slower_one() {
        let hourly = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            1,
        );
        let (_, tat) = hourly.decide(0, MS);
        let tat = tat.unwrap();
        assert!(matches!(
            hourly.decide(tat, 2 * MS).0,
            Verdict::Refused { .. }
        ));
        // Under 1000/s the key is at most one interval from passing.
        let fast = per_second(1000, 1);
        let (verdict, brought_in) = fast.decide(tat, 2 * MS);
        assert_eq!(verdict, Verdict::Refused { retry_after: MS });
        let tat = brought_in.expect("the TAT is brought in and kept");
        assert!(matches!(
            fast.decide(tat, 3 * MS).0,
            Verdict::Allowed { .. }
        ));
    }

    #[test]
    fn an_hourly_rate_with_a_large_burst_does_not_overflow() {
        let gcra = Gcra::new(
            Rate {
                count: 1,
                per: Duration::from_secs(3600),
            },
            1_000_000,
        );
        assert_eq!(gcra.interval, 3_600_000_000_000);
        let (verdict, _) = gcra.decide(u64::MAX, 0);
        assert!(matches!(verdict, Verdict::Refused { .. }));
    }
}
