//! Direct delivery to each recipient domain's mail exchangers.
//!
//! Per attempt, the recipients of a message are grouped by domain; each
//! group is one SMTP transaction to the first MX that answers:
//! - MX records by preference (equal preferences in random order); no MX
//!   record: the domain's own A/AAAA (the implicit MX); a null MX (`.`,
//!   RFC 7505) or a domain that does not exist: bounce (5.1.10 / 5.1.2);
//!   a DNS failure: retry later.
//! - each MX host's addresses (A first, then AAAA) in turn: an address that
//!   refuses, times out, greets with other than 2xx, or defers every
//!   recipient makes the next one be tried; the first that gives a final
//!   answer decides this attempt.
//! - opportunistic STARTTLS: used when offered, the certificate is not
//!   checked (as most MTAs do; without MTA-STS or DANE there is nothing to
//!   check it against), and a failed handshake falls back to plaintext on
//!   a new connection. An attacker on the path can strip STARTTLS
//!   (docs/delivery.md, "the downgrade risk").
//! - connections are shared by every worker: at most
//!   `connections_per_host` in use at once per MX address, and kept open
//!   after a transaction for the next message to the same address.
//!
//! The transaction itself (capabilities, per-recipient replies, DSN
//! parameters) is the relay's (`relay::transaction`).

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use async_trait::async_trait;
use hickory_resolver::TokioResolver;
use hickory_resolver::config::{
    ConnectionConfig, LookupIpStrategy, NameServerConfig, ResolverConfig,
};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use mail_send::SmtpClient;
use smtp_proto::EXT_START_TLS;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::relay::{Attempt, Client, Connection, Io, diagnose, transaction};
use super::transport::{Diagnostic, Outcome, Outgoing, Transport};
use crate::config::Config;
use crate::locks::Recover;

/// At most this many addresses are tried for one domain in one attempt.
const MAX_ADDRESSES: usize = 10;
/// A kept connection unused for this long is closed.
const MAX_IDLE: Duration = Duration::from_secs(30);

/// Built once from `[delivery.mx]`.
pub struct MxSettings {
    pub port: u16,
    pub workers: usize,
    pub per_host: usize,
    pub timeout: Duration,
    pub helo: String,
    resolver: TokioResolver,
    tls: tokio_rustls::TlsConnector,
}

impl MxSettings {
    pub fn from_config(config: &Config) -> anyhow::Result<Self> {
        let mx = &config.delivery.mx;
        crate::tls::install_provider();
        let mut builder = if mx.nameservers.is_empty() {
            TokioResolver::builder_tokio().context(
                "cannot read the system's DNS configuration (or set delivery.mx.nameservers)",
            )?
        } else {
            let servers = mx
                .nameservers
                .iter()
                .map(|addr| {
                    let mut udp = ConnectionConfig::udp();
                    udp.port = addr.port();
                    let mut tcp = ConnectionConfig::tcp();
                    tcp.port = addr.port();
                    NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
                })
                .collect();
            let mut resolver_config = ResolverConfig::default();
            resolver_config.name_servers = servers;
            TokioResolver::builder_with_config(resolver_config, TokioRuntimeProvider::default())
        };
        let options = builder.options_mut();
        options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
        options.timeout = Duration::from_secs(5);
        let resolver = builder.build().context("cannot set up the DNS resolver")?;
        let tls = mail_send::smtp::tls::build_tls_connector(true)
            .map_err(|e| anyhow::anyhow!("TLS for MX delivery: {e}"))?;
        Ok(Self {
            port: mx.port,
            workers: mx.workers,
            per_host: mx.connections_per_host,
            timeout: mx.timeout,
            helo: mx
                .helo_name
                .clone()
                .unwrap_or_else(|| config.server.hostname.clone()),
            resolver,
            tls,
        })
    }
}

/// One MX address: its concurrency limit and its kept connections.
struct Host {
    permits: Arc<Semaphore>,
    idle: Mutex<Vec<(Connection, Instant)>>,
}

/// What every worker shares.
struct Shared {
    settings: MxSettings,
    hosts: Mutex<HashMap<IpAddr, Arc<Host>>>,
}

impl Shared {
    fn host(&self, ip: IpAddr) -> Arc<Host> {
        self.hosts
            .lock()
            .unwrap()
            .entry(ip)
            .or_insert_with(|| {
                Arc::new(Host {
                    permits: Arc::new(Semaphore::new(self.settings.per_host)),
                    idle: Mutex::new(Vec::new()),
                })
            })
            .clone()
    }
}

