//! The `[sip]` configuration section: listener, RTP ports, codecs, who may call in (IP allow-list
//! and digest users), trunks to call out and register through, and the dial plan.

use std::collections::BTreeMap;
use std::net::IpAddr;

use dartmouth_media::PhoneCodec;
use serde::{Deserialize, Serialize};

/// SIP settings (`[sip]`). SIP is off unless `listen` is set (or `serve --sip ADDR`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SipSettings {
    /// UDP and TCP listen address, e.g. `127.0.0.1:5060`; empty: SIP is off.
    pub listen: String,
    /// Address advertised in Contact and SDP (empty: the listener's).
    pub public_ip: String,
    /// First RTP port (even ports are used, one per call).
    pub rtp_port_min: u16,
    /// Last RTP port.
    pub rtp_port_max: u16,
    /// Codecs offered and accepted, in order of preference (`PCMU`, `PCMA`, `G722`, `opus`).
    pub codecs: Vec<String>,
    /// Sources allowed to call in without digest authentication (CIDR, e.g. `10.0.0.0/8`).
    pub allow: Vec<String>,
    /// Digest realm of inbound authentication.
    pub realm: String,
    /// Inbound digest users: name → the environment variable holding the password.
    pub users: BTreeMap<String, String>,
    /// Trunks (providers, PBXs) to call out through and register with.
    pub trunks: BTreeMap<String, TrunkSettings>,
    /// Inbound routing, first match wins; no match: the call is refused with 404.
    pub dial_plan: Vec<DialRule>,
    /// Most concurrent calls; more are refused with 503.
    pub max_calls: usize,
    /// Ring at least this long (180 Ringing) before answering, in milliseconds.
    pub ring_ms: u64,
}

impl Default for SipSettings {
    fn default() -> Self {
        Self {
            listen: String::new(),
            public_ip: String::new(),
            rtp_port_min: 16_000,
            rtp_port_max: 16_999,
            codecs: vec!["PCMU".into(), "PCMA".into(), "G722".into(), "opus".into()],
            allow: vec!["127.0.0.0/8".into(), "::1/128".into()],
            realm: "dartmouth".into(),
            users: BTreeMap::new(),
            trunks: BTreeMap::new(),
            dial_plan: vec![DialRule::default()],
            max_calls: 500,
            ring_ms: 0,
        }
    }
}

/// A SIP trunk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TrunkSettings {
    /// The trunk's address, `host:port`.
    pub address: String,
    /// `udp` or `tcp`.
    pub transport: String,
    /// Digest user name (also the user part of From and of the registration).
    pub username: String,
    /// Environment variable holding the digest password.
    pub password_env: String,
    /// Register with the trunk (and keep the registration refreshed).
    pub register: bool,
    /// Registration lifetime asked for, in seconds.
    pub register_expires: u32,
    /// Codecs allowed on this trunk (empty: the global list).
    pub codecs: Vec<String>,
    /// Caller number presented on outbound calls (empty: `username`).
    pub from_number: String,
}

impl Default for TrunkSettings {
    fn default() -> Self {
        Self {
            address: String::new(),
            transport: "udp".into(),
            username: String::new(),
            password_env: String::new(),
            register: false,
            register_expires: 300,
            codecs: Vec::new(),
            from_number: String::new(),
        }
    }
}

/// One dial-plan rule: what an inbound call must match, and where it goes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DialRule {
    /// Called number (user part of the Request-URI/To): exact, a prefix ending in `*`, or `*`.
    pub to: String,
    /// Caller (user part of From), same forms.
    pub from: String,
    /// A header that must be present, `Name: value` (value may end in `*`); empty: none.
    pub header: String,
    /// Room to join; `{to}` and `{from}` are replaced by the numbers.
    pub room: String,
    /// Agent to talk to: a configured agent, `""` (the room's default), `none`, or `echo`
    /// (the caller hears themselves: a media loop for tests and benchmarks).
    pub agent: String,
    /// Only from this trunk's address (empty: any allowed source).
    pub trunk: String,
}

impl Default for DialRule {
    fn default() -> Self {
        Self {
            to: "*".into(),
            from: "*".into(),
            header: String::new(),
            room: "sip-{to}".into(),
            agent: String::new(),
            trunk: String::new(),
        }
    }
}

fn matches(pattern: &str, value: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => value.starts_with(prefix),
        None => pattern == value,
    }
}

impl DialRule {
    /// Whether an inbound call matches; `header` looks a header value up by name.
    pub fn matches(&self, to: &str, from: &str, header: impl Fn(&str) -> Option<String>) -> bool {
        if !matches(&self.to, to) || !matches(&self.from, from) {
            return false;
        }
        if let Some((name, value)) = self.header.split_once(':') {
            return header(name.trim()).is_some_and(|v| matches(value.trim(), v.trim()));
        }
        true
    }

    /// The room for these numbers (characters outside `[A-Za-z0-9_.-]` become `_`).
    pub fn room_for(&self, to: &str, from: &str) -> String {
        self.room
            .replace("{to}", to)
            .replace("{from}", from)
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "_.-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .take(64)
            .collect()
    }
}

