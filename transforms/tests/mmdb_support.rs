//! A small writer of MaxMind DB files (format 2.0, IPv4 tree, 32-bit records) for the geo
//! tests: databases made by the test, never downloaded ones. Written from the format's
//! published specification; only what the tests need.
#![allow(dead_code)]

use std::net::Ipv4Addr;

/// A value of the MaxMind DB data section.
pub enum V {
    Str(&'static str),
    U16(u16),
    U32(u32),
    U64(u64),
    Map(Vec<(&'static str, V)>),
    Arr(Vec<V>),
}

/// Control byte(s) of a field: type (extended past 7) and size.
fn control(out: &mut Vec<u8>, type_id: u8, size: usize) {
    let (first_type, extended) = if type_id <= 7 {
        (type_id, None)
    } else {
        (0, Some(type_id - 7))
    };
    let (size_bits, extra): (u8, Vec<u8>) = if size < 29 {
        (size as u8, vec![])
    } else if size < 29 + 256 {
        (29, vec![(size - 29) as u8])
    } else {
        let s = (size - 285) as u16;
        (30, s.to_be_bytes().to_vec())
    };
    out.push((first_type << 5) | size_bits);
    out.extend(extended);
    out.extend(extra);
}

fn encode(out: &mut Vec<u8>, v: &V) {
    match v {
        V::Str(s) => {
            control(out, 2, s.len());
            out.extend_from_slice(s.as_bytes());
        }
        V::U16(n) => {
            control(out, 5, 2);
            out.extend_from_slice(&n.to_be_bytes());
        }
        V::U32(n) => {
            control(out, 6, 4);
            out.extend_from_slice(&n.to_be_bytes());
        }
        V::U64(n) => {
            control(out, 9, 8);
            out.extend_from_slice(&n.to_be_bytes());
        }
        V::Map(pairs) => {
            control(out, 7, pairs.len());
            for (k, v) in pairs {
                encode(out, &V::Str(k));
                encode(out, v);
            }
        }
        V::Arr(items) => {
            control(out, 11, items.len());
            for v in items {
                encode(out, v);
            }
        }
    }
}

#[derive(Clone, Copy)]
enum Rec {
    Empty,
    Node(usize),
    Data(usize),
}

/// A database under construction: networks and their records.
pub struct Writer {
    database_type: &'static str,
    build_epoch: u64,
    nodes: Vec<[Rec; 2]>,
    data: Vec<u8>,
}

impl Writer {
    pub fn new(database_type: &'static str, build_epoch: u64) -> Self {
        Writer {
            database_type,
            build_epoch,
            nodes: vec![[Rec::Empty; 2]],
            data: Vec::new(),
        }
    }

    /// `network/prefix` (1..=32 bits) holds `record`; networks must not overlap.
    pub fn insert(&mut self, network: Ipv4Addr, prefix: u32, record: V) {
        let offset = self.data.len();
        encode(&mut self.data, &record);
        let bits = u32::from(network);
        let mut node = 0;
        for i in 0..prefix {
            let b = ((bits >> (31 - i)) & 1) as usize;
            if i + 1 == prefix {
                self.nodes[node][b] = Rec::Data(offset);
            } else {
                node = match self.nodes[node][b] {
                    Rec::Node(n) => n,
                    _ => {
                        self.nodes.push([Rec::Empty; 2]);
                        let n = self.nodes.len() - 1;
                        self.nodes[node][b] = Rec::Node(n);
                        n
                    }
                };
            }
        }
    }

    pub fn finish(self) -> Vec<u8> {
        let count = self.nodes.len();
        let value = |r: Rec| -> u32 {
            (match r {
                Rec::Empty => count,
                Rec::Node(n) => n,
                Rec::Data(off) => count + 16 + off,
            }) as u32
        };
        let mut out = Vec::new();
        for [l, r] in &self.nodes {
            out.extend_from_slice(&value(*l).to_be_bytes());
            out.extend_from_slice(&value(*r).to_be_bytes());
        }
        out.extend_from_slice(&[0u8; 16]);
        out.extend_from_slice(&self.data);
        out.extend_from_slice(b"\xab\xcd\xefMaxMind.com");
        let metadata = V::Map(vec![
            ("node_count", V::U32(count as u32)),
            ("record_size", V::U16(32)),
            ("ip_version", V::U16(4)),
            ("database_type", V::Str(self.database_type)),
            ("languages", V::Arr(vec![V::Str("en")])),
            ("binary_format_major_version", V::U16(2)),
            ("binary_format_minor_version", V::U16(0)),
            ("build_epoch", V::U64(self.build_epoch)),
            (
                "description",
                V::Map(vec![("en", V::Str("sluice test database"))]),
            ),
        ]);
        encode(&mut out, &metadata);
        out
    }
}

/// A city record as GeoIP2 City databases hold it.
pub fn city(
    country: &'static str,
    city: Option<(u32, &'static str)>,
    subdivisions: &[&'static str],
) -> V {
    let mut m = vec![(
        "country",
        V::Map(vec![
            ("iso_code", V::Str(country)),
            ("geoname_id", V::U32(1)),
        ]),
    )];
    if let Some((id, name)) = city {
        m.push((
            "city",
            V::Map(vec![
                ("geoname_id", V::U32(id)),
                ("names", V::Map(vec![("en", V::Str(name))])),
            ]),
        ));
    }
    m.push((
        "subdivisions",
        V::Arr(
            subdivisions
                .iter()
                .map(|s| V::Map(vec![("iso_code", V::Str(s))]))
                .collect(),
        ),
    ));
    V::Map(m)
}

/// An ISP record as GeoIP2 ISP databases hold it.
pub fn isp(name: &'static str, organization: &'static str) -> V {
    V::Map(vec![
        ("isp", V::Str(name)),
        ("organization", V::Str(organization)),
    ])
}
