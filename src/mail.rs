//! Sends one e-mail message through the SMTP server of `[smtp]`.
//!
//! `lettre` speaks SMTP; its TLS is rustls with the aws-lc-rs provider and the webpki roots,
//! the same stack as every other connection of the broker (docs/decisions.md, "lettre").

use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport as _, Message, Tokio1Executor};
use secrecy::ExposeSecret as _;

use crate::config::{SmtpSecurity, SmtpSettings};

/// Each step of the conversation (connect, greeting, each command) waits this long at most.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(10);
/// The whole message, however the server dawdles: the admin request waiting on it must end.
const SEND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum MailError {
    #[error("cannot set up TLS towards the SMTP server {server}")]
    Tls {
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("cannot build the message")]
    Message(#[from] lettre::error::Error),
    #[error("the SMTP server {server} did not take the message")]
    Send {
        server: String,
        #[source]
        source: lettre::transport::smtp::Error,
    },
    #[error("the SMTP server {server} did not take the message within {} s", SEND_TIMEOUT.as_secs())]
    Timeout { server: String },
}

/// One message: plain text, and the same as HTML when given.
#[derive(Debug)]
pub(crate) struct OutgoingMessage {
    pub(crate) to: Mailbox,
    pub(crate) subject: String,
    pub(crate) text: String,
    pub(crate) html: Option<String>,
}

/// The configured SMTP server and sender; cheap to clone (the transport holds no connection
/// between messages).
#[derive(Clone)]
pub(crate) struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    /// `host:port`, for messages.
    server: String,
}

debug_showing!(Mailer { from, server });

/// RFC 5321 §4.1.4: a name, or an address literal when this host is known by address only.
fn client_id(name: &str) -> ClientId {
    match name.trim_start_matches('[').trim_end_matches(']').parse() {
        Ok(std::net::IpAddr::V4(address)) => ClientId::Ipv4(address),
        Ok(std::net::IpAddr::V6(address)) => ClientId::Ipv6(address),
        Err(_) => ClientId::Domain(name.to_owned()),
    }
}

impl Mailer {
    /// `hello_name` is the name this host gives in `EHLO`: the public hostname's host.
    pub(crate) fn new(settings: &SmtpSettings, hello_name: &str) -> Result<Mailer, MailError> {
        let server = format!("{}:{}", settings.host, settings.port);
        let tls = |host: &str| {
            TlsParameters::new_rustls(host.to_owned())
                .map_err(|source| MailError::Tls { server: server.clone(), source })
        };
        let tls = match settings.security {
            // Required, not Opportunistic: a server, or someone in between, that does not offer
            // STARTTLS gets no message and no password.
            SmtpSecurity::StartTls => Tls::Required(tls(&settings.host)?),
            SmtpSecurity::Tls => Tls::Wrapper(tls(&settings.host)?),
            SmtpSecurity::None => Tls::None,
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(settings.host.as_str())
            .port(settings.port)
            .tls(tls)
            .timeout(Some(COMMAND_TIMEOUT))
            .hello_name(client_id(hello_name));
        if let Some(credentials) = &settings.credentials {
            builder = builder.credentials(Credentials::new(
                credentials.username.clone(),
                credentials.password.expose_secret().to_owned(),
            ));
        }
        Ok(Mailer { transport: builder.build(), from: settings.from.clone(), server })
    }

    /// Sends `message` and returns once the server has taken it.
    pub(crate) async fn send(&self, message: OutgoingMessage) -> Result<(), MailError> {
        let builder = Message::builder().from(self.from.clone()).to(message.to).subject(message.subject);
        let email = match message.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(message.text, html))?,
            None => builder.body(message.text)?,
        };
        match tokio::time::timeout(SEND_TIMEOUT, self.transport.send(email)).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(source)) => Err(MailError::Send { server: self.server.clone(), source }),
            Err(_) => Err(MailError::Timeout { server: self.server.clone() }),
        }
    }
}
