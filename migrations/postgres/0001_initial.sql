-- Times are Unix seconds (BIGINT) so that one set of queries serves Postgres and SQLite.

CREATE TABLE instance_secrets (
    name        TEXT PRIMARY KEY,
    value       BYTEA NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE signing_keys (
    kid              TEXT PRIMARY KEY,
    algorithm        TEXT NOT NULL,
    vault_key_id     TEXT NOT NULL,
    private_key      BYTEA NOT NULL,
    public_key       BYTEA NOT NULL,
    created_at       BIGINT NOT NULL,
    retired_at       BIGINT
);

CREATE TABLE users (
    id              TEXT PRIMARY KEY,
    username        TEXT NOT NULL,
    email           TEXT,
    email_verified  BIGINT NOT NULL DEFAULT 0,
    first_name      TEXT,
    last_name       TEXT,
    full_name       TEXT,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);
CREATE INDEX users_email ON users (lower(email));
CREATE INDEX users_username ON users (username);

CREATE TABLE federated_identities (
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    alias           TEXT NOT NULL,
    subject         TEXT NOT NULL,
    username        TEXT,
    tenant_id       TEXT,
    object_id       TEXT,
    attributes      TEXT NOT NULL DEFAULT '{}',
    needs_reauth    BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    PRIMARY KEY (user_id, alias),
    UNIQUE (alias, subject)
);

CREATE TABLE vault_tokens (
    user_id             TEXT NOT NULL,
    alias               TEXT NOT NULL,
    vault_key_id        TEXT NOT NULL,
    access_token        BYTEA NOT NULL,
    refresh_token       BYTEA,
    id_token            BYTEA,
    token_type          TEXT NOT NULL,
    scope               TEXT NOT NULL,
    expires_at          BIGINT NOT NULL,
    refresh_expires_at  BIGINT,
    refreshed_at        BIGINT NOT NULL,
    updated_at          BIGINT NOT NULL,
    PRIMARY KEY (user_id, alias),
    FOREIGN KEY (user_id, alias) REFERENCES federated_identities (user_id, alias) ON DELETE CASCADE
);
CREATE INDEX vault_tokens_expires_at ON vault_tokens (expires_at);

CREATE TABLE auth_requests (
    id                      TEXT PRIMARY KEY,
    browser_hash            TEXT NOT NULL,
    client_id               TEXT NOT NULL,
    redirect_uri            TEXT NOT NULL,
    response_mode           TEXT NOT NULL,
    scope                   TEXT NOT NULL,
    client_state            TEXT,
    client_nonce            TEXT,
    code_challenge          TEXT,
    code_challenge_method   TEXT,
    login_hint              TEXT,
    alias                   TEXT,
    upstream_state_hash     TEXT UNIQUE,
    upstream_nonce          TEXT,
    pkce_verifier           TEXT,
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL
);
CREATE INDEX auth_requests_expires_at ON auth_requests (expires_at);

CREATE TABLE sso_sessions (
    id                  TEXT PRIMARY KEY,
    cookie_hash         TEXT NOT NULL UNIQUE,
    user_id             TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    identity_provider   TEXT NOT NULL,
    created_at          BIGINT NOT NULL,
    last_seen_at        BIGINT NOT NULL,
    ended_at            BIGINT
);
CREATE INDEX sso_sessions_user ON sso_sessions (user_id);

CREATE TABLE authorization_codes (
    code_hash               TEXT PRIMARY KEY,
    client_id               TEXT NOT NULL,
    redirect_uri            TEXT NOT NULL,
    user_id                 TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    session_id              TEXT NOT NULL REFERENCES sso_sessions (id) ON DELETE CASCADE,
    scope                   TEXT NOT NULL,
    nonce                   TEXT,
    code_challenge          TEXT,
    code_challenge_method   TEXT,
    created_at              BIGINT NOT NULL,
    expires_at              BIGINT NOT NULL,
    used_at                 BIGINT
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);

CREATE TABLE audit_events (
    id          BIGSERIAL PRIMARY KEY,
    at          BIGINT NOT NULL,
    kind        TEXT NOT NULL,
    outcome     TEXT NOT NULL,
    user_id     TEXT,
    client_id   TEXT,
    alias       TEXT,
    detail      TEXT NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_at ON audit_events (at);
