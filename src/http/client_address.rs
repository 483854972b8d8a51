//! Who is asking: the client's address, from the connection's peer or, behind a trusted proxy,
//! from `X-Forwarded-For`, for the budgets and throttles an anonymous caller meets.
//!
//! `X-Forwarded-For` is read from the right: each proxy appends the address it received the
//! request from, so the hops at the right end that are trusted proxies are stripped and the
//! next one is the client. Everything left of it was written by the client itself and is never
//! believed; when every hop is a trusted proxy, the left-most one is the client.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::extract::{ConnectInfo, FromRef, FromRequestParts};
use axum::http::HeaderMap;
use axum::http::request::Parts;
use ipnet::IpNet;

/// The address rule: which peers are proxies whose `X-Forwarded-For` is believed; clones
/// share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct ClientAddresses {
    trusted_proxies: Arc<[IpNet]>,
}

impl ClientAddresses {
    pub(crate) fn new(trusted_proxies: Vec<IpNet>) -> ClientAddresses {
        ClientAddresses { trusted_proxies: trusted_proxies.into() }
    }

    fn is_trusted(&self, address: IpAddr) -> bool {
        self.trusted_proxies.iter().any(|network| network.contains(&address))
    }

    /// The client's address for a request that came from `peer` with these headers.
    pub(crate) fn resolve(&self, peer: IpAddr, headers: &HeaderMap) -> ClientAddress {
        let peer = peer.to_canonical();
        if !self.is_trusted(peer) {
            return ClientAddress(peer);
        }
        let hops: Vec<&str> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|value| value.to_str().ok())
            .flat_map(|value| value.split(','))
            .map(str::trim)
            .collect();
        let mut client = peer;
        for hop in hops.iter().rev() {
            // A hop that is no address was written by someone untrusted: stop at the last good one.
            let Some(address) = parse_hop(hop) else { break };
            client = address;
            if !self.is_trusted(address) {
                break;
            }
        }
        ClientAddress(client)
    }
}

/// An address as proxies write them: bare, `v4:port`, or `[v6]:port`.
fn parse_hop(hop: &str) -> Option<IpAddr> {
    if let Ok(address) = hop.parse::<IpAddr>() {
        return Some(address.to_canonical());
    }
    hop.parse::<SocketAddr>().ok().map(|socket| socket.ip().to_canonical())
}

/// A request's client address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ClientAddress(pub(crate) IpAddr);

impl ClientAddress {
    /// What budgets count under: an IPv4 address, or the /64 an IPv6 address lies in (one host
    /// is commonly given a whole /64, so counting single IPv6 addresses would count nothing).
    pub(crate) fn budget_key(self) -> String {
        match self.0 {
            IpAddr::V4(address) => address.to_string(),
            IpAddr::V6(address) => {
                let prefix = u128::from(address) & !((1u128 << 64) - 1);
                format!("{}/64", Ipv6Addr::from(prefix))
            }
        }
    }
}

impl std::fmt::Display for ClientAddress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for ClientAddress
where
    ClientAddresses: FromRef<S>,
{
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        // Every listener's connections carry their peer (`serve`); a request built in-process has none.
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ConnectInfo(peer)| peer.ip());
        Ok(ClientAddresses::from_ref(state).resolve(peer, &parts.headers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(trusted: &[&str]) -> ClientAddresses {
        ClientAddresses::new(trusted.iter().map(|t| t.parse().expect("cidr")).collect())
    }

    fn headers(forwarded: &[&str]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for value in forwarded {
            headers.append("x-forwarded-for", value.parse().expect("header"));
        }
        headers
    }

    #[test]
    fn the_client_is_the_nearest_untrusted_hop() {
        let ingress = rule(&["10.0.0.0/8"]);
        let cases: [(&ClientAddresses, &str, &[&str], &str, &str); 9] = [
            (&ingress, "192.0.2.1", &["203.0.113.9"], "192.0.2.1", "an untrusted peer's header is ignored"),
            (&ingress, "10.1.1.1", &[], "10.1.1.1", "a proxy that sends no header is the client"),
            (&ingress, "10.1.1.1", &["203.0.113.9"], "203.0.113.9", "one hop behind the ingress"),
            (&ingress, "10.1.1.1", &["1.1.1.1, 203.0.113.9"], "203.0.113.9", "what the client wrote is not believed"),
            (
                &ingress,
                "10.1.1.1",
                &["1.1.1.1", "203.0.113.9, 10.2.2.2"],
                "203.0.113.9",
                "headers joined, proxies stripped",
            ),
            (&ingress, "10.1.1.1", &["10.3.3.3, 10.2.2.2"], "10.3.3.3", "all trusted: the left-most hop"),
            (&ingress, "10.1.1.1", &["garbage, 10.2.2.2"], "10.2.2.2", "garbage stops the walk"),
            (&ingress, "10.1.1.1", &["[2001:db8::1]:443"], "2001:db8::1", "bracketed IPv6 with a port"),
            (&rule(&[]), "10.1.1.1", &["203.0.113.9"], "10.1.1.1", "no trusted proxies by default"),
        ];
        for (rule, peer, forwarded, expected, why) in cases {
            let client = rule.resolve(peer.parse().expect("peer"), &headers(forwarded));
            assert_eq!(client.0.to_string(), expected, "{why}");
        }
    }

    #[test]
    fn ipv6_clients_are_counted_by_their_64_and_mapped_ipv4_as_ipv4() {
        let client = rule(&[]).resolve("2001:db8:1:2:aaaa::1".parse().expect("v6"), &HeaderMap::new());
        assert_eq!(client.budget_key(), "2001:db8:1:2::/64");
        let mapped = rule(&[]).resolve("::ffff:192.0.2.7".parse().expect("mapped"), &HeaderMap::new());
        assert_eq!(mapped.budget_key(), "192.0.2.7");
    }
}
