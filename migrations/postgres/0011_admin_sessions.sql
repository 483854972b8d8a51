-- The master realm administrator's sessions (admin-cli), so that they can end: a logout deletes
-- the row, a restart with another admin.username or admin.password ends every session signed in
-- with the old ones (their `credentials_fingerprint` no longer matches), and none outlives
-- `created_at` + admin.session_max_seconds. `expires_at` is when the session dies unless it is
-- refreshed (the earlier of the idle and the maximum lifetime's end); housekeeping deletes the
-- rows past it. The fingerprint is a digest, never the password.
CREATE TABLE admin_sessions (
    id                       TEXT PRIMARY KEY,
    username                 TEXT NOT NULL,
    credentials_fingerprint  TEXT NOT NULL,
    created_at               BIGINT NOT NULL,
    last_refresh_at          BIGINT NOT NULL,
    expires_at               BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expires_at ON admin_sessions (expires_at);
