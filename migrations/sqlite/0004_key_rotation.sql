-- Signing key rotation: a rotation may announce a key in the JWKS before it signs
-- (`active_from`), and a retired key keeps verifying until its last tokens have expired
-- (`verify_until`).
ALTER TABLE signing_keys ADD COLUMN active_from INTEGER;
ALTER TABLE signing_keys ADD COLUMN verify_until INTEGER;
UPDATE signing_keys SET active_from = created_at;
