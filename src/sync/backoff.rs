//! Retry delays: exponential, capped, with jitter so many children do not retry in step.

use std::time::Duration;

/// First retry delay.
const BASE: Duration = Duration::from_millis(500);

/// Delay before retry number `attempt` (1-based): 0.5 s doubling up to `cap`, ±25 % jitter.
pub fn delay(attempt: u32, cap: Duration) -> Duration {
    let exp = BASE.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let d = exp.min(cap).as_secs_f64();
    let r = getrandom::u32().unwrap_or(0) as f64 / u32::MAX as f64;
    Duration::from_secs_f64(d * (0.75 + 0.5 * r))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_stays_under_the_cap_with_jitter() {
        let cap = Duration::from_secs(30);
        let first = delay(1, cap);
        assert!(first >= Duration::from_millis(375) && first <= Duration::from_millis(625));
        for attempt in 1..100 {
            assert!(delay(attempt, cap) <= cap.mul_f64(1.25));
        }
        assert!(delay(20, cap) >= cap.mul_f64(0.75));
    }
}
