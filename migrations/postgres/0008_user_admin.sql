-- Keycloak's user fields that its admin API serves and changes: whether the user may sign in
-- at all, and the user's attributes. An attribute name holds a list of values, in order, as in
-- Keycloak; sign-in writes `identity_provider` and `{alias}_id` (OpenHands' realm mappers).
ALTER TABLE users ADD COLUMN enabled BIGINT NOT NULL DEFAULT 1;

CREATE TABLE user_attributes (
    user_id   TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    name      TEXT NOT NULL,
    position  BIGINT NOT NULL,
    value     TEXT NOT NULL,
    PRIMARY KEY (user_id, name, position)
);
-- `q=azure_devops_id:<sub>` finds a user by one attribute value, exactly and case-insensitively,
-- in time that does not grow with the number of users.
CREATE INDEX user_attributes_value ON user_attributes (name, lower(value));

-- A user disabled or enabled again: each of the user's identities is announced (migration 0006),
-- so that no replica keeps serving the user's tokens from memory.
CREATE FUNCTION notify_identity_broker_user_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('identity_broker_changes', json_build_object('user_id', f.user_id, 'alias', f.alias)::text)
    FROM federated_identities f
    WHERE f.user_id = NEW.id;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_enabled_changed
    AFTER UPDATE OF enabled ON users
    FOR EACH ROW WHEN (OLD.enabled IS DISTINCT FROM NEW.enabled)
    EXECUTE FUNCTION notify_identity_broker_user_change();
