-- Refresh and offline tokens revoked by RFC 7009 before their expiry; rows go once expired.
CREATE TABLE revoked_tokens (
    jti         TEXT PRIMARY KEY,
    expires_at  INTEGER NOT NULL
);
CREATE INDEX revoked_tokens_expires_at ON revoked_tokens (expires_at);
