//! Complaints: ARF feedback reports (RFC 5965) a receiver sends when its
//! user marks a message as spam. `mailwarden policy complaint` reads one
//! and tells the scorer which account sent the reported message.

use mail_parser::{MessageParser, MimeHeaders, PartType};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Complaint {
    /// The envelope sender of the reported message (an account or alias).
    pub sender: String,
    /// `abuse`, `fraud`, `virus`, `other`, ...
    pub feedback_type: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ComplaintError {
    #[error("not an ARF report (RFC 5965): {0}")]
    NotArf(&'static str),
    #[error(
        "the report names no sender (no Original-Mail-From, and the reported message has no From)"
    )]
    NoSender,
}

/// Reads an ARF report.
pub fn parse(report: &[u8]) -> Result<Complaint, ComplaintError> {
    let message = MessageParser::new()
        .parse(report)
        .ok_or(ComplaintError::NotArf("not a MIME message"))?;
    let is_report = message.content_type().is_some_and(|ct| {
        ct.ctype().eq_ignore_ascii_case("multipart")
            && ct
                .subtype()
                .is_some_and(|s| s.eq_ignore_ascii_case("report"))
            && ct
                .attribute("report-type")
                .is_some_and(|t| t.eq_ignore_ascii_case("feedback-report"))
    });
    if !is_report {
        return Err(ComplaintError::NotArf(
            "the message is not multipart/report; report-type=feedback-report",
        ));
    }
    let mut fields = None;
    let mut original_from = None;
    for part in &message.parts {
        let ct = part.content_type();
        let sub = ct.and_then(|c| c.subtype()).unwrap_or_default();
        if sub.eq_ignore_ascii_case("feedback-report") {
            fields = Some(String::from_utf8_lossy(part.contents()).into_owned());
        }
        match &part.body {
            PartType::Message(original) => {
                original_from = original
                    .return_path()
                    .as_text()
                    .map(str::to_string)
                    .or_else(|| {
                        original
                            .from()
                            .and_then(|f| f.first())
                            .and_then(|a| a.address())
                            .map(str::to_string)
                    });
            }
            _ if sub.eq_ignore_ascii_case("rfc822-headers") => {
                let headers = part.contents();
                if let Some(h) = MessageParser::new().parse_headers(headers) {
                    original_from = h
                        .from()
                        .and_then(|f| f.first())
                        .and_then(|a| a.address())
                        .map(str::to_string);
                }
            }
            _ => {}
        }
    }
    let fields = fields.ok_or(ComplaintError::NotArf("no message/feedback-report part"))?;
    let field = |name: &str| {
        fields.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    };
    let feedback_type =
        field("Feedback-Type").ok_or(ComplaintError::NotArf("no Feedback-Type field"))?;
    let sender = field("Original-Mail-From")
        .map(|s| s.trim_matches(|c| c == '<' || c == '>').to_string())
        .filter(|s| !s.is_empty())
        .or(original_from)
        .ok_or(ComplaintError::NoSender)?;
    Ok(Complaint {
        sender: sender.to_ascii_lowercase(),
        feedback_type: feedback_type.to_ascii_lowercase(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub const REPORT: &str = "From: <abuse@receiver.example>\r\nTo: <postmaster@sender.example>\r\nSubject: FW: Earn money\r\nMIME-Version: 1.0\r\nContent-Type: multipart/report; report-type=feedback-report;\r\n    boundary=\"part1_13d.2e68ed54_boundary\"\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: text/plain; charset=\"US-ASCII\"\r\n\r\nThis is an email abuse report for an email message received from IP\r\n192.0.2.1 on Thu, 8 Mar 2005 14:00:00 EDT.\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: SomeGenerator/1.0\r\nVersion: 1\r\nOriginal-Mail-From: <Alice@Sender.example>\r\nOriginal-Rcpt-To: <user@receiver.example>\r\nArrival-Date: Thu, 8 Mar 2005 14:00:00 EDT\r\nSource-IP: 192.0.2.1\r\n\r\n--part1_13d.2e68ed54_boundary\r\nContent-Type: message/rfc822\r\nContent-Disposition: inline\r\n\r\nFrom: <alice@sender.example>\r\nReceived: from mailserver.example by sender.example; Thu, 8 Mar 2005 14:00:00 -0500\r\nTo: <user@receiver.example>\r\nSubject: Earn money\r\nMessage-ID: <8787KJKJ3K4J3K4J3K4J3.mail@sender.example>\r\nDate: Thu, 02 Sep 2004 12:31:03 -0500\r\n\r\nSpam Spam Spam\r\n--part1_13d.2e68ed54_boundary--\r\n";

    #[test]
    fn the_rfc_5965_example_names_its_sender() {
        let c = parse(REPORT.as_bytes()).unwrap();
        assert_eq!(c.sender, "alice@sender.example");
        assert_eq!(c.feedback_type, "abuse");
        // Without Original-Mail-From, the reported message's From.
        let bare = REPORT.replace("Original-Mail-From: <Alice@Sender.example>\r\n", "");
        assert_eq!(
            parse(bare.as_bytes()).unwrap().sender,
            "alice@sender.example"
        );
        assert_eq!(
            parse(b"From: a@b.example\r\nSubject: hi\r\n\r\nnot a report\r\n"),
            Err(ComplaintError::NotArf(
                "the message is not multipart/report; report-type=feedback-report"
            ))
        );
    }
}
