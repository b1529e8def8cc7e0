//! `GeoLookup`: country, subdivisions, city and ISP of the client IP from MaxMind databases
//! (gcp-ingestion's `GeoCityLookup` and `GeoIspLookup`).

use std::collections::HashSet;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use maxminddb::{geoip2, MaxMindDbError, Reader};
use sluice::{Message, PCollection, PTransform};

use super::proxy::client_ip;

/// The attributes the city database fills.
pub const GEO_CITY_FIELDS: [&str; 6] = [
    "geo_country",
    "geo_subdivision1",
    "geo_subdivision2",
    "geo_city",
    "geo_db_version",
    "normalized_country_code",
];
/// The attributes the ISP database fills.
pub const GEO_ISP_FIELDS: [&str; 3] = ["isp_name", "isp_organization", "isp_db_version"];

/// Why a geo database or the city filter cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GeoError {
    /// The database does not open (missing, unreadable, not a MaxMind database).
    #[error("cannot open the geo database `{path}`")]
    Database {
        /// The configured path.
        path: PathBuf,
        /// What the reader said.
        source: MaxMindDbError,
    },
    /// The city filter cannot be read.
    #[error("cannot read the geo city filter `{path}`")]
    FilterIo {
        /// The configured path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A line of the city filter does not start with a GeoNames id.
    #[error("line {line} of the geo city filter `{path}` does not begin with a geoname integer id: `{text}`")]
    FilterLine {
        /// The configured path.
        path: PathBuf,
        /// 1-based.
        line: usize,
        /// The line.
        text: String,
    },
}

/// A database, loaded once and shared by every worker, with its build time.
#[derive(Clone)]
struct Database {
    reader: Arc<Reader<Vec<u8>>>,
    /// The build time, as gcp-ingestion writes it (`2019-01-03T21:26:19Z`).
    version: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("database_type", &self.reader.metadata().database_type)
            .field("version", &self.version)
            .finish()
    }
}

impl Database {
    fn open(path: &Path) -> Result<Self, GeoError> {
        let reader = Reader::open_readfile(path).map_err(|source| GeoError::Database {
            path: path.to_path_buf(),
            source,
        })?;
        let version = i64::try_from(reader.metadata().build_epoch)
            .ok()
            .and_then(|s| chrono::DateTime::from_timestamp(s, 0))
            .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
            .unwrap_or_default();
        Ok(Database {
            reader: Arc::new(reader),
            version,
        })
    }
}

/// Fills the geo and ISP attributes from the client IP ([`client_ip`]), as gcp-ingestion's
/// `GeoCityLookup` and `GeoIspLookup` do; each database is optional and loaded once.
///
/// With a city database, for a message without `geo_country` (one that has it was looked up
/// before: a replay): `geo_db_version` (the database's build time), then what the database
/// knows of the IP: `geo_country` (ISO code), `geo_city` (English name; only for a city in
/// the [city filter](GeoLookup::with_city_filter), when one is set — gcp-ingestion keeps only
/// cities above a population threshold, given as GeoNames' `cities15000.txt`),
/// `geo_subdivision1` and `geo_subdivision2` (ISO codes). With an ISP database, for a message
/// without `isp_name`: `isp_db_version`, `isp_name`, `isp_organization`.
///
/// An IP that is not an address, or that the database does not know, leaves only the
/// `*_db_version` attribute (gcp-ingestion resolves host names; Sluice never does DNS). The
/// IP attributes are left in place: the [`Decoder`](super::Decoder) scrubs them after this
/// step. Never fails.
#[derive(Debug, Clone, Default)]
pub struct GeoLookup {
    city: Option<Database>,
    allowed_cities: Option<Arc<HashSet<u32>>>,
    isp: Option<Database>,
}

impl GeoLookup {
    /// No databases: the step changes nothing.
    pub fn none() -> Self {
        GeoLookup::default()
    }

    /// Uses the GeoIP2/GeoLite2 City database at `path`.
    pub fn with_city_database(mut self, path: impl AsRef<Path>) -> Result<Self, GeoError> {
        self.city = Some(Database::open(path.as_ref())?);
        Ok(self)
    }

