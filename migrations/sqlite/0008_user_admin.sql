-- Keycloak's user fields that its admin API serves and changes: whether the user may sign in
-- at all, and the user's attributes. An attribute name holds a list of values, in order, as in
-- Keycloak; sign-in writes `identity_provider` and `{alias}_id` (OpenHands' realm mappers).
ALTER TABLE users ADD COLUMN enabled INTEGER NOT NULL DEFAULT 1;

CREATE TABLE user_attributes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    position  INTEGER NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (user_id, name, position)
);
-- `q=azure_devops_id:<sub>` finds a user by one attribute value, exactly and case-insensitively,
-- in time that does not grow with the number of users.
CREATE INDEX user_attributes_value ON user_attributes (name, lower(value));
