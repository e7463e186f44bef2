//! `[listeners]`: the addresses the server binds, and who may speak PROXY.

use std::net::SocketAddr;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenersConfig {
    pub submission: Vec<SocketAddr>,
    pub submissions: Vec<SocketAddr>,
    pub portal: SocketAddr,
    pub admin: SocketAddr,
    pub metrics: SocketAddr,
    pub proxy_protocol_from: Vec<String>,
}

impl ListenersConfig {
    /// `proxy_protocol_from` as networks (checked by validation).
    pub fn proxy_networks(&self) -> Vec<ipnet::IpNet> {
        self.proxy_protocol_from
            .iter()
            .filter_map(|n| {
                n.parse()
                    .ok()
                    .or_else(|| n.parse::<std::net::IpAddr>().ok().map(ipnet::IpNet::from))
            })
            .collect()
    }
}

impl Default for ListenersConfig {
    fn default() -> Self {
        let lo = |port| SocketAddr::from(([127, 0, 0, 1], port));
        Self {
            submission: vec![lo(2587)],
            submissions: vec![lo(2465)],
            portal: lo(8080),
            admin: lo(9090),
            metrics: lo(9091),
            proxy_protocol_from: Vec::new(),
        }
    }
}
