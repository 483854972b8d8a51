-- The refresh grant reads the user and asks whether its token was revoked; both are kept in
-- memory too (see src/store/cache.rs), so both are announced on `identity_broker_changes`,
-- whichever process (or operator) writes them. Payloads: {"user": …} for a user's row changed
-- or deleted, {"revoked": …} for a token's id added to `revoked_tokens`. A user created is not
-- announced: only rows read from the database are cached, never their absence.
CREATE FUNCTION notify_identity_broker_row_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'revoked_tokens' THEN
        PERFORM pg_notify('identity_broker_changes', json_build_object('revoked', NEW.jti)::text);
    ELSIF TG_OP = 'DELETE' THEN
        PERFORM pg_notify('identity_broker_changes', json_build_object('user', OLD.id)::text);
    ELSE
        PERFORM pg_notify('identity_broker_changes', json_build_object('user', NEW.id)::text);
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_changed
    AFTER UPDATE OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_row_change();

CREATE TRIGGER revoked_tokens_added
    AFTER INSERT ON revoked_tokens
    FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_row_change();
