//! Files embedded in the binary at build time and served with an `ETag`:
//! the browser client (`GET /v1/client.js`, PROTOCOL.md §11) and the dev
//! demo page. A request whose `If-None-Match` names the current tag gets 304.

use std::sync::LazyLock;

use hyper::header::{CACHE_CONTROL, ETAG, HeaderValue, IF_NONE_MATCH};
use hyper::{HeaderMap, StatusCode};

use super::{Body, with_type};
use crate::fingerprint::fnv1a;

/// One embedded file.
pub struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: HeaderValue,
    cache_control: &'static str,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str, cache_control: &'static str) -> Self {
        // A strong tag from the content: it changes exactly when the file does.
        let tag = format!("\"{:016x}\"", fnv1a(body));
        Self {
            body,
            content_type,
            etag: HeaderValue::from_str(&tag).unwrap_or(HeaderValue::from_static("\"0\"")),
            cache_control,
        }
    }

    /// 200 with the file, or 304 when the client's copy is current.
    pub fn serve(&self, request_headers: &HeaderMap) -> hyper::Response<Body> {
        let current = request_headers
            .get_all(IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|tag| {
                let tag = tag.trim();
                tag == "*" || tag.trim_start_matches("W/").as_bytes() == self.etag.as_bytes()
            });
        let mut response = if current {
            with_type(StatusCode::NOT_MODIFIED, self.content_type, &b""[..])
        } else {
            with_type(StatusCode::OK, self.content_type, self.body)
        };
        let headers = response.headers_mut();
        headers.insert(ETAG, self.etag.clone());
        headers.insert(CACHE_CONTROL, HeaderValue::from_static(self.cache_control));
        response
    }
}

/// `clients/js/wsgate.js`. Revalidated after a few minutes, so a deploy
/// reaches browsers soon; the ETag makes the revalidation a 304.
pub static CLIENT_JS: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../clients/js/wsgate.js"),
        "text/javascript; charset=utf-8",
        "public, max-age=300",
    )
});

/// `clients/demo/index.html`, served by the dev config only.
pub static DEMO_PAGE: LazyLock<Asset> = LazyLock::new(|| {
    Asset::new(
        include_bytes!("../../clients/demo/index.html"),
        "text/html; charset=utf-8",
        "no-cache",
    )
});
