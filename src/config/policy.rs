//! `[policy]`: the outbound-abuse scorer, its caps and its notices.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::parse::de_duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PolicyMode {
    Enforce,
    Observe,
}

/// The outbound-policy scorer (docs/policy.md explains every key).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PolicyConfig {
    pub mode: PolicyMode,
    /// Networks that count as one known client (office NAT, cloud mail apps).
    pub shared_client_networks: Vec<String>,
    /// The score at which an account is blocked.
    pub block_score: f64,
    /// Points halve after this long without new ones.
    #[serde(deserialize_with = "de_duration")]
    pub half_life: Duration,
    /// A network is familiar once it logged in to the account this long ago...
    #[serde(deserialize_with = "de_duration")]
    pub network_familiar_after: Duration,
    /// ...and stays familiar while it was used within this period.
    #[serde(deserialize_with = "de_duration")]
    pub network_familiar_for: Duration,
    /// Accounts younger than this get the new-account caps.
    #[serde(deserialize_with = "de_duration")]
    pub new_account_period: Duration,

    /// How unlike the owner a sender is: every signal that can come from
    /// an honest account's busy day is multiplied by the factor of the
    /// message's sender. The owner (a trusted network, a known program)...
    pub factor_owner: f64,
    /// ...the owner travelling (another network, a known program)...
    pub factor_travelling: f64,
    /// ...another program on a trusted network (malware on the owner's PC)...
    pub factor_new_program: f64,
    /// ...another network and another program (a thief)...
    pub factor_stranger: f64,
    /// ...one side differs and the other has no history yet (the first
    /// weeks after deployment).
    pub factor_warmup: f64,
    /// A mail program is known once it sent clean mail on this many days.
    pub program_known_after_days: usize,
    /// Days of history before an account is compared with its own normal
    /// (before, with the population's).
    pub baseline_min_days: usize,
    /// Content signals (new link domains) earn at least this factor.
    pub factor_content: f64,
    /// Points per new recipient, at most `max_new_recipient_points` per message (× factor).
    pub weight_new_recipient: f64,
    pub max_new_recipient_points: f64,
    /// Points per contact mailed, at most `max_contact_points` per message (× factor).
    pub weight_contact: f64,
    pub max_contact_points: f64,
    /// More distinct contacts in a day than `contact_sweep_factor` × the
    /// account's busiest day, and at least `contact_sweep_min`, is a sweep
    /// through the contact list: `weight_contact_sweep` per message (× factor).
    pub contact_sweep_min: u32,
    pub contact_sweep_factor: f64,
    pub weight_contact_sweep: f64,
    /// The same body again, to new recipients (× factor).
    pub weight_repeated_body: f64,
    /// A message with at least this many new recipients counts as bulk...
    pub bulk_new_recipients_per_message: u32,
    /// ...and this many bulk messages within `bulk_window` earn `weight_bulk` each (× factor).
    pub bulk_messages: usize,
    #[serde(deserialize_with = "de_duration")]
    pub bulk_window: Duration,
    pub weight_bulk: f64,
    /// Logins from this many untrusted networks within an hour.
    pub spread_networks_per_hour: usize,
    pub weight_network_spread: f64,
    /// Link domains the account never sent before, beyond this many per message...
    pub free_link_domains: usize,
    /// ...earn this each, at most `max_link_points` (× factor, at least `factor_content`).
    pub weight_link_domain: f64,
    pub max_link_points: f64,
    /// A From display name carrying another address, from a different sender.
    pub weight_display_name_address: f64,
    /// A day's bounce rate at or above `bounce_ratio` over at least
    /// `bounce_min_recipients` results (× factor, on messages with new recipients).
    pub bounce_ratio: f64,
    pub bounce_min_recipients: u32,
    pub weight_bounces: f64,
    /// A login after this many wrong passwords within the hour before it (× factor).
    pub auth_failures_before_success: usize,
    pub weight_auth_failures: f64,
    pub fast_messages_per_hour: u32,
    pub weight_fast_message: f64,
    /// Recipient domains in an hour beyond this many: a weak hint (× factor).
    pub many_domains_per_hour: usize,
    pub weight_many_domains: f64,
    pub max_many_domains_points: f64,
    /// A deferred message submitted again more than this many times within
    /// `retry_window`, or `retry_quick_in_a_row` times in a row each less
    /// than `retry_min_gap` after the last: no mail program retries like that.
    pub retry_hammering_attempts: usize,
    pub retry_quick_in_a_row: usize,
    #[serde(deserialize_with = "de_duration")]
    pub retry_window: Duration,
    #[serde(deserialize_with = "de_duration")]
    pub retry_min_gap: Duration,
    pub weight_retry_hammering: f64,
    /// Only messages that earned less than this teach the account's normal
    /// (its programs and link domains).
    pub learn_below: f64,
    /// A message at an hour of the week (± an hour) the account sent no mail
    /// in during the last 4 weeks, once it has `active_hours_min_weeks` of
    /// them (× factor).
    pub weight_unusual_hour: f64,
    pub active_hours_min_weeks: usize,
    /// Points per complaint (`mailwarden policy complaint`).
    pub weight_complaint: f64,
    /// The hourly budget of new recipients: the account's busiest hour of
    /// the last 30 days × `new_recipients_budget_factor`, at least
    /// `new_recipients_budget_floor` (the population's normal, used alone
    /// while the account has less than a week of history). Over it a
    /// message is deferred (451), never blocked.
    pub new_recipients_budget_floor: u32,
    pub new_recipients_budget_factor: f64,
    /// No longer used (the scorer asks `accounts::trust`); still accepted.
    #[serde(default)]
    pub weight_new_recipient_unfamiliar: Option<f64>,
    #[serde(default)]
    pub max_new_recipient_points_unfamiliar: Option<f64>,
    #[serde(default)]
    pub weight_repeated_body_unfamiliar: Option<f64>,
    /// Points for a message from an untrusted network within
    /// `untrusted_change_window` after a credential change (new password,
    /// 2FA, device password) made from an untrusted network: by default
    /// enough to block on its own.
    pub weight_untrusted_change: f64,
    #[serde(deserialize_with = "de_duration")]
    pub untrusted_change_window: Duration,

    pub max_messages_per_minute: u32,
    pub max_messages_per_hour: u32,
    pub max_messages_per_day: u32,
    pub max_recipients_per_minute: u32,
    pub max_recipients_per_hour: u32,
    pub max_recipients_per_day: u32,
    pub new_account_max_messages_per_hour: u32,
    pub new_account_max_recipients_per_hour: u32,

    /// The message that tipped a block is kept this long as evidence.
    #[serde(deserialize_with = "de_duration")]
    pub evidence_retention: Duration,
    /// A second policy block within this period becomes an operator block.
    #[serde(deserialize_with = "de_duration")]
    pub repeat_block_period: Duration,
    /// After a self-service unblock: any block is an operator block, and
    /// the new-account caps apply.
    #[serde(deserialize_with = "de_duration")]
    pub probation: Duration,
    /// Told of every block and unblock, by mail.
    pub abuse_contact: Option<String>,
    /// Told of every block and unblock: a signed JSON POST.
    pub webhook_url: Option<String>,
    /// The HMAC-SHA-256 key for `X-Mailwarden-Signature`.
    pub webhook_secret_file: Option<PathBuf>,
}

