//! The points one message earns. Most signals are scaled by how little the
//! sender looks like the account's owner (`Sender::factor`): from the
//! owner's trusted network with the owner's program they earn nothing, so
//! an honest account's unusual volume meets a budget (451), never a block.
//! A block needs evidence of a different sender: another network, another
//! program, or content and retry habits no mail program has.

use super::Breakdown;
use super::baseline::Normal;
use super::clients::Program;
use super::content::Content;
use super::state::{AccountState, HOUR, Mailed};
use crate::config::PolicyConfig;

/// Is the network one the account trusts?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Network {
    Trusted,
    Untrusted,
    /// The account has no trusted network yet (new, or just deployed).
    NoHistory,
}

/// Who seems to be sending: the network and the program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sender {
    pub network: Network,
    pub program: Program,
}

impl Sender {
    /// How unlike the owner: 0 for the owner, up to `factor_stranger`.
    pub fn factor(&self, c: &PolicyConfig) -> f64 {
        use Network as N;
        use Program as P;
        match (self.network, self.program) {
            (N::Trusted, P::Known) => c.factor_owner,
            (N::Untrusted, P::Known) => c.factor_travelling,
            (N::Trusted, P::Unknown) => c.factor_new_program,
            (N::Untrusted, P::Unknown) => c.factor_stranger,
            // One side cannot be judged: the other decides, mildly.
            (N::NoHistory, P::Unknown) | (N::Untrusted, P::NoHistory) => c.factor_warmup,
            (N::NoHistory | N::Trusted, P::NoHistory) | (N::NoHistory, P::Known) => c.factor_owner,
        }
    }

    /// Evidence that someone other than the owner sends.
    pub fn different(&self) -> bool {
        self.network == Network::Untrusted || self.program == Program::Unknown
    }

    /// Whether the account's own history could judge this message.
    pub fn judged_on_population(&self) -> bool {
        self.network == Network::NoHistory || self.program == Program::NoHistory
    }
}

/// What is known of the message besides its content.
pub struct Message<'a> {
    pub sender: Sender,
    pub mailed: &'a Mailed,
    pub recipients: u32,
    /// The account's normal (`None` while it has too little history).
    pub normal: Option<Normal>,
    /// Earlier deferred submissions of this message: (count, newest).
    pub retries: Retries,
    /// Networks outside the trusted ones that logged in this hour.
    pub untrusted_networks_last_hour: usize,
}

/// Earlier deferred submissions of the same message.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retries {
    /// Within the retry window.
    pub attempts: usize,
    /// Of them, in a row each less than `retry_min_gap` after the last,
    /// this one included.
    pub quick: usize,
}

/// The points a message earns under configuration `c`.
pub fn score(
    c: &PolicyConfig,
    st: &AccountState,
    now: u64,
    m: &Message<'_>,
    content: &Content,
) -> Breakdown {
    let mut b = Breakdown::default();
    let f = m.sender.factor(c);
    let new = f64::from(m.mailed.new);
    let contacts = f64::from(m.mailed.contacts);
    b.add(
        "new_recipients",
        f * (new * c.weight_new_recipient).min(c.max_new_recipient_points),
    );
    b.add(
        "contacts_from_another_sender",
        f * (contacts * c.weight_contact).min(c.max_contact_points),
    );
    // A sweep through the contact list: more contacts today than the
    // account ever reaches in a day.
    let day = super::contacts::day_number(now);
    let today = st.baseline.contacts_today(day) + m.mailed.first_today;
    let usual = m.normal.map_or(0, |n| n.contacts_per_day);
    let sweep_at = (c.contact_sweep_min as f64).max(f64::from(usual) * c.contact_sweep_factor);
    if m.mailed.first_today > 0 && f64::from(today) > sweep_at {
        b.add("contact_sweep", f * c.weight_contact_sweep);
    }
    // Many messages, each to several new people, within minutes.
    if m.mailed.new >= c.bulk_new_recipients_per_message
        && st.bulk_messages(
            now,
            c.bulk_window.as_secs(),
            c.bulk_new_recipients_per_message,
        ) + 1
            >= c.bulk_messages
    {
        b.add("bulk_new_recipients", f * c.weight_bulk);
    }
    if m.mailed.new > 0 && st.body_seen(content.fingerprint) {
        b.add("repeated_body", f * c.weight_repeated_body);
    }
    if m.untrusted_networks_last_hour >= c.spread_networks_per_hour {
        b.add("network_spread", c.weight_network_spread);
    }
    // Sites the account never linked to before.
    let fresh_links = content
        .link_hashes
        .iter()
        .filter(|l| !st.links.contains(l))
        .count();
    if fresh_links > c.free_link_domains {
        let extra = (fresh_links - c.free_link_domains) as f64;
        b.add(
            "link_domains",
            f.max(c.factor_content) * (extra * c.weight_link_domain).min(c.max_link_points),
        );
    }
    if content.display_name_address && m.sender.different() {
        b.add(
            "display_name_address",
            f.max(0.5) * c.weight_display_name_address,
        );
    }
    let (delivered, bounced) = st.deliveries_today();
    let total = delivered + bounced;
    if m.mailed.new > 0
        && total >= c.bounce_min_recipients
        && f64::from(bounced) / f64::from(total) >= c.bounce_ratio
    {
        b.add("bounces", f * c.weight_bounces);
    }
    if st.failures_before_login >= c.auth_failures_before_success {
        b.add("auth_failures_before_login", f * c.weight_auth_failures);
    }
    let (per_hour, _) = st.messages_within(now, HOUR);
    if per_hour + 1 > c.fast_messages_per_hour {
        b.add("fast_sending", f * c.weight_fast_message);
    }
    let domains = st.distinct_domains_last_hour();
    if domains > c.many_domains_per_hour {
        b.add(
            "many_domains",
            f * ((domains - c.many_domains_per_hour) as f64 * c.weight_many_domains)
                .min(c.max_many_domains_points),
        );
    }
    // A different sender at an hour the account never sends.
    if st.baseline.usual_hour(now, c.active_hours_min_weeks) == Some(false) {
        b.add("unusual_hour", f * c.weight_unusual_hour);
    }
    // No mail program resubmits a deferred message this fast or this often.
    if m.retries.attempts + 1 > c.retry_hammering_attempts
        || m.retries.quick >= c.retry_quick_in_a_row
    {
        b.add("retry_hammering", c.weight_retry_hammering);
    }
    b
}
