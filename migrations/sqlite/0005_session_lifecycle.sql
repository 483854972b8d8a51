-- Offline sessions (scope offline_access) live beside SSO sessions: they survive logout and
-- expire only after offline_session_idle_seconds without use.
ALTER TABLE sso_sessions ADD COLUMN offline INTEGER NOT NULL DEFAULT 0;

-- A pending sign-in may link a provider to an already signed-in user (kc_action=idp_link),
-- and may carry the client's prompt on to the provider.
ALTER TABLE auth_requests ADD COLUMN link_user_id TEXT;
ALTER TABLE auth_requests ADD COLUMN prompt TEXT;
