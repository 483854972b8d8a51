-- The client address each pending sign-in was started from (an IPv4 address or an IPv6 /64),
-- so that one address's live sign-ins can be counted against its budget.
ALTER TABLE auth_requests ADD COLUMN client_key TEXT;
CREATE INDEX auth_requests_client_key ON auth_requests (client_key, expires_at);
