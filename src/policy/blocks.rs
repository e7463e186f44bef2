//! The block gate: a blocked account gets the exact 554 of its block's kind
//! at MAIL, at every RCPT and DATA, and at the end of DATA.

use async_trait::async_trait;

use super::{Decision, MailContext, MessageContext, Policy, RcptContext};
use crate::accounts::BlockKind;
use crate::smtp::reply;
use crate::store::Store;

pub struct BlockGate {
    store: Store,
    support_contact: Option<String>,
}

impl BlockGate {
    pub fn new(store: Store, support_contact: Option<String>) -> Self {
        Self {
            store,
            support_contact,
        }
    }

    async fn check(&self, account: &str) -> Decision {
        let store = self.store.clone();
        let key = account.to_string();
        let found = tokio::task::spawn_blocking(move || store.account_get(&key)).await;
        match found {
            Ok(Ok(Some(a))) => match a.block.map(|b| b.kind) {
                None => Decision::Accept,
                Some(BlockKind::Policy) => Decision::Block(reply::policy_block(&a.address)),
                Some(BlockKind::Operator) => Decision::Block(reply::operator_block(
                    &a.address,
                    self.support_contact.as_deref(),
                )),
            },
            // The account is gone or unreadable: do not let mail through.
            Ok(Ok(None)) => Decision::Block(reply::operator_block(
                account,
                self.support_contact.as_deref(),
            )),
            _ => Decision::Defer(reply::NOT_QUEUED),
        }
    }
}

#[async_trait]
impl Policy for BlockGate {
    async fn on_mail(&self, ctx: &MailContext<'_>) -> Decision {
        self.check(ctx.account).await
    }
    async fn on_rcpt(&self, ctx: &RcptContext<'_>) -> Decision {
        self.check(ctx.account).await
    }
    async fn on_message(&self, ctx: &MessageContext<'_>) -> Decision {
        self.check(ctx.account).await
    }
}
