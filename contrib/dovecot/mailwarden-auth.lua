-- Dovecot 2.3 Lua passdb: every IMAP/POP3 login is asked of the running
-- mailwarden ([dovecot] listen), which answers by its SMTP AUTH rules with
-- the same lockout counters (docs/operator-guide.md, "Dovecot for IMAP").
-- Needs the dovecot-auth-lua package. Keep auth_cache_size = 0.
--
-- mailwarden answers 200 with the canonical address, 403 for any failure
-- and 503 for a lockout or a busy server; anything else (a wrong token,
-- mailwarden down: Dovecot's 9000-9008) is a temporary failure, never a
-- wrong password.

local URL = "http://127.0.0.1:8091/dovecot/auth"
local TOKEN_FILE = "/etc/dovecot/mailwarden.token"

local http_client = nil
local token = nil

local function enc(s)
  return (string.gsub(s or "", "[^%w%-%._~]", function(c)
    return string.format("%%%02X", string.byte(c))
  end))
end

function script_init()
  local f = io.open(TOKEN_FILE, "r")
  if f == nil then
    return 1
  end
  token = string.gsub(f:read("*a"), "%s+", "")
  f:close()
  http_client = dovecot.http.client { timeout = 10000; max_attempts = 1; }
  return 0
end

function script_deinit()
end

function auth_password_verify(req, pass)
  local r = http_client:request { url = URL; method = "POST"; }
  r:add_header("Content-Type", "application/x-www-form-urlencoded")
  r:add_header("Authorization", "Bearer " .. token)
  r:set_payload("user=" .. enc(req.user) .. "&password=" .. enc(pass) ..
                "&rip=" .. enc(req.rip) .. "&service=" .. enc(req.service))
  local resp = r:submit()
  local status = resp:status()
  if status == 200 then
    return dovecot.auth.PASSDB_RESULT_OK, { user = resp:payload() }
  end
  if status == 403 then
    return dovecot.auth.PASSDB_RESULT_PASSWORD_MISMATCH, ""
  end
  return dovecot.auth.PASSDB_RESULT_INTERNAL_FAILURE, "mailwarden answered " .. status
end