/// One delivery worker's handle on the shared MX machinery.
pub struct MxTransport {
    shared: Arc<Shared>,
}

impl MxTransport {
    /// `settings.workers` transports sharing resolver and connections.
    pub fn pool(settings: MxSettings) -> Vec<Box<dyn Transport>> {
        let n = settings.workers;
        let shared = Arc::new(Shared {
            settings,
            hosts: Mutex::default(),
        });
        (0..n)
            .map(|_| {
                Box::new(Self {
                    shared: shared.clone(),
                }) as Box<dyn Transport>
            })
            .collect()
    }
}

#[async_trait]
impl Transport for MxTransport {
    async fn deliver(&mut self, message: &Outgoing<'_>) -> Vec<Outcome> {
        let env = message.envelope;
        // Positions in `message.recipients`, grouped by domain in order of
        // first appearance.
        let mut groups: Vec<(String, Vec<usize>)> = Vec::new();
        for (k, &i) in message.recipients.iter().enumerate() {
            let domain = domain_of(&env.recipients[i].address);
            match groups.iter_mut().find(|(d, _)| *d == domain) {
                Some((_, ks)) => ks.push(k),
                None => groups.push((domain, vec![k])),
            }
        }
        let mut outcomes: Vec<Option<Outcome>> = vec![None; message.recipients.len()];
        for (domain, ks) in groups {
            let subset: Vec<usize> = ks.iter().map(|&k| message.recipients[k]).collect();
            let part = Outgoing {
                id: message.id,
                envelope: env,
                body: message.body,
                recipients: &subset,
            };
            let results = self.deliver_domain(&domain, &part).await;
            for (k, outcome) in ks.into_iter().zip(results) {
                outcomes[k] = Some(outcome);
            }
        }
        outcomes.into_iter().flatten().collect()
    }

    async fn idle(&mut self) {
        let hosts: Vec<Arc<Host>> = self
            .shared
            .hosts
            .lock()
            .unwrap()
            .values()
            .cloned()
            .collect();
        for host in hosts {
            let old: Vec<Connection> = {
                let mut idle = host.idle.lock_or_recover();
                let (old, keep) = std::mem::take(&mut *idle)
                    .into_iter()
                    .partition(|(_, since)| since.elapsed() >= Duration::from_secs(5));
                *idle = keep;
                old.into_iter().map(|(c, _)| c).collect()
            };
            for c in old {
                let _ = tokio::time::timeout(Duration::from_secs(5), c.client.quit()).await;
            }
        }
    }

    fn target(&self) -> String {
        "mx".to_string()
    }
}

/// The next hops for a domain, best first, or the outcome for every
/// recipient when there is none.
enum Route {
    /// (host name, for TLS and reports; addresses, when already known).
    Hosts(Vec<(String, Option<Vec<IpAddr>>)>),
    Stop(Outcome),
}

/// What trying one address gave.
enum Tried {
    /// A final answer for this attempt (or all deferred by the host).
    Answered(Vec<Outcome>),
    /// No usable session there.
    Unreachable(Diagnostic),
}

