-- `GET /admin/realms/{realm}/users/count` without a filter reads the number of users here
-- instead of counting `users`, a scan that grew with the realm. Triggers keep it exact whoever
-- writes users (a sign-in, the import, the admin API, an operator's SQL): each statement adds
-- what it inserted or deleted into the slot of its connection (one of 16, by backend pid), so
-- that transactions creating users at once lock different rows, and the count is the slots' sum.
-- `changes` grows with every user inserted, deleted or renamed: a page of the admin API's
-- unfiltered listing notes it, and the next page starts after the last user shown only while it
-- has not moved (see src/store/directory.rs).
CREATE TABLE user_counts (
    slot     BIGINT PRIMARY KEY,
    users    BIGINT NOT NULL,
    changes  BIGINT NOT NULL
);

-- Writers wait while the users are counted, so that the count starts exact.
LOCK TABLE users IN SHARE MODE;
INSERT INTO user_counts (slot, users, changes) SELECT 0, COUNT(*), 0 FROM users;

CREATE FUNCTION count_identity_broker_users() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    added BIGINT := 0;
    moved BIGINT := 0;
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        UPDATE user_counts SET users = 0, changes = changes + 1;
        RETURN NULL;
    ELSIF TG_OP = 'INSERT' THEN
        SELECT COUNT(*) INTO added FROM inserted_users;
        moved := added;
    ELSIF TG_OP = 'DELETE' THEN
        SELECT -COUNT(*) INTO added FROM deleted_users;
        moved := -added;
    ELSE
        moved := 1;
    END IF;
    IF moved <> 0 THEN
        INSERT INTO user_counts (slot, users, changes) VALUES (pg_backend_pid() % 16, added, moved)
        ON CONFLICT (slot) DO UPDATE SET users = user_counts.users + excluded.users,
                                         changes = user_counts.changes + excluded.changes;
    END IF;
    RETURN NULL;
END;
$$;

CREATE TRIGGER users_counted_in
    AFTER INSERT ON users REFERENCING NEW TABLE AS inserted_users
    FOR EACH STATEMENT EXECUTE FUNCTION count_identity_broker_users();

CREATE TRIGGER users_counted_out
    AFTER DELETE ON users REFERENCING OLD TABLE AS deleted_users
    FOR EACH STATEMENT EXECUTE FUNCTION count_identity_broker_users();

CREATE TRIGGER users_renamed
    AFTER UPDATE OF username ON users
    FOR EACH ROW WHEN (OLD.username IS DISTINCT FROM NEW.username)
    EXECUTE FUNCTION count_identity_broker_users();

CREATE TRIGGER users_truncated
    AFTER TRUNCATE ON users
    FOR EACH STATEMENT EXECUTE FUNCTION count_identity_broker_users();

-- The admin API lists users by username, then id: this index serves that order whole, so that a
-- page can begin where the previous one ended (`users_username` served the first key only).
CREATE INDEX users_username_id ON users (username, id);
DROP INDEX users_username;
