//! Every operator command, in one place. The admin API runs them for the
//! CLI while a server is up; with no server the CLI runs them itself on the
//! store. One request type, one implementation, two ways in.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::accounts::{
    Account, AccountError, Accounts, BlockKind, BlockRequest, HistoryEntry, Origin,
};
use crate::policy::scorer::{Ledger, PolicyView};
use crate::spool::{QueueEntry, QueueId, QueueState, QueueWrite, RcptStatus, Spool};
use crate::store::{Store, StoreError};

/// A command, as the CLI sends it (`{"op": "account_add", ...}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    AccountAdd {
        address: String,
        password: String,
    },
    AccountPasswd {
        address: String,
        password: String,
    },
    AccountList,
    AccountShow {
        address: String,
    },
    AccountDelete {
        address: String,
    },
    AccountDisable {
        address: String,
    },
    AccountEnable {
        address: String,
    },
    AccountPolicySet {
        address: String,
        /// `KEY=VALUE`; VALUE `default` removes the override.
        setting: String,
    },
    AliasAdd {
        address: String,
        alias: String,
    },
    AliasRemove {
        address: String,
        alias: String,
    },
    AliasList {
        address: String,
    },
    AccountBlock {
        address: String,
        reason: String,
        /// A policy-kind block the user can lift (password + 2FA).
        self_service: bool,
        abuse_networks: Vec<String>,
    },
    AccountUnblock {
        address: String,
    },
    /// Set the recovery address (`account recovery`); it is sent a link to
    /// confirm it.
    AccountRecovery {
        address: String,
        recovery: String,
    },
    /// Mark a network trusted for the account (`account trust`).
    AccountTrust {
        address: String,
        network: String,
    },
    AccountReset {
        address: String,
        password: String,
    },
    /// `account import`: a passwd-file or CSV of Dovecot hashes, whole.
    AccountImport {
        text: String,
        dry_run: bool,
    },
    TotpEnable {
        address: String,
    },
    TotpVerify {
        address: String,
        code: String,
    },
    TotpDisable {
        address: String,
    },
    DevicePasswordAdd {
        address: String,
        name: String,
    },
    DevicePasswordList {
        address: String,
    },
    DevicePasswordRevoke {
        address: String,
        name: String,
    },
    QueueList {
        held: bool,
    },
    QueueShow {
        id: String,
    },
    QueueRetry {
        id: String,
    },
    /// Every queued message now, or those with a recipient at `domain`.
    QueueRetryMany {
        domain: Option<String>,
    },
    QueueRelease {
        id: String,
    },
    QueueDelete {
        id: String,
    },
    /// Writes a consistent snapshot of the store to `path` (absolute).
    /// Read every table and record of the store (`store check`).
    StoreCheck,
    Backup {
        path: PathBuf,
    },
    /// An ARF report (RFC 5965): the account that sent the reported
    /// message earns the complaint's points.
    PolicyComplaint {
        report: String,
    },
}

impl Request {
    /// Passwords must not end up in logs, even at debug level.
    pub fn name(&self) -> &'static str {
        match self {
            Self::AccountAdd { .. } => "account_add",
            Self::AccountPasswd { .. } => "account_passwd",
            Self::AccountList => "account_list",
            Self::AccountShow { .. } => "account_show",
            Self::AccountDelete { .. } => "account_delete",
            Self::AccountDisable { .. } => "account_disable",
            Self::AccountEnable { .. } => "account_enable",
            Self::AccountPolicySet { .. } => "account_policy_set",
            Self::AliasAdd { .. } => "alias_add",
            Self::AliasRemove { .. } => "alias_remove",
            Self::AliasList { .. } => "alias_list",
            Self::AccountBlock { .. } => "account_block",
            Self::AccountUnblock { .. } => "account_unblock",
            Self::AccountTrust { .. } => "account_trust",
            Self::AccountRecovery { .. } => "account_recovery",
            Self::AccountReset { .. } => "account_reset",
            Self::AccountImport { .. } => "account_import",
            Self::TotpEnable { .. } => "totp_enable",
            Self::TotpVerify { .. } => "totp_verify",
            Self::TotpDisable { .. } => "totp_disable",
            Self::DevicePasswordAdd { .. } => "device_password_add",
            Self::DevicePasswordList { .. } => "device_password_list",
            Self::DevicePasswordRevoke { .. } => "device_password_revoke",
            Self::QueueList { .. } => "queue_list",
            Self::QueueShow { .. } => "queue_show",
            Self::QueueRetry { .. } => "queue_retry",
            Self::QueueRetryMany { .. } => "queue_retry_many",
            Self::QueueRelease { .. } => "queue_release",
            Self::QueueDelete { .. } => "queue_delete",
            Self::Backup { .. } => "backup",
            Self::StoreCheck => "store_check",
            Self::PolicyComplaint { .. } => "policy_complaint",
        }
    }
}

