//! `dns.provider: rfc2136`: DNS UPDATE (RFC 2136) signed with TSIG
//! (RFC 8945) to a primary server such as BIND, and a TSIG-signed AXFR to
//! read the zone (the key needs both `allow-update` and `allow-transfer`,
//! as ExternalDNS's rfc2136 provider does with `--rfc2136-axfr`).
//!
//! One UPDATE message carries a whole plan: the server applies it
//! atomically. A put deletes the RRset and adds the new records; a delete
//! removes the RRset.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::StreamExt;
use hickory_net::client::{Client, ClientHandle};
use hickory_net::runtime::TokioRuntimeProvider;
use hickory_net::tcp::TcpClientStream;
use hickory_net::xfer::{DnsHandle, DnsMultiplexer};
use hickory_proto::op::update_message::UpdateMessage;
use hickory_proto::op::{DnsRequest, Message, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::tsig::TsigAlgorithm;
use hickory_proto::rr::rdata::{A, AAAA, TXT};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType as WireType, TSigner};

use super::error::DnsError;
use super::plan::{Change, RecordSet};
use super::registry::RecordType;
use crate::config::{self, Rfc2136};

const PROVIDER: &str = "rfc2136";
/// ExternalDNS's clock skew allowance for TSIG (`clockSkew`).
const FUDGE_SECS: u16 = 300;
const TIMEOUT: Duration = Duration::from_secs(10);

pub struct Rfc2136Provider {
    server: String,
    key_name: Name,
    algorithm: TsigAlgorithm,
    key: Vec<u8>,
}

impl Rfc2136Provider {
    pub fn new(cfg: &Rfc2136) -> Result<Self, DnsError> {
        use base64::Engine;
        let key = base64::engine::general_purpose::STANDARD
            .decode(cfg.tsig.secret.expose().trim())
            .map_err(|e| {
                DnsError::config(
                    PROVIDER,
                    "dns.rfc2136.tsig.secret",
                    format!("not base64: {e}"),
                )
            })?;
        let key_name = Name::from_ascii(&cfg.tsig.key_name)
            .map_err(|e| DnsError::config(PROVIDER, "dns.rfc2136.tsig.keyName", e.to_string()))?;
        let algorithm = match cfg.tsig.algorithm {
            config::TsigAlgorithm::HmacSha256 => TsigAlgorithm::HmacSha256,
            config::TsigAlgorithm::HmacSha384 => TsigAlgorithm::HmacSha384,
            config::TsigAlgorithm::HmacSha512 => TsigAlgorithm::HmacSha512,
        };
        Ok(Rfc2136Provider {
            server: cfg.server.clone(),
            key_name,
            algorithm,
            key,
        })
    }

    async fn address(&self) -> Result<SocketAddr, DnsError> {
        let with_port = if self
            .server
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
            && !self.server.ends_with(']')
        {
            self.server.clone()
        } else {
            format!("{}:53", self.server)
        };
        tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| {
                DnsError::transient(PROVIDER, format!("cannot resolve `{}`: {e}", self.server))
            })?
            .next()
            .ok_or_else(|| {
                DnsError::config(
                    PROVIDER,
                    "dns.rfc2136.server",
                    format!("`{}` has no address", self.server),
                )
            })
    }

    async fn connect(&self) -> Result<Client<TokioRuntimeProvider>, DnsError> {
        let addr = self.address().await?;
        let signer = TSigner::new(
            self.key.clone(),
            self.algorithm.clone(),
            self.key_name.clone(),
            FUDGE_SECS,
        )
        .map_err(|e| DnsError::config(PROVIDER, "dns.rfc2136.tsig.algorithm", e.to_string()))?;
        let (stream, sender) =
            TcpClientStream::new(addr, None, Some(TIMEOUT), TokioRuntimeProvider::default());
        let stream = tokio::time::timeout(TIMEOUT, stream)
            .await
            .map_err(|_| DnsError::transient(PROVIDER, format!("{addr}: connect timed out")))?
            .map_err(|e| DnsError::transient(PROVIDER, format!("{addr}: {e}")))?;
        let multiplexer = DnsMultiplexer::new(stream, sender)
            .with_timeout(TIMEOUT)
            .with_signer(signer);
        let (client, background) = Client::<TokioRuntimeProvider>::from_sender(multiplexer);
        tokio::spawn(background);
        Ok(client)
    }

    /// Every A, AAAA and TXT record set of `zone`, by a signed AXFR.
    pub async fn list(&self, zone: &str) -> Result<Vec<RecordSet>, DnsError> {
        let origin = fqdn(zone)?;
        let mut client = self.connect().await?;
        let mut transfer = client.zone_transfer(origin, None);
        let mut sets: std::collections::BTreeMap<(String, RecordType), RecordSet> =
            Default::default();
        // An AXFR is framed by the zone's SOA, first and last: stop at the
        // second one (servers may keep the connection open, or close it).
        let mut soas = 0;
        while soas < 2 {
            let Some(part) = transfer.next().await else {
                return Err(DnsError::transient(
                    PROVIDER,
                    format!("zone transfer of `{zone}` ended before its closing SOA"),
                ));
            };
            let part = part.map_err(|e| self.classify(zone, "zone transfer", &e.to_string()))?;
            check(
                zone,
                "zone transfer",
                part.metadata.response_code,
                &self.key_name,
            )?;
            for r in &part.answers {
                if matches!(r.data, RData::SOA(_)) {
                    soas += 1;
                }
                let Some((kind, value)) = value_of(&r.data) else {
                    continue;
                };
                let name = plain(&r.name);
                sets.entry((name.clone(), kind))
                    .or_insert_with(|| RecordSet {
                        name,
                        kind,
                        ttl: r.ttl,
                        values: Default::default(),
                    })
                    .values
                    .insert(value);
            }
        }
        Ok(sets.into_values().collect())
    }

    /// Applies every change in one signed UPDATE message (atomic on the
    /// server).
    pub async fn apply(&self, zone: &str, changes: &[Change]) -> Result<(), DnsError> {
        let origin = fqdn(zone)?;
        let message = update_message(origin, changes)?;
        let client = self.connect().await?;
        let mut answers = client.send(DnsRequest::from(message));
        let answer = answers
            .next()
            .await
            .ok_or_else(|| DnsError::transient(PROVIDER, "the server closed the connection"))?
            .map_err(|e| self.classify(zone, "update", &e.to_string()))?;
        check(
            zone,
            "update",
            answer.metadata.response_code,
            &self.key_name,
        )
    }

    fn classify(&self, zone: &str, what: &str, message: &str) -> DnsError {
        // A server that rejects our signature answers with an unsigned (or
        // MAC-less) TSIG, which hickory reports as a verification failure.
        if message.contains("tsig") || message.contains("TSIG") {
            DnsError::config(
                PROVIDER,
                "dns.rfc2136.tsig",
                format!(
                    "{what} of `{zone}`: the server rejected key `{}` (wrong secret or algorithm?; {message})",
                    self.key_name
                ),
            )
        } else {
            DnsError::transient(PROVIDER, format!("{what} of `{zone}`: {message}"))
        }
    }
}

