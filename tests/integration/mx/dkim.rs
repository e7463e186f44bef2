//! DKIM: a message delivered in MX mode carries a signature that dkimpy
//! (an independent implementation) verifies against the public key, given
//! the TXT record through its `dnsfunc` (no DNS).

use std::process::Command;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::KeyPair;
use base64::Engine;

use super::dns::{FakeDns, Rec};
use super::{message, mx_server, mx_toml, sink_at};
use crate::common::{ALICE, run_cli};

/// Runs dkimpy's verify on `message` with `record` as the only TXT record
/// (for `name`); true when it verifies.
fn dkimpy_verifies(message: &[u8], name: &str, record: &str) -> bool {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("message.eml");
    std::fs::write(&path, message).unwrap();
    let script = r#"
import sys, dkim
path, name, record = sys.argv[1:4]
def dns(qname, timeout=5):
    q = qname.decode() if isinstance(qname, bytes) else qname
    return record.encode() if q.rstrip('.') == name else None
import logging
logging.basicConfig(level=logging.DEBUG)
print("PASS" if dkim.verify(open(path, 'rb').read(), dnsfunc=dns, logger=logging.getLogger()) else "FAIL")
"#;
    let out = Command::new("python3")
        .args(["-c", script])
        .arg(&path)
        .args([name, record])
        .output()
        .expect("python3 with dkimpy (pip install dkimpy)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "dkimpy: {stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if stdout.trim() != "PASS" {
        eprintln!("dkimpy: {}", String::from_utf8_lossy(&out.stderr));
    }
    stdout.trim() == "PASS"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dkim_signature_verifies_with_dkimpy() {
    // A 2048-bit RSA key, and its record built here from the key pair.
    let pair = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let pkcs8 = pair.as_der().unwrap();
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let pem = format!(
        "-----BEGIN PRIVATE KEY-----\n{}\n-----END PRIVATE KEY-----\n",
        b64(pkcs8.as_ref())
            .as_bytes()
            .chunks(64)
            .map(|c| std::str::from_utf8(c).unwrap())
            .collect::<Vec<_>>()
            .join("\n")
    );
    let record = format!(
        "v=DKIM1; k=rsa; p={}",
        b64(pair.public_key().as_der().unwrap().as_ref())
    );
    let keys = tempfile::tempdir().unwrap();
    let key_file = keys.path().join("example.com.pem");
    std::fs::write(&key_file, pem).unwrap();

    let sink = sink_at("127.0.0.2", 0);
    let dns = FakeDns::start(vec![
        ("example.org", Rec::Mx(10, "mx.example.org")),
        ("mx.example.org", Rec::A("127.0.0.2".parse().unwrap())),
    ]);
    let dkim = format!(
        "[[delivery.dkim]]\ndomain = \"example.com\"\nselector = \"mw1\"\nkey_file = \"{}\"\n",
        key_file.display()
    );
    let server = mx_server(&mx_toml(sink.port, dns.addr, &dkim)).await;
    let mut client = server.alice().await;
    let body = message("signed", "<bob@example.org>");
    client
        .send_message(ALICE, &["bob@example.org"], &body)
        .await;
    let got = sink.wait_messages(1).await;
    let signed = &got[0].bytes;
    let text = got[0].text();
    assert!(text.starts_with("DKIM-Signature: "), "{text}");
    let header = text.split("\r\n\r\n").next().unwrap();
    for tag in [
        "d=example.com",
        "s=mw1",
        "c=relaxed/relaxed",
        "a=rsa-sha256",
    ] {
        assert!(header.contains(tag), "{tag} missing: {header}");
    }

    let name = "mw1._domainkey.example.com";
    assert!(
        dkimpy_verifies(signed, name, &record),
        "dkimpy rejects:\n{text}"
    );
    // The verifier is not a rubber stamp: a changed subject or body fails,
    // and so does another key.
    let tampered = text.replace("Subject: signed", "Subject: signeD");
    assert!(!dkimpy_verifies(tampered.as_bytes(), name, &record));
    let tampered = text.replace("Hello.", "Hello!");
    assert!(!dkimpy_verifies(tampered.as_bytes(), name, &record));
    let other = aws_lc_rs::rsa::KeyPair::generate(aws_lc_rs::rsa::KeySize::Rsa2048).unwrap();
    let other_record = format!(
        "v=DKIM1; k=rsa; p={}",
        b64(other.public_key().as_der().unwrap().as_ref())
    );
    assert!(!dkimpy_verifies(signed, name, &other_record));

    // `config check` prints the record to publish: the same one.
    let config = server.config_path();
    let (ok, out, err) = run_cli(
        &[
            "--config",
            config.to_str().unwrap(),
            "--json",
            "config",
            "check",
        ],
        "",
    );
    assert!(ok, "{out} {err}");
    let summary: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(summary["dkim"][0]["name"], name);
    assert_eq!(summary["dkim"][0]["record"], record.as_str());
}
