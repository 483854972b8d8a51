-- Every change that a cached row must not outlive is announced on `identity_broker_changes`,
-- whichever process (or operator) makes it; delivered when the transaction commits.
-- Payloads: {"user_id": …, "alias": …} for an identity or its tokens, {"session": …} for a session.
CREATE FUNCTION notify_identity_broker_change() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    changed RECORD;
BEGIN
    IF TG_OP = 'DELETE' THEN
        changed := OLD;
    ELSE
        changed := NEW;
    END IF;
    IF TG_TABLE_NAME = 'sso_sessions' THEN
        PERFORM pg_notify('identity_broker_changes', json_build_object('session', changed.id)::text);
    ELSE
        PERFORM pg_notify('identity_broker_changes',
                          json_build_object('user_id', changed.user_id, 'alias', changed.alias)::text);
    END IF;
    RETURN NULL;
END;
$$;

-- Tokens written by a sign-in, a refresh or a rekey, or erased; not the refresh leases.
CREATE TRIGGER vault_tokens_changed
    AFTER INSERT OR DELETE OR UPDATE OF vault_key_id, access_token, refresh_token, id_token, token_type, scope,
        expires_at, refresh_expires_at
    ON vault_tokens FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_change();

-- An identity unlinked, or marked as needing a new sign-in, or cleared of that mark.
CREATE TRIGGER federated_identities_changed
    AFTER INSERT OR DELETE OR UPDATE OF needs_reauth, reauth_reason
    ON federated_identities FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_change();

-- A session ended or deleted; touching it (`last_seen_at`) is not announced.
CREATE TRIGGER sso_sessions_changed
    AFTER DELETE OR UPDATE OF ended_at
    ON sso_sessions FOR EACH ROW EXECUTE FUNCTION notify_identity_broker_change();
