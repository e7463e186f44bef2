//! The queue's records as the store keeps them: a message's envelope and
//! delivery state, and the writes a group commit applies. The encoding is
//! stable: fields are only ever added, with defaults.

use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A queue id: milliseconds since the epoch in the high bits, a counter in the
/// low 16, shown as 16 hex digits. Ordered by arrival.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct QueueId(pub u64);

impl fmt::Display for QueueId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:016X}", self.0)
    }
}

impl FromStr for QueueId {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() || s.len() > 16 {
            return Err(format!("{s:?} is not a queue id (16 hex digits)"));
        }
        u64::from_str_radix(s, 16)
            .map(QueueId)
            .map_err(|_| format!("{s:?} is not a queue id (16 hex digits)"))
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    /// ORCPT parameter, kept for DSNs.
    #[serde(default)]
    pub orcpt: Option<String>,
    /// smtp-proto's RCPT_NOTIFY_* bits.
    #[serde(default)]
    pub notify: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Envelope {
    /// Reverse path; empty for the null sender `<>`.
    pub from: String,
    pub recipients: Vec<Recipient>,
    /// Primary address of the authenticated account.
    pub account: String,
    pub client_ip: IpAddr,
    /// Unix seconds.
    pub received_at: u64,
    pub size: u64,
    /// smtp-proto's MAIL_* bits (BODY, SMTPUTF8, RET).
    #[serde(default)]
    pub mail_flags: u64,
    #[serde(default)]
    pub envid: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueState {
    Queued,
    Held,
    /// The message that tipped a policy block: kept for the operator,
    /// never deliverable (the client was refused and still has it).
    Evidence,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueEntry {
    pub id: QueueId,
    pub envelope: Envelope,
    pub state: QueueState,
    /// Delivery attempts that left some recipient to try again.
    #[serde(default)]
    pub attempts: u32,
    /// Unix seconds; not before this time.
    #[serde(default)]
    pub next_attempt: u64,
    #[serde(default)]
    pub last_error: Option<String>,
    /// Delivery state of each recipient, in `envelope.recipients` order.
    /// Empty (or short) means "pending" for those not listed.
    #[serde(default)]
    pub rcpts: Vec<RcptState>,
}

impl Envelope {
    /// A message from a@example.com to b@example.org of `size` bytes (the
    /// store's unit tests).
    #[cfg(test)]
    pub(crate) fn for_tests(size: u64) -> Self {
        Self {
            from: "a@example.com".into(),
            recipients: vec![Recipient {
                address: "b@example.org".into(),
                orcpt: None,
                notify: 0,
            }],
            account: "a@example.com".into(),
            client_ip: std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
            received_at: 0,
            size,
            mail_flags: 0,
            envid: None,
        }
    }
}

impl QueueEntry {
    /// A freshly queued message: every recipient pending, due now.
    pub fn new(id: QueueId, envelope: Envelope) -> Self {
        Self {
            // Due from its arrival: the schedule serves new mail and retries
            // in the order they fell due.
            next_attempt: envelope.received_at,
            id,
            envelope,
            state: QueueState::Queued,
            attempts: 0,
            last_error: None,
            rcpts: Vec::new(),
        }
    }

    /// One state per recipient (fills in "pending" for any not recorded).
    pub fn rcpt_states(&mut self) -> &mut [RcptState] {
        let n = self.envelope.recipients.len();
        self.rcpts.resize_with(n, RcptState::default);
        &mut self.rcpts
    }

    /// The state of recipient `i`.
    pub fn rcpt_state(&self, i: usize) -> RcptState {
        self.rcpts.get(i).cloned().unwrap_or_default()
    }
}

/// Where one recipient of a queued message stands.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RcptStatus {
    /// Not tried yet, or failed temporarily: tried again at `next_attempt`.
    #[default]
    Pending,
    /// The next hop accepted it; never sent again.
    Delivered,
    /// Failed permanently (or expired); never sent again.
    Bounced,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RcptState {
    pub status: RcptStatus,
    /// Attempts made for this recipient.
    #[serde(default)]
    pub attempts: u32,
    /// The last reply for it (`451 4.3.0 Try again later`), or why there
    /// was none (`connection refused`).
    #[serde(default)]
    pub last_reply: Option<String>,
    /// Unix seconds of the last attempt.
    #[serde(default)]
    pub last_attempt: Option<u64>,
    /// A "delayed" DSN was already sent for it.
    #[serde(default)]
    pub delay_notified: bool,
}

/// One change to the spool; a batch of them is one commit.
#[derive(Debug, Clone)]
pub enum QueueWrite {
    Insert {
        entry: QueueEntry,
        body: Vec<u8>,
    },
    /// Replace an entry's record (attempts, state, next try), body unchanged.
    Update(QueueEntry),
    /// Delivery progress: like `Update`, but the stored hold state wins (a
    /// message put on hold during an attempt stays held).
    Progress(QueueEntry),
    SetState(QueueId, QueueState),
    Remove(QueueId),
    /// The scorer's state for an account (`None` forgets it), written in
    /// the same commit as the messages it counted.
    PolicyState {
        account: String,
        state: Option<Vec<u8>>,
    },
}

impl QueueWrite {
    /// Rough bytes this write adds to a commit.
    pub fn size(&self) -> usize {
        match self {
            Self::Insert { body, .. } => body.len() + 256,
            Self::PolicyState { state, .. } => state.as_ref().map_or(64, Vec::len),
            _ => 256,
        }
    }
}
