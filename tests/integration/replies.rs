//! DESIGN.md's reply table, row by row: the exact text a client sees.
//! (AUTH rows are in `submission.rs`, limits in `limits.rs`, header From in
//! `headers.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use mailwarden::spool::{QueueEntry, QueueId, QueueWrite, Spool};
use mailwarden::store::StoreError;

use crate::common::client::Client;
use crate::common::{ALICE, TestServer, assert_outbox_stays, queued_id, split_received, stored};

const MESSAGE: &[u8] = b"From: <alice@example.com>\r\nSubject: replies\r\n\r\nHello.\r\n";

#[tokio::test]
async fn greeting_starttls_and_quit_texts() {
    let server = TestServer::start().await;
    let (mut c, greeting) = Client::plain(server.submission(), &server.cert_path()).await;
    assert_eq!(greeting.line(), "220 mail.test.example ESMTP");
    c.ehlo().await;
    assert_eq!(
        c.cmd("STARTTLS").await.line(),
        "220 2.0.0 Ready to start TLS"
    );
    c.upgrade().await;
    c.ehlo().await;
    assert_eq!(c.cmd("QUIT").await.line(), "221 2.0.0 Bye");
    assert!(c.is_closed().await);
}

#[tokio::test]
async fn syntax_errors() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    assert_eq!(c.cmd("FROB").await.line(), "500 5.5.1 Command unrecognized");
    assert_eq!(
        c.cmd("EHLO").await.line(),
        "501 5.5.4 Syntax error in parameters"
    );
    assert_eq!(
        c.cmd("MAIL FROM:alice@example.com").await.line(),
        "501 5.5.4 Syntax error in parameters"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> SIZE=lots")
            .await
            .line(),
        "501 5.5.4 Syntax error in parameters"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> X-FOO=bar")
            .await
            .line(),
        "555 5.5.4 Unsupported parameter"
    );
    // Parsed by smtp-proto but not advertised by us.
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> BODY=BINARYMIME")
            .await
            .line(),
        "555 5.5.4 Unsupported parameter"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> REQUIRETLS")
            .await
            .line(),
        "555 5.5.4 Unsupported parameter"
    );
    c.envelope(ALICE, &[]).await;
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.org> NOTIFY=NEVER,SUCCESS")
            .await
            .line(),
        "501 5.5.4 Syntax error in parameters"
    );
    // Nothing above broke the session.
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn sequence_errors_and_commands_we_do_not_run() {
    let server = TestServer::with_alice("").await;
    let (mut c, _) = Client::implicit_tls(server.submissions(), &server.cert_path()).await;
    // AUTH before EHLO.
    assert_eq!(
        c.cmd("AUTH PLAIN").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    c.ehlo().await;
    c.auth_plain(ALICE, crate::common::PASSWORD).await;
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.org>").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    assert_eq!(
        c.cmd("DATA").await.line(),
        "503 5.5.1 Bad sequence of commands"
    );
    assert_eq!(
        c.cmd("EXPN staff").await.line(),
        "502 5.5.1 Command not implemented"
    );
    assert_eq!(
        c.cmd("ETRN example.org").await.line(),
        "502 5.5.1 Command not implemented"
    );
    assert_eq!(
        c.cmd("VRFY bob").await.line(),
        "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery"
    );
    let help = c.cmd("HELP").await;
    assert_eq!(help.code, 214, "{help:?}");
    c.envelope(ALICE, &[]).await;
    assert_eq!(c.cmd("DATA").await.line(), "554 5.5.1 No valid recipients");
    assert_eq!(
        c.bdat(b"x", true).await.line(),
        "554 5.5.1 No valid recipients"
    );
    assert_eq!(c.cmd("RSET").await.line(), "250 2.0.0 Ok");
    assert_eq!(c.cmd("NOOP").await.line(), "250 2.0.0 Ok");
}

#[tokio::test]
async fn envelope_domains_must_be_fully_qualified() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example>").await.line(),
        "554 5.1.7 Sender address <alice@example> must be fully qualified"
    );
    assert_eq!(
        c.cmd("MAIL FROM:<alice>").await.line(),
        "554 5.1.7 Sender address <alice> must be fully qualified"
    );
    c.envelope(ALICE, &[]).await;
    assert_eq!(
        c.cmd("RCPT TO:<bob@localhost>").await.line(),
        "554 5.1.3 Recipient address <bob@localhost> must be fully qualified"
    );
    assert_eq!(
        c.cmd("RCPT TO:<bob>").await.line(),
        "554 5.1.3 Recipient address <bob> must be fully qualified"
    );
    // A null forward path is no address at all.
    assert_eq!(
        c.cmd("RCPT TO:<>").await.line(),
        "501 5.5.4 Syntax error in parameters"
    );
    // <Postmaster> is exempt and means our own postmaster.
    assert_eq!(c.cmd("RCPT TO:<Postmaster>").await.line(), "250 2.1.5 Ok");
    let id = queued_id(&c.data(MESSAGE).await);
    let (received, _) = split_received(&stored(&server, &id).await);
    assert!(
        received.contains(" for <postmaster@mail.test.example>; "),
        "{received}"
    );
}