/// Why a command failed; `kind` decides the HTTP status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OpError {
    pub kind: OpErrorKind,
    pub error: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpErrorKind {
    Invalid,
    NotFound,
    Conflict,
    Internal,
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.error)
    }
}

impl std::error::Error for OpError {}

impl OpError {
    fn new(kind: OpErrorKind, error: impl Into<String>) -> Self {
        Self {
            kind,
            error: error.into(),
        }
    }
}

impl From<AccountError> for OpError {
    fn from(e: AccountError) -> Self {
        let kind = match &e {
            AccountError::Address(_) | AccountError::Password(_) | AccountError::BadCode => {
                OpErrorKind::Invalid
            }
            AccountError::State(_)
            | AccountError::OtpLocked(_)
            | AccountError::NeedsTrustedNetwork => OpErrorKind::Conflict,
            AccountError::Exists(_) | AccountError::AddressTaken(_) => OpErrorKind::Conflict,
            AccountError::NoAlias { .. } => OpErrorKind::NotFound,
            AccountError::NotFound(_) => OpErrorKind::NotFound,
            AccountError::Store(_)
            | AccountError::Hash(_)
            | AccountError::Task(_)
            | AccountError::SecretUnreadable => OpErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

impl From<StoreError> for OpError {
    fn from(e: StoreError) -> Self {
        let kind = match e {
            StoreError::Missing(_) => OpErrorKind::NotFound,
            _ => OpErrorKind::Internal,
        };
        Self::new(kind, e.to_string())
    }
}

/// What `account show` and `account list` print.
#[derive(Debug, Serialize, Deserialize)]
pub struct AccountView {
    pub address: String,
    pub aliases: Vec<String>,
    pub created: u64,
    pub disabled: bool,
    /// `off`, `pending` or `on`.
    pub totp: String,
    /// A new 2FA secret waits for its first code (re-enrolment while on).
    pub totp_pending: bool,
    pub block: Option<BlockView>,
    pub device_passwords: Vec<DevicePasswordView>,
    pub history: Vec<HistoryEntry>,
    /// Per-account policy limits set by the operator.
    pub policy_overrides: std::collections::BTreeMap<String, f64>,
    /// The scorer's counters and score (account show only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy: Option<PolicyView>,
    /// The recovery address, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recovery: Option<RecoveryView>,
    /// Networks trusted for the account now, and why (account show only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_networks: Option<Vec<TrustedView>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct RecoveryView {
    pub address: String,
    pub set_at: u64,
    pub confirmed: bool,
    /// Set by the operator or from a trusted network.
    pub set_trusted: bool,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct TrustedView {
    pub network: String,
    /// `sending` (earned by the account's own mail) or `operator`.
    pub by: String,
}

fn trusted_views(accounts: &crate::accounts::Accounts, account: &Account) -> Vec<TrustedView> {
    accounts
        .trusted_networks(account)
        .into_iter()
        .map(|t| TrustedView {
            network: t.network().to_string(),
            by: match t {
                crate::accounts::Trusted::Sending(_) => "sending".into(),
                crate::accounts::Trusted::Operator(_) => "operator".into(),
            },
        })
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
pub struct BlockView {
    pub kind: BlockKind,
    pub reason: String,
    pub seq: u64,
    pub at: u64,
    pub abuse_networks: Vec<String>,
    /// Trust earned from then on does not count while the block is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub abuse_start: Option<u64>,
    /// Operators only: the evidence behind a policy block.
    pub detail: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct DevicePasswordView {
    pub name: String,
    pub created: u64,
    pub last_used: Option<u64>,
    pub last_ip: Option<String>,
    /// A policy block suspends every device password.
    pub suspended: bool,
}

impl From<Account> for AccountView {
    fn from(a: Account) -> Self {
        let suspended = a.policy_blocked();
        Self {
            totp: a.totp_status().to_string(),
            totp_pending: a.totp.pending.is_some(),
            recovery: a.recovery.as_ref().map(|r| RecoveryView {
                address: r.address.clone(),
                set_at: r.set_at,
                confirmed: r.confirmed_at.is_some(),
                set_trusted: r.set_trusted,
            }),
            block: a.block.map(|b| BlockView {
                kind: b.kind,
                reason: b.reason,
                seq: b.seq,
                at: b.at,
                abuse_networks: b.abuse_networks.iter().map(ToString::to_string).collect(),
                abuse_start: b.abuse_start,
                detail: b.detail,
            }),
            device_passwords: a
                .device_passwords
                .into_iter()
                .map(|d| DevicePasswordView {
                    name: d.name,
                    created: d.created,
                    last_used: d.last_used,
                    last_ip: d.last_ip.map(|ip| ip.to_string()),
                    suspended,
                })
                .collect(),
            address: a.address,
            aliases: a.aliases,
            created: a.created,
            disabled: a.disabled,
            history: a.history,
            policy_overrides: a.policy_overrides,
            policy: None,
            trusted_networks: None,
        }
    }
}

/// What `queue list` and `queue show` print.
#[derive(Debug, Serialize, Deserialize)]
pub struct QueueView {
    pub id: String,
    pub state: QueueState,
    pub account: String,
    pub from: String,
    pub recipients: Vec<String>,
    pub size: u64,
    pub received_at: u64,
    pub attempts: u32,
    pub next_attempt: u64,
    pub last_error: Option<String>,
    /// Each recipient's delivery state, in envelope order.
    #[serde(default)]
    pub deliveries: Vec<RecipientView>,
    /// The message header (queue show only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub headers: Option<String>,
}

/// One recipient of a queued message.
#[derive(Debug, Serialize, Deserialize)]
pub struct RecipientView {
    pub address: String,
    /// `pending`, `delivered` or `bounced`.
    pub status: RcptStatus,
    pub attempts: u32,
    /// The last reply from the next hop, or why there was none.
    pub last_reply: Option<String>,
    pub last_attempt: Option<u64>,
    /// Unix seconds of the next try (pending recipients of queued mail).
    pub next_attempt: Option<u64>,
}

impl From<QueueEntry> for QueueView {
    fn from(e: QueueEntry) -> Self {
        let deliveries = e
            .envelope
            .recipients
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let state = e.rcpt_state(i);
                let pending = state.status == RcptStatus::Pending;
                RecipientView {
                    address: r.address.clone(),
                    status: state.status,
                    attempts: state.attempts,
                    last_reply: state.last_reply,
                    last_attempt: state.last_attempt,
                    next_attempt: (pending && e.state == QueueState::Queued)
                        .then_some(e.next_attempt),
                }
            })
            .collect();
        Self {
            deliveries,
            id: e.id.to_string(),
            state: e.state,
            account: e.envelope.account,
            from: e.envelope.from,
            recipients: e
                .envelope
                .recipients
                .into_iter()
                .map(|r| r.address)
                .collect(),
            size: e.envelope.size,
            received_at: e.envelope.received_at,
            attempts: e.attempts,
            next_attempt: e.next_attempt,
            last_error: e.last_error,
            headers: None,
        }
    }
}

#[derive(Clone)]
pub struct Ops {
    pub accounts: Accounts,
    pub spool: Arc<dyn Spool>,
    pub store: Store,
    /// Where accounts live: `"redb"` (in `store`) or `"postgres"`.
    pub shared_backend: &'static str,
    /// The scorer's windows (`account show`).
    pub ledger: Arc<Ledger>,
}

fn to_json<T: Serialize>(value: T) -> Result<Value, OpError> {
    serde_json::to_value(value).map_err(|e| OpError::new(OpErrorKind::Internal, e.to_string()))
}

fn queue_id(id: &str) -> Result<QueueId, OpError> {
    id.parse()
        .map_err(|e: String| OpError::new(OpErrorKind::Invalid, e))
}

impl Ops {
    pub async fn run(&self, request: Request) -> Result<Value, OpError> {
        let accounts = &self.accounts;
        let admin = &Origin::ADMIN;
        match request {
            Request::AccountAdd { address, password } => to_json(AccountView::from(
                accounts.add(&address, &password, admin).await?,
            )),
            Request::AccountPasswd { address, password } => {
                let account = accounts.set_password(&address, &password, admin).await?;
                Ok(
                    json!({"address": account.address, "password_changed": true, "blocked": account.block.is_some()}),
                )
            }
            Request::AccountPolicySet { address, setting } => {
                let (key, value) = setting.split_once('=').ok_or_else(|| {
                    OpError::new(OpErrorKind::Invalid, "write the setting as KEY=VALUE")
                })?;
                let value = match value.trim() {
                    "default" | "unset" => None,
                    v => Some(
                        v.parse::<f64>()
                            .ok()
                            .filter(|v| v.is_finite() && *v >= 0.0)
                            .ok_or_else(|| {
                                OpError::new(OpErrorKind::Invalid, format!("{v:?} is not a number"))
                            })?,
                    ),
                };
                let account = accounts
                    .set_policy_override(&address, key.trim(), value, admin)
                    .await?;
                Ok(
                    json!({"address": account.address, "policy_overrides": account.policy_overrides}),
                )
            }
            Request::AliasAdd { address, alias } => {
                let account = accounts.alias_add(&address, &alias, admin).await?;
                let alias = crate::address::normalize(&alias).unwrap_or(alias);
                Ok(json!({"address": account.address, "alias": alias, "aliases": account.aliases}))
            }
            Request::AliasRemove { address, alias } => {
                let account = accounts.alias_remove(&address, &alias, admin).await?;
                let alias = crate::address::normalize(&alias).unwrap_or(alias);
                Ok(json!({"address": account.address, "alias": alias, "aliases": account.aliases}))
            }
            Request::AliasList { address } => to_json(accounts.alias_list(&address).await?),
            Request::AccountBlock {
                address,
                reason,
                self_service,
                abuse_networks,
            } => {
                let networks = abuse_networks
                    .iter()
                    .map(|n| {
                        n.parse::<ipnet::IpNet>().map(|n| n.trunc()).map_err(|_| {
                            OpError::new(
                                OpErrorKind::Invalid,
                                format!("{n:?} is not a network (CIDR)"),
                            )
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if !self_service && !networks.is_empty() {
                    return Err(OpError::new(
                        OpErrorKind::Invalid,
                        "--abuse-network needs --self-service",
                    ));
                }
                if reason.trim().is_empty() {
                    return Err(OpError::new(
                        OpErrorKind::Invalid,
                        "a block needs a --reason",
                    ));
                }
                let request = BlockRequest {
                    kind: if self_service {
                        BlockKind::Policy
                    } else {
                        BlockKind::Operator
                    },
                    reason: reason.trim().to_string(),
                    detail: None,
                    abuse_networks: networks,
                };
                to_json(AccountView::from(
                    accounts.block(&address, request, admin).await?,
                ))
            }
            Request::AccountUnblock { address } => {
                to_json(AccountView::from(accounts.unblock(&address, admin).await?))
            }
            Request::AccountRecovery { address, recovery } => to_json(AccountView::from(
                accounts.set_recovery(&address, &recovery, admin).await?,
            )),
            Request::AccountTrust { address, network } => {
                let network = network
                    .parse::<ipnet::IpNet>()
                    .or_else(|_| network.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                    .map_err(|_| {
                        OpError::new(
                            OpErrorKind::Invalid,
                            format!("{network:?} is not a network (CIDR) or an address"),
                        )
                    })?;
                let account = accounts.trust_network(&address, network, admin).await?;
                let mut view = AccountView::from(account.clone());
                view.trusted_networks = Some(trusted_views(accounts, &account));
                to_json(view)
            }
            Request::AccountImport { text, dry_run } => {
                let entries = crate::accounts::import::parse(&text)
                    .map_err(|e| OpError::new(OpErrorKind::Invalid, e.to_string()))?;
                to_json(accounts.import(entries, dry_run).await?)
            }
            Request::AccountReset { address, password } => to_json(AccountView::from(
                accounts.reset(&address, &password, admin).await?,
            )),
            Request::TotpEnable { address } => {
                let enrolment = accounts.totp_enable(&address, admin).await?;
                // `secret` as authenticator libraries take it (base32, no
                // spaces); `secret_display` in groups of four for people.
                let secret: String = enrolment.key.split_whitespace().collect();
                Ok(json!({
                    "address": address,
                    "otpauth_url": enrolment.otpauth_url,
                    "secret": secret,
                    "secret_display": enrolment.key,
                }))
            }
            Request::TotpVerify { address, code } => {
                let account = accounts.totp_verify(&address, &code, admin).await?;
                Ok(
                    json!({"address": account.address, "totp": account.totp_status(), "blocked": account.block.is_some()}),
                )
            }
            Request::TotpDisable { address } => {
                let account = accounts.totp_disable(&address, None, admin).await?;
                Ok(json!({"address": account.address, "totp": account.totp_status()}))
            }
            Request::DevicePasswordAdd { address, name } => {
                let password = accounts.device_password_add(&address, &name, admin).await?;
                Ok(json!({"address": address, "name": name.trim(), "password": password}))
            }
            Request::DevicePasswordList { address } => {
                to_json(AccountView::from(accounts.get(&address).await?).device_passwords)
            }
            Request::DevicePasswordRevoke { address, name } => {
                accounts
                    .device_password_revoke(&address, &name, admin)
                    .await?;
                Ok(json!({"address": address, "name": name, "revoked": true}))
            }
            Request::AccountList => {
                let list: Vec<AccountView> =
                    accounts.list().await?.into_iter().map(Into::into).collect();
                to_json(list)
            }
            Request::AccountShow { address } => {
                let account = accounts.get(&address).await?;
                let mut view = AccountView::from(account.clone());
                view.policy = Some(self.ledger.view(&view.address));
                view.trusted_networks = Some(trusted_views(accounts, &account));
                to_json(view)
            }
            Request::AccountDelete { address } => {
                accounts.delete(&address).await?;
                Ok(json!({"address": address, "deleted": true}))
            }
            Request::AccountDisable { address } => to_json(AccountView::from(
                accounts.set_disabled(&address, true, admin).await?,
            )),
            Request::AccountEnable { address } => to_json(AccountView::from(
                accounts.set_disabled(&address, false, admin).await?,
            )),
            Request::QueueList { held } => {
                // Held mail and policy evidence are listed together.
                let wanted = |s: QueueState| match held {
                    true => s != QueueState::Queued,
                    false => s == QueueState::Queued,
                };
                let list: Vec<QueueView> = self
                    .spool
                    .list()
                    .await?
                    .into_iter()
                    .filter(|e| wanted(e.state))
                    .map(Into::into)
                    .collect();
                to_json(list)
            }
            Request::QueueShow { id } => {
                let id = queue_id(&id)?;
                let entry = self.entry(id).await?;
                let body = self.spool.body(id).await?.unwrap_or_default();
                let header_end = body
                    .windows(4)
                    .position(|w| w == b"\r\n\r\n")
                    .map_or(body.len(), |p| p + 2);
                let mut view = QueueView::from(entry);
                view.headers = Some(String::from_utf8_lossy(&body[..header_end]).into_owned());
                to_json(view)
            }
            Request::QueueRetry { id } => {
                let mut entry = self.entry(queue_id(&id)?).await?;
                if entry.state == QueueState::Evidence {
                    return Err(OpError::new(
                        OpErrorKind::Conflict,
                        format!("message {id} is policy evidence: it is never delivered"),
                    ));
                }
                entry.next_attempt = 0;
                self.spool.apply(vec![QueueWrite::Update(entry)]).await?;
                Ok(json!({"id": id, "retry": "now"}))
            }
            Request::QueueRetryMany { domain } => {
                let domain = domain.map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase());
                let at_domain = |address: &str| match &domain {
                    None => true,
                    Some(d) => address
                        .rsplit_once('@')
                        .is_some_and(|(_, host)| host.eq_ignore_ascii_case(d)),
                };
                let writes: Vec<QueueWrite> = self
                    .spool
                    .list()
                    .await?
                    .into_iter()
                    .filter(|e| e.state == QueueState::Queued)
                    .filter(|e| e.envelope.recipients.iter().any(|r| at_domain(&r.address)))
                    .map(|mut e| {
                        e.next_attempt = 0;
                        QueueWrite::Update(e)
                    })
                    .collect();
                let n = writes.len();
                if n > 0 {
                    self.spool.apply(writes).await?;
                }
                Ok(json!({"retried": n, "domain": domain}))
            }
            Request::QueueRelease { id } => {
                let id = queue_id(&id)?;
                let entry = self.entry(id).await?;
                if entry.state == QueueState::Evidence {
                    return Err(OpError::new(
                        OpErrorKind::Conflict,
                        format!(
                            "message {id} is policy evidence: it can be read or deleted, never delivered"
                        ),
                    ));
                }
                if entry.state != QueueState::Held {
                    return Err(OpError::new(
                        OpErrorKind::Conflict,
                        format!("message {id} is not held"),
                    ));
                }
                self.spool.release(id).await?;
                Ok(json!({"id": id.to_string(), "released": true}))
            }
            Request::QueueDelete { id } => {
                let id = queue_id(&id)?;
                if !self.spool.remove(id).await? {
                    return Err(OpError::new(
                        OpErrorKind::NotFound,
                        format!("no message {id} in the queue"),
                    ));
                }
                Ok(json!({"id": id.to_string(), "deleted": true}))
            }
            Request::PolicyComplaint { report } => {
                let complaint = crate::policy::complaint::parse(report.as_bytes())
                    .map_err(|e| OpError::new(OpErrorKind::Invalid, e.to_string()))?;
                let sender = crate::address::normalize(&complaint.sender)
                    .map_err(|e| OpError::new(OpErrorKind::Invalid, e.to_string()))?;
                let account = match accounts.record(&sender).await? {
                    Some(a) => a.address.clone(),
                    None => self.store.alias_owner(&sender)?.ok_or_else(|| {
                        OpError::new(
                            OpErrorKind::NotFound,
                            format!("the reported sender {sender} is no account or alias here"),
                        )
                    })?,
                };
                self.ledger.observe_complaint(&account);
                Ok(json!({"account": account, "feedback_type": complaint.feedback_type}))
            }
            Request::StoreCheck => {
                let store = self.store.clone();
                let report = tokio::task::spawn_blocking(move || store.check())
                    .await
                    .map_err(|e| OpError::new(OpErrorKind::Internal, e.to_string()))??;
                if !report.ok() {
                    return Err(OpError::new(
                        OpErrorKind::Conflict,
                        format!(
                            "the store has {} problem(s):\n{}",
                            report.problems.len(),
                            report.problems.join("\n")
                        ),
                    ));
                }
                to_json(report)
            }
            Request::Backup { path } => {
                if !path.is_absolute() {
                    return Err(OpError::new(
                        OpErrorKind::Invalid,
                        "the backup path must be absolute",
                    ));
                }
                let store = self.store.clone();
                let target = path.clone();
                let summary = tokio::task::spawn_blocking(move || store.backup_to(&target))
                    .await
                    .map_err(|e| OpError::new(OpErrorKind::Internal, e.to_string()))??;
                // With PostgreSQL the accounts are not in this node's
                // store: the backup is this node's queue (pg_dump the rest).
                Ok(json!({
                    "path": path,
                    "accounts": summary.accounts,
                    "queued": summary.queued,
                    "shared": self.shared_backend,
                }))
            }
        }
    }

    async fn entry(&self, id: QueueId) -> Result<QueueEntry, OpError> {
        self.spool.get(id).await?.ok_or_else(|| {
            OpError::new(
                OpErrorKind::NotFound,
                format!("no message {id} in the queue"),
            )
        })
    }
}
