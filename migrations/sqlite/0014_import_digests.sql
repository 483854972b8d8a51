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

CREATE TRIGGER users_import_digest_stale AFTER UPDATE ON users
WHEN OLD.username IS NOT NEW.username OR OLD.email IS NOT NEW.email OR OLD.email_verified IS NOT NEW.email_verified
     OR OLD.first_name IS NOT NEW.first_name OR OLD.last_name IS NOT NEW.last_name
     OR OLD.full_name IS NOT NEW.full_name OR OLD.enabled IS NOT NEW.enabled OR OLD.created_at IS NOT NEW.created_at
BEGIN
    DELETE FROM user_import_digests WHERE user_id = NEW.id;
END;

CREATE TRIGGER user_attributes_added_import_digest_stale AFTER INSERT ON user_attributes
BEGIN
    DELETE FROM user_import_digests WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER user_attributes_changed_import_digest_stale AFTER UPDATE ON user_attributes
BEGIN
    DELETE FROM user_import_digests WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER user_attributes_removed_import_digest_stale AFTER DELETE ON user_attributes
BEGIN
    DELETE FROM user_import_digests WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER federated_identities_added_import_digest_stale AFTER INSERT ON federated_identities
BEGIN
    DELETE FROM user_import_digests WHERE user_id = NEW.user_id;
END;

CREATE TRIGGER federated_identities_removed_import_digest_stale AFTER DELETE ON federated_identities
BEGIN
    DELETE FROM user_import_digests WHERE user_id = OLD.user_id;
END;

CREATE TRIGGER federated_identities_import_digest_stale AFTER UPDATE ON federated_identities
WHEN OLD.subject IS NOT NEW.subject OR OLD.username IS NOT NEW.username
BEGIN
    DELETE FROM user_import_digests WHERE user_id = NEW.user_id;
END;
