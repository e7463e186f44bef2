-- mailwarden shared data, version 1. Records are the same JSON the
-- embedded store keeps; `base` is the address without its +tag, so an
-- overlap (the same address, its untagged form or a +tag form) is one
-- index lookup.
CREATE TABLE accounts (
    address text PRIMARY KEY,
    base    text NOT NULL,
    record  text NOT NULL
);
CREATE INDEX accounts_base ON accounts (base);

CREATE TABLE aliases (
    alias   text PRIMARY KEY,
    base    text NOT NULL,
    address text NOT NULL REFERENCES accounts (address) ON DELETE CASCADE
);
CREATE INDEX aliases_base ON aliases (base);

-- The scorer's per-account state: an opaque serialised blob, so new
-- fields need no schema change.
CREATE TABLE scorer_state (
    account text PRIMARY KEY,
    state   bytea NOT NULL,
    version bigint NOT NULL DEFAULT 1
);

-- Small shared facts: the store identity, its sealed test value, saved
-- counters.
CREATE TABLE meta (
    key   text PRIMARY KEY,
    value bytea NOT NULL
);
