-- `GET /admin/realms/{realm}/users/count` without a filter reads the number of users here
-- instead of counting `users`, a scan that grew with the realm. Triggers keep it exact whoever
-- writes users; SQLite has one writer at a time, so one slot suffices (Postgres has 16).
-- `changes` grows with every user inserted, deleted or renamed: a page of the admin API's
-- unfiltered listing notes it, and the next page starts after the last user shown only while it
-- has not moved (see src/store/directory.rs).
CREATE TABLE user_counts (
    slot     INTEGER PRIMARY KEY,
    users    INTEGER NOT NULL,
    changes  INTEGER NOT NULL
);

INSERT INTO user_counts (slot, users, changes) SELECT 0, COUNT(*), 0 FROM users;

CREATE TRIGGER users_counted_in AFTER INSERT ON users
BEGIN
    UPDATE user_counts SET users = users + 1, changes = changes + 1 WHERE slot = 0;
END;

CREATE TRIGGER users_counted_out AFTER DELETE ON users
BEGIN
    UPDATE user_counts SET users = users - 1, changes = changes + 1 WHERE slot = 0;
END;

CREATE TRIGGER users_renamed AFTER UPDATE OF username ON users
WHEN OLD.username IS NOT NEW.username
BEGIN
    UPDATE user_counts SET changes = changes + 1 WHERE slot = 0;
END;

-- The admin API lists users by username, then id: this index serves that order whole, so that a
-- page can begin where the previous one ended (`users_username` served the first key only).
CREATE INDEX users_username_id ON users (username, id);
DROP INDEX users_username;
