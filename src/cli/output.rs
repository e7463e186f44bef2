//! How a result reads for a person.

use crate::admin::ops::Request;

type Describe = Box<dyn Fn(&serde_json::Value) -> String>;

/// How a successful result reads for a person.
pub(super) fn describe(request: &Request) -> Describe {
    let s = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    match request {
        Request::AccountAdd { .. } => Box::new(move |v| format!("created {}", s(v, "address"))),
        Request::AccountPasswd { .. } => {
            Box::new(move |v| format!("password changed for {}", s(v, "address")))
        }
        Request::AccountDelete { .. } => Box::new(move |v| format!("deleted {}", s(v, "address"))),
        Request::AccountDisable { .. } => {
            Box::new(move |v| format!("disabled {}", s(v, "address")))
        }
        Request::AccountEnable { .. } => Box::new(move |v| format!("enabled {}", s(v, "address"))),
        Request::AccountList => Box::new(|v| {
            let lines: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|a| {
                    let disabled = if a["disabled"].as_bool() == Some(true) {
                        " (disabled)"
                    } else {
                        ""
                    };
                    format!("{}{disabled}", a["address"].as_str().unwrap_or_default())
                })
                .collect();
            if lines.is_empty() {
                "no accounts".into()
            } else {
                lines.join("\n")
            }
        }),
        Request::QueueList { held } => {
            let empty = if *held {
                "no held messages"
            } else {
                "the queue is empty"
            };
            Box::new(move |v| {
                let lines: Vec<String> = v
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|m| {
                        let rcpts: Vec<&str> = m["recipients"]
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|r| r.as_str())
                            .collect();
                        let mut text = format!(
                            "{}  {}  {} bytes  <{}> -> {}",
                            s(m, "id"),
                            s(m, "state"),
                            m["size"],
                            s(m, "from"),
                            rcpts.join(", ")
                        );
                        for d in m["deliveries"].as_array().into_iter().flatten() {
                            text.push_str(&delivery_line(d));
                        }
                        text
                    })
                    .collect();
                if lines.is_empty() {
                    empty.into()
                } else {
                    lines.join("\n")
                }
            })
        }
        Request::QueueRetry { .. } => {
            Box::new(move |v| format!("{} will be retried now", s(v, "id")))
        }
        Request::QueueRetryMany { .. } => Box::new(move |v| match v["domain"].as_str() {
            Some(d) => format!(
                "{} queued messages to {d} will be retried now",
                v["retried"]
            ),
            None => format!("{} queued messages will be retried now", v["retried"]),
        }),
        Request::QueueRelease { .. } => Box::new(move |v| format!("released {}", s(v, "id"))),
        Request::QueueDelete { .. } => Box::new(move |v| format!("deleted {}", s(v, "id"))),
        Request::PolicyComplaint { .. } => Box::new(move |v| {
            format!(
                "complaint ({}) counted against {}",
                s(v, "feedback_type"),
                s(v, "account")
            )
        }),
        Request::StoreCheck => Box::new(|v| {
            let rows: Vec<String> = v["rows"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| format!("{} {}", r[0].as_str().unwrap_or_default(), r[1]))
                .collect();
            format!("store ok: {}", rows.join(", "))
        }),
        Request::Backup { .. } => Box::new(|v| {
            let path = v["path"].as_str().unwrap_or_default();
            if v["shared"] == "postgres" {
                format!(
                    "backup of this node written to {path} ({} queued messages); accounts, \
                     blocks and the scorer's state are in PostgreSQL: back them up with pg_dump",
                    v["queued"]
                )
            } else {
                format!(
                    "backup written to {path} ({} accounts, {} queued messages)",
                    v["accounts"], v["queued"]
                )
            }
        }),
        Request::AccountBlock { .. } => Box::new(move |v| {
            format!(
                "blocked {} ({}: {})",
                s(v, "address"),
                v["block"]["kind"].as_str().unwrap_or_default(),
                v["block"]["reason"].as_str().unwrap_or_default()
            )
        }),
        Request::AccountPolicySet { .. } => Box::new(move |v| {
            format!(
                "policy overrides for {}: {}",
                s(v, "address"),
                v["policy_overrides"]
            )
        }),
        Request::AliasAdd { .. } => {
            Box::new(move |v| format!("{} may now send as {}", s(v, "address"), s(v, "alias")))
        }
        Request::AliasRemove { .. } => {
            Box::new(move |v| format!("{} no longer sends as {}", s(v, "address"), s(v, "alias")))
        }
        Request::AliasList { .. } => Box::new(|v| {
            v.as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        }),
        Request::AccountUnblock { .. } => {
            Box::new(move |v| format!("unblocked {}", s(v, "address")))
        }
        Request::AccountRecovery { .. } => Box::new(move |v| {
            format!(
                "recovery address of {} set to {}; a link to confirm it was sent there",
                s(v, "address"),
                text(&v["recovery"]["address"])
            )
        }),
        Request::AccountTrust { .. } => Box::new(move |v| {
            format!(
                "{} now trusts: {}",
                s(v, "address"),
                trusted_text(&v["trusted_networks"])
            )
        }),
        Request::AccountImport { .. } => Box::new(import_text),
        Request::AccountReset { .. } => Box::new(move |v| {
            format!(
                "reset {}: new password, 2FA off, device passwords revoked, blocked until `account unblock`",
                s(v, "address")
            )
        }),
        Request::TotpEnable { .. } => Box::new(move |v| {
            format!(
                "{}\nsecret: {}\nfinish with: mailwarden account totp verify {} CODE",
                s(v, "otpauth_url"),
                s(v, "secret_display"),
                s(v, "address")
            )
        }),
        Request::TotpVerify { .. } => Box::new(move |v| {
            let lifted = if v["blocked"] == false {
                ""
            } else {
                " (the account is still blocked)"
            };
            format!("2FA enabled for {}{lifted}", s(v, "address"))
        }),
        Request::TotpDisable { .. } => Box::new(move |v| {
            format!(
                "2FA disabled for {}; device passwords revoked",
                s(v, "address")
            )
        }),
        Request::DevicePasswordAdd { .. } => Box::new(move |v| {
            format!(
                "{}\n(device password {:?} for {}: it is shown only this once)",
                s(v, "password"),
                s(v, "name"),
                s(v, "address")
            )
        }),
        Request::DevicePasswordList { .. } => Box::new(|v| {
            let lines: Vec<String> = v
                .as_array()
                .into_iter()
                .flatten()
                .map(|d| {
                    let used = d["last_used"]
                        .as_u64()
                        .map_or("never used".to_string(), |t| {
                            format!(
                                "last used {} from {}",
                                date(t),
                                d["last_ip"].as_str().unwrap_or("?")
                            )
                        });
                    let suspended = if d["suspended"] == true {
                        " (suspended)"
                    } else {
                        ""
                    };
                    format!(
                        "{}  created {}  {used}{suspended}",
                        d["name"].as_str().unwrap_or_default(),
                        d["created"].as_u64().map_or("?".into(), date)
                    )
                })
                .collect();
            if lines.is_empty() {
                "no device passwords".into()
            } else {
                lines.join("\n")
            }
        }),
        Request::DevicePasswordRevoke { .. } => {
            Box::new(move |v| format!("revoked {:?} for {}", s(v, "name"), s(v, "address")))
        }
        Request::AccountShow { .. } => Box::new(account_text),
        Request::QueueShow { .. } => Box::new(queue_text),
    }
}

