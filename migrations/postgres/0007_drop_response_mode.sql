-- The response mode of a pending sign-in was always `query`, the only one the broker accepts.
ALTER TABLE auth_requests DROP COLUMN response_mode;
