//! The S3 backend (`s3` cargo feature): AWS S3 or any S3-compatible server.

use std::fmt;

use object_store::aws::{AmazonS3, AmazonS3Builder};
use serde::Deserialize;

use super::ObjectSinkError;

/// Where and how to reach a bucket. Unset credentials and region fall back to the usual
/// `AWS_*` environment variables (`AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`,
/// `AWS_SESSION_TOKEN`, `AWS_REGION`, `AWS_ENDPOINT`, ...), then to instance credentials.
///
/// ```
/// use sluice_transforms::io::object::S3Options;
/// let o = S3Options::new("telemetry")
///     .with_endpoint("http://127.0.0.1:5000")
///     .with_credentials("test", "s3cr3t");
/// assert!(o.allow_http);
/// assert!(!format!("{o:?}").contains("s3cr3t"));
/// ```
#[derive(Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Options {
    /// The bucket (at least 3 characters).
    pub bucket: String,
    /// Endpoint of an S3-compatible server, e.g. `http://127.0.0.1:5000`; unset for AWS.
    #[serde(default)]
    pub endpoint: Option<String>,
    /// Region; unset means `AWS_REGION` or `us-east-1`.
    #[serde(default)]
    pub region: Option<String>,
    /// Access key id; unset means the environment's.
    #[serde(default)]
    pub access_key_id: Option<String>,
    /// Secret access key; unset means the environment's.
    #[serde(default)]
    pub secret_access_key: Option<String>,
    /// Session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
    /// Allow plain `http://` endpoints (local test servers).
    #[serde(default)]
    pub allow_http: bool,
    /// Address buckets as `<bucket>.<endpoint>` instead of `<endpoint>/<bucket>`.
    #[serde(default)]
    pub virtual_hosted_style: bool,
}

impl fmt::Debug for S3Options {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let redact = |o: &Option<String>| o.as_ref().map(|_| "<redacted>");
        f.debug_struct("S3Options")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.endpoint)
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &redact(&self.secret_access_key))
            .field("session_token", &redact(&self.session_token))
            .field("allow_http", &self.allow_http)
            .field("virtual_hosted_style", &self.virtual_hosted_style)
            .finish()
    }
}

impl S3Options {
    /// Options for `bucket`, everything else from the environment.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Options {
            bucket: bucket.into(),
            endpoint: None,
            region: None,
            access_key_id: None,
            secret_access_key: None,
            session_token: None,
            allow_http: false,
            virtual_hosted_style: false,
        }
    }

    /// An S3-compatible endpoint; `http://` endpoints also set [`S3Options::allow_http`].
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        let endpoint = endpoint.into();
        self.allow_http |= endpoint.starts_with("http://");
        self.endpoint = Some(endpoint);
        self
    }

    /// The region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }

    /// Static credentials.
    pub fn with_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.access_key_id = Some(access_key_id.into());
        self.secret_access_key = Some(secret_access_key.into());
        self
    }

    /// Builds the store (no request is made).
    pub fn build(&self) -> Result<AmazonS3, ObjectSinkError> {
        if self.bucket.len() < 3 {
            return Err(ObjectSinkError::Config(format!(
                "bucket `{}`: names have at least 3 characters",
                self.bucket
            )));
        }
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(&self.bucket)
            .with_allow_http(self.allow_http)
            .with_virtual_hosted_style_request(self.virtual_hosted_style);
        if let Some(e) = &self.endpoint {
            b = b.with_endpoint(e);
        }
        match &self.region {
            Some(r) => b = b.with_region(r),
            None if std::env::var_os("AWS_REGION").is_none()
                && std::env::var_os("AWS_DEFAULT_REGION").is_none() =>
            {
                b = b.with_region("us-east-1")
            }
            None => {}
        }
        if let Some(k) = &self.access_key_id {
            b = b.with_access_key_id(k);
        }
        if let Some(s) = &self.secret_access_key {
            b = b.with_secret_access_key(s);
        }
        if let Some(t) = &self.session_token {
            b = b.with_token(t);
        }
        b.build()
            .map_err(|e| ObjectSinkError::Config(format!("s3 bucket `{}`: {e}", self.bucket)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_without_io_and_rejects_short_buckets() {
        let o = S3Options::new("bucket")
            .with_endpoint("http://127.0.0.1:1")
            .with_region("eu-west-1")
            .with_credentials("a", "b");
        assert!(o.build().is_ok());
        assert!(S3Options::new("ab").build().is_err());
        let parsed: S3Options = serde_json::from_str(
            r#"{"bucket": "b12", "endpoint": "http://x:1", "allow_http": true}"#,
        )
        .unwrap();
        assert_eq!(parsed.endpoint.as_deref(), Some("http://x:1"));
        assert!(serde_json::from_str::<S3Options>(r#"{"bucket": "b12", "key": 1}"#).is_err());
    }
}
