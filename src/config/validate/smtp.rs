//! `[smtp]`: the server, the sender and the credentials that send-verify-email's messages use.

use secrecy::ExposeSecret;

use super::Problems;
use crate::config::raw::RawSmtp;
use crate::config::{SmtpCredentials, SmtpSecurity, SmtpSettings};

/// Port 587, message submission with STARTTLS (RFC 6409), as the contract's example.
const DEFAULT_PORT: u16 = 587;

/// The table's settings, or `None` with the problems noted when it cannot be used.
pub(super) fn validate_smtp(problems: &mut Problems, raw: RawSmtp) -> Option<SmtpSettings> {
    let host = validate_host(problems, raw.host);
    let port = raw.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        problems.add("smtp.port", "`0` is no port: write the server's (587 for starttls, 465 for tls)");
    }
    let from = validate_from(problems, raw.from.as_deref());
    let security = validate_security(problems, raw.security.as_deref());
    let credentials = validate_credentials(problems, raw.username, raw.password);
    Some(SmtpSettings { host: host?, port, from: from?, security: security?, credentials: credentials? })
}

fn validate_host(problems: &mut Problems, host: Option<String>) -> Option<String> {
    match host.map(|h| h.trim().to_owned()) {
        None => {
            problems.add("smtp.host", "required in [smtp]: the SMTP server's name, e.g. `smtp.example.com`");
            None
        }
        Some(host) if host.is_empty() || host.contains("://") || host.chars().any(char::is_whitespace) => {
            problems.add(
                "smtp.host",
                format!("`{host}` is not a host name: write the server's name alone, e.g. `smtp.example.com`"),
            );
            None
        }
        Some(host) => Some(host),
    }
}

fn validate_from(problems: &mut Problems, from: Option<&str>) -> Option<lettre::message::Mailbox> {
    let Some(from) = from else {
        problems.add("smtp.from", "required in [smtp]: the sender, e.g. `OpenHands <noreply@example.com>`");
        return None;
    };
    match from.parse() {
        Ok(mailbox) => Some(mailbox),
        Err(_) => {
            problems.add(
                "smtp.from",
                format!(
                    "`{from}` is not an e-mail address: write `noreply@example.com` or `OpenHands <noreply@example.com>`"
                ),
            );
            None
        }
    }
}

fn validate_security(problems: &mut Problems, security: Option<&str>) -> Option<SmtpSecurity> {
    match security.unwrap_or("starttls") {
        "starttls" => Some(SmtpSecurity::StartTls),
        "tls" => Some(SmtpSecurity::Tls),
        "none" => Some(SmtpSecurity::None),
        other => {
            problems.add(
                "smtp.security",
                format!(
                    "`{other}` is not `starttls` (port 587), `tls` (port 465, also called SSL) or `none` (no encryption)"
                ),
            );
            None
        }
    }
}

/// Both or neither: a username without its password would fail at the first message, and a
/// password without a username would never be sent.
fn validate_credentials(
    problems: &mut Problems,
    username: Option<String>,
    password: Option<secrecy::SecretString>,
) -> Option<Option<SmtpCredentials>> {
    let username = username.filter(|u| !u.is_empty());
    let password = password.filter(|p| !p.expose_secret().is_empty());
    match (username, password) {
        (Some(username), Some(password)) => Some(Some(SmtpCredentials { username, password })),
        (None, None) => Some(None),
        (Some(username), None) => {
            problems.add(
                "smtp.password",
                format!("missing for smtp.username `{username}`: set it or env BROKER_SMTP_PASSWORD"),
            );
            None
        }
        (None, Some(_)) => {
            problems.add("smtp.username", "a password is set (smtp.password or env BROKER_SMTP_PASSWORD) without a username: set smtp.username, or remove the password");
            None
        }
    }
}
