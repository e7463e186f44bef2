//! `[server]`: the host name, the data folder, the operator's contact and
//! the free space readiness wants.

use std::path::PathBuf;

use serde::Deserialize;

use super::parse::de_size;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub hostname: String,
    pub data_dir: PathBuf,
    /// Defaults to `<data_dir>/secret.key`.
    pub secret_key_file: Option<PathBuf>,
    pub support_contact: Option<String>,
    /// Readiness (`/readyz`) turns red when the data folder's file system
    /// has less free space than this (bytes, or "512MiB").
    #[serde(deserialize_with = "de_size")]
    pub min_free_disk: u64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            hostname: "localhost".into(),
            data_dir: PathBuf::from("./data"),
            secret_key_file: None,
            support_contact: None,
            min_free_disk: 256 * 1024 * 1024,
        }
    }
}
