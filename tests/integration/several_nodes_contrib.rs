//! contrib/several-nodes (two nodes behind a PROXY v2 balancer on one
//! PostgreSQL) agrees with itself: the node config loads and validates,
//! points at the compose file's database with its credentials, trusts the
//! balancer's network for PROXY, reads the key the compose file hands every
//! node, and the balancer speaks PROXY v2 to the ports the nodes listen on.

use std::path::{Path, PathBuf};

use mailwarden::config::{Config, ConfigSource, StoreBackend};

fn contrib() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/several-nodes")
}

/// The lines under `header` (at `indent` spaces), up to the next line as
/// little indented.
fn block<'a>(lines: &[&'a str], header: &str, indent: usize) -> Vec<&'a str> {
    let start = lines
        .iter()
        .position(|l| l.trim_end() == format!("{}{header}:", " ".repeat(indent)))
        .unwrap_or_else(|| panic!("no `{header}:` at indent {indent}"));
    lines[start + 1..]
        .iter()
        .take_while(|l| l.trim().is_empty() || l.len() - l.trim_start().len() > indent)
        .copied()
        .collect()
}

/// The value of `key: value` among `lines`.
fn value<'a>(lines: &[&'a str], key: &str) -> Option<&'a str> {
    lines.iter().find_map(|l| {
        l.trim()
            .strip_prefix(&format!("{key}:"))
            .map(|v| v.trim().trim_matches('"'))
    })
}

#[test]
fn the_compose_file_the_node_config_and_the_balancer_agree() {
    let dir = contrib();
    let compose = std::fs::read_to_string(dir.join("compose.yaml")).unwrap();
    let lines: Vec<&str> = compose.lines().collect();
    let services = block(&lines, "services", 0);
    let config_text = std::fs::read_to_string(dir.join("mailwarden.toml")).unwrap();
    let config = Config::from_toml(
        &config_text,
        dir.clone(),
        ConfigSource::File(dir.join("mailwarden.toml")),
    )
    .expect("the node config is valid");

    // The database: the compose file's PostgreSQL, with its credentials.
    assert_eq!(config.store.backend, StoreBackend::Postgres);
    let postgres = block(&services, "postgres", 2);
    assert!(
        value(&postgres, "image")
            .unwrap()
            .starts_with("postgres:15")
    );
    let url = config.store.url.clone().unwrap();
    let expected = format!(
        "postgres://{}:{}@postgres:5432/{}",
        value(&postgres, "POSTGRES_USER").unwrap(),
        value(&postgres, "POSTGRES_PASSWORD").unwrap(),
        value(&postgres, "POSTGRES_DB").unwrap()
    );
    assert!(url.starts_with(&expected), "{url} is not {expected}");

    // The balancer's network is trusted for PROXY and by the portal.
    let networks = block(&lines, "networks", 0);
    let front = block(&networks, "front", 2);
    let subnet: ipnet::IpNet = value(&front, "- subnet").unwrap().parse().unwrap();
    assert!(config.listeners.proxy_networks().contains(&subnet));
    assert!(config.portal.trusted_proxies.contains(&subnet.to_string()));

    let haproxy = std::fs::read_to_string(dir.join("haproxy.cfg")).unwrap();
    let servers: Vec<&str> = haproxy
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("server "))
        .collect();
    assert_eq!(servers.len(), 6, "{servers:?}");
    let ports = [
        config.listeners.submissions[0].port(),
        config.listeners.submission[0].port(),
    ];
    // The portal over HTTP with X-Forwarded-For, TLS at the balancer.
    assert!(
        config
            .portal
            .public_url
            .as_deref()
            .unwrap()
            .starts_with("https://")
    );
    assert!(haproxy.contains("option forwardfor"));
    let mut volumes = Vec::new();
    for node in ["node-a", "node-b"] {
        let service = block(&services, node, 2);
        // On the balancer's network and the database's.
        let nets = block(&service, "networks", 4);
        assert!(nets.iter().any(|l| l.trim() == "- front"), "{node}");
        assert!(nets.iter().any(|l| l.trim() == "- back"), "{node}");
        // The config file it runs with is this one.
        let mounts = block(&service, "volumes", 4);
        let config_mount = mounts
            .iter()
            .find(|l| l.contains("./mailwarden.toml:"))
            .unwrap_or_else(|| panic!("{node} mounts no config"));
        let target = config_mount
            .trim()
            .trim_start_matches("- ")
            .split(':')
            .nth(1)
            .unwrap();
        let command = value(&service, "command").unwrap();
        assert!(
            command.contains(&format!("\"--config\", \"{target}\"")),
            "{command}"
        );
        assert!(command.contains("\"serve\""), "{command}");
        // Its own data volume at the config's data folder.
        let data = config.server.data_dir.display().to_string();
        let data_mount = mounts
            .iter()
            .map(|l| l.trim().trim_start_matches("- "))
            .find(|m| m.ends_with(&format!(":{data}")))
            .unwrap_or_else(|| panic!("{node} has no volume at {data}"));
        volumes.push(data_mount.split(':').next().unwrap().to_string());
        // The shared key, where the config reads it.
        let secrets = block(&service, "secrets", 4);
        let secret = secrets[0].trim().trim_start_matches("- ");
        assert_eq!(
            config.secret_key_file(),
            Path::new("/run/secrets").join(secret),
            "{node}"
        );
        let portal = config.listeners.portal.port();
        assert!(
            servers
                .iter()
                .any(|s| s.contains(&format!("{node}:{portal} check"))),
            "{node}:{portal} (portal) missing in haproxy.cfg"
        );
        // The balancer sends it PROXY v2 on both SMTP ports.
        for port in ports {
            assert!(
                servers
                    .iter()
                    .any(|s| s.contains(&format!("{node}:{port} send-proxy-v2"))),
                "{node}:{port} missing in haproxy.cfg"
            );
        }
    }
    assert_ne!(
        volumes[0], volumes[1],
        "each node needs its own data volume"
    );
    let balancer = block(&services, "balancer", 2);
    assert!(
        block(&balancer, "volumes", 4)
            .iter()
            .any(|l| l.contains("./haproxy.cfg:")),
        "the balancer runs haproxy.cfg"
    );
    assert!(
        block(&lines, "secrets", 0)
            .iter()
            .any(|l| l.trim() == "file: ./secret.key")
    );
}
