//! Exponential backoff with jitter for retryable failures.

use std::time::Duration;

use rand::Rng;

#[derive(Debug, Clone)]
pub struct RetryPolicy {
    /// Attempts in all, the first included.
    pub attempts: u32,
    pub base_delay: Duration,
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self { attempts: 5, base_delay: Duration::from_secs(1), max_delay: Duration::from_secs(60) }
    }
}

impl RetryPolicy {
    /// Delay before attempt `n + 1` (n ≥ 1): base · 2^(n-1), capped, ±50 % jitter so many
    /// workers retrying one busy host do not arrive together.
    pub fn delay(&self, n: u32) -> Duration {
        let exp = self.base_delay.saturating_mul(1u32 << (n.saturating_sub(1)).min(16));
        let capped = exp.min(self.max_delay);
        capped.mul_f64(rand::thread_rng().gen_range(0.5..1.5))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_grow_and_stay_capped() {
        let p = RetryPolicy { attempts: 10, base_delay: Duration::from_millis(100), max_delay: Duration::from_secs(1) };
        for n in 1..10 {
            let d = p.delay(n);
            let nominal = Duration::from_millis(100 * (1 << (n - 1))).min(Duration::from_secs(1));
            assert!(d >= nominal.mul_f64(0.5) && d <= nominal.mul_f64(1.5), "attempt {n}: {d:?}");
        }
    }
}
