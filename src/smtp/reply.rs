//! Every SMTP reply the server sends, with its exact text (the project's
//! founding design fixed it; tests/integration/replies.rs asserts each line).
//! Clients show these to people, so they live in one place.

use crate::accounts::BlockKind;
use crate::policy::Blocked;

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    /// Enhanced status code and text, e.g. `2.0.0 Bye`.
    pub text: Cow<'static, str>,
}

impl Reply {
    pub const fn new(code: u16, text: &'static str) -> Self {
        Self {
            code,
            text: Cow::Borrowed(text),
        }
    }

    pub fn owned(code: u16, text: String) -> Self {
        Self {
            code,
            text: Cow::Owned(text),
        }
    }

    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(format!("{} {}\r\n", self.code, self.text).as_bytes());
    }

    /// Counted towards the bad-command limit (500, 501, 502, 503, 504, 555);
    /// refusals for ownership, policy, limits or storage are not.
    pub fn is_bad_command(&self) -> bool {
        matches!(self.code, 500 | 501 | 502 | 503 | 504 | 555)
    }

    pub fn is_positive(&self) -> bool {
        self.code < 400
    }
}

pub fn greeting(hostname: &str) -> Reply {
    Reply::owned(220, format!("{hostname} ESMTP"))
}

pub const BYE: Reply = Reply::new(221, "2.0.0 Bye");
pub const READY_FOR_TLS: Reply = Reply::new(220, "2.0.0 Ready to start TLS");
pub const OK: Reply = Reply::new(250, "2.0.0 Ok");
pub const SENDER_OK: Reply = Reply::new(250, "2.1.0 Ok");
pub const RECIPIENT_OK: Reply = Reply::new(250, "2.1.5 Ok");
pub const RESET_OK: Reply = Reply::new(250, "2.0.0 Ok");
pub const START_DATA: Reply = Reply::new(354, "End data with <CR><LF>.<CR><LF>");

pub const AUTH_OK: Reply = Reply::new(235, "2.7.0 Authentication successful");
pub const AUTH_INVALID: Reply = Reply::new(
    535,
    "5.7.8 Authentication credentials invalid (with 2FA enabled, use a device password)",
);
pub const ENCRYPTION_REQUIRED: Reply = Reply::new(
    538,
    "5.7.11 Encryption required for requested authentication mechanism",
);
pub const AUTH_LOCKED_OUT: Reply = Reply::new(
    454,
    "4.7.0 Too many authentication failures, try again later",
);
pub const AUTH_BUSY: Reply = Reply::new(454, "4.7.0 Temporary authentication failure");
pub const AUTH_UNKNOWN_MECHANISM: Reply = Reply::new(504, "5.5.4 Unrecognized authentication type");
pub const AUTH_CANNOT_DECODE: Reply =
    Reply::new(501, "5.5.2 Cannot decode authentication response");
pub const AUTH_CANCELLED: Reply = Reply::new(501, "5.7.0 Authentication cancelled");
pub const ALREADY_AUTHENTICATED: Reply = Reply::new(503, "5.5.1 Already authenticated");
pub const AUTH_LINE_TOO_LONG: Reply =
    Reply::new(500, "5.5.6 Authentication exchange line is too long");
pub const AUTH_REQUIRED: Reply = Reply::new(530, "5.7.0 Authentication required");

pub const RATE_LIMITED: Reply =
    Reply::new(451, "4.7.1 Sending rate limit exceeded, try again later");
pub const LINE_TOO_LONG: Reply = Reply::new(500, "5.5.2 Line too long");
pub const MESSAGE_TOO_BIG: Reply = Reply::new(552, "5.3.4 Message size exceeds fixed limit");
pub const TOO_MANY_RECIPIENTS: Reply = Reply::new(452, "4.5.3 Too many recipients");
pub const TIMEOUT: Reply = Reply::new(421, "4.4.2 Timeout");
pub const TOO_MANY_CONNECTIONS: Reply = Reply::new(421, "4.7.0 Too many connections");
pub const TOO_MANY_ERRORS: Reply = Reply::new(421, "4.7.0 Too many errors");
pub const MESSAGE_LINE_TOO_LONG: Reply =
    Reply::new(554, "5.6.0 Message has a line longer than 998 octets");

pub const NOT_QUEUED: Reply = Reply::new(451, "4.3.0 Temporary failure, message not queued");
pub const NO_STORAGE: Reply = Reply::new(452, "4.3.1 Insufficient system storage");
pub const SHUTTING_DOWN: Reply = Reply::new(421, "4.3.2 Service shutting down");

