//! The mail programs of the simulated population: what each says in EHLO,
//! TLS and AUTH, how it writes headers, and how it retries a deferred
//! message (Outlook and iOS replay their Outbox later, a Thunderbird user
//! resends by hand, a thief's script gives up or hammers).

use super::Rng;
use crate::policy::ClientHints;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Outlook,
    Thunderbird,
    IPhone,
    /// A thief's bulk-mailing script.
    Script,
    /// Malware's own SMTP engine on the owner's PC.
    Malware,
    /// A bot that resubmits deferred mail every few seconds.
    Bot,
}

impl Program {
    /// `machine`: the computer's name (the owner's, for malware).
    pub fn hints(self, machine: &str, rng: &mut Rng) -> ClientHints {
        let s = |v: &str| Some(v.to_string());
        let (helo, version, cipher, mech, credential) = match self {
            Self::Outlook => (
                machine.to_string(),
                "TLSv1_3",
                "TLS13_AES_256_GCM_SHA384",
                "LOGIN",
                "password",
            ),
            Self::Thunderbird => (
                format!("[192.168.{}.{}]", rng.below(3), 2 + rng.below(200)),
                "TLSv1_3",
                "TLS13_AES_128_GCM_SHA256",
                "PLAIN",
                "password",
            ),
            Self::IPhone => (
                format!(
                    "[10.{}.{}.{}]",
                    rng.below(255),
                    rng.below(255),
                    2 + rng.below(200)
                ),
                "TLSv1_3",
                "TLS13_AES_128_GCM_SHA256",
                "PLAIN",
                "device",
            ),
            Self::Script | Self::Bot => (
                ["localhost", "mail", "User", "ylmf-pc"][rng.below(4) as usize].to_string(),
                "TLSv1_2",
                "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                "LOGIN",
                "password",
            ),
            Self::Malware => (
                machine.to_string(),
                "TLSv1_2",
                "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                "LOGIN",
                "password",
            ),
        };
        ClientHints {
            helo: Some(helo),
            tls_version: s(version),
            tls_cipher: s(cipher),
            mechanism: s(mech),
            credential: s(credential),
        }
    }

    /// The message as this program writes it.
    pub fn render(
        self,
        from: &str,
        display: Option<&str>,
        rcpts: usize,
        message_id: &str,
        body: &str,
    ) -> String {
        let name = display.map_or_else(String::new, |d| format!("\"{d}\" "));
        let from = format!("From: {name}<{from}>\r\n");
        let to = format!("To: {rcpts} recipients <list@example.invalid>\r\n");
        let subject = "Subject: hello\r\n";
        let mime = "MIME-Version: 1.0\r\n";
        let ctype = "Content-Type: text/plain; charset=utf-8\r\n";
        let id = format!("Message-ID: <{message_id}>\r\n");
        let head = match self {
            Self::Outlook => {
                format!("{from}{to}{subject}{id}X-Mailer: Microsoft Outlook 16.0\r\n{ctype}{mime}")
            }
            Self::Thunderbird => format!(
                "{id}{mime}User-Agent: Mozilla Thunderbird/128.{}\r\n{to}{from}{subject}{ctype}",
                message_id.len() % 7
            ),
            Self::IPhone => {
                format!("{ctype}{mime}{subject}{from}{id}X-Mailer: iPhone Mail (22B91)\r\n{to}")
            }
            Self::Script | Self::Bot => format!("{subject}{from}{to}X-Mailer: PHPMailer 6.9.1\r\n"),
            Self::Malware => format!("{to}{subject}{from}"),
        };
        format!("{head}\r\n{}", body.replace('\n', "\r\n"))
    }

    /// When the program submits a deferred message again (`attempt`
    /// counts from 1), or never.
    pub fn retry_after(self, attempt: u32, rng: &mut Rng) -> Option<u64> {
        match self {
            // Send/Receive every 30 minutes replays the Outbox.
            Self::Outlook => Some(30 * 60),
            // The person sees the error and sends again, a while later.
            Self::Thunderbird => Some(if attempt == 1 {
                60 + rng.below(120)
            } else {
                20 * 60
            }),
            // iOS retries its Outbox.
            Self::IPhone => Some(15 * 60),
            Self::Script => None,
            Self::Malware => Some(10 * 60),
            Self::Bot => (attempt < 1000).then_some(5),
        }
    }
}
