-- A user's realm roles beyond the realm's default roles (`realm.default_roles`, which every
-- user holds and are not stored): those an administrator granted (`source` = '') and those a
-- provider's ID token gave at the last sign-in through it (`source` = the provider's alias,
-- replaced at each sign-in and dropped when the provider is unlinked).
CREATE TABLE user_roles (
    user_id  TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    source   TEXT NOT NULL,
    role     TEXT NOT NULL,
    PRIMARY KEY (user_id, source, role)
);

-- `GET /admin/realms/{realm}/roles/{role}/users`.
CREATE INDEX user_roles_role ON user_roles (role, user_id);

-- The refresh grant reads a user's roles from memory (src/store/cache.rs): every change to them
-- is announced as a change of the user, as migration 0010 announces the user's row.
CREATE FUNCTION notify_identity_broker_user_roles_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('identity_broker_changes', json_build_object('user', OLD.user_id)::text);
    ELSE
        PERFORM pg_notify('identity_broker_changes', json_build_object('user', NEW.user_id)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER user_roles_changed
    AFTER INSERT OR DELETE ON user_roles
    FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_user_roles_change();
