//! AWS Signature Version 4 for Bedrock requests, through `aws-sigv4`.
//!
//! Pure: the caller gives the time, so signatures are reproducible in tests.

use std::fmt;
use std::time::SystemTime;

use aws_credential_types::Credentials;
use aws_sigv4::http_request::{SignableBody, SignableRequest, SigningSettings, sign};
use aws_sigv4::sign::v4;
use aws_smithy_runtime_api::client::identity::Identity;

/// An access key pair, with the session token of temporary credentials.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct AwsCredentials {
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    pub(crate) session_token: Option<String>,
}

impl fmt::Debug for AwsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The key id is not secret, the rest is.
        f.debug_struct("AwsCredentials")
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Why a request could not be signed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot sign the request: {0}")]
pub(crate) struct SignError(String);

/// Adds `x-amz-date`, `x-amz-security-token` (temporary credentials) and
/// `authorization` to `request`, whose body is `body`.
pub(crate) fn sign_request<B>(
    request: &mut http::Request<B>,
    body: &[u8],
    credentials: &AwsCredentials,
    region: &str,
    service: &str,
    time: SystemTime,
) -> Result<(), SignError> {
    // aws-sigv4 needs the host in the URI to build the canonical request.
    if request.uri().host().is_none() {
        return Err(SignError("the URL has no host".to_owned()));
    }
    let identity: Identity = Credentials::new(
        credentials.access_key_id.clone(),
        credentials.secret_access_key.clone(),
        credentials.session_token.clone(),
        None,
        "switchboard",
    )
    .into();
    let params = v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(time)
        .settings(SigningSettings::default())
        .build()
        .map_err(|err| SignError(err.to_string()))?
        .into();
    let mut headers = Vec::with_capacity(request.headers().len());
    for (name, value) in request.headers() {
        let value = value
            .to_str()
            .map_err(|_| SignError(format!("header `{name}` is not text")))?;
        headers.push((name.as_str(), value));
    }
    let uri = request.uri().to_string();
    let signable = SignableRequest::new(
        request.method().as_str(),
        &uri,
        headers.into_iter(),
        SignableBody::Bytes(body),
    )
    .map_err(|err| SignError(err.to_string()))?;
    let (instructions, _signature) = sign(signable, &params)
        .map_err(|err| SignError(err.to_string()))?
        .into_parts();
    instructions.apply_to_request_http1x(request);
    Ok(())
}

/// The region in a Bedrock runtime host name:
/// `bedrock-runtime[-fips].<region>.amazonaws.com[.cn]`, also behind a VPC
/// endpoint (`vpce-….bedrock-runtime.<region>.vpce.amazonaws.com`).
pub(crate) fn region_from_host(host: &str) -> Option<&str> {
    let mut labels = host.split('.');
    while let Some(label) = labels.next() {
        if label == "bedrock-runtime" || label == "bedrock-runtime-fips" {
            let region = labels.next()?;
            let valid = !region.is_empty()
                && region
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            return valid.then_some(region);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn example() -> AwsCredentials {
        AwsCredentials {
            access_key_id: "AKIDEXAMPLE".to_owned(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY".to_owned(),
            session_token: None,
        }
    }

    /// 2015-08-30T12:36:00Z, the time of AWS's published test suite.
    fn suite_time() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(1_440_938_160)
    }

    fn header<'a, B>(request: &'a http::Request<B>, name: &str) -> &'a str {
        request
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    }

    /// `get-vanilla` from the AWS Signature Version 4 test suite.
    #[test]
    fn matches_the_aws_test_suite() {
        let mut request = http::Request::get("https://example.amazonaws.com/")
            .body(())
            .unwrap();
        sign_request(
            &mut request,
            b"",
            &example(),
            "us-east-1",
            "service",
            suite_time(),
        )
        .unwrap();
        assert_eq!(header(&request, "x-amz-date"), "20150830T123600Z");
        assert_eq!(
            header(&request, "authorization"),
            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/service/aws4_request, \
             SignedHeaders=host;x-amz-date, \
             Signature=5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
        );
    }

    #[test]
    fn signs_the_body_and_the_session_token() {
        let mut credentials = example();
        credentials.session_token = Some("TOKEN".to_owned());
        let sign_body = |body: &[u8]| {
            let mut request = http::Request::post(
                "https://bedrock-runtime.eu-west-1.amazonaws.com/model/m%3A0/converse",
            )
            .header("content-type", "application/json")
            .body(())
            .unwrap();
            sign_request(
                &mut request,
                body,
                &credentials,
                "eu-west-1",
                "bedrock",
                suite_time(),
            )
            .unwrap();
            request
        };
        let a = sign_body(b"{\"a\":1}");
        let b = sign_body(b"{\"a\":2}");
        assert_eq!(header(&a, "x-amz-security-token"), "TOKEN");
        let auth = header(&a, "authorization");
        assert!(
            auth.contains("/20150830/eu-west-1/bedrock/aws4_request"),
            "{auth}"
        );
        assert!(
            auth.contains("SignedHeaders=content-type;host;x-amz-date;x-amz-security-token"),
            "{auth}"
        );
        assert_ne!(auth, header(&b, "authorization"));
        assert!(!format!("{credentials:?}").contains("wJalr"));
        assert!(!format!("{credentials:?}").contains("TOKEN"));
    }

    #[test]
    fn a_url_without_host_is_an_error() {
        let mut request = http::Request::post("/model/x/converse").body(()).unwrap();
        assert!(
            sign_request(
                &mut request,
                b"",
                &example(),
                "us-east-1",
                "bedrock",
                suite_time()
            )
            .is_err()
        );
    }

    #[test]
    fn regions_come_from_bedrock_hosts() {
        assert_eq!(
            region_from_host("bedrock-runtime.eu-west-1.amazonaws.com"),
            Some("eu-west-1")
        );
        assert_eq!(
            region_from_host("bedrock-runtime-fips.us-east-1.amazonaws.com"),
            Some("us-east-1")
        );
        assert_eq!(
            region_from_host("vpce-0a1b.bedrock-runtime.ap-south-1.vpce.amazonaws.com"),
            Some("ap-south-1")
        );
        assert_eq!(
            region_from_host("bedrock-runtime.cn-north-1.amazonaws.com.cn"),
            Some("cn-north-1")
        );
        assert_eq!(region_from_host("127.0.0.1"), None);
        assert_eq!(region_from_host("bedrock-runtime"), None);
    }
}
