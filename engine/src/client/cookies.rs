//! [`CookieJar`]: cookies from `Set-Cookie` answers sent on later dials
//! (gorilla/websocket's `Dialer.Jar`), and [`MemoryJar`], an in-memory jar over the
//! `cookie_store` crate.

use std::sync::Mutex;

use cookie_store::{CookieStore, RawCookie};
use url::Url;

/// Where a [`Dialer`](super::Dialer) keeps cookies between dials.
pub trait CookieJar: Send + Sync {
    /// The `Cookie` header value to send to `url`, if any cookie applies.
    fn cookies(&self, url: &Url) -> Option<String>;
    /// Keep the cookies of the `Set-Cookie` values a response to `url` carried.
    fn set_cookies(&self, url: &Url, set_cookie: &[&str]);
}

/// A thread-safe in-memory jar following RFC 6265 (domains, paths, expiry, secure).
///
/// ```
/// use ringcast::client::{CookieJar, MemoryJar};
/// use url::Url;
/// let jar = MemoryJar::default();
/// let url = Url::parse("http://example.com/chat").unwrap();
/// jar.set_cookies(&url, &["session=abc; Path=/"]);
/// assert_eq!(jar.cookies(&url).as_deref(), Some("session=abc"));
/// ```
#[derive(Debug, Default)]
pub struct MemoryJar {
    store: Mutex<CookieStore>,
}

impl CookieJar for MemoryJar {
    fn cookies(&self, url: &Url) -> Option<String> {
        let store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let header = store
            .get_request_values(url)
            .map(|(name, value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ");
        (!header.is_empty()).then_some(header)
    }

    fn set_cookies(&self, url: &Url, set_cookie: &[&str]) {
        let cookies: Vec<RawCookie<'static>> = set_cookie
            .iter()
            .filter_map(|value| RawCookie::parse(value.to_string()).ok())
            .collect();
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        store.store_response_cookies(cookies.into_iter(), url);
    }
}
