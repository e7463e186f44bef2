# How docs/decisions.md ("Dovecot asks over loopback HTTP") chose the
# passdb: 200 serial IMAP logins against Dovecot 2.3 with a stub on each
# side (passwd-file, a /bin/sh checkpassword helper, Lua + dovecot.http to
# a stub HTTP server). Run as root: python3 scripts/measure-dovecot-passdb.py
# {passwd|checkpassword|lua} PORT [N]. Prints the median and p90.
import os, sys, subprocess, time, imaplib, statistics, socket, shutil, threading, http.server
mode = sys.argv[1]; port = int(sys.argv[2]); n = int(sys.argv[3]) if len(sys.argv)>3 else 200
T = f"/tmp/dvm/{mode}"
shutil.rmtree(T, ignore_errors=True); os.makedirs(T+"/run"); os.makedirs(T+"/state"); os.makedirs(T+"/mail")
open(T+"/passwd","w").write("alice@example.com:{PLAIN}secret123\n")
open(T+"/cp.sh","w").write('#!/bin/sh\nread -r _ <&3 || true\nUSER=alice@example.com; export USER\nexec "$@"\n')
os.chmod(T+"/cp.sh", 0o755)
open(T+"/auth.lua","w").write('''
local http = dovecot.http.client { timeout = 5000; max_attempts = 1; }
function auth_password_verify(req, pass)
  local r = http:request { url = "http://127.0.0.1:%d/"; method = "POST"; }
  r:set_payload("user=x")
  local resp = r:submit()
  if resp:status() == 200 then return dovecot.auth.PASSDB_RESULT_OK, { user = resp:payload() } end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "st " .. resp:status()
end
function script_init() return 0 end
''' % (port+1))
passdb = {"passwd": f"driver = passwd-file\n  args = {T}/passwd",
          "checkpassword": f"driver = checkpassword\n  args = {T}/cp.sh",
          "lua": f"driver = lua\n  args = file={T}/auth.lua blocking=yes"}[mode]
open(T+"/dovecot.conf","w").write(f"""
base_dir = {T}/run
state_dir = {T}/state
log_path = {T}/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = no
disable_plaintext_auth = no
default_login_user = nobody
default_internal_user = nobody
default_internal_group = nogroup
auth_mechanisms = plain login
mail_location = maildir:{T}/mail/%u
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
passdb {{
  {passdb}
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={T}/mail/%u
}}
""")
subprocess.run(["chown","-R","nobody:nogroup",T])
if mode == "lua":
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_POST(self):
            self.rfile.read(int(self.headers.get("Content-Length","0")))
            b = b"alice@example.com"
            self.send_response(200); self.send_header("Content-Length", str(len(b))); self.end_headers(); self.wfile.write(b)
        def log_message(self,*a): pass
    srv = http.server.ThreadingHTTPServer(("127.0.0.1", port+1), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
p = subprocess.Popen(["setpriv","--reuid=65534","--regid=65534","--clear-groups","dovecot","-F","-c",T+"/dovecot.conf"])
for _ in range(100):
    try: socket.create_connection(("127.0.0.1",port),0.2).close(); break
    except OSError: time.sleep(0.1)
ts=[]
for i in range(n):
    c = imaplib.IMAP4("127.0.0.1", port, timeout=20)
    t=time.perf_counter(); c.login("alice@example.com","secret123"); ts.append((time.perf_counter()-t)*1000)
    c.logout()
p.terminate(); p.wait()
print(mode, "median %.2f ms p90 %.2f" % (statistics.median(ts), sorted(ts)[int(n*0.9)]))
