//! A token bucket on the packets' (replicated) time, for ICMP errors and
//! ARP requests: the same packets at the same times give the same decisions
//! on the primary and the backup.

#[derive(Clone, Copy, Debug)]
pub struct TokenBucket {
    /// Tokens per second, and the bucket size.
    rate: u64,
    /// Tokens scaled by 1e9 (nanotokens), so refills stay integer.
    nanotokens: u64,
    last_ns: u64,
}

impl TokenBucket {
    pub fn new(rate_per_s: u32) -> TokenBucket {
        TokenBucket {
            rate: rate_per_s as u64,
            nanotokens: rate_per_s as u64 * 1_000_000_000,
            last_ns: 0,
        }
    }

    /// (nanotokens, time of the last take): what a checkpoint carries.
    pub fn parts(&self) -> (u64, u64) {
        (self.nanotokens, self.last_ns)
    }

    /// The bucket of `rate_per_s` as [`TokenBucket::parts`] gave it; None
    /// when it holds more than a full bucket.
    pub fn from_parts(rate_per_s: u32, nanotokens: u64, last_ns: u64) -> Option<TokenBucket> {
        let rate = rate_per_s as u64;
        (nanotokens <= rate * 1_000_000_000).then_some(TokenBucket {
            rate,
            nanotokens,
            last_ns,
        })
    }

    /// Takes one token at time `now`; false when the bucket is empty.
    pub fn take(&mut self, now: u64) -> bool {
        let elapsed = now.saturating_sub(self.last_ns);
        self.last_ns = self.last_ns.max(now);
        let cap = self.rate * 1_000_000_000;
        self.nanotokens = self
            .nanotokens
            .saturating_add(elapsed.saturating_mul(self.rate))
            .min(cap);
        if self.nanotokens >= 1_000_000_000 {
            self.nanotokens -= 1_000_000_000;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_drains_the_bucket_and_time_refills_it() {
        let mut b = TokenBucket::new(10);
        let granted = (0..20).filter(|_| b.take(0)).count();
        assert_eq!(granted, 10);
        assert!(!b.take(50_000_000), "half a token after 50 ms");
        assert!(b.take(100_000_000), "one token after 100 ms");
        assert!(!b.take(100_000_000));
    }
}