/// `    bob@example.org  pending  2 attempts  next try 2026-11-28T08:00:00Z  last reply: 451 ...`
fn delivery_line(d: &serde_json::Value) -> String {
    let time = |v: &serde_json::Value| {
        v.as_u64().map(|t| {
            humantime::format_rfc3339_seconds(
                std::time::UNIX_EPOCH + std::time::Duration::from_secs(t),
            )
            .to_string()
        })
    };
    let mut line = format!(
        "\n    {}  {}  {} attempts",
        d["address"].as_str().unwrap_or_default(),
        d["status"].as_str().unwrap_or_default(),
        d["attempts"].as_u64().unwrap_or(0)
    );
    if let Some(next) = time(&d["next_attempt"]) {
        line.push_str(&format!("  next try {next}"));
    }
    if let Some(reply) = d["last_reply"].as_str() {
        line.push_str(&format!("  last reply: {reply}"));
    }
    line
}

/// `account import`: the counts, then each skipped account and why.
fn import_text(v: &serde_json::Value) -> String {
    let count = |k: &str| v[k].as_array().map_or(0, Vec::len);
    let would = if v["dry_run"].as_bool() == Some(true) {
        "dry run, nothing changed: would create"
    } else {
        "created"
    };
    let mut out = format!(
        "{would} {}, unchanged {}, skipped {}",
        count("created"),
        count("unchanged"),
        count("skipped")
    );
    for s in v["skipped"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "\nskipped {}: {}",
            text(&s["address"]),
            text(&s["reason"])
        ));
    }
    out
}

/// Unix seconds as an RFC 3339 date (UTC).
fn date(t: u64) -> String {
    humantime::format_rfc3339_seconds(std::time::UNIX_EPOCH + std::time::Duration::from_secs(t))
        .to_string()
}

fn text(v: &serde_json::Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// `account show` for a person: one fact a line, dates as dates.
/// Trusted networks as `192.0.2.0/24 (sending), ...`, or `none`.
fn trusted_text(v: &serde_json::Value) -> String {
    let list: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|t| format!("{} ({})", text(&t["network"]), text(&t["by"])))
        .collect();
    if list.is_empty() {
        "none (no network has sent mail on enough days yet)".into()
    } else {
        list.join(", ")
    }
}

