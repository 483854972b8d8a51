-- send-verify-email's links: one row per link sent, found by the hash of its key (the key
-- itself is only in the message). The e-mail address is the one the link went to: opening the
-- link verifies that address only. `used_at` makes the link single-use.
CREATE TABLE verify_email_tokens (
    token_hash    TEXT PRIMARY KEY,
    user_id       TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    email         TEXT NOT NULL,
    client_id     TEXT,
    redirect_uri  TEXT,
    created_at    BIGINT NOT NULL,
    expires_at    BIGINT NOT NULL,
    used_at       BIGINT
);
CREATE INDEX verify_email_tokens_expires_at ON verify_email_tokens (expires_at);
CREATE INDEX verify_email_tokens_user ON verify_email_tokens (user_id);
