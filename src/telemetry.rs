//! Logging (JSON in production, readable in development) and the Prometheus metrics registry.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// An error with its chain of causes, `a: b: c`, for log lines and operator messages.
#[derive(Debug)]
pub struct Chain<'a>(pub &'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

/// Installs the global subscriber once; later calls (tests) are ignored.
pub(crate) fn init_tracing(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,sqlx=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    let result = match format {
        LogFormat::Json => builder.json().flatten_event(true).with_current_span(true).try_init(),
        LogFormat::Pretty => builder.compact().try_init(),
    };
    drop(result);
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HttpLabels {
    pub listener: &'static str,
    pub method: &'static str,
    pub route: &'static str,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    listener: &'static str,
    route: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignInLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenReadLabels {
    surface: &'static str,
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProviderOutcomeLabels {
    provider: Arc<str>,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabels {
    operation: &'static str,
}

fn latency_buckets() -> Histogram {
    Histogram::new([0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
}

/// The label of a provider that is not configured. Label values come only from sets fixed at
/// start (configured aliases, route templates, outcomes), never from a request: an alias typed
/// into a URL must not add a series, or strangers could grow `/metrics` and memory for ever.
pub(crate) const UNKNOWN_LABEL: &str = "unknown";

/// Every metric the broker exports.
pub struct Metrics {
    registry: Registry,
    /// The configured provider aliases: the only provider labels.
    /// The configured aliases and `unknown`, the only provider labels: a count shares one of
    /// them rather than copying it.
    providers: Vec<Arc<str>>,
    unknown: Arc<str>,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram, fn() -> Histogram>,
    sign_ins: Family<SignInLabels, Counter>,
    upstream_duration: Family<OperationLabels, Histogram, fn() -> Histogram>,
    token_reads: Family<TokenReadLabels, Counter>,
    refreshes: Family<ProviderOutcomeLabels, Counter>,
    refresh_duration: Family<ProviderOutcomeLabels, Histogram, fn() -> Histogram>,
    unlinks: Family<ProviderOutcomeLabels, Counter>,
    audit_dropped: Counter,
    audit_pending: Gauge,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    /// Metrics whose provider labels are `providers`; any other alias is counted as `unknown`.
    pub fn for_providers<'a>(providers: impl IntoIterator<Item = &'a str>) -> Metrics {
        Metrics { providers: providers.into_iter().map(Arc::from).collect(), ..Metrics::new() }
    }

    /// Metrics that know no provider (for commands that count nothing by provider).
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("identity_broker");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_buckets);
        let sign_ins = Family::<SignInLabels, Counter>::default();
        let upstream_duration =
            Family::<OperationLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_buckets);
        registry.register("http_requests", "HTTP requests by listener, route and status", http_requests.clone());
        registry.register("http_request_duration_seconds", "HTTP request latency by route", http_duration.clone());
        registry.register("sign_ins", "Completed browser sign-ins by provider and outcome", sign_ins.clone());
        registry.register(
            "upstream_request_duration_seconds",
            "Latency of calls to upstream identity providers",
            upstream_duration.clone(),
        );
        let token_reads = Family::<TokenReadLabels, Counter>::default();
        let refreshes = Family::<ProviderOutcomeLabels, Counter>::default();
        let refresh_duration =
            Family::<ProviderOutcomeLabels, Histogram, fn() -> Histogram>::new_with_constructor(latency_buckets);
        let unlinks = Family::<ProviderOutcomeLabels, Counter>::default();
        registry.register(
            "token_reads",
            "Reads of stored upstream tokens by surface (internal or broker), provider and outcome",
            token_reads.clone(),
        );
        registry.register("token_refreshes", "Upstream token refreshes by provider and outcome", refreshes.clone());
        registry.register(
            "token_refresh_duration_seconds",
            "Time to refresh an identity's upstream tokens, retries included",
            refresh_duration.clone(),
        );
        registry.register("unlinks", "Providers unlinked from users through the internal API", unlinks.clone());
        let audit_dropped = Counter::default();
        let audit_pending = Gauge::default();
        registry.register(
            "audit_events_dropped",
            "Audit events dropped because the database could not take them and the memory bound was reached",
            audit_dropped.clone(),
        );
        registry.register(
            "audit_events_pending",
            "Audit events waiting in memory to be written (they wait while the database cannot be reached)",
            audit_pending.clone(),
        );
        Metrics {
            registry,
            providers: Vec::new(),
            unknown: Arc::from(UNKNOWN_LABEL),
            http_requests,
            http_duration,
            sign_ins,
            upstream_duration,
            token_reads,
            refreshes,
            refresh_duration,
            unlinks,
            audit_dropped,
            audit_pending,
        }
    }

    pub fn observe_http(&self, labels: HttpLabels, elapsed: Duration) {
        self.http_duration
            .get_or_create(&RouteLabels { listener: labels.listener, route: labels.route })
            .observe(elapsed.as_secs_f64());
        self.http_requests.get_or_create(&labels).inc();
    }

    /// A provider alias as a label: itself when configured, otherwise `unknown`.
    fn provider_label(&self, alias: &str) -> Arc<str> {
        self.providers.iter().find(|known| known.as_ref() == alias).unwrap_or(&self.unknown).clone()
    }

    pub fn count_sign_in(&self, provider: &str, outcome: &'static str) {
        self.sign_ins.get_or_create(&SignInLabels { provider: self.provider_label(provider), outcome }).inc();
    }

    pub fn observe_upstream(&self, operation: &'static str, elapsed: Duration) {
        self.upstream_duration.get_or_create(&OperationLabels { operation }).observe(elapsed.as_secs_f64());
    }

    pub fn count_token_read(&self, surface: &'static str, provider: &str, outcome: &'static str) {
        self.token_reads
            .get_or_create(&TokenReadLabels { surface, provider: self.provider_label(provider), outcome })
            .inc();
    }

    pub fn observe_refresh(&self, provider: &str, outcome: &'static str, elapsed: Duration) {
        let labels = ProviderOutcomeLabels { provider: self.provider_label(provider), outcome };
        self.refresh_duration.get_or_create(&labels).observe(elapsed.as_secs_f64());
        self.refreshes.get_or_create(&labels).inc();
    }

    pub fn count_unlink(&self, provider: &str, outcome: &'static str) {
        self.unlinks.get_or_create(&ProviderOutcomeLabels { provider: self.provider_label(provider), outcome }).inc();
    }

    pub fn count_audit_dropped(&self) {
        self.audit_dropped.inc();
    }

    pub fn set_audit_pending(&self, events: usize) {
        self.audit_pending.set(i64::try_from(events).unwrap_or(i64::MAX));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
