//! Spans with the OpenTelemetry HTTP-client names, seen by a capturing
//! subscriber. A test binary of its own: tracing caches per call site
//! whether anyone listens, and tests running beside this one on other
//! threads without a subscriber would make it miss spans.
mod support;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use goenhance_jobs::transport::mock::{MockResponse, MockTransport};
use goenhance_jobs::{Client, RetryPolicy};
use tracing::span::{Attributes, Id, Record};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

use support::KEY;

fn client(mock: &MockTransport) -> Client {
    support::telemetry_client(mock)
}

/// A span as the capturing layer saw it.
#[derive(Debug, Clone)]
struct SpanRec {
    name: &'static str,
    fields: BTreeMap<String, String>,
    parent: Option<usize>,
}

/// The fields of an event.
type EventRec = BTreeMap<String, String>;

/// Every span and event, in the order they were opened.
#[derive(Default, Clone)]
struct Captured(Arc<Mutex<(Vec<SpanRec>, Vec<EventRec>)>>);

struct Fields<'a>(&'a mut BTreeMap<String, String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.to_owned());
    }
    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.to_string());
    }
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        self.0.insert(field.name().to_owned(), format!("{value:?}"));
    }
}

/// The index of a span in the capture, kept in its extensions.
struct Index(usize);

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Captured {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let parent = span
            .parent()
            .and_then(|p| p.extensions().get::<Index>().map(|i| i.0));
        let mut fields = BTreeMap::new();
        attrs.record(&mut Fields(&mut fields));
        let mut all = self.0.lock().unwrap();
        all.0.push(SpanRec {
            name: attrs.metadata().name(),
            fields,
            parent,
        });
        span.extensions_mut().insert(Index(all.0.len() - 1));
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let i = span.extensions().get::<Index>().unwrap().0;
        values.record(&mut Fields(&mut self.0.lock().unwrap().0[i].fields));
    }

    fn on_event(&self, event: &tracing::Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = BTreeMap::new();
        event.record(&mut Fields(&mut fields));
        self.0.lock().unwrap().1.push(fields);
    }
}

fn fields(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn get_fields(id: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let url = format!("https://api.goenhance.ai/api/v1/jobs/detail?img_uuid={id}");
    let mut f = fields(&[
        ("otel.kind", "client"),
        ("http.request.method", "GET"),
        ("server.address", "api.goenhance.ai"),
        ("server.port", "443"),
        ("url.full", &url),
    ]);
    f.extend(fields(extra));
    f
}

/// A subscriber sees a `GET` span per attempt with the OpenTelemetry
/// fields (`http.request.resend_count` on retries only) inside a
/// `goenhance.wait` span per wait, and never the key.
#[test]
fn spans_carry_the_opentelemetry_fields_and_never_the_key() {
    use tracing::Instrument;

    let captured = Captured::default();
    let subscriber = tracing_subscriber::registry().with(captured.clone());
    tracing::subscriber::with_default(subscriber, || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        rt.block_on(async {
            let mock = MockTransport::new();
            mock.script(
                "retried",
                [
                    MockResponse::status(503),
                    MockResponse::status(503),
                    MockResponse::job("retried", "processing"),
                ],
            );
            mock.timeline("three", &["pending", "processing", "success"]);
            mock.timeline("watched", &["pending", "success"]);
            mock.script(
                "hangs",
                [MockResponse::job("hangs", "pending").after(Duration::from_secs(60))],
            );
            let client = client(&mock);
            client.get("retried").await.unwrap();
            client
                .wait("three")
                .instrument(tracing::info_span!("handler"))
                .await
                .unwrap();
            let changes: Vec<_> = client.watch("watched").collect().await;
            assert_eq!(changes.len(), 2);
            let impatient = Client::builder()
                .api_key(KEY)
                .transport(mock.clone())
                .retry_policy(RetryPolicy::never())
                .attempt_timeout(Duration::from_secs(1))
                .build()
                .unwrap();
            assert!(impatient.get("hangs").await.unwrap_err().is_timeout());
        });
        drop(rt);
    });

    let (spans, events) = captured.0.lock().unwrap().clone();
    let names: Vec<_> = spans.iter().map(|s| s.name).collect();
    assert_eq!(
        names,
        [
            "GET",
            "GET",
            "GET",
            "handler",
            "goenhance.wait",
            "GET",
            "GET",
            "GET",
            "goenhance.wait",
            "GET",
            "GET",
            "GET",
        ]
    );
    // Two 503s, then an answer: the retries say how many sends came before.
    assert_eq!(
        spans[0].fields,
        get_fields(
            "retried",
            &[("http.response.status_code", "503"), ("error.type", "503")]
        )
    );
    assert_eq!(
        spans[1].fields,
        get_fields(
            "retried",
            &[
                ("http.request.resend_count", "1"),
                ("http.response.status_code", "503"),
                ("error.type", "503")
            ]
        )
    );
    assert_eq!(
        spans[2].fields,
        get_fields(
            "retried",
            &[
                ("http.request.resend_count", "2"),
                ("http.response.status_code", "200")
            ]
        )
    );
    assert!(spans[..3].iter().all(|s| s.parent.is_none()));

    // A wait through the hub, under the caller's span, its polls under it.
    assert_eq!(spans[4].parent, Some(3));
    assert_eq!(
        spans[4].fields,
        fields(&[
            ("goenhance.job.id", "three"),
            ("goenhance.wait.polls", "3"),
            ("goenhance.wait.outcome", "succeeded"),
        ])
    );
    for s in &spans[5..8] {
        assert_eq!(s.parent, Some(4));
        assert_eq!(
            s.fields,
            get_fields("three", &[("http.response.status_code", "200")])
        );
    }

    // A watch in the caller's task.
    assert_eq!(spans[8].parent, None);
    assert_eq!(
        spans[8].fields,
        fields(&[
            ("goenhance.job.id", "watched"),
            ("goenhance.wait.polls", "2"),
            ("goenhance.wait.outcome", "succeeded"),
        ])
    );
    assert_eq!(spans[9].parent, Some(8));
    assert_eq!(spans[10].parent, Some(8));

    // An attempt cut by its timeout.
    assert_eq!(
        spans[11].fields,
        get_fields("hangs", &[("error.type", "timeout")])
    );

    // The key is in no span and no event.
    let everything = spans
        .iter()
        .flat_map(|s| s.fields.iter())
        .chain(events.iter().flatten());
    for (name, value) in everything {
        assert!(!value.contains(KEY), "{name} = {value}");
        assert!(!value.contains("Bearer"), "{name} = {value}");
    }
    assert!(!events.is_empty());
}
