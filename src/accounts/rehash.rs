//! Replacing an imported hash (`scheme`) with mailwarden's own argon2id
//! after the first successful login with it: the imported scheme is kept
//! only until then.

use super::{Account, Accounts, Origin, scheme};
use crate::events::{Event, EventKind};

impl Accounts {
    /// Re-hashes `password` (just verified against `account`'s imported
    /// hash) into argon2id, unless the hash changed meanwhile. A failure
    /// leaves the imported hash, which keeps working: the next login tries
    /// again.
    pub(super) async fn rehash(&self, account: &Account, password: &str, via: &'static str) {
        let Ok(new) = self.hash_password(password).await else {
            return;
        };
        let old = account.password_hash.clone();
        let was = scheme::Scheme::of_hash(&old).map_or("unknown", |s| s.name());
        let (now, origin) = (
            self.now(),
            Origin {
                via,
                ..Origin::ADMIN
            },
        );
        let changed = self
            .update_with(&account.address, move |a| {
                if a.password_hash != old {
                    return Ok(false);
                }
                a.password_hash = new;
                a.record(now, &format!("password_rehashed from {was}"), &origin);
                Ok(true)
            })
            .await;
        if let Ok((_, true)) = changed {
            self.emit(
                Event::new(EventKind::AccountPasswordRehashed)
                    .account(&account.address)
                    .reason(was),
            );
        }
    }
}