impl MxTransport {
    async fn deliver_domain(&self, domain: &str, message: &Outgoing<'_>) -> Vec<Outcome> {
        let n = message.recipients.len();
        let hosts = match self.route(domain).await {
            Route::Hosts(hosts) => hosts,
            Route::Stop(outcome) => return vec![outcome; n],
        };
        let implicit = hosts.len() == 1 && hosts[0].0 == domain;
        let mut last: Option<Vec<Outcome>> = None;
        let mut tried = 0;
        'hosts: for (name, known) in hosts {
            let addresses = match known {
                Some(addresses) => addresses,
                None => match self.addresses(&name).await {
                    Ok(addresses) => addresses,
                    Err(outcome) => {
                        if implicit {
                            return vec![outcome; n];
                        }
                        last.get_or_insert_with(|| vec![outcome; n]);
                        continue;
                    }
                },
            };
            for ip in addresses {
                if tried == MAX_ADDRESSES {
                    break 'hosts;
                }
                tried += 1;
                match self.try_address(ip, &name, message).await {
                    Tried::Answered(outcomes)
                        if outcomes.iter().all(|o| matches!(o, Outcome::Deferred(_))) =>
                    {
                        last = Some(outcomes);
                    }
                    Tried::Answered(outcomes) => return outcomes,
                    Tried::Unreachable(why) => {
                        tracing::info!(
                            event = "delivery.mx_unreachable",
                            domain,
                            mx = %name,
                            address = %ip,
                            error = %why.line()
                        );
                        last = Some(vec![Outcome::Deferred(why); n]);
                    }
                }
            }
        }
        last.unwrap_or_else(|| {
            vec![
                Outcome::Deferred(Diagnostic::local_status(
                    "dns",
                    [4, 4, 4],
                    format!("no address found for the mail exchangers of {domain}")
                ));
                n
            ]
        })
    }

    /// MX lookup: the hosts to try, best first.
    async fn route(&self, domain: &str) -> Route {
        if let Some(literal) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
            let literal = literal.strip_prefix("IPv6:").unwrap_or(literal);
            return match literal.parse::<IpAddr>() {
                Ok(ip) => Route::Hosts(vec![(literal.to_string(), Some(vec![ip]))]),
                Err(_) => Route::Stop(Outcome::Failed(Diagnostic::local_status(
                    "dns",
                    [5, 1, 2],
                    format!("bad address literal [{literal}]"),
                ))),
            };
        }
        let resolver = &self.shared.settings.resolver;
        match resolver.mx_lookup(format!("{domain}.")).await {
            Ok(lookup) => {
                let mut mxs: Vec<(u16, String)> = lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::MX(mx) => Some((
                            mx.preference,
                            if mx.exchange.is_root() {
                                String::new()
                            } else {
                                mx.exchange.to_ascii().trim_end_matches('.').to_string()
                            },
                        )),
                        _ => None,
                    })
                    .collect();
                if mxs.is_empty() {
                    return Route::Hosts(vec![(domain.to_string(), None)]);
                }
                if mxs.iter().all(|(_, host)| host.is_empty()) {
                    return Route::Stop(Outcome::Failed(Diagnostic::local_status(
                        "dns",
                        [5, 1, 10],
                        format!("{domain} does not accept mail (null MX)"),
                    )));
                }
                mxs.retain(|(_, host)| !host.is_empty());
                order(&mut mxs);
                Route::Hosts(mxs.into_iter().map(|(_, h)| (h, None)).collect())
            }
            Err(e) if e.is_nx_domain() => Route::Stop(Outcome::Failed(Diagnostic::local_status(
                "dns",
                [5, 1, 2],
                format!("the domain {domain} does not exist"),
            ))),
            Err(e) if e.is_no_records_found() => Route::Hosts(vec![(domain.to_string(), None)]),
            Err(e) => Route::Stop(Outcome::Deferred(Diagnostic::local_status(
                "dns",
                [4, 4, 3],
                format!("MX lookup for {domain} failed: {e}"),
            ))),
        }
    }

    /// A host's addresses (IPv4 first).
    async fn addresses(&self, host: &str) -> Result<Vec<IpAddr>, Outcome> {
        let resolver = &self.shared.settings.resolver;
        match resolver.lookup_ip(format!("{host}.")).await {
            Ok(lookup) => {
                let mut ips: Vec<IpAddr> = lookup.iter().collect();
                ips.sort_by_key(|ip| ip.is_ipv6());
                Ok(ips)
            }
            Err(e) if e.is_nx_domain() || e.is_no_records_found() => Err(Outcome::Failed(
                Diagnostic::local_status("dns", [5, 1, 2], format!("{host} has no address")),
            )),
            Err(e) => Err(Outcome::Deferred(Diagnostic::local_status(
                "dns",
                [4, 4, 3],
                format!("address lookup for {host} failed: {e}"),
            ))),
        }
    }

    /// One transaction at `ip` (host `name`), on a kept connection if there
    /// is one.
    async fn try_address(&self, ip: IpAddr, name: &str, message: &Outgoing<'_>) -> Tried {
        let s = &self.shared.settings;
        let host = self.shared.host(ip);
        let _permit: OwnedSemaphorePermit =
            match tokio::time::timeout(s.timeout, host.permits.clone().acquire_owned()).await {
                Ok(Ok(p)) => p,
                _ => {
                    return Tried::Unreachable(Diagnostic::local(
                        "timeout",
                        format!("no free connection to {name} [{ip}] within {:?}", s.timeout),
                    ));
                }
            };
        loop {
            let kept = {
                let mut idle = host.idle.lock_or_recover();
                idle.retain(|(_, since)| since.elapsed() < MAX_IDLE);
                idle.pop().map(|(c, _)| c)
            };
            let reused = kept.is_some();
            let mut connection = match kept {
                Some(c) => c,
                None => match self.connect(ip, name, true).await {
                    Ok(c) => c,
                    Err(why) => return Tried::Unreachable(why.from_host(name)),
                },
            };
            match transaction(&mut connection, message).await {
                Attempt::Done { mut outcomes, keep } => {
                    if keep {
                        let mut idle = host.idle.lock_or_recover();
                        if idle.len() < s.per_host {
                            idle.push((connection, Instant::now()));
                        }
                    }
                    for o in &mut outcomes {
                        let d = o.diagnostic_mut();
                        if d.is_remote() && d.remote_mta.is_none() {
                            d.remote_mta = Some(name.to_string());
                        }
                    }
                    return Tried::Answered(outcomes);
                }
                // A kept connection the server has closed meanwhile.
                Attempt::Broken(_) if reused => {}
                Attempt::Broken(why) => return Tried::Unreachable(why.from_host(name)),
            }
        }
    }

    /// A new session: greeting, EHLO, STARTTLS when offered.
    async fn connect(
        &self,
        ip: IpAddr,
        name: &str,
        try_tls: bool,
    ) -> Result<Connection, Diagnostic> {
        let s = &self.shared.settings;
        let peer = "the MX";
        let opened = async {
            let mut client = SmtpClient::connect(SocketAddr::new(ip, s.port), s.timeout).await?;
            client.stream.set_nodelay(true)?;
            let greeting = client.read().await?;
            if greeting.code / 100 != 2 {
                return Err(mail_send::Error::UnexpectedReply(greeting));
            }
            let caps = client.ehlo(&s.helo).await?;
            if !try_tls || !caps.has_capability(EXT_START_TLS) {
                return Ok(Ok((
                    SmtpClient {
                        stream: Box::new(client.stream) as Box<dyn Io>,
                        timeout: client.timeout,
                    },
                    caps,
                )));
            }
            // Opportunistic: after a failed handshake, plaintext.
            let mut client = match client.start_tls(&s.tls, name).await {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            };
            let caps = client.ehlo(&s.helo).await?;
            let client: Client = SmtpClient {
                stream: Box::new(client.stream) as Box<dyn Io>,
                timeout: client.timeout,
            };
            Ok(Ok((client, caps)))
        };
        match tokio::time::timeout(s.timeout * 2, opened).await {
            Ok(Ok(Ok((client, caps)))) => Ok(Connection {
                client,
                caps,
                dirty: false,
                peer,
            }),
            Ok(Ok(Err(tls_error))) => {
                tracing::warn!(
                    event = "delivery.mx_tls_failed",
                    mx = %name,
                    address = %ip,
                    error = %tls_error,
                    "STARTTLS failed: delivering in plaintext"
                );
                Box::pin(self.connect(ip, name, false)).await
            }
            Ok(Err(e)) => Err(diagnose(&e, peer)),
            Err(_) => Err(Diagnostic::local(
                "timeout",
                format!("{name} [{ip}] did not answer in time"),
            )),
        }
    }
}

