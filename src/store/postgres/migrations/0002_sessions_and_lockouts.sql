-- mailwarden shared data, version 2.
--
-- Portal sessions, so a browser may land on any node. `id` is a keyed
-- hash of the cookie's value (a copy of the table signs nobody in);
-- `data` is the rest of the session (CSRF token, notices, one-time
-- values such as a new device password) sealed with the server key.
-- `address` names the signed-in account, so a password change can end
-- its other sessions. A change reads the row FOR UPDATE: two nodes
-- changing one session cannot both take a one-time value. `last_seen`
-- changes at every page view and has no index, so that update stays
-- on its page (HOT); expired rows are found by a scan once a minute.
CREATE TABLE portal_sessions (
    id        bytea PRIMARY KEY,
    address   text,
    created   bigint NOT NULL,
    last_seen bigint NOT NULL,
    data      text NOT NULL
);
CREATE INDEX portal_sessions_address ON portal_sessions (address);

-- The brute-force counters each node saved (accounts::lockout), merged
-- by every node at start: a restart of every node is no way out of a
-- lockout, and a node that joins late counts what the others counted.
CREATE TABLE lockout_counters (
    node    text PRIMARY KEY,
    saved   bytea NOT NULL,
    updated bigint NOT NULL
);
