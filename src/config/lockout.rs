//! `[lockout]`: brute-force limits for SMTP AUTH and portal sign-in.

use std::time::Duration;

use serde::Deserialize;

use super::parse::de_duration;

/// Brute-force limits (docs/security.md explains the defaults).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LockoutConfig {
    /// Distinct wrong passwords per IPv4 address or IPv6 /64...
    pub ip_max_distinct_failures: usize,
    /// ...within this window.
    #[serde(deserialize_with = "de_duration")]
    pub ip_window: Duration,
    /// Distinct wrong passwords per account (from networks it never used)...
    pub account_max_distinct_failures: usize,
    #[serde(deserialize_with = "de_duration")]
    pub account_window: Duration,
    /// A successful login makes its network known to the account this long.
    #[serde(deserialize_with = "de_duration")]
    pub trusted_network_for: Duration,
    /// Wrong OTP codes per account within `otp_window` before the OTP step
    /// locks for `otp_lock`.
    pub otp_max_failures: usize,
    #[serde(deserialize_with = "de_duration")]
    pub otp_window: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub otp_lock: Duration,
    /// argon2 verifications that may wait or run at once for SMTP AUTH
    /// (and, separately, for portal sign-in) before `454 4.7.0`.
    pub auth_queue: usize,
    /// Password spraying: distinct accounts with a wrong password from one
    /// IPv4 address or IPv6 /64 within `network_window` (4× this for the
    /// IPv4 /24 and the IPv6 /48 around it)...
    pub network_accounts_per_hour: usize,
    /// ...or distinct (account, wrong password) pairs. Over either, the
    /// network is refused AUTH for accounts that never logged in from it.
    pub network_pairs_per_hour: usize,
    #[serde(deserialize_with = "de_duration")]
    pub network_window: Duration,
}

impl Default for LockoutConfig {
    fn default() -> Self {
        let minutes = |m: u64| Duration::from_secs(m * 60);
        Self {
            ip_max_distinct_failures: 10,
            ip_window: minutes(15),
            account_max_distinct_failures: 50,
            account_window: minutes(24 * 60),
            trusted_network_for: minutes(30 * 24 * 60),
            otp_max_failures: 5,
            otp_window: minutes(15),
            otp_lock: minutes(15),
            auth_queue: 64,
            network_accounts_per_hour: 10,
            network_pairs_per_hour: 30,
            network_window: minutes(60),
        }
    }
}
