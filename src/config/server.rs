//! `[server]`: the host name, the data folder and the operator's contact.

use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Defaults to `<data_dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    pub support_contact: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            secret_key_file: None,
            support_contact: None,
        }
    }
}
