//! Changes to shared data heard from the database (`store::Change`): with
//! several nodes, a change made on one reaches the others here, within
//! about a millisecond of its commit. The cached record is dropped, and a
//! block holds (a lift releases) the account's queued mail on this node
//! too, as it does on the node that made it. Brute-force counts from other
//! nodes are counted here too (`lockout::peers`).

use std::collections::HashSet;

use super::Accounts;
use crate::spool::QueueState;
use crate::store::Change;

impl Accounts {
    /// Acts on one change (this node hears its own changes too: holding
    /// held mail again changes nothing).
    pub async fn heard(&self, change: &Change) {
        match change {
            Change::Account(address) => self.cache.forget(address),
            Change::Blocked(address) => {
                self.cache.forget(address);
                self.set_mail_state(address, QueueState::Queued, QueueState::Held)
                    .await;
            }
            Change::Lifted(address) => {
                self.cache.forget(address);
                self.set_mail_state(address, QueueState::Held, QueueState::Queued)
                    .await;
            }
            Change::Lockout { note, .. } => {
                if let Some(note) = super::lockout::Note::from_text(note) {
                    self.lockouts().heard(&note);
                }
            }
            Change::All => {
                self.cache.clear();
                self.hold_blocked_mail().await;
            }
        }
    }

    /// After changes may have been missed: every account with queued mail
    /// here is read again, and a blocked one's mail is held.
    async fn hold_blocked_mail(&self) {
        let Ok(queue) = self.parts.spool.list().await else {
            return;
        };
        let senders: HashSet<String> = queue
            .into_iter()
            .filter(|e| e.state == QueueState::Queued)
            .map(|e| e.envelope.account)
            .collect();
        for address in senders {
            if let Ok(Some(account)) = self.record(&address).await
                && account.block.is_some()
            {
                self.set_mail_state(&address, QueueState::Queued, QueueState::Held)
                    .await;
            }
        }
    }
}
