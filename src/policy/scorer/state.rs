//! One account's recent behaviour, in sliding windows, small enough to be
//! written with every group commit that holds its messages.

use std::collections::VecDeque;
use std::hash::{DefaultHasher, Hash, Hasher};

use serde::{Deserialize, Serialize};

use super::baseline::Baseline;
use super::clients::Clients;
use super::contacts::Contacts;

pub const MINUTE: u64 = 60;
pub const HOUR: u64 = 3600;
pub const DAY: u64 = 24 * HOUR;

/// Recipients the account mailed before: a Bloom filter (16 Kibit, 3
/// hashes). A false "known" only lowers a score; it never blocks anyone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KnownRecipients {
    #[serde(with = "bits_b64")]
    bits: Vec<u8>,
}

const BLOOM_BYTES: usize = 2048;

impl Default for KnownRecipients {
    fn default() -> Self {
        Self {
            bits: vec![0; BLOOM_BYTES],
        }
    }
}

impl KnownRecipients {
    fn positions(address: &str) -> [usize; 3] {
        let mut h = DefaultHasher::new();
        address.hash(&mut h);
        let a = h.finish();
        let b = a.rotate_left(21) ^ 0x9E37_79B9_7F4A_7C15;
        let bits = (BLOOM_BYTES * 8) as u64;
        [a % bits, b % bits, a.wrapping_add(b.wrapping_mul(3)) % bits].map(|x| x as usize)
    }

    pub fn contains(&self, address: &str) -> bool {
        Self::positions(address).iter().all(|&p| {
            self.bits
                .get(p / 8)
                .is_some_and(|b| b & (1 << (p % 8)) != 0)
        })
    }

    pub fn insert(&mut self, address: &str) {
        if self.bits.len() != BLOOM_BYTES {
            self.bits = vec![0; BLOOM_BYTES];
        }
        for p in Self::positions(address) {
            self.bits[p / 8] |= 1 << (p % 8);
        }
    }
}

mod bits_b64 {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(bits: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bits))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(serde::de::Error::custom)
    }
}

/// Link domains remembered per account.
const MAX_LINKS: usize = 32;

/// The recipients of one message as the account knows them.
#[derive(Debug, Clone, Default)]
pub struct Mailed {
    /// Keyed fingerprints of the distinct recipients.
    pub fps: Vec<u32>,
    /// The keyed fingerprint of each recipient, in order (for the log).
    pub each: Vec<u32>,
    /// Never mailed before.
    pub new: u32,
    /// Contacts (mailed before).
    pub contacts: u32,
    /// Contacts not mailed yet today.
    pub first_today: u32,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AccountState {
    /// Points, as of `score_at` (they decay with the half-life).
    pub score: f64,
    pub score_at: u64,
    /// When the scorer first saw the account (its warm-up starts here).
    pub first_seen: u64,
    /// Messages of the last hour, one entry per second that had any:
    /// (time, messages, recipients). Time is counted in whole seconds, so
    /// this loses nothing and holds at most 3600 entries however busy the
    /// account is.
    #[serde(default)]
    pub sent: VecDeque<(u64, u32, u32)>,
    /// The same window as earlier versions stored it, one entry per
    /// message: read from an old record, folded into `sent` by `upgrade`.
    #[serde(default, rename = "recent", skip_serializing)]
    legacy_recent: VecDeque<(u64, u32)>,
    /// Messages per hour for the last day: (hour index, messages, recipients).
    pub hours: VecDeque<(u64, u32, u32)>,
    /// New-recipient counts of the last hour's messages that had any:
    /// (time, new).
    #[serde(default)]
    pub novel: VecDeque<(u64, u32)>,
    /// Recipient domains of the last hour: (time, domain hash).
    pub domains: VecDeque<(u64, u64)>,
    /// Bodies of the last day, each once at its latest use: (time,
    /// fingerprint, recipients then).
    pub bodies: VecDeque<(u64, u64, u32)>,
    /// Logins of the last hour: (time, network).
    pub logins: VecDeque<(u64, String)>,
    /// Wrong passwords since the last successful login (last hour).
    pub auth_failures: VecDeque<u64>,
    /// Tags of the wrong passwords counted in `auth_failures`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failure_tags: Vec<u64>,
    /// Set at a login that followed many failures; counted once.
    #[serde(default)]
    pub failures_before_login: usize,
    /// Delivery results per hour for the last day: (hour, delivered, bounced).
    pub deliveries: VecDeque<(u64, u32, u32)>,
    /// Recipients as an earlier version kept them (a Bloom filter): still
    /// asked while the account's contacts are being learnt, dropped once
    /// its baseline holds a full month.
    #[serde(default, rename = "known", skip_serializing_if = "Option::is_none")]
    pub legacy_known: Option<KnownRecipients>,
    /// The people the account writes to (keyed fingerprints).
    #[serde(default)]
    pub contacts: Contacts,
    /// The mail programs it sends with.
    #[serde(default)]
    pub clients: Clients,
    /// What it normally does, per day.
    #[serde(default)]
    pub baseline: Baseline,
    /// Link domains it sent before (hashes, most recent last).
    #[serde(default)]
    pub links: VecDeque<u32>,
    /// Deferred submissions of the last 10 minutes: (time, message key).
    #[serde(default)]
    pub deferred: VecDeque<(u64, u64)>,
    /// Complaints (ARF reports) of the last day.
    #[serde(default)]
    pub complaints: VecDeque<u64>,
    /// Sending days and logins per client network: what makes a network
    /// trusted (`accounts::trust`). Kept when a block lifts.
    #[serde(default)]
    pub uses: crate::accounts::NetworkUses,
}

fn prune<T>(q: &mut VecDeque<T>, keep: impl Fn(&T) -> bool) {
    while q.front().is_some_and(|x| !keep(x)) {
        q.pop_front();
    }
}

impl AccountState {
    pub fn new(now: u64) -> Self {
        Self {
            first_seen: now,
            score_at: now,
            ..Self::default()
        }
    }