    /// Keeps `geo_city` only for the cities listed in the file at `path`: one per line, each
    /// line starting with the city's GeoNames id (GeoNames' `cities15000.txt` is such a file).
    pub fn with_city_filter(mut self, path: impl AsRef<Path>) -> Result<Self, GeoError> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path).map_err(|source| GeoError::FilterIo {
            path: path.to_path_buf(),
            source,
        })?;
        let mut ids = HashSet::new();
        for (i, line) in text.lines().enumerate() {
            let digits: String = line.chars().take_while(char::is_ascii_digit).collect();
            let id = digits.parse::<u32>().map_err(|_| GeoError::FilterLine {
                path: path.to_path_buf(),
                line: i + 1,
                text: line.chars().take(80).collect(),
            })?;
            ids.insert(id);
        }
        self.allowed_cities = Some(Arc::new(ids));
        Ok(self)
    }

    /// Uses the GeoIP2 ISP database at `path`.
    pub fn with_isp_database(mut self, path: impl AsRef<Path>) -> Result<Self, GeoError> {
        self.isp = Some(Database::open(path.as_ref())?);
        Ok(self)
    }

    /// The attributes no configured database fills (for the job to say so at start).
    pub fn unfilled_fields(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.city.is_none() {
            out.extend(GEO_CITY_FIELDS);
        }
        if self.isp.is_none() {
            out.extend(GEO_ISP_FIELDS);
        }
        out
    }

    /// What the step does to one message.
    pub fn apply(&self, message: &mut Message) {
        let a = &mut message.attributes;
        if self.city.is_none() && self.isp.is_none() {
            return;
        }
        let ip: Option<IpAddr> = client_ip(a).and_then(|ip| ip.parse().ok());
        let mut found: Vec<(&'static str, String)> = Vec::new();
        if let Some(isp) = self.isp.as_ref().filter(|_| !a.contains_key("isp_name")) {
            found.push(("isp_db_version", isp.version.clone()));
            if let Some(rec) = ip.and_then(|ip| lookup::<geoip2::Isp>(&isp.reader, ip)) {
                found.extend(rec.isp.map(|v| ("isp_name", v.to_string())));
                found.extend(
                    rec.organization
                        .map(|v| ("isp_organization", v.to_string())),
                );
            }
        }
        if let Some(city) = self
            .city
            .as_ref()
            .filter(|_| !a.contains_key("geo_country"))
        {
            found.push(("geo_db_version", city.version.clone()));
            if let Some(rec) = ip.and_then(|ip| lookup::<geoip2::City>(&city.reader, ip)) {
                found.extend(rec.country.iso_code.map(|v| ("geo_country", v.to_string())));
                let allowed = match (&self.allowed_cities, rec.city.geoname_id) {
                    (_, None) => false,
                    (None, Some(_)) => true,
                    (Some(ids), Some(id)) => ids.contains(&id),
                };
                if allowed {
                    found.extend(rec.city.names.english.map(|v| ("geo_city", v.to_string())));
                }
                // gcp-ingestion stops at the first missing subdivision
                for (name, sub) in ["geo_subdivision1", "geo_subdivision2"]
                    .into_iter()
                    .zip(&rec.subdivisions)
                {
                    found.extend(sub.iso_code.map(|v| (name, v.to_string())));
                }
            }
        }
        for (name, value) in found {
            a.insert(name.to_string(), value);
        }
    }
}

/// The record for `ip`, if the database has one that decodes.
fn lookup<'r, T: serde::Deserialize<'r>>(reader: &'r Reader<Vec<u8>>, ip: IpAddr) -> Option<T> {
    reader.lookup(ip).ok()?.decode::<T>().ok()?
}

impl<'s> PTransform<PCollection<'s, Message>> for GeoLookup {
    type Output = PCollection<'s, Message>;

    fn expand(self, input: PCollection<'s, Message>) -> Self::Output {
        input.map(move |mut m: Message| {
            self.apply(&mut m);
            m
        })
    }
}