/// The domain part of an address, in lower-case ASCII (IDNA for a UTF-8
/// domain); an address literal stays as it is.
fn domain_of(address: &str) -> String {
    let domain = address.rsplit_once('@').map_or("", |(_, d)| d);
    let domain = domain.trim_end_matches('.');
    if domain.starts_with('[') {
        return domain.to_string();
    }
    idna::domain_to_ascii(domain).unwrap_or_else(|_| domain.to_ascii_lowercase())
}

/// By preference; equal preferences shuffled (RFC 5321 5.1).
fn order(mxs: &mut [(u16, String)]) {
    let random = |n: usize| -> usize {
        let mut b = [0u8; 8];
        let _ = getrandom::fill(&mut b);
        (u64::from_le_bytes(b) % n as u64) as usize
    };
    for i in (1..mxs.len()).rev() {
        let j = random(i + 1);
        mxs.swap(i, j);
    }
    mxs.sort_by_key(|(preference, _)| *preference);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_and_order() {
        assert_eq!(domain_of("a@Example.COM"), "example.com");
        assert_eq!(domain_of("a@b@caf\u{e9}.example."), "xn--caf-dma.example");
        assert_eq!(domain_of("a@[127.0.0.2]"), "[127.0.0.2]");
        let mut mxs = vec![
            (20, "c".to_string()),
            (10, "a".to_string()),
            (30, "d".to_string()),
            (10, "b".to_string()),
        ];
        order(&mut mxs);
        let prefs: Vec<u16> = mxs.iter().map(|m| m.0).collect();
        assert_eq!(prefs, [10, 10, 20, 30]);
        assert_eq!(mxs[2].1, "c");
    }
}