    /// After a lift: windows and score start from zero at `now`; what the
    /// account's normal is (contacts, programs, baseline, links, the
    /// networks' trust record) stays.
    pub fn restarted(self, now: u64) -> Self {
        Self {
            legacy_known: self.legacy_known,
            contacts: self.contacts,
            clients: self.clients,
            baseline: self.baseline,
            links: self.links,
            uses: self.uses,
            ..Self::new(now)
        }
    }

    /// Folds a record written by an earlier version into today's shape, so
    /// an upgrade forgets none of the last hour's counting.
    pub fn upgrade(mut self) -> Self {
        for (at, n) in std::mem::take(&mut self.legacy_recent) {
            match self.sent.back_mut() {
                Some((last, m, r)) if *last >= at => {
                    *m += 1;
                    *r += n;
                }
                _ => self.sent.push_back((at, 1, n)),
            }
        }
        self
    }

    /// Drops what fell out of every window; decays the score to `now`.
    pub fn advance(&mut self, now: u64, half_life: u64) {
        let hour = now / HOUR;
        prune(&mut self.sent, |(at, _, _)| at + HOUR > now);
        prune(&mut self.hours, |(h, _, _)| h + 24 > hour);
        prune(&mut self.domains, |(at, _)| at + HOUR > now);
        prune(&mut self.novel, |(at, _)| at + HOUR > now);
        prune(&mut self.bodies, |(at, _, _)| at + DAY > now);
        prune(&mut self.logins, |(at, _)| at + HOUR > now);
        prune(&mut self.auth_failures, |at| at + HOUR > now);
        prune(&mut self.deliveries, |(h, _, _)| h + 24 > hour);
        prune(&mut self.deferred, |(at, _)| at + 600 > now);
        prune(&mut self.complaints, |at| at + DAY > now);
        if self.legacy_known.is_some() && self.baseline.days.len() >= super::baseline::DAYS {
            self.legacy_known = None;
        }
        if now > self.score_at {
            let elapsed = (now - self.score_at) as f64;
            self.score *= 0.5f64.powf(elapsed / half_life.max(1) as f64);
            self.score_at = now;
        }
        if self.score < 0.01 {
            self.score = 0.0;
        }
    }

    /// (messages, recipients) within `secs` (at most an hour) before `now`.
    pub fn messages_within(&self, now: u64, secs: u64) -> (u32, u32) {
        // Newest last: stop at the first second outside the window.
        self.sent
            .iter()
            .rev()
            .take_while(|(at, _, _)| at + secs > now)
            .fold((0, 0), |(m, r), (_, sm, sr)| (m + sm, r + sr))
    }

    pub fn messages_today(&self) -> (u32, u32) {
        self.hours
            .iter()
            .fold((0, 0), |(m, r), (_, hm, hr)| (m + hm, r + hr))
    }