impl Default for PolicyConfig {
    fn default() -> Self {
        let hours = |h: u64| Duration::from_secs(h * 3600);
        Self {
            mode: PolicyMode::Enforce,
            shared_client_networks: Vec::new(),
            block_score: 10.0,
            half_life: hours(1),
            network_familiar_after: hours(24),
            network_familiar_for: hours(30 * 24),
            new_account_period: hours(7 * 24),
            factor_owner: 0.0,
            factor_travelling: 0.05,
            factor_new_program: 0.5,
            factor_stranger: 1.0,
            factor_warmup: 0.35,
            factor_content: 0.1,
            program_known_after_days: 2,
            baseline_min_days: 7,
            weight_new_recipient: 2.0,
            max_new_recipient_points: 12.0,
            weight_contact: 0.5,
            max_contact_points: 5.0,
            contact_sweep_min: 20,
            contact_sweep_factor: 2.0,
            weight_contact_sweep: 4.0,
            weight_repeated_body: 2.0,
            bulk_new_recipients_per_message: 3,
            bulk_messages: 4,
            bulk_window: Duration::from_secs(600),
            weight_bulk: 3.0,
            spread_networks_per_hour: 4,
            weight_network_spread: 3.0,
            free_link_domains: 2,
            weight_link_domain: 1.0,
            max_link_points: 5.0,
            weight_display_name_address: 4.0,
            bounce_ratio: 0.3,
            bounce_min_recipients: 20,
            weight_bounces: 2.0,
            auth_failures_before_success: 5,
            weight_auth_failures: 3.0,
            fast_messages_per_hour: 120,
            weight_fast_message: 0.5,
            many_domains_per_hour: 20,
            weight_many_domains: 0.1,
            max_many_domains_points: 1.0,
            retry_hammering_attempts: 6,
            retry_quick_in_a_row: 3,
            retry_window: Duration::from_secs(600),
            retry_min_gap: Duration::from_secs(30),
            weight_retry_hammering: 4.0,
            weight_complaint: 3.0,
            weight_unusual_hour: 1.0,
            active_hours_min_weeks: 2,
            learn_below: 1.0,
            new_recipients_budget_floor: 200,
            new_recipients_budget_factor: 3.0,
            weight_new_recipient_unfamiliar: None,
            max_new_recipient_points_unfamiliar: None,
            weight_repeated_body_unfamiliar: None,
            weight_untrusted_change: 10.0,
            untrusted_change_window: hours(7 * 24),
            max_messages_per_minute: 30,
            max_messages_per_hour: 300,
            max_messages_per_day: 3000,
            max_recipients_per_minute: 150,
            max_recipients_per_hour: 1000,
            max_recipients_per_day: 10000,
            new_account_max_messages_per_hour: 150,
            new_account_max_recipients_per_hour: 600,
            evidence_retention: hours(14 * 24),
            repeat_block_period: hours(30 * 24),
            probation: hours(7 * 24),
            abuse_contact: None,
            webhook_url: None,
            webhook_secret_file: None,
        }
    }
}

