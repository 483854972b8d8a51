//! The few HTML pages the broker shows a person: the provider chooser, the logout
//! confirmation, "signed out" and error pages. Every value is escaped here.

use axum::response::Html;

fn escape(text: &str) -> String {
    html_escape::encode_safe(text).into_owned()
}

fn attribute(text: &str) -> String {
    html_escape::encode_double_quoted_attribute(text).into_owned()
}

/// The shell of every page; `body` must already be escaped HTML.
fn page(title: &str, body: &str) -> Html<String> {
    Html(format!(
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta name=\"viewport\" content=\"width=device-width\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem;color:#222}}\
         a.button{{display:block;margin:.5rem 0;padding:.75rem 1rem;border:1px solid #888;border-radius:.4rem;text-decoration:none;color:#222}}\
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

pub(crate) fn signed_out_page() -> Html<String> {
    page("Signed out", "<h1>You are signed out</h1>")
}

/// Asks the user to confirm a logout, posting `hidden` back to `action` with `confirm=yes`.
pub(crate) fn logout_confirmation_page(action: &str, hidden: &[(&str, &str)]) -> Html<String> {
    let fields: String = hidden
        .iter()
        .map(|(name, value)| {
            format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", attribute(name), attribute(value))
        })
        .collect();
    page(
        "Sign out",
        &format!(
            "<h1>Sign out?</h1><form method=\"post\" action=\"{}\">{fields}\
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
        .map(|(name, value)| format!("<input type=\"hidden\" name=\"{}\" value=\"{}\">", attribute(name), attribute(value)))
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
        &format!("<h1>Development sign-in</h1>{banner}{problem}<h2>Pick a user</h2>{buttons}<h2>Or type one</h2>{typed}"),
    )
}