fn check(zone: &str, what: &str, code: ResponseCode, key: &Name) -> Result<(), DnsError> {
    let field = match code {
        ResponseCode::NoError => return Ok(()),
        ResponseCode::BADSIG | ResponseCode::BADKEY | ResponseCode::BADTIME => "dns.rfc2136.tsig",
        ResponseCode::NotAuth | ResponseCode::NotZone => "dns.zone",
        ResponseCode::Refused => "dns.rfc2136.tsig.keyName",
        ResponseCode::ServFail => {
            return Err(DnsError::transient(
                PROVIDER,
                format!("{what} of `{zone}`: the server answered SERVFAIL"),
            ));
        }
        _ => "dns.zone",
    };
    let hint = match field {
        "dns.rfc2136.tsig" => format!("the server does not accept key `{key}`"),
        "dns.zone" => "the server is not authoritative for this zone".to_string(),
        _ => format!("key `{key}` may not do this (allow-update / allow-transfer)"),
    };
    Err(DnsError::config(
        PROVIDER,
        field,
        format!("{what} of `{zone}` refused ({code}): {hint}"),
    ))
}

fn update_message(origin: Name, changes: &[Change]) -> Result<Message, DnsError> {
    let mut zone = Query::new();
    zone.set_name(origin)
        .set_query_class(DNSClass::IN)
        .set_query_type(WireType::SOA);
    let mut message = Message::query();
    message.metadata.op_code = OpCode::Update;
    message.metadata.recursion_desired = false;
    message.add_zone(zone);
    for change in changes {
        let set = match change {
            Change::Put { new, .. } => new,
            Change::Delete(old) => old,
        };
        let name = fqdn(&set.name)?;
        let wire = wire_type(set.kind);
        let mut delete = Record::update0(name.clone(), 0, wire).into_record_of_rdata();
        delete.dns_class = DNSClass::ANY;
        message.add_update(delete);
        if let Change::Put { new, .. } = change {
            for value in &new.values {
                message.add_update(Record::from_rdata(
                    name.clone(),
                    new.ttl,
                    rdata(new.kind, value)?,
                ));
            }
        }
    }
    Ok(message)
}

fn wire_type(kind: RecordType) -> WireType {
    match kind {
        RecordType::A => WireType::A,
        RecordType::Aaaa => WireType::AAAA,
        RecordType::Txt => WireType::TXT,
    }
}

fn rdata(kind: RecordType, value: &str) -> Result<RData, DnsError> {
    let bad = |e: std::net::AddrParseError| {
        DnsError::transient(PROVIDER, format!("`{value}` is not an address: {e}"))
    };
    Ok(match kind {
        RecordType::A => RData::A(A(value.parse().map_err(bad)?)),
        RecordType::Aaaa => RData::AAAA(AAAA(value.parse().map_err(bad)?)),
        // ExternalDNS deletes an RFC 2136 TXT by its exact rdata: one
        // character string, the unquoted value.
        RecordType::Txt => RData::TXT(TXT::new(vec![value.to_string()])),
    })
}

fn value_of(data: &RData) -> Option<(RecordType, String)> {
    match data {
        RData::A(a) => Some((RecordType::A, a.0.to_string())),
        RData::AAAA(a) => Some((RecordType::Aaaa, a.0.to_string())),
        RData::TXT(t) => {
            let joined: Vec<u8> = t.txt_data.iter().flat_map(|s| s.iter().copied()).collect();
            Some((
                RecordType::Txt,
                String::from_utf8_lossy(&joined).into_owned(),
            ))
        }
        _ => None,
    }
}

fn fqdn(name: &str) -> Result<Name, DnsError> {
    let absolute = format!("{}.", name.trim_end_matches('.'));
    Name::from_ascii(&absolute)
        .map_err(|e| DnsError::config(PROVIDER, "dns.zone", format!("`{name}`: {e}")))
}

/// Lower case, no trailing dot: the form plans compare.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}
