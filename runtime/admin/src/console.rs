//! The web console: one page, its script and its style, embedded in the binary at compile time
//! and served at `/ui` (`/` redirects there) by the admin API's own server.
//!
//! The console owns no data and no authority: the page reads and changes everything through
//! the admin API, from the browser, with the token the person signs in with (kept in the tab's
//! session storage and sent as a bearer token, so no cookie exists for another site to ride
//! on). The assets themselves are public, as they hold nothing but code. They are served with a
//! content security policy that allows only this origin's script, style and API, and no
//! framing; the script puts everything it shows in the page as text, never as markup.

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;

/// The page.
const INDEX_HTML: &str = include_str!("../console/index.html");
/// Its script: plain JavaScript, no build step.
const CONSOLE_JS: &str = include_str!("../console/console.js");
/// Its style.
const CONSOLE_CSS: &str = include_str!("../console/console.css");

/// What the console's page may load and call: this origin only, and it may not be framed.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The console's routes, for any router state.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/", get(|| async { Redirect::to("/ui") }))
        .route("/ui", get(|| async { asset("text/html; charset=utf-8", INDEX_HTML) }))
        .route("/ui/console.js", get(|| async { asset("text/javascript; charset=utf-8", CONSOLE_JS) }))
        .route("/ui/console.css", get(|| async { asset("text/css; charset=utf-8", CONSOLE_CSS) }))
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let headers = [
        (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
        (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY)),
        (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
        (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
        // A new binary may bring a new console: the browser asks again each time.
        (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
    ];
    (headers, body).into_response()
}
