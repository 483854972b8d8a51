-- What `import keycloak` last wrote of each user, as a digest of what it took from the export
-- (the user's fields, attributes, and linked identities of configured providers): a later run
-- that computes the same digest from its export leaves the user alone, reading nothing else of it
-- and writing nothing. Any other write to those fields (a sign-in, the admin API, an operator's
-- SQL) deletes the user's digest through the triggers below, so the next run compares that user
-- field by field again and restores what the export says.
CREATE TABLE user_import_digests (
    user_id  TEXT PRIMARY KEY REFERENCES users (id) ON DELETE CASCADE,
    digest   TEXT NOT NULL
);

-- Attributes and linked identities inserted or deleted, per statement: one DELETE for a sign-in's
-- or an import chunk's rows together. Planned at each call (EXECUTE): a plan kept from the first
-- call, when the table was empty, scanned it whole for every later chunk of an import.
CREATE FUNCTION forget_identity_broker_import_digests() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    users TEXT[] := ARRAY(SELECT DISTINCT user_id FROM changed_rows);
BEGIN
    IF cardinality(users) > 0 THEN
        EXECUTE 'DELETE FROM user_import_digests WHERE user_id = ANY ($1)' USING users;
    END IF;
    RETURN NULL;
END;
$$;

-- A user's imported fields, or a linked identity's subject or name, changed: one row.
CREATE FUNCTION forget_identity_broker_import_digest() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_TABLE_NAME = 'users' THEN
        DELETE FROM user_import_digests WHERE user_id = NEW.id;
    ELSE
        DELETE FROM user_import_digests WHERE user_id = NEW.user_id;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_import_digest_stale
    AFTER UPDATE ON users
    FOR EACH ROW WHEN ((OLD.username, OLD.email, OLD.email_verified, OLD.first_name, OLD.last_name, OLD.full_name,
                        OLD.enabled, OLD.created_at)
                       IS DISTINCT FROM
                       (NEW.username, NEW.email, NEW.email_verified, NEW.first_name, NEW.last_name, NEW.full_name,
                        NEW.enabled, NEW.created_at))
    EXECUTE FUNCTION forget_identity_broker_import_digest();

CREATE TRIGGER user_attributes_added_import_digest_stale
    AFTER INSERT ON user_attributes REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forget_identity_broker_import_digests();

CREATE TRIGGER user_attributes_changed_import_digest_stale
    AFTER UPDATE ON user_attributes REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forget_identity_broker_import_digests();

CREATE TRIGGER user_attributes_removed_import_digest_stale
    AFTER DELETE ON user_attributes REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forget_identity_broker_import_digests();

CREATE TRIGGER federated_identities_added_import_digest_stale
    AFTER INSERT ON federated_identities REFERENCING NEW TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forget_identity_broker_import_digests();

CREATE TRIGGER federated_identities_removed_import_digest_stale
    AFTER DELETE ON federated_identities REFERENCING OLD TABLE AS changed_rows
    FOR EACH STATEMENT EXECUTE FUNCTION forget_identity_broker_import_digests();

CREATE TRIGGER federated_identities_import_digest_stale
    AFTER UPDATE ON federated_identities
    FOR EACH ROW WHEN ((OLD.subject, OLD.username) IS DISTINCT FROM (NEW.subject, NEW.username))
    EXECUTE FUNCTION forget_identity_broker_import_digest();
