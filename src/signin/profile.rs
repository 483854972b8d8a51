//! The user as the provider's claims describe them: Entra's ID token mapped onto the broker's
//! profile, as Keycloak's mappers do for OpenHands' realm.

use crate::store::ProfileUpdate;
use crate::upstream::entra::VerifiedIdentity;

/// Maps Entra's claims onto the user, as Keycloak's mappers do for OpenHands' realm.
pub(super) fn profile_update(
    user_id: &str,
    alias: &str,
    trust_email: bool,
    identity: &VerifiedIdentity,
) -> ProfileUpdate {
    let upn = identity.preferred_username.clone();
    let email =
        identity.email.clone().or_else(|| upn.clone().filter(|u| looks_like_email(u))).map(|e| e.to_lowercase());
    let username = upn.clone().or_else(|| email.clone()).unwrap_or_else(|| identity.subject.clone()).to_lowercase();
    let full_name = identity.name.clone().or_else(|| match (&identity.given_name, &identity.family_name) {
        (Some(g), Some(f)) => Some(format!("{g} {f}")),
        _ => None,
    });
    // OpenHands' realm maps each provider's user id to `{alias}_id` and the alias to
    // `identity_provider`; the resolvers look users up by them (`q=azure_devops_id:<sub>`).
    let mut attributes =
        vec![("identity_provider".to_owned(), alias.to_owned()), (format!("{alias}_id"), identity.subject.clone())];
    attributes.extend(identity.tenant_id.clone().map(|tid| ("tid".to_owned(), tid)));
    attributes.extend(identity.object_id.clone().map(|oid| ("oid".to_owned(), oid)));
    ProfileUpdate {
        user_id: user_id.to_owned(),
        username,
        email_verified: trust_email && email.is_some(),
        email,
        first_name: identity.given_name.clone(),
        last_name: identity.family_name.clone(),
        full_name,
        alias: alias.to_owned(),
        subject: identity.subject.clone(),
        identity_username: upn,
        tenant_id: identity.tenant_id.clone(),
        object_id: identity.object_id.clone(),
        attributes,
    }
}

fn looks_like_email(value: &str) -> bool {
    match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty() && domain.contains('.') && !domain.starts_with('.') && !value.contains(' ')
        }
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn identity(email: Option<&str>, upn: Option<&str>) -> VerifiedIdentity {
        VerifiedIdentity {
            subject: "pairwise-sub".into(),
            object_id: Some("oid".into()),
            tenant_id: Some("tid".into()),
            preferred_username: upn.map(Into::into),
            email: email.map(Into::into),
            name: Some("Alice Example".into()),
            given_name: None,
            family_name: None,
        }
    }

    #[test]
    fn email_falls_back_to_an_email_shaped_upn_and_usernames_are_lower_case() {
        let cases = [
            (Some("Bob@Contoso.com"), Some("bob_upn@contoso.com"), Some("bob@contoso.com"), "bob_upn@contoso.com"),
            (
                None,
                Some("Alice@Contoso.onmicrosoft.com"),
                Some("alice@contoso.onmicrosoft.com"),
                "alice@contoso.onmicrosoft.com",
            ),
            (None, Some("CONTOSO\\alice"), None, "contoso\\alice"),
            (None, None, None, "pairwise-sub"),
        ];
        for (email, upn, expected_email, expected_username) in cases {
            let profile = profile_update("u", "azure_devops", true, &identity(email, upn));
            assert_eq!(profile.email.as_deref(), expected_email, "email for {email:?}/{upn:?}");
            assert_eq!(profile.username, expected_username, "username for {email:?}/{upn:?}");
            assert_eq!(profile.email_verified, expected_email.is_some());
        }
        let untrusted = profile_update("u", "a", false, &identity(Some("x@y.com"), None));
        assert!(!untrusted.email_verified, "trust_email = false leaves e-mail unverified");
    }
}