    /// How the account knows the recipients of a message.
    pub fn mailed(
        &self,
        recipients: &[String],
        key: &super::contacts::ContactKey,
        now: u64,
    ) -> Mailed {
        let day = super::contacts::day_number(now);
        let mut m = Mailed::default();
        for r in recipients {
            let fp = key.of(r);
            m.each.push(fp);
            if m.fps.contains(&fp) {
                continue;
            }
            m.fps.push(fp);
            if self.knows(r, fp) {
                m.contacts += 1;
                if self.contacts.last_day(fp).is_none_or(|d| d < day) {
                    m.first_today += 1;
                }
            } else {
                m.new += 1;
            }
        }
        m
    }

    /// Whether a recipient was mailed before.
    pub fn knows(&self, address: &str, fp: u32) -> bool {
        self.contacts.contains(fp)
            || self
                .legacy_known
                .as_ref()
                .is_some_and(|k| k.contains(address))
    }

    /// Counts a sent message in every window. `mailed` holds each distinct
    /// recipient's keyed fingerprint.
    pub fn record_message(
        &mut self,
        now: u64,
        recipients: &[String],
        mailed: &Mailed,
        fingerprint: u64,
    ) {
        let n = recipients.len() as u32;
        let day = super::contacts::day_number(now);
        // Only messages with new people: the sums and counts over `novel`
        // skip the others anyway, and most mail goes to known contacts
        // (a busy account's state stays small).
        if mailed.new > 0 {
            self.novel.push_back((now, mailed.new));
        }
        self.baseline
            .record(now, day, n, mailed.new, mailed.first_today);
        for fp in &mailed.fps {
            self.contacts.touch(*fp, day);
        }
        match self.sent.back_mut() {
            // Same second, or the clock stepped back: count it with the
            // newest entry, so the window stays in time order (and errs on
            // counting it longer, not shorter).
            Some((at, m, r)) if *at >= now => {
                *m += 1;
                *r += n;
            }
            _ => self.sent.push_back((now, 1, n)),
        }
        let hour = now / HOUR;
        match self.hours.back_mut() {
            Some((h, m, r)) if *h == hour => {
                *m += 1;
                *r += n;
            }
            _ => self.hours.push_back((hour, 1, n)),
        }
        for r in recipients {
            let domain = crate::address::domain_of(r);
            let hash = super::content::stable_hash(domain.as_bytes());
            if !self.domains.iter().any(|(_, d)| *d == hash) {
                self.domains.push_back((now, hash));
            }
        }
        if fingerprint != 0 {
            // One entry per body, at its latest use: the same newsletter
            // sent all day is one entry, not one per message.
            if let Some(i) = self.bodies.iter().position(|(_, f, _)| *f == fingerprint) {
                self.bodies.remove(i);
            }
            self.bodies.push_back((now, fingerprint, n));
        }
        // Bound memory whatever the traffic.
        while self.novel.len() > 5000 {
            self.novel.pop_front();
        }
        while self.domains.len() > 1000 {
            self.domains.pop_front();
        }
        while self.bodies.len() > 500 {
            self.bodies.pop_front();
        }
    }

    /// Link domains of a sent message become the account's own.
    pub fn learn_links(&mut self, links: &[u32]) {
        for l in links {
            if let Some(i) = self.links.iter().position(|x| x == l) {
                self.links.remove(i);
            }
            self.links.push_back(*l);
        }
        while self.links.len() > MAX_LINKS {
            self.links.pop_front();
        }
    }

    /// New recipients of the last hour.
    pub fn new_recipients_last_hour(&self, now: u64) -> u32 {
        self.novel
            .iter()
            .filter(|(at, _)| at + HOUR > now)
            .map(|(_, n)| n)
            .sum()
    }

    pub fn record_login(&mut self, now: u64, network: &str, failures_needed: usize) {
        // Only the last hour's wrong passwords count.
        prune(&mut self.auth_failures, |at| at + HOUR > now);
        if self.auth_failures.len() >= failures_needed {
            self.failures_before_login = self.auth_failures.len();
        }
        self.auth_failures.clear();
        self.failure_tags.clear();
        self.logins.push_back((now, network.to_string()));
        while self.logins.len() > 256 {
            self.logins.pop_front();
        }
    }

    pub fn record_auth_failure(&mut self, now: u64, attempt: Option<u64>) {
        prune(&mut self.auth_failures, |at| at + HOUR > now);
        if self.auth_failures.is_empty() {
            self.failure_tags.clear();
        }
        if let Some(tag) = attempt {
            if self.failure_tags.contains(&tag) {
                return;
            }
            self.failure_tags.push(tag);
            if self.failure_tags.len() > 100 {
                self.failure_tags.remove(0);
            }
        }
        self.auth_failures.push_back(now);
        while self.auth_failures.len() > 100 {
            self.auth_failures.pop_front();
        }
    }

