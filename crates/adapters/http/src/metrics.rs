//! A small Prometheus registry for HTTP traffic: request counts by method, route
//! template and status, a latency histogram by method and route, and requests in
//! flight, followed by the series of any [`MetricsSource`] the app adds (the
//! Postgres adapter's re-sent reads). Hand-rolled on atomics because these few series
//! are all we need and a metrics framework would be one more dependency tree to build
//! on two cores.
//!
//! Routes are labelled by their template (`/v1/users/{id}`), never the raw path, and
//! unmatched requests share one label, so a scanner cannot blow up the series count.

use axum::extract::{MatchedPath, Request, State};
use axum::http::Method;
use axum::middleware::Next;
use axum::response::Response;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

/// Upper bounds of the latency buckets, in seconds (Prometheus client defaults).
const BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The label for requests no route matched.
const UNMATCHED: &str = "unmatched";

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct RouteKey {
    method: &'static str,
    route: String,
}

#[derive(Debug, Default)]
struct RouteSeries {
    /// Count per status code.
    statuses: RwLock<HashMap<u16, Arc<AtomicU64>>>,
    /// Cumulative-at-render histogram: each observation lands in one bucket here.
    buckets: [AtomicU64; BUCKETS.len()],
    /// Observations above the last bucket.
    overflow: AtomicU64,
    sum_micros: AtomicU64,
    count: AtomicU64,
}

impl RouteSeries {
    fn observe(&self, status: u16, seconds: f64) {
        let counter = read(&self.statuses).get(&status).cloned();
        let counter = counter.unwrap_or_else(|| {
            write(&self.statuses)
                .entry(status)
                .or_insert_with(|| Arc::new(AtomicU64::new(0)))
                .clone()
        });
        counter.fetch_add(1, Ordering::Relaxed);
        match BUCKETS.iter().position(|le| seconds <= *le) {
            Some(i) => self.buckets[i].fetch_add(1, Ordering::Relaxed),
            None => self.overflow.fetch_add(1, Ordering::Relaxed),
        };
        // Truncation to whole microseconds is intended: finer is noise.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let micros = (seconds * 1e6) as u64;
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }
}

/// A poisoned lock only means another request panicked mid-update of a counter map;
/// the map itself is still sound, so keep counting rather than fail requests.
fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The registry. One per app, shared through `AppState`.
#[derive(Debug, Default)]
pub struct Metrics {
    routes: RwLock<HashMap<RouteKey, Arc<RouteSeries>>>,
    in_flight: AtomicI64,
    sources: Sources,
}

/// Series another part of the app keeps, such as a storage adapter's counters, which
/// `/metrics` shows after the HTTP series.
pub trait MetricsSource: Send + Sync + 'static {
    /// Appends this source's series, with their `# HELP` and `# TYPE` lines, in the
    /// text exposition format.
    fn render(&self, out: &mut String);
}

#[derive(Default)]
struct Sources(RwLock<Vec<Arc<dyn MetricsSource>>>);

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} sources", read(&self.0).len())
    }
}

