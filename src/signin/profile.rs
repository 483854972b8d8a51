//! The user as the provider's claims describe them: Entra's ID token mapped onto the broker's
//! profile, as Keycloak's mappers do for OpenHands' realm.

use crate::config::{ProviderSettings, is_role_name};
use crate::store::ProfileUpdate;
use crate::upstream::entra::VerifiedIdentity;

/// What a provider's configuration lets count as proof of an e-mail address.
#[derive(Debug, Clone, Copy)]
pub(super) struct EmailTrust<'a> {
    /// `trust_email`: any address the provider gives is believed (Keycloak's `trustEmail`).
    pub(super) trust_all: bool,
    /// `verified_email_domains`, in lower case.
    pub(super) verified_domains: &'a [String],
}

impl<'a> EmailTrust<'a> {
    pub(super) fn of(settings: &'a ProviderSettings) -> Self {
        EmailTrust { trust_all: settings.trust_email, verified_domains: &settings.verified_email_domains }
    }
}

/// Whether `email` (lower case) is proven by the ID token or the configuration: Entra's `email`
/// claim is not verified in general, so only `xms_edov: true` on that very claim, the verified
/// e-mail claims, a domain of `verified_email_domains`, or `trust_email` make it so.
pub(super) fn email_proven(email: &str, identity: &VerifiedIdentity, trust: EmailTrust<'_>) -> bool {
    let claimed = identity.email.as_deref().is_some_and(|claim| claim.eq_ignore_ascii_case(email));
    let domain = email.rsplit_once('@').map(|(_, domain)| domain).unwrap_or_default();
    trust.trust_all
        || (claimed && identity.email_domain_verified == Some(true))
        || identity.verified_emails.iter().any(|verified| verified.trim().eq_ignore_ascii_case(email))
        || trust.verified_domains.iter().any(|verified| verified.eq_ignore_ascii_case(domain))
}

/// The most roles kept from one sign-in; an application has far fewer app roles.
const MAX_PROVIDER_ROLES: usize = 256;

/// The provider's roles that are role names, once each, at most [`MAX_PROVIDER_ROLES`].
fn provider_roles(roles: &[String]) -> Vec<String> {
    let mut kept: Vec<String> = roles.iter().filter(|role| is_role_name(role)).cloned().collect();
    kept.sort();
    kept.dedup();
    kept.truncate(MAX_PROVIDER_ROLES);
    kept
}

/// Maps Entra's claims onto the user, as Keycloak's mappers do for OpenHands' realm.
pub(super) fn profile_update(
    user_id: &str,
    alias: &str,
    trust: EmailTrust<'_>,
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
        email_verified: email.as_deref().is_some_and(|email| email_proven(email, identity, trust)),
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
        roles: provider_roles(&identity.roles),
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
            email_domain_verified: None,
            verified_emails: Vec::new(),
            roles: Vec::new(),
        }
    }

    const TRUSTED: EmailTrust<'static> = EmailTrust { trust_all: true, verified_domains: &[] };
    const UNTRUSTED: EmailTrust<'static> = EmailTrust { trust_all: false, verified_domains: &[] };

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
            let profile = profile_update("u", "azure_devops", TRUSTED, &identity(email, upn));
            assert_eq!(profile.email.as_deref(), expected_email, "email for {email:?}/{upn:?}");
            assert_eq!(profile.username, expected_username, "username for {email:?}/{upn:?}");
            assert_eq!(profile.email_verified, expected_email.is_some());
        }
        let untrusted = profile_update("u", "a", UNTRUSTED, &identity(Some("x@y.com"), None));
        assert!(!untrusted.email_verified, "trust_email = false leaves e-mail unverified");
    }

    #[test]
    fn provider_roles_are_kept_once_each_and_only_when_they_are_role_names() {
        let given = ["Developer", "Admin", "Developer", "", "bad\u{7}", &"x".repeat(256)].map(str::to_owned);
        let identity = VerifiedIdentity { roles: given.to_vec(), ..identity(None, Some("a@b.com")) };
        let profile = profile_update("u", "azure_devops", TRUSTED, &identity);
        assert_eq!(profile.roles, ["Admin", "Developer"]);
    }

    #[test]
    fn email_verified_needs_proof_from_the_token_or_the_configuration() {
        let domains = ["contoso.com".to_owned()];
        let by_domain = EmailTrust { trust_all: false, verified_domains: &domains };
        let proven = |edov: Option<bool>, verified: &[&str], email: Option<&str>, upn: Option<&str>| VerifiedIdentity {
            email_domain_verified: edov,
            verified_emails: verified.iter().map(|v| (*v).to_owned()).collect(),
            ..identity(email, upn)
        };
        let cases = [
            (proven(None, &[], Some("bob@fabrikam.com"), None), UNTRUSTED, false, "an e-mail claim alone"),
            (proven(Some(true), &[], Some("Bob@Fabrikam.com"), None), UNTRUSTED, true, "xms_edov true"),
            (proven(Some(false), &[], Some("bob@fabrikam.com"), None), UNTRUSTED, false, "xms_edov false"),
            (
                proven(Some(true), &[], None, Some("bob@fabrikam.com")),
                UNTRUSTED,
                false,
                "xms_edov speaks of the email claim, not of a UPN taken for one",
            ),
            (
                proven(None, &["BOB@fabrikam.com"], Some("bob@fabrikam.com"), None),
                UNTRUSTED,
                true,
                "verified_primary_email",
            ),
            (
                proven(None, &["other@fabrikam.com"], Some("bob@fabrikam.com"), None),
                UNTRUSTED,
                false,
                "another verified address",
            ),
            (proven(None, &[], None, Some("alice@Contoso.com")), by_domain, true, "a verified domain"),
            (proven(None, &[], Some("bob@fabrikam.com"), None), by_domain, false, "another domain"),
            (proven(None, &[], Some("bob@fabrikam.com"), None), TRUSTED, true, "trust_email opted in"),
        ];
        for (identity, trust, expected, case) in cases {
            assert_eq!(profile_update("u", "a", trust, &identity).email_verified, expected, "{case}");
        }
    }
}