impl PolicyConfig {
    /// The keys `account policy set` accepts: limits a trusted bulk sender
    /// may need raised.
    pub const OVERRIDE_KEYS: &[&str] = &[
        "block_score",
        "max_messages_per_minute",
        "max_messages_per_hour",
        "max_messages_per_day",
        "max_recipients_per_minute",
        "max_recipients_per_hour",
        "max_recipients_per_day",
        "fast_messages_per_hour",
        "bulk_messages",
        "new_recipients_budget_floor",
    ];

    /// Applies one per-account override (a key of `OVERRIDE_KEYS`).
    pub fn apply_override(&mut self, key: &str, value: f64) {
        let n = value.max(0.0).min(u32::MAX as f64) as u32;
        match key {
            "block_score" => self.block_score = value,
            "max_messages_per_minute" => self.max_messages_per_minute = n,
            "max_messages_per_hour" => {
                self.max_messages_per_hour = n;
                self.new_account_max_messages_per_hour = n;
            }
            "max_messages_per_day" => self.max_messages_per_day = n,
            "max_recipients_per_minute" => self.max_recipients_per_minute = n,
            "max_recipients_per_hour" => {
                self.max_recipients_per_hour = n;
                self.new_account_max_recipients_per_hour = n;
            }
            "max_recipients_per_day" => self.max_recipients_per_day = n,
            "fast_messages_per_hour" => self.fast_messages_per_hour = n,
            "bulk_messages" => self.bulk_messages = n as usize,
            "new_recipients_budget_floor" => self.new_recipients_budget_floor = n,
            _ => {}
        }
    }
}
