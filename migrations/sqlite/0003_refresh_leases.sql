-- The refresh coordinator's lease: one process at a time refreshes an identity's tokens,
-- across replicas, without holding a connection while the upstream call is in flight.
ALTER TABLE vault_tokens ADD COLUMN lease_owner TEXT;
ALTER TABLE vault_tokens ADD COLUMN lease_until INTEGER;
CREATE INDEX vault_tokens_refreshed_at ON vault_tokens (refreshed_at);

-- Why the identity needs a new sign-in (an AADSTS code and what the user must do).
ALTER TABLE federated_identities ADD COLUMN reauth_reason TEXT;
