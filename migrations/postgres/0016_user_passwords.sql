-- Users created through the admin API: their password (Keycloak's `password` credential) as an
-- Argon2id hash in PHC form (`$argon2id$v=19$m=…,t=…,p=…$salt$hash`, parameters and salt
-- inside, so a change of parameters needs no migration), and the required actions an
-- administrator set (Keycloak's `requiredActions`: `UPDATE_PASSWORD` for a temporary password).
-- `failures` counts wrong passwords in a row (forgotten after a success or 12 quiet hours);
-- every `realm.brute_force.failures` of them lock password sign-ins until `locked_until`.
CREATE TABLE user_passwords (
    user_id          TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    hash             TEXT NOT NULL,
    failures         BIGINT NOT NULL DEFAULT 0,
    last_failure_at  BIGINT,
    locked_until     BIGINT,
    created_at       BIGINT NOT NULL,
    updated_at       BIGINT NOT NULL
);

CREATE TABLE user_required_actions (
    user_id     TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    action      TEXT NOT NULL,
    PRIMARY KEY (user_id, action)
);

-- Keycloak's usernames are unique ignoring case: a new user's name is looked up here.
CREATE INDEX users_username_lower ON users (lower(username));
