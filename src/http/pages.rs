//! The few HTML pages the broker shows a person: the start page and its demonstration, the
//! provider chooser, the logout confirmation, "signed out", "e-mail verified" and error pages.
//! Every value is escaped here.

use std::fmt::Write as _;

use axum::response::Html;

use super::paths;
use crate::demo::{DemoOutcome, StoredRead};
use crate::urls::Urls;

/// Escapes text for an element's content, where only `&`, `<` and `>` matter; slashes and
/// quotes stay as they are, so that a URL reads the same in the page's source (`curl /`) as on
/// screen. Attribute values go through [`attribute`].
fn escape(text: &str) -> String {
    html_escape::encode_text(text).into_owned()
}

fn attribute(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// The shell of every page; `body` must already be escaped HTML.
fn page(title: &str, body: &str) -> Html<String> {
    shell(title, body, "32rem")
}

/// The shell, as wide as the start page's tables of URLs need.
fn wide_page(title: &str, body: &str) -> Html<String> {
    shell(title, body, "56rem")
}

fn shell(title: &str, body: &str, width: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:{width};margin:4rem auto;padding:0 1rem;color:#222}}\
         a.button{{display:block;margin:.5rem 0;padding:.75rem 1rem;border:1px solid #888;border-radius:.4rem;text-decoration:none;color:#222}}\
         button{{font:inherit;padding:.6rem 1.2rem;border:1px solid #2a5db0;border-radius:.4rem;background:#2a5db0;color:#fff;cursor:pointer}}\
         table{{border-collapse:collapse;width:100%;margin:.5rem 0 1.5rem}}th,td{{text-align:left;vertical-align:top;padding:.35rem .6rem;border-bottom:1px solid #ddd}}\
         th{{white-space:nowrap;font-weight:600}}code{{overflow-wrap:anywhere}}.up{{color:#17692d}}.down{{color:#a11}}\
         small{{color:#666}}</style></head><body>{body}</body></html>",
        title = escape(title),
    ))
}

pub(crate) fn error_page(title: &str, message: &str, correlation_id: &str) -> Html<String> {
    page(
        title,
        &format!(
            "<h1>{}</h1><p>{}</p><p><small>Reference: {}</small></p>",
            escape(title),
            escape(message),
            escape(correlation_id)
        ),
    )
}

/// The provider chooser: one button per `(href, provider name)`.
pub(crate) fn chooser_page(buttons: &[(String, String)]) -> Html<String> {
    let links: String = buttons
        .iter()
        .map(|(href, label)| {
            format!("<a class=\"button\" href=\"{}\">Sign in with {}</a>", attribute(href), escape(label))
        })
        .collect();
    page("Sign in", &format!("<h1>Sign in</h1>{links}"))
}

/// An e-mail verification link did its work and asked for no redirect.
pub(crate) fn email_verified_page() -> Html<String> {
    page(
        "E-mail address verified",
        "<h1>Your e-mail address is verified</h1><p>You can close this page and go back to the application.</p>",
    )
}

pub(crate) fn signed_out_page() -> Html<String> {
    page("Signed out", "<h1>You are signed out</h1>")
}

/// Asks the user to confirm a logout, posting `hidden` (the browser's confirmation code among
/// them) back to `action` with `confirm=yes`; `notice` says why it asks again.
pub(crate) fn logout_confirmation_page(action: &str, hidden: &[(&str, &str)], notice: Option<&str>) -> Html<String> {
    let fields: String = hidden
        .iter()
        .map(|(name, value)| {
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", attribute(name), attribute(value))
        })
        .collect();
    let notice = notice.map(|text| format!("<p><strong>{}</strong></p>", escape(text))).unwrap_or_default();
    page(
        "Sign out",
        &format!(
            "<h1>Sign out?</h1>{notice}<form method=\"post\" action=\"{}\">{fields}\
             <input type=\"hidden\" name=\"confirm\" value=\"yes\"><button type=\"submit\">Sign out</button></form>",
            attribute(action)
        ),
    )
}

/// The development provider's sign-in page: loud about what it is, one button per sample
/// user, and a form for any other address. `hidden` carries the authorize request along.
pub(crate) fn development_sign_in_page(
    hidden: &[(&str, &str)],
    users: &[(&str, &str)],
    problem: Option<&str>,
) -> Html<String> {
    let fields: String = hidden
        .iter()
        .map(|(name, value)| {
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", attribute(name), attribute(value))
        })
        .collect();
    let banner = "<p style=\"background:#fde68a;border:2px solid #b45309;padding:.75rem;border-radius:.4rem\">\
                  <strong>Development sign-in.</strong> Anyone can sign in here as anyone: this provider runs only \
                  with <code>start-dev</code>, on a loopback address, when no real identity provider is configured.</p>";
    let problem = problem.map(|text| format!("<p><strong>{}</strong></p>", escape(text))).unwrap_or_default();
    if hidden.is_empty() {
        return page("Development sign-in", &format!("<h1>Development sign-in</h1>{banner}{problem}"));
    }
    let buttons: String = users
        .iter()
        .map(|(email, name)| {
            format!(
                "<form method=\"post\">{fields}<input type=\"hidden\" name=\"login_email\" value=\"{}\">\
                 <input type=\"hidden\" name=\"login_name\" value=\"{}\">\
                 <button type=\"submit\" class=\"user\">Sign in as {} &lt;{}&gt;</button></form>",
                attribute(email),
                attribute(name),
                escape(name),
                escape(email)
            )
        })
        .collect();
    let typed = format!(
        "<form method=\"post\">{fields}<p><label>E-mail <input name=\"login_email\" type=\"email\" required></label></p>\
         <p><label>Name <input name=\"login_name\"></label></p><button type=\"submit\">Sign in</button></form>"
    );
    page(
        "Development sign-in",
        &format!(
            "<h1>Development sign-in</h1>{banner}{problem}<h2>Pick a user</h2>{buttons}<h2>Or type one</h2>{typed}"
        ),
    )
}

/// What the start page shows, gathered by its handler from the running service.
#[derive(Debug)]
pub(crate) struct StartView<'a> {
    pub(crate) version: &'a str,
    pub(crate) development: bool,
    pub(crate) database: &'a str,
    /// The readiness check's database probe, run for this page.
    pub(crate) database_up: bool,
    pub(crate) issuer: &'a str,
    pub(crate) discovery_url: String,
    /// `/health` on the management listener.
    pub(crate) health_url: String,
    pub(crate) providers: Vec<ProviderView<'a>>,
    /// Where the "Try a sign-in" button goes; start-dev only.
    pub(crate) demo_start: Option<String>,
}

#[derive(Debug)]
pub(crate) struct ProviderView<'a> {
    pub(crate) display_name: &'a str,
    pub(crate) alias: &'a str,
    pub(crate) redirect_uri: String,
}

/// One `<tr>` of a facts table; `value` must already be escaped HTML.
fn row(name: &str, value: &str) -> String {
    format!("<tr><th>{}</th><td>{value}</td></tr>", escape(name))
}

fn code(text: &str) -> String {
    format!("<code>{}</code>", escape(text))
}

fn link(href: &str, text: &str) -> String {
    format!("<a href=\"{}\">{}</a>", attribute(href), escape(text))
}

/// `1234` as `1,234`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn token_length(chars: usize, expires_in: i64) -> String {
    format!("{} characters, expires in {expires_in} s", thousands(chars))
}

pub(crate) fn start_page(view: &StartView<'_>) -> Html<String> {
    let mode = if view.development { "development (start-dev)" } else { "production" };
    let (status_class, status) = if view.database_up { ("up", "UP") } else { ("down", "DOWN") };
    let mut body =
        String::from("<h1>identity-broker</h1><p>A Keycloak-compatible identity broker is running here.</p>");
    body.push_str("<table>");
    body.push_str(&row("Version", &escape(view.version)));
    body.push_str(&row("Mode", mode));
    body.push_str(&row("Database", &escape(view.database)));
    body.push_str(&row("Issuer", &code(view.issuer)));
    let discovery = format!("<a href=\"{}\">{}</a>", attribute(&view.discovery_url), code(&view.discovery_url));
    body.push_str(&row("Discovery", &discovery));
    body.push_str(&row(
        "Health",
        &format!(
            "{} on the management listener, not this one (also <code>/health/live</code>, <code>/health/ready</code>, \
             <code>/health/started</code>). Database check now: <strong class=\"{status_class}\">{status}</strong>",
            code(&view.health_url)
        ),
    ));
    body.push_str("</table><h2>Identity providers</h2>");
    if view.providers.is_empty() {
        body.push_str(
            "<p>No identity provider is enabled, so nobody can sign in. \
             Configure one under <code>[providers.&lt;alias&gt;]</code>.</p>",
        );
    } else {
        body.push_str(
            "<p>Register each redirect URI in the provider's app registration (Entra: Authentication, platform Web) \
             <strong>exactly</strong> as shown: a redirect that differs in any character fails.</p>\
             <table><tr><th>Provider</th><th>Alias</th><th>Redirect URI to register</th></tr>",
        );
        for provider in &view.providers {
            let _ = write!(
                body,
                "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(provider.display_name),
                code(provider.alias),
                code(&provider.redirect_uri)
            );
        }
        body.push_str("</table>");
    }
    if let Some(start) = &view.demo_start {
        let _ = write!(
            body,
            "<h2>Demonstration</h2><p>Runs a whole sign-in for the built-in client <code>{}</code>: this browser goes \
             through the provider and back, the code is redeemed at the token endpoint, and the page then shows the \
             user's claims and what the stored-token read serves, never a token or a secret.</p>\
             <form method=\"get\" action=\"{}\"><button type=\"submit\">Try a sign-in</button></form>",
            escape(crate::demo::DEMO_CLIENT_ID),
            attribute(start)
        );
    }
    wide_page("identity-broker", &body)
}

/// The demonstration's result: claims, the broker's tokens and the stored-token read, described.
pub(crate) fn demo_result_page(outcome: &DemoOutcome, urls: &Urls, again: &str) -> Html<String> {
    let claims = &outcome.claims;
    let optional =
        |value: &Option<String>| value.as_deref().map_or_else(|| "<small>not set</small>".to_owned(), escape);
    let mut body = format!(
        "<h1>Signed in</h1><p>The client <code>{}</code> signed in through the broker and redeemed its code. \
         Tokens are described by their length and lifetime only.</p><h2>Claims (userinfo)</h2><table>",
        escape(crate::demo::DEMO_CLIENT_ID)
    );
    body.push_str(&row("sub", &code(&outcome.user_id)));
    body.push_str(&row("email", &optional(&claims.email)));
    body.push_str(&row("email_verified", if claims.email_verified { "true" } else { "false" }));
    body.push_str(&row("preferred_username", &escape(&claims.preferred_username)));
    body.push_str(&row("name", &optional(&claims.name)));
    body.push_str(&row("given_name", &optional(&claims.given_name)));
    body.push_str(&row("family_name", &optional(&claims.family_name)));
    body.push_str(&row("identity_provider", &code(&claims.identity_provider)));
    let issued = &outcome.issued;
    body.push_str("</table><h2>Tokens the broker issued</h2><table>");
    body.push_str(&row("access token", &token_length(issued.access_token_chars, issued.expires_in)));
    body.push_str(&row("refresh token", &format!("issued, expires in {} s", issued.refresh_expires_in)));
    body.push_str(&row("ID token", if issued.id_token { "issued" } else { "none" }));
    body.push_str(&row("scope", &code(&issued.scope)));
    body.push_str("</table>");
    let (alias, result) = match &outcome.stored {
        StoredRead::Served { alias, facts } => (alias, Ok(facts)),
        StoredRead::Refused { alias, message } => (alias, Err(message)),
    };
    let path = urls.provider_path(paths::BROKER_TOKEN, alias);
    let _ = write!(
        body,
        "<h2>Stored token read</h2><p>What {} serves this client for provider {}, read through the vault:</p>",
        code(&format!("GET {path}")),
        code(alias)
    );
    match result {
        Ok(facts) => {
            body.push_str("<table>");
            body.push_str(&row("token type", &escape(&facts.token_type)));
            body.push_str(&row("scope", &code(&facts.scope)));
            body.push_str(&row("access token", &token_length(facts.access_token_chars, facts.expires_in)));
            let refresh = match (facts.refresh_token, facts.refresh_expires_in) {
                (true, Some(seconds)) => format!("stored, expires in {seconds} s"),
                (true, None) => "stored".to_owned(),
                (false, _) => "not stored".to_owned(),
            };
            body.push_str(&row("refresh token", &refresh));
            body.push_str(&row("ID token", if facts.id_token { "stored" } else { "not stored" }));
            if facts.refreshed {
                body.push_str(&row("refreshed", "yes: this read refreshed the token first"));
            }
            body.push_str("</table>");
        }
        Err(message) => {
            let _ = write!(body, "<p class=\"down\">Refused: {}</p>", escape(message));
        }
    }
    let _ = write!(body, "<p>{} · {}</p>", link(paths::START, "Back to the start page"), link(again, "Try again"));
    wide_page("Signed in", &body)
}

/// The demonstration stopped: why, the request's reference, and the way back.
pub(crate) fn demo_failed_page(message: &str, correlation_id: &str) -> Html<String> {
    page(
        "Sign-in demonstration stopped",
        &format!(
            "<h1>The demonstration stopped</h1><p>{}</p><p>{}</p><p><small>Reference: {}</small></p>",
            escape(message),
            link(paths::START, "Back to the start page"),
            escape(correlation_id)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thousands_are_separated() {
        for (n, expected) in [(0, "0"), (999, "999"), (1000, "1,000"), (1234, "1,234"), (1_234_567, "1,234,567")] {
            assert_eq!(thousands(n), expected, "{n}");
        }
    }

    #[test]
    fn the_start_page_escapes_what_configuration_wrote() {
        let view = StartView {
            version: "0.1.0",
            development: false,
            database: "PostgreSQL",
            database_up: true,
            issuer: "https://auth.example.com/realms/allhands",
            discovery_url: "https://auth.example.com/realms/allhands/.well-known/openid-configuration".to_owned(),
            health_url: "http://0.0.0.0:9000/health".to_owned(),
            providers: vec![ProviderView {
                display_name: "<script>alert(1)</script>",
                alias: "azure_devops",
                redirect_uri: "https://auth.example.com/realms/allhands/broker/azure_devops/endpoint".to_owned(),
            }],
            demo_start: None,
        };
        let Html(html) = start_page(&view);
        assert!(!html.contains("<script>"), "{html}");
        assert!(html.contains("&lt;script&gt;alert(1)&lt;/script&gt;"), "{html}");
        assert!(html.contains("https://auth.example.com/realms/allhands/broker/azure_devops/endpoint"));
        assert!(!html.contains("Try a sign-in"), "no demonstration in production");
    }
}