/// A parsed CIDR block of the allow-list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    net: IpAddr,
    bits: u8,
}

impl Cidr {
    /// Parses `a.b.c.d/n`, `x::y/n` or a bare address.
    pub fn parse(text: &str) -> Option<Self> {
        let (addr, bits) = match text.split_once('/') {
            Some((a, b)) => (a.parse::<IpAddr>().ok()?, b.parse::<u8>().ok()?),
            None => {
                let a = text.parse::<IpAddr>().ok()?;
                (a, if a.is_ipv4() { 32 } else { 128 })
            }
        };
        let max = if addr.is_ipv4() { 32 } else { 128 };
        (bits <= max).then_some(Self { net: addr, bits })
    }

    /// Whether `ip` is inside the block.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
            v4 => v4,
        };
        match (self.net, ip) {
            (IpAddr::V4(n), IpAddr::V4(a)) => {
                let mask = u32::MAX.checked_shl(32 - u32::from(self.bits)).unwrap_or(0);
                u32::from(n) & mask == u32::from(a) & mask
            }
            (IpAddr::V6(n), IpAddr::V6(a)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.bits))
                    .unwrap_or(0);
                u128::from(n) & mask == u128::from(a) & mask
            }
            _ => false,
        }
    }
}

impl SipSettings {
    /// Checks every value; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.rtp_port_min == 0 || self.rtp_port_min >= self.rtp_port_max {
            return Err("sip.rtp_port_min must be above 0 and below sip.rtp_port_max".into());
        }
        parse_codecs(&self.codecs).map_err(|e| format!("sip.codecs: {e}"))?;
        for cidr in &self.allow {
            Cidr::parse(cidr)
                .ok_or_else(|| format!("sip.allow: `{cidr}` is not an address or CIDR block"))?;
        }
        for (name, trunk) in &self.trunks {
            if trunk.address.is_empty() {
                return Err(format!("sip.trunks.{name}: address is required"));
            }
            if !matches!(trunk.transport.as_str(), "udp" | "tcp") {
                return Err(format!("sip.trunks.{name}: transport must be udp or tcp"));
            }
            parse_codecs(&trunk.codecs).map_err(|e| format!("sip.trunks.{name}.codecs: {e}"))?;
            if trunk.register && trunk.username.is_empty() {
                return Err(format!("sip.trunks.{name}: register needs a username"));
            }
        }
        for rule in &self.dial_plan {
            if !rule.trunk.is_empty() && !self.trunks.contains_key(&rule.trunk) {
                return Err(format!("sip.dial_plan: unknown trunk `{}`", rule.trunk));
            }
            if rule.room.is_empty() {
                return Err("sip.dial_plan: every rule needs a room".into());
            }
        }
        Ok(())
    }

    /// The allow-list, parsed (invalid entries were refused by [`SipSettings::validate`]).
    pub fn allow_list(&self) -> Vec<Cidr> {
        self.allow.iter().filter_map(|c| Cidr::parse(c)).collect()
    }
}

/// Codec names → codecs (empty stays empty).
pub fn parse_codecs(names: &[String]) -> Result<Vec<PhoneCodec>, String> {
    names
        .iter()
        .map(|n| {
            PhoneCodec::from_name(n)
                .ok_or_else(|| format!("unknown codec `{n}` (PCMU, PCMA, G722, opus)"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_match_numbers_prefixes_and_headers() {
        let rule = DialRule {
            to: "+1800*".into(),
            header: "X-Tenant: acme*".into(),
            room: "support {to}/{from}".into(),
            ..DialRule::default()
        };
        let acme = |n: &str| (n == "X-Tenant").then(|| "acme-eu".to_string());
        assert!(rule.matches("+18005550100", "alice", acme));
        assert!(!rule.matches("+18005550100", "alice", |_| None));
        assert!(!rule.matches("+4420", "alice", acme));
        assert_eq!(rule.room_for("+1800", "bob"), "support__1800_bob");
    }

    #[test]
    fn the_allow_list_reads_cidr_blocks() {
        let block = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(block.contains("10.1.200.3".parse().unwrap()));
        assert!(!block.contains("10.2.0.1".parse().unwrap()));
        assert!(block.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(Cidr::parse("::1").unwrap().contains("::1".parse().unwrap()));
        assert!(
            Cidr::parse("0.0.0.0/0")
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert_eq!(Cidr::parse("10.0.0.0/33"), None);
        assert_eq!(Cidr::parse("nonsense"), None);
    }

    #[test]
    fn validation_names_the_bad_key() {
        let mut s = SipSettings::default();
        assert_eq!(s.validate(), Ok(()));
        s.codecs = vec!["G729".into()];
        assert!(s.validate().unwrap_err().contains("G729"));
        s.codecs = vec![];
        s.trunks.insert(
            "t".into(),
            TrunkSettings {
                transport: "sctp".into(),
                address: "x:1".into(),
                ..Default::default()
            },
        );
        assert!(s.validate().unwrap_err().contains("sip.trunks.t"));
    }
}
