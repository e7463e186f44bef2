#!/usr/bin/env python3
"""Submit one message with Python's standard smtplib, as a real client does.

Used by tests/integration/real_clients.rs. Prints "REPLY <code> <text>" for
the last reply. Exit status: 0 sent, 1 refused (4xx/5xx), 2 other errors.

  smtplib_send.py --port P (--starttls | --implicit) --auth PLAIN|LOGIN
                  --user U --password PW --from F --to R [--to R2]
                  --message FILE --cafile PEM [--ehlo NAME]
"""
import argparse
import smtplib
import ssl
import sys


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    mode = p.add_mutually_exclusive_group(required=True)
    mode.add_argument("--starttls", action="store_true")
    mode.add_argument("--implicit", action="store_true")
    p.add_argument("--auth", choices=["PLAIN", "LOGIN"], required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--from", dest="sender", required=True)
    p.add_argument("--to", action="append", required=True)
    p.add_argument("--message", required=True)
    p.add_argument("--cafile", required=True)
    # An address literal, as Thunderbird sends without a FQDN.
    p.add_argument("--ehlo", default="[127.0.0.1]")
    a = p.parse_args()

    with open(a.message, "rb") as f:
        message = f.read()
    # Verify the server's certificate (its SAN holds 127.0.0.1).
    ctx = ssl.create_default_context(cafile=a.cafile)
    try:
        if a.implicit:
            s = smtplib.SMTP_SSL(a.host, a.port, local_hostname=a.ehlo, timeout=20, context=ctx)
        else:
            s = smtplib.SMTP(a.host, a.port, local_hostname=a.ehlo, timeout=20)
            s.ehlo()
            s.starttls(context=ctx)
        s.ehlo()
        s.user, s.password = a.user, a.password
        # smtplib sends PLAIN and LOGIN with an initial response.
        mechanism = s.auth_plain if a.auth == "PLAIN" else s.auth_login
        s.auth(a.auth, mechanism)
        code, text = s.mail(a.sender)
        if code != 250:
            raise smtplib.SMTPSenderRefused(code, text, a.sender)
        for rcpt in a.to:
            code, text = s.rcpt(rcpt)
            if code not in (250, 251):
                raise smtplib.SMTPRecipientsRefused({rcpt: (code, text)})
        code, text = s.data(message)
        if code != 250:
            raise smtplib.SMTPDataError(code, text)
        print("REPLY %d %s" % (code, text.decode(errors="replace")))
        s.quit()
        return 0
    except smtplib.SMTPRecipientsRefused as e:
        ((code, text),) = e.recipients.values()
        print("REPLY %d %s" % (code, text.decode(errors="replace")))
        return 1
    except smtplib.SMTPResponseException as e:
        text = e.smtp_error
        if isinstance(text, bytes):
            text = text.decode(errors="replace")
        print("REPLY %d %s" % (e.smtp_code, text))
        return 1
    except Exception as e:  # network, TLS, timeout
        print("ERROR %s: %s" % (type(e).__name__, e))
        return 2


if __name__ == "__main__":
    sys.exit(main())
