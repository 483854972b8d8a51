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
