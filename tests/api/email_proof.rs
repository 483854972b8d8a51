//! `email_verified` only with proof: Entra's `email` claim is not verified in general, so only
//! `xms_edov`, the verified e-mail claims or `verified_email_domains` make it so; a sign-in never
//! gives a second user an address another holds; an administrator links an upstream account to
//! an existing user through Keycloak's admin API.

use identity_broker::http::paths;
use identity_broker::store::{IdentityKey, ProfileUpdate};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::admin::{admin_token, admin_toml, admin_url};
use crate::both_backends;
use crate::helpers::*;
use crate::support::fake_entra::FakeUser;

const ALIAS: &str = "azure_devops";

/// Signs `user` in through a fresh browser; returns the userinfo claims.
async fn signed_in_as(app: &TestApp, user: FakeUser) -> Value {
    app.entra.set_user(user);
    let tokens = app.tokens().await;
    let info = app.userinfo(access_token(&tokens)).await;
    assert_eq!(info.status(), StatusCode::OK);
    info.json().await.expect("json")
}

fn carol(email: &str, optional_claims: Vec<(&'static str, Value)>) -> FakeUser {
    FakeUser {
        subject: "carol-pairwise-subject".into(),
        object_id: "c0c0c0c0-0000-4000-8000-000000000001".into(),
        preferred_username: "carol@fabrikam.com".into(),
        name: "Carol".into(),
        email: Some(email.into()),
        optional_claims,
        ..FakeUser::bob()
    }
}

both_backends!(email_verified_is_true_only_when_the_id_token_or_the_configuration_proves_it, |backend| async move {
    let app = spawn_app(backend).await;

    let cases = [
        (carol("carol@fabrikam.com", vec![]), false, "an email claim alone proves nothing"),
        (carol("carol@fabrikam.com", vec![("xms_edov", json!(false))]), false, "xms_edov false"),
        (carol("carol@fabrikam.com", vec![("xms_edov", json!(true))]), true, "xms_edov true"),
        (
            carol("carol@fabrikam.com", vec![("verified_primary_email", json!(["Carol@Fabrikam.com"]))]),
            true,
            "verified_primary_email",
        ),
        (
            carol("carol@fabrikam.com", vec![("verified_secondary_email", json!(["other@fabrikam.com"]))]),
            false,
            "another verified address",
        ),
    ];
    for (user, verified, case) in cases {
        let info = signed_in_as(&app, user).await;
        assert_eq!(info["email"], "carol@fabrikam.com", "{case}");
        assert_eq!(info["email_verified"], Value::Bool(verified), "{case}");
    }

    // A domain the operator vouches for.
    let app = TestApp::builder(backend)
        .edited(|text| {
            text.replacen(
                "client_auth_method =",
                "verified_email_domains = [\"Fabrikam.com\"]\nclient_auth_method =",
                1,
            )
        })
        .spawn()
        .await;
    let info = signed_in_as(&app, carol("carol@fabrikam.com", vec![])).await;
    assert_eq!(info["email_verified"], Value::Bool(true), "a domain of verified_email_domains");
    let info = signed_in_as(&app, FakeUser::alice()).await;
    assert_eq!(info["email_verified"], Value::Bool(false), "another domain");

    // trust_email = true keeps the old behaviour, where the operator opts in.
    let app = TestApp::builder(backend)
        .edited(|text| text.replacen("client_auth_method =", "trust_email = true\nclient_auth_method =", 1))
        .spawn()
        .await;
    let info = signed_in_as(&app, carol("carol@fabrikam.com", vec![])).await;
    assert_eq!(info["email_verified"], Value::Bool(true), "trust_email opted in");
});

both_backends!(a_sign_in_never_gives_a_second_user_an_address_another_holds, |backend| async move {
    let app = TestApp::builder(backend).extra(&admin_toml(60)).spawn().await;
    // Bob signs in: his user holds bob@contoso.com.
    let bob = signed_in_as(&app, FakeUser::bob()).await;

    // Another Entra account claiming Bob's address (in another case), unproven: a new user,
    // without the address.
    let imposter = FakeUser { subject: "imposter-subject".into(), ..carol("BOB@contoso.com", vec![]) };
    let second = signed_in_as(&app, imposter.clone()).await;
    assert_ne!(second["sub"], bob["sub"], "a user of its own");
    assert!(second.get("email").is_none_or(Value::is_null), "without Bob's address: {second}");
    assert_eq!(second["email_verified"], Value::Bool(false));

    // Even proven, the address of a user linked to this provider stays with that user.
    let proven = FakeUser { optional_claims: vec![("xms_edov", json!(true))], ..imposter };
    let again = signed_in_as(&app, proven).await;
    assert_eq!(again["sub"], second["sub"], "the same account signs in as its own user");
    assert!(again.get("email").is_none_or(Value::is_null), "still without Bob's address: {again}");

    // Dave's user exists (imported, say) with no link to this provider.
    let dave_id = uuid::Uuid::new_v4().to_string();
    let dave = ProfileUpdate {
        user_id: dave_id.clone(),
        username: "dave".into(),
        email: Some("dave@contoso.com".into()),
        email_verified: true,
        first_name: None,
        last_name: None,
        full_name: None,
        alias: "legacy_idp".into(),
        subject: "dave-at-legacy".into(),
        identity_username: None,
        tenant_id: None,
        object_id: None,
        attributes: Vec::new(),
        roles: Vec::new(),
    };
    app.store.save_sign_in(&dave, None, 1_800_000_000).await.expect("dave");
    let dave_entra = FakeUser {
        subject: "dave-pairwise-subject".into(),
        preferred_username: "dave@contoso.com".into(),
        email: Some("dave@contoso.com".into()),
        optional_claims: vec![("xms_edov", json!(true))],
        ..FakeUser::bob()
    };

    // A first sign-in with Dave's proven address ends on Keycloak's "account already exists".
    app.entra.set_user(dave_entra.clone());
    let refused = app.follow(&browser_client(), &app.auth_url(&[])).await;
    assert_eq!(refused.page_status(), StatusCode::CONFLICT);
    let Outcome::Page { body, .. } = refused else { unreachable!() };
    assert!(body.contains("already exists"), "{body}");
    assert!(app.store.find_identity_by_subject(ALIAS, &dave_entra.subject).await.expect("query").is_none());

    // Both conflicts are in the audit trail.
    app.state.audit.flush().await;
    let events = app.store.list_audit(Some("email_conflict")).await.expect("audit");
    let outcomes: Vec<&str> = events.iter().map(|e| e.outcome.as_str()).collect();
    assert!(outcomes.contains(&"email_withheld") && outcomes.contains(&"refused"), "{outcomes:?}");

    // The administrator links Dave's Entra account to Dave's user, as in Keycloak's console.
    let admin = admin_token(&app).await;
    let link_url = admin_url(&app, paths::ADMIN_USER_IDENTITY).replace("{user_id}", &dave_id).replace("{alias}", ALIAS);
    let link = |body: Value| app.api.post(&link_url).bearer_auth(&admin).json(&body).send();
    let bad = link(json!({"identityProvider": ALIAS})).await.expect("link");
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST, "userId is required");
    let body = json!({"identityProvider": ALIAS, "userId": dave_entra.subject, "userName": "dave@contoso.com"});
    assert_eq!(link(body.clone()).await.expect("link").status(), StatusCode::NO_CONTENT);
    let twice = link(body).await.expect("link");
    assert_eq!(twice.status(), StatusCode::CONFLICT);
    assert_eq!(twice.json::<Value>().await.expect("json")["errorMessage"], "User is already linked with provider");
    let unknown =
        app.api.post(link_url.replace(ALIAS, "nope")).bearer_auth(&admin).json(&json!({"userId": "x"})).send();
    assert_eq!(unknown.await.expect("link").status(), StatusCode::NOT_FOUND);

    // Dave's next sign-in lands on Dave's user, tokens and all.
    let info = signed_in_as(&app, dave_entra).await;
    assert_eq!(info["sub"], dave_id.as_str());
    assert_eq!(info["email"], "dave@contoso.com");
    let identity = app.store.find_identity(IdentityKey { user_id: &dave_id, alias: ALIAS }).await.expect("query");
    assert!(identity.is_some(), "linked");
});