pub const UNRECOGNIZED: Reply = Reply::new(500, "5.5.1 Command unrecognized");
pub const SYNTAX_ERROR: Reply = Reply::new(501, "5.5.4 Syntax error in parameters");
pub const UNSUPPORTED_PARAMETER: Reply = Reply::new(555, "5.5.4 Unsupported parameter");
pub const BAD_SEQUENCE: Reply = Reply::new(503, "5.5.1 Bad sequence of commands");
pub const NOT_IMPLEMENTED: Reply = Reply::new(502, "5.5.1 Command not implemented");
pub const NO_VALID_RECIPIENTS: Reply = Reply::new(554, "5.5.1 No valid recipients");
pub const CANNOT_VRFY: Reply = Reply::new(
    252,
    "2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
);

pub fn queued(id: &str) -> Reply {
    Reply::owned(250, format!("2.0.0 Ok: queued as {id}"))
}

pub fn sender_not_owned(address: &str) -> Reply {
    Reply::owned(
        553,
        format!("5.7.1 Sender address <{address}> not owned by authenticated user"),
    )
}

pub fn header_from_not_owned(address: &str) -> Reply {
    Reply::owned(
        550,
        format!("5.7.1 Header From address <{address}> not owned by authenticated user"),
    )
}

pub fn sender_not_qualified(address: &str) -> Reply {
    Reply::owned(
        554,
        format!("5.1.7 Sender address <{address}> must be fully qualified"),
    )
}

pub fn recipient_not_qualified(address: &str) -> Reply {
    Reply::owned(
        554,
        format!("5.1.3 Recipient address <{address}> must be fully qualified"),
    )
}

pub fn non_ascii_address(address: &str) -> Reply {
    Reply::owned(
        553,
        format!("5.6.7 Non-ASCII address <{address}> requires SMTPUTF8"),
    )
}

/// Why a refusal was sent, from a closed set (a log field and a metric
/// label, so it never carries an address or free text).
pub fn refusal_reason(r: &Reply) -> &'static str {
    let enhanced = r.text.split_whitespace().next().unwrap_or_default();
    match (r.code, enhanced) {
        (554, "5.7.1") => "blocked",
        (550, "5.7.1") => "header_from",
        (553, "5.7.1") => "sender_not_owned",
        (451, "4.7.1") => "rate_limited",
        (530, _) => "auth_required",
        (535, _) => "bad_credentials",
        (538, _) => "encryption_required",
        (454, _) if r.text == AUTH_LOCKED_OUT.text => "locked_out",
        (454, _) => "busy",
        (552, _) => "size",
        (452, "4.5.3") => "too_many_recipients",
        (452, _) | (451, "4.3.0") => "storage",
        (421, "4.4.2") => "timeout",
        (421, "4.3.2") => "shutting_down",
        (421, _) => "too_many_errors",
        (554, "5.6.0") | (500, "5.5.2") | (500, "5.5.6") => "line_too_long",
        (553, "5.6.7") => "needs_smtputf8",
        (554, "5.1.7") | (554, "5.1.3") => "unqualified_address",
        (554, "5.5.1") => "no_valid_recipients",
        (503, _) => "sequence",
        (502, _) | (504, _) | (555, _) | (252, _) => "not_supported",
        (500, _) | (501, _) => "syntax",
        _ => "other",
    }
}

/// The 554 for a blocked account, policy or operator.
pub fn blocked(block: &Blocked, support_contact: Option<&str>) -> Reply {
    match block.kind {
        BlockKind::Policy => policy_block(&block.account),
        BlockKind::Operator => operator_block(&block.account, support_contact),
    }
}

pub fn policy_block(account: &str) -> Reply {
    Reply::owned(
        554,
        format!(
            "5.7.1 Account <{account}> has been blocked from sending due to abusive activity. \
             Please update password and (re-)enable 2FA to be unblocked"
        ),
    )
}

pub fn operator_block(account: &str, support_contact: Option<&str>) -> Reply {
    let contact = support_contact
        .map(|c| format!(" at {c}"))
        .unwrap_or_default();
    Reply::owned(
        554,
        format!(
            "5.7.1 Account <{account}> has been blocked from sending by the administrator. \
             Please contact support{contact}"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(r: &Reply) -> String {
        let mut out = Vec::new();
        r.write_to(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn block_texts_are_exact() {
        assert_eq!(
            line(&policy_block("alice@example.com")),
            "554 5.7.1 Account <alice@example.com> has been blocked from sending due to abusive activity. Please update password and (re-)enable 2FA to be unblocked\r\n"
        );
        assert_eq!(
            line(&operator_block("a@x.org", Some("support@x.org"))),
            "554 5.7.1 Account <a@x.org> has been blocked from sending by the administrator. Please contact support at support@x.org\r\n"
        );
    }

    #[test]
    fn bad_command_classes() {
        assert!(UNRECOGNIZED.is_bad_command());
        assert!(UNSUPPORTED_PARAMETER.is_bad_command());
        assert!(!NO_STORAGE.is_bad_command());
        assert!(!policy_block("a@b.c").is_bad_command());
    }
}
