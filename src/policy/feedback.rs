//! How delivery results reach the scorer's bounce signal: delivery workers
//! report each message's outcome per account, whatever the delivery mode.

/// Told once per delivery attempt that reached a final answer for some
/// recipients.
pub trait DeliveryFeedback: Send + Sync + 'static {
    /// `delivered` recipients were accepted by the next hop, `bounced` were
    /// refused permanently. `account` is the envelope's authenticated account.
    fn delivery_outcome(&self, account: &str, delivered: usize, bounced: usize);
}

/// Tells several listeners.
pub struct Tee(pub Vec<std::sync::Arc<dyn DeliveryFeedback>>);

impl DeliveryFeedback for Tee {
    fn delivery_outcome(&self, account: &str, delivered: usize, bounced: usize) {
        for listener in &self.0 {
            listener.delivery_outcome(account, delivered, bounced);
        }
    }
}