fn account_text(v: &serde_json::Value) -> String {
    let mut out = vec![text(&v["address"]).to_string()];
    let mut line = |label: &str, value: String| out.push(format!("  {label:<10} {value}"));
    line("created", v["created"].as_u64().map_or("?".into(), date));
    line(
        "status",
        if v["disabled"] == true {
            "disabled (every AUTH refused)".into()
        } else {
            "enabled".into()
        },
    );
    let pending = if v["totp_pending"] == true && text(&v["totp"]) == "on" {
        " (a new secret waits for its first code)"
    } else {
        ""
    };
    line("2FA", format!("{}{pending}", text(&v["totp"])));
    match v["block"].as_object() {
        None => line("block", "none".into()),
        Some(b) => {
            let networks: Vec<&str> = b["abuse_networks"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .collect();
            line(
                "block",
                format!(
                    "{}: {} (since {}, history #{})",
                    text(&b["kind"]),
                    text(&b["reason"]),
                    b["at"].as_u64().map_or("?".into(), date),
                    b["seq"]
                ),
            );
            if !networks.is_empty() {
                line("networks", networks.join(", "));
            }
            if let Some(detail) = b["detail"].as_str() {
                line("evidence", detail.to_string());
            }
        }
    }
    line("trusted", trusted_text(&v["trusted_networks"]));
    if let Some(r) = v["recovery"].as_object() {
        let state = match (r["confirmed"] == true, r["set_trusted"] == true) {
            (true, true) => "confirmed",
            (true, false) => "confirmed, but set from an untrusted network: no recovery links",
            (false, _) => "waiting for its confirmation",
        };
        line("recovery", format!("{} ({state})", text(&r["address"])));
    }
    if v["block"].is_object() {
        let lift = match text(&v["block"]["kind"]) {
            "policy" => {
                "a new password and 2FA from a trusted network or a recovery link, or the operator (`account unblock`)"
            }
            _ => "the operator only (`account unblock`)",
        };
        line("lifts by", lift.into());
    }
    let aliases: Vec<&str> = v["aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a.as_str())
        .collect();
    if !aliases.is_empty() {
        line("aliases", aliases.join(", "));
    }
    for d in v["device_passwords"].as_array().into_iter().flatten() {
        let used = d["last_used"].as_u64().map_or("never used".into(), |t| {
            format!("last used {} from {}", date(t), text(&d["last_ip"]))
        });
        let suspended = if d["suspended"] == true {
            ", suspended"
        } else {
            ""
        };
        line(
            "device",
            format!(
                "{} (created {}, {used}{suspended})",
                text(&d["name"]),
                d["created"].as_u64().map_or("?".into(), date)
            ),
        );
    }
    if let Some(overrides) = v["policy_overrides"].as_object().filter(|o| !o.is_empty()) {
        let list: Vec<String> = overrides.iter().map(|(k, n)| format!("{k}={n}")).collect();
        line("limits", list.join(", "));
    }
    let p = &v["policy"];
    if p.is_object() {
        line(
            "score",
            format!("{} (blocks at {})", p["score"], p["block_score"]),
        );
        line(
            "sent",
            format!(
                "{} messages to {} recipients in the last hour, {} to {} in the last day",
                p["messages_last_hour"],
                p["recipients_last_hour"],
                p["messages_last_day"],
                p["recipients_last_day"]
            ),
        );
        line(
            "delivery",
            format!(
                "{} delivered, {} bounced in the last day; {} networks in the last hour",
                p["delivered_last_day"], p["bounced_last_day"], p["networks_last_hour"]
            ),
        );
    }
    out.push("  history".into());
    for h in v["history"].as_array().into_iter().flatten() {
        let ip = h["ip"]
            .as_str()
            .map_or(String::new(), |ip| format!(" from {ip}"));
        out.push(format!(
            "    #{:<4} {}  {} (by {}{ip})",
            h["seq"].as_u64().unwrap_or(0),
            h["at"].as_u64().map_or("?".into(), date),
            text(&h["change"]),
            text(&h["via"])
        ));
    }
    out.join("\n")
}

/// `queue show` for a person: the envelope, each recipient, the header.
fn queue_text(v: &serde_json::Value) -> String {
    let mut out = vec![format!(
        "{}  {}  {} bytes  from <{}> (account {})",
        text(&v["id"]),
        text(&v["state"]),
        v["size"],
        text(&v["from"]),
        text(&v["account"])
    )];
    out.push(format!(
        "  received {}, {} attempts, next try {}",
        v["received_at"].as_u64().map_or("?".into(), date),
        v["attempts"],
        v["next_attempt"].as_u64().map_or("?".into(), date)
    ));
    if let Some(e) = v["last_error"].as_str() {
        out.push(format!("  last error: {e}"));
    }
    for d in v["deliveries"].as_array().into_iter().flatten() {
        out.push(delivery_line(d).trim_start_matches('\n').to_string());
    }
    if let Some(headers) = v["headers"].as_str() {
        out.push("  header:".into());
        out.extend(headers.lines().map(|l| format!("    {l}")));
    }
    out.join("\n")
}