/// Methods outside this list share the label `OTHER`, bounding the label set.
fn method_label(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Escapes a label value as the text format requires.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Metrics {
    /// Adds `source`'s series to every scrape from now on.
    pub fn add_source(&self, source: Arc<dyn MetricsSource>) {
        write(&self.sources.0).push(source);
    }

    /// Records one finished request.
    pub fn observe(&self, method: &Method, route: Option<&str>, status: u16, seconds: f64) {
        let key = RouteKey {
            method: method_label(method),
            route: route.unwrap_or(UNMATCHED).to_owned(),
        };
        let series = read(&self.routes).get(&key).cloned();
        let series = series.unwrap_or_else(|| write(&self.routes).entry(key).or_default().clone());
        series.observe(status, seconds);
    }

    /// The registry in the Prometheus text exposition format (version 0.0.4).
    #[must_use]
    pub fn render(&self) -> String {
        let mut routes: Vec<(RouteKey, Arc<RouteSeries>)> = read(&self.routes)
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        routes.sort_by(|a, b| a.0.cmp(&b.0));

        let mut out = String::new();
        // `write!` to a String cannot fail; the results are ignored on purpose.
        let _ = writeln!(
            out,
            "# HELP http_requests_total HTTP requests handled, by method, route template and status."
        );
        let _ = writeln!(out, "# TYPE http_requests_total counter");
        for (key, series) in &routes {
            let mut statuses: Vec<(u16, u64)> = read(&series.statuses)
                .iter()
                .map(|(s, c)| (*s, c.load(Ordering::Relaxed)))
                .collect();
            statuses.sort_unstable();
            for (status, n) in statuses {
                let _ = writeln!(
                    out,
                    "http_requests_total{{method=\"{}\",route=\"{}\",status=\"{status}\"}} {n}",
                    key.method,
                    escape(&key.route)
                );
            }
        }

        let _ = writeln!(
            out,
            "# HELP http_request_duration_seconds Time to produce the response head, by method and route template."
        );
        let _ = writeln!(out, "# TYPE http_request_duration_seconds histogram");
        for (key, series) in &routes {
            let labels = format!("method=\"{}\",route=\"{}\"", key.method, escape(&key.route));
            let mut cumulative = 0u64;
            for (le, bucket) in BUCKETS.iter().zip(&series.buckets) {
                cumulative += bucket.load(Ordering::Relaxed);
                let _ = writeln!(
                    out,
                    "http_request_duration_seconds_bucket{{{labels},le=\"{le}\"}} {cumulative}"
                );
            }
            cumulative += series.overflow.load(Ordering::Relaxed);
            let _ = writeln!(
                out,
                "http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {cumulative}"
            );
            #[allow(clippy::cast_precision_loss)]
            let sum = series.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "http_request_duration_seconds_sum{{{labels}}} {sum}");
            let _ = writeln!(
                out,
                "http_request_duration_seconds_count{{{labels}}} {}",
                series.count.load(Ordering::Relaxed)
            );
        }

        let _ = writeln!(
            out,
            "# HELP http_requests_in_flight HTTP requests being handled now."
        );
        let _ = writeln!(out, "# TYPE http_requests_in_flight gauge");
        let _ = writeln!(
            out,
            "http_requests_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        for source in read(&self.sources.0).iter() {
            source.render(&mut out);
        }
        out
    }
}

/// Decrements the in-flight gauge even when the request future is dropped
/// (client gone, shutdown), so the gauge cannot drift upwards.
struct InFlight<'a>(&'a AtomicI64);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Middleware: counts and times every request.
pub async fn track(State(metrics): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned());
    let start = Instant::now();
    metrics.in_flight.fetch_add(1, Ordering::Relaxed);
    let _guard = InFlight(&metrics.in_flight);
    let res = next.run(req).await;
    metrics.observe(
        &method,
        route.as_deref(),
        res.status().as_u16(),
        start.elapsed().as_secs_f64(),
    );
    res
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Resent(u64);

    impl MetricsSource for Resent {
        fn render(&self, out: &mut String) {
            let _ = writeln!(out, "# TYPE trellis_db_reads_resent_total counter");
            let _ = writeln!(out, "trellis_db_reads_resent_total {}", self.0);
        }
    }

    #[test]
    fn an_added_source_shows_its_series_after_the_http_ones_on_every_scrape() {
        let m = Metrics::default();
        m.add_source(Arc::new(Resent(3)));
        for _ in 0..2 {
            let text = m.render();
            let source = text.find("trellis_db_reads_resent_total 3\n");
            let http = text.find("http_requests_in_flight 0\n");
            assert!(source.is_some() && http < source, "{text}");
        }
    }

    #[test]
    fn a_request_shows_up_as_a_counter_and_in_the_histogram() {
        let m = Metrics::default();
        m.observe(&Method::GET, Some("/v1/users/{id}"), 200, 0.003);
        m.observe(&Method::GET, Some("/v1/users/{id}"), 200, 0.2);
        m.observe(&Method::GET, Some("/v1/users/{id}"), 404, 20.0);
        let text = m.render();
        assert!(text.contains(
            "http_requests_total{method=\"GET\",route=\"/v1/users/{id}\",status=\"200\"} 2"
        ));
        assert!(text.contains(
            "http_requests_total{method=\"GET\",route=\"/v1/users/{id}\",status=\"404\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/users/{id}\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/users/{id}\",le=\"10\"} 2"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_bucket{method=\"GET\",route=\"/v1/users/{id}\",le=\"+Inf\"} 3"
        ));
        assert!(text.contains(
            "http_request_duration_seconds_count{method=\"GET\",route=\"/v1/users/{id}\"} 3"
        ));
    }

    #[test]
    fn unmatched_requests_share_one_label() {
        let m = Metrics::default();
        m.observe(&Method::GET, None, 404, 0.001);
        m.observe(&Method::GET, None, 404, 0.001);
        assert!(
            m.render().contains(
                "http_requests_total{method=\"GET\",route=\"unmatched\",status=\"404\"} 2"
            )
        );
    }

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
