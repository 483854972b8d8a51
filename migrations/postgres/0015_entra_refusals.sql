-- What Entra's refusal of an identity's refresh asked for: the kind of new sign-in
-- (`mfa_required`, `policy`, `consent_required`, `password_expired`, `expired`; `blocked` when a
-- Conditional Access policy blocks the user outright) and the claims challenge that the next
-- authorize request for that user carries back to Entra. Both clear with the mark.
ALTER TABLE federated_identities ADD COLUMN reauth_kind TEXT;
ALTER TABLE federated_identities ADD COLUMN reauth_claims TEXT;

-- A provider Entra throttles: no replica sends it a refresh before `retry_at` (Unix seconds).
CREATE TABLE provider_backoffs (
    alias       TEXT PRIMARY KEY,
    retry_at    BIGINT NOT NULL,
    updated_at  BIGINT NOT NULL
);

-- What the last sign-in through a provider showed of its ID tokens: whether they carried the
-- optional claim `xms_edov` (`doctor` warns when they do not).
CREATE TABLE provider_sign_in_facts (
    alias           TEXT PRIMARY KEY,
    email_proof     BIGINT NOT NULL,
    observed_at     BIGINT NOT NULL
);