#[tokio::test]
async fn non_ascii_addresses_need_smtputf8() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    assert_eq!(
        c.cmd("MAIL FROM:<jörg@example.com>").await.line(),
        "553 5.6.7 Non-ASCII address <jörg@example.com> requires SMTPUTF8"
    );
    c.envelope(ALICE, &[]).await;
    assert_eq!(
        c.cmd("RCPT TO:<josé@example.org>").await.line(),
        "553 5.6.7 Non-ASCII address <josé@example.org> requires SMTPUTF8"
    );
    c.cmd("RSET").await;
    assert_eq!(
        c.cmd("MAIL FROM:<alice@example.com> SMTPUTF8").await.line(),
        "250 2.1.0 Ok"
    );
    assert_eq!(
        c.cmd("RCPT TO:<josé@bücher.example>").await.line(),
        "250 2.1.5 Ok"
    );
    let id = queued_id(&c.data(MESSAGE).await);
    let (received, _) = split_received(&stored(&server, &id).await);
    // Normalised: domain as an A-label, local part kept in UTF-8.
    assert!(
        received.contains(" for <josé@xn--bcher-kva.example>; "),
        "{received}"
    );
}

#[tokio::test]
async fn null_sender_is_accepted_and_queued() {
    let server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    assert_eq!(c.cmd("MAIL FROM:<>").await.line(), "250 2.1.0 Ok");
    assert_eq!(
        c.cmd("RCPT TO:<bob@example.org>").await.line(),
        "250 2.1.5 Ok"
    );
    let id = queued_id(&c.data(MESSAGE).await);
    stored(&server, &id).await;
}

#[tokio::test]
async fn shutting_down_answers_421_between_commands() {
    let mut server = TestServer::with_alice("").await;
    let mut c = server.alice().await;
    let running = server.running.take().unwrap();
    let stopping = tokio::spawn(running.shutdown());
    assert_eq!(c.reply().await.line(), "421 4.3.2 Service shutting down");
    assert!(c.is_closed().await);
    tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("shutdown finishes")
        .unwrap();
}

/// The real spool, except that the first inserts fail as told.
struct FailingSpool {
    inner: Arc<dyn Spool>,
    calls: AtomicUsize,
}

#[async_trait]
impl Spool for FailingSpool {
    fn new_id(&self) -> QueueId {
        self.inner.new_id()
    }
    async fn apply(&self, writes: Vec<QueueWrite>) -> Result<Vec<bool>, StoreError> {
        if writes
            .iter()
            .any(|w| matches!(w, QueueWrite::Insert { .. }))
        {
            match self.calls.fetch_add(1, Ordering::SeqCst) {
                0 => {
                    return Err(StoreError::NoSpace(
                        "No space left on device (os error 28)".into(),
                    ));
                }
                1 => return Err(StoreError::Failed("fsync failed".into())),
                _ => {}
            }
        }
        self.inner.apply(writes).await
    }
    async fn list(&self) -> Result<Vec<QueueEntry>, StoreError> {
        self.inner.list().await
    }
    async fn get(&self, id: QueueId) -> Result<Option<QueueEntry>, StoreError> {
        self.inner.get(id).await
    }
    async fn body(&self, id: QueueId) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.body(id).await
    }
    async fn wait_for_work(&self, max: Duration) {
        self.inner.wait_for_work(max).await
    }
    fn now(&self) -> u64 {
        self.inner.now()
    }
}

#[tokio::test]
async fn storage_failures_never_answer_250() {
    let overrides = mailwarden::server::Overrides {
        spool: Some(Box::new(|inner| {
            Arc::new(FailingSpool {
                inner,
                calls: AtomicUsize::new(0),
            })
        })),
        ..Default::default()
    };
    let server = TestServer::start_with_overrides("", overrides).await;
    server.add_account(ALICE, crate::common::PASSWORD).await;
    let mut c = server.alice().await;
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.data(MESSAGE).await.line(),
        "452 4.3.1 Insufficient system storage"
    );
    c.envelope(ALICE, &["bob@example.org"]).await;
    assert_eq!(
        c.data(MESSAGE).await.line(),
        "451 4.3.0 Temporary failure, message not queued"
    );
    assert_outbox_stays(&server, 0).await;
    // The store works again: the same session goes on.
    c.envelope(ALICE, &["bob@example.org"]).await;
    let id = queued_id(&c.data(MESSAGE).await);
    stored(&server, &id).await;
    assert_outbox_stays(&server, 1).await;
}