    pub fn record_delivery(&mut self, now: u64, delivered: u32, bounced: u32) {
        let hour = now / HOUR;
        match self.deliveries.back_mut() {
            Some((h, d, b)) if *h == hour => {
                *d += delivered;
                *b += bounced;
            }
            _ => self.deliveries.push_back((hour, delivered, bounced)),
        }
    }

    /// (delivered, bounced) over the last day.
    pub fn deliveries_today(&self) -> (u32, u32) {
        self.deliveries
            .iter()
            .fold((0, 0), |(d, b), (_, hd, hb)| (d + hd, b + hb))
    }

    pub fn networks_last_hour(&self) -> Vec<&str> {
        let mut nets: Vec<&str> = self.logins.iter().map(|(_, n)| n.as_str()).collect();
        nets.sort_unstable();
        nets.dedup();
        nets
    }

    /// Whether an earlier message of the last day had this body.
    pub fn body_seen(&self, fingerprint: u64) -> bool {
        fingerprint != 0 && self.bodies.iter().any(|(_, f, _)| *f == fingerprint)
    }

    /// Messages within `secs` that each had at least `min_new` new recipients.
    pub fn bulk_messages(&self, now: u64, secs: u64, min_new: u32) -> usize {
        self.novel
            .iter()
            .filter(|(at, new)| at + secs > now && *new >= min_new)
            .count()
    }

    pub fn distinct_domains_last_hour(&self) -> usize {
        self.domains.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_slide_and_the_score_decays() {
        let mut s = AccountState::new(1_000_000);
        s.score = 8.0;
        let key = super::super::contacts::ContactKey([1, 2]);
        let to: Vec<String> = vec!["a@x.org".into(), "b@y.org".into()];
        let mailed = s.mailed(&to, &key, 1_000_000);
        assert_eq!(mailed.new, 2);
        s.record_message(1_000_000, &to, &mailed, 7);
        assert_eq!(s.messages_within(1_000_000, MINUTE), (1, 2));
        s.advance(1_000_000 + HOUR, HOUR);
        assert!((s.score - 4.0).abs() < 0.01);
        assert_eq!(s.messages_within(1_000_000 + HOUR, HOUR), (0, 0));
        assert_eq!(s.messages_today(), (1, 2));
        assert!(s.knows("a@x.org", key.of("a@x.org")));
        assert!(!s.knows("c@x.org", key.of("c@x.org")));
        let json = serde_json::to_string(&s).unwrap();
        let back: AccountState = serde_json::from_str(&json).unwrap();
        assert!(back.knows("b@y.org", key.of("b@y.org")));
        assert!(json.len() < 4000, "{}", json.len());
    }

    #[test]
    fn a_record_of_the_earlier_shape_keeps_its_hour() {
        // Today's record with the earlier per-message window in place of `sent`.
        let mut old = serde_json::to_value(AccountState::new(0)).unwrap();
        let fields = old.as_object_mut().unwrap();
        fields.remove("sent");
        fields.insert(
            "recent".into(),
            serde_json::json!([[100, 1], [100, 2], [130, 1]]),
        );
        let old = old.to_string();
        let st: AccountState = serde_json::from_str(&old).unwrap();
        let st = st.upgrade();
        assert_eq!(st.messages_within(130, HOUR), (3, 4));
        assert_eq!(st.messages_within(130, 10), (1, 1));
        assert!(!serde_json::to_string(&st).unwrap().contains("recent"));
    }

    #[test]
    fn one_wrong_password_typed_again_is_one_failure_and_old_ones_expire() {
        let mut s = AccountState::new(0);
        for _ in 0..10 {
            s.record_auth_failure(100, Some(7));
        }
        s.record_login(200, "192.0.2.0/24", 5);
        assert_eq!(s.failures_before_login, 0, "a client with an old password");
        for tag in 0..6 {
            s.record_auth_failure(300, Some(tag));
        }
        s.record_login(400, "192.0.2.0/24", 5);
        assert_eq!(s.failures_before_login, 6, "six passwords guessed");
        s.failures_before_login = 0;
        for tag in 10..16 {
            s.record_auth_failure(1000, Some(tag));
        }
        s.record_login(1000 + HOUR, "192.0.2.0/24", 5);
        assert_eq!(s.failures_before_login, 0, "an hour ago");
    }
}
