//! Which addresses a producer-supplied URL may reach: none on a loopback, private, link-local,
//! shared (CGNAT), multicast, reserved or documentation network — IPv4, IPv6 and IPv4 inside
//! IPv6 alike — unless `deliver.webhook.allow_private` names the host. Names are checked after
//! resolution, by the resolver the client connects with, so a name cannot resolve to a public
//! address when checked and a private one when called.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use reqwest::dns::{Addrs, Name, Resolve, Resolving};

/// Whether a webhook may not be sent to `ip`.
pub fn refused(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => refused_v4(v4),
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return refused_v4(v4);
            }
            let s = v6.segments();
            v6.is_loopback()
                || v6.is_unspecified()
                || v6.is_multicast()
                || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
                || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
                || (s[0] & 0xffc0) == 0xfec0 // site-local fec0::/10 (deprecated)
                || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation 2001:db8::/32
                || (s[0] == 0x0064 && s[1] == 0xff9b) // NAT64 64:ff9b::/96 reaches IPv4 inside
                || (s[0] == 0x0100 && s[1..4] == [0, 0, 0]) // discard 100::/64
                || (s[0..6] == [0, 0, 0, 0, 0, 0]) // IPv4-compatible ::a.b.c.d (deprecated)
        }
    }
}

fn refused_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_loopback()              // 127/8
        || ip.is_private()        // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()     // 169.254/16: cloud metadata services
        || ip.is_unspecified()    // 0.0.0.0
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation()
        || a == 0                               // "this network" 0/8
        || (a == 100 && (64..128).contains(&b)) // shared address space 100.64/10
        || (a == 192 && b == 0 && c == 0)       // IETF protocol assignments 192.0.0/24
        || (a == 198 && (b == 18 || b == 19))   // benchmarking 198.18/15
        || a >= 240 // reserved 240/4
}

/// The DNS resolver of the guarded client: the system's, with refused addresses removed; a name
/// with nothing else left fails to resolve, naming the address it refused.
#[derive(Debug, Clone, Copy, Default)]
pub struct GuardedResolver;

impl Resolve for GuardedResolver {
    fn resolve(&self, name: Name) -> Resolving {
        Box::pin(async move {
            let host = name.as_str().to_owned();
            let found: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let (refused_addrs, allowed): (Vec<SocketAddr>, Vec<SocketAddr>) = found.into_iter().partition(|a| refused(a.ip()));
            if allowed.is_empty() {
                let shown: Vec<String> = refused_addrs.iter().map(|a| a.ip().to_string()).collect();
                return Err(Box::new(Refused { host, addresses: shown }) as Box<dyn std::error::Error + Send + Sync>);
            }
            Ok(Box::new(allowed.into_iter()) as Addrs)
        })
    }
}

/// A name that resolves only to refused addresses.
#[derive(Debug, thiserror::Error)]
#[error("{host} resolves only to private or reserved addresses {addresses:?}")]
pub struct Refused {
    pub host: String,
    pub addresses: Vec<String>,
}

/// Whether `refused` is somewhere in `error`'s causes (the resolver's refusal, through reqwest).
pub fn is_refusal(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = cause {
        if e.downcast_ref::<Refused>().is_some() {
            return true;
        }
        cause = e.source();
    }
    false
}
