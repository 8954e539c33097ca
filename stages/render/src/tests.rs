use std::time::{Duration, Instant};

use herald_schemas::directory::Platform;
use herald_schemas::{Channel, Content, TemplateSpec};
use herald_stage::memory::MemoryTemplates;
use serde_json::json;

use super::*;

/// One template with every channel, a `ko` and a `ko-KR` locale.
fn order_shipped() -> TemplateSpec {
    serde_json::from_value(json!({
        "id": "order_shipped",
        "category": "orders",
        "channels": ["push", "email"],
        "sample": { "name": "Ada", "order_id": "A-1001", "items": 3, "total": 1234.5, "eta": "2026-03-01T09:30:00Z", "url": "https://shop.example/o/A-1001" },
        "locales": {
            "default": {
                "push": {
                    "title": "Order {{ data.order_id }} shipped",
                    "body": "{{ data.items | plural(one='# item', other='# items') }} on the way, arriving {{ data.eta | datetime('%b %-d, %H:%M %Z') }}.",
                    "data": "{\"order_id\": {{ data.order_id }}, \"items\": {{ data.items }}}",
                    "sound": "default",
                    "badge": "{{ data.items }}",
                    "category": "ORDER",
                    "thread": "orders"
                },
                "sms": { "body": "Acme: order {{ data.order_id }} shipped ({{ data.total | number(2) }} EUR). {{ data.url | track }}" },
                "voice": { "body": "Hello {{ data.name }}. Your order has shipped." },
                "email": {
                    "subject": "Your order {{ data.order_id }} is on its way",
                    "html": "<p>Hi {{ data.name }},</p><p><a href=\"{{ data.url | track }}\">Track it</a></p>{{ tracking_pixel() }}<p><a href=\"{{ unsubscribe_url() }}\">Unsubscribe</a></p>",
                    "text": "Hi {{ data.name }},\nTrack it: {{ data.url | track }}",
                    "from": "Acme <orders@acme.example>",
                    "reply_to": "help@acme.example"
                },
                "web_push": { "title": "Order shipped", "body": "{{ data.order_id }} arrives {{ data.eta | datetime('%Y-%m-%d') }}", "icon": "https://acme.example/i.png", "url": "{{ data.url }}" },
                "webhook": { "body": "{\"event\": \"order_shipped\", \"order\": {{ data.order_id }}, \"user\": {{ user_id }}, \"total\": {{ data.total }}}" },
                "in_app": { "title": "Order shipped", "body": "{{ data.items }} items on the way", "data": "{\"order_id\": {{ data.order_id }}}" }
            },
            "ko": {
                "push": { "title": "주문 {{ data.order_id }} 발송됨", "body": "상품 {{ data.items }}개 배송 중, {{ data.eta | datetime('%Y년 %-m월 %-d일 %H:%M') }} 도착 예정" },
                "sms": { "body": "[Acme] 주문 {{ data.order_id }} 발송 ({{ data.total | number }}원)" }
            },
            "ko-KR": {
                "sms": { "body": "[Acme 한국] 주문 {{ data.order_id }} 발송 ({{ data.total | number }}원)" }
            }
        }
    }))
    .unwrap()
}

fn delivery(channel: Channel, locale: Option<&str>, timezone: Option<&str>, platform: Option<Platform>) -> Delivery {
    let spec = order_shipped();
    Delivery {
        channel,
        platform,
        locale: locale.map(str::to_owned),
        timezone: timezone.map(str::to_owned),
        template: spec.id,
        data: spec.sample,
        ..herald_stage::memory::delivery(7)
    }
}

fn stage(spec: TemplateSpec, config: RenderConfig) -> Render<MemoryTemplates> {
    let templates = MemoryTemplates::new();
    templates.publish("acme", spec, jiff::Timestamp::UNIX_EPOCH);
    Render::new(templates, config, Arc::new(NoTracking))
}

async fn content(render: &Render<MemoryTemplates>, d: Delivery) -> Content {
    let out = render.process(d, &Meta::for_tests()).await.unwrap();
    let forwarded: Vec<Delivery> = out.forwarded(Hop::Dedupe);
    assert_eq!(forwarded.len(), 1, "not rendered: {:?}", out.events());
    forwarded[0].content.clone().unwrap()
}

async fn failure(render: &Render<MemoryTemplates>, d: Delivery) -> (String, String) {
    let out = render.process(d, &Meta::for_tests()).await.expect("a render failure is an outcome, never a retry");
    assert!(out.forwarded::<Delivery>(Hop::Dedupe).is_empty());
    let events = out.events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].status, Status::Failed);
    (events[0].reason.clone().unwrap(), events[0].detail.clone().unwrap())
}

#[tokio::test]
async fn every_channel_renders_its_provider_parts() {
    let render = stage(order_shipped(), RenderConfig::default());
    let cases = [
        ("push_ios", delivery(Channel::Push, None, Some("America/New_York"), Some(Platform::Ios))),
        ("push_android", delivery(Channel::Push, None, Some("Europe/Berlin"), Some(Platform::Android))),
        ("sms", delivery(Channel::Sms, Some("en-US"), None, None)),
        ("voice", delivery(Channel::Voice, None, None, None)),
        ("email", delivery(Channel::Email, None, None, None)),
        ("web_push", delivery(Channel::WebPush, None, Some("Asia/Tokyo"), Some(Platform::Web))),
        ("webhook", delivery(Channel::Webhook, None, None, None)),
        ("in_app", delivery(Channel::InApp, None, None, None)),
        ("log", delivery(Channel::Log, None, None, None)),
    ];
    for (name, d) in cases {
        let platform = d.platform;
        let content = content(&render, d).await;
        // What the provider will be sent, for the channels whose payload render measures.
        let payload = match (name, platform) {
            (_, Some(Platform::Ios)) => Some(limits::apns_payload(&content.parts).unwrap()),
            (_, Some(Platform::Android)) => Some(limits::fcm_payload(&content.parts).unwrap()),
            (_, Some(Platform::Web)) => Some(limits::web_push_payload(&content.parts).unwrap()),
            _ => None,
        };
        insta::assert_json_snapshot!(format!("channel_{name}"), json!({ "content": content, "payload": payload }));
    }
}

#[tokio::test]
async fn locales_fall_back_from_region_to_language_to_default() {
    let render = stage(order_shipped(), RenderConfig::default());
    let cases = [
        ("sms_ko_KR", delivery(Channel::Sms, Some("ko-KR"), None, None)),
        ("sms_ko", delivery(Channel::Sms, Some("ko"), None, None)),
        ("sms_ko_KP_to_ko", delivery(Channel::Sms, Some("ko_KP"), None, None)),
        ("push_ko_KR_to_ko", delivery(Channel::Push, Some("ko-KR"), Some("Asia/Seoul"), Some(Platform::Ios))),
        ("email_ko_KR_to_default", delivery(Channel::Email, Some("ko-KR"), None, None)),
        ("sms_de_to_default", delivery(Channel::Sms, Some("de-DE"), None, None)),
    ];
    for (name, d) in cases {
        let content = content(&render, d).await;
        insta::assert_json_snapshot!(format!("locale_{name}"), content);
    }
}

#[tokio::test]
async fn numbers_plurals_and_dates_follow_the_recipient() {
    let spec: TemplateSpec = serde_json::from_value(json!({
        "id": "t",
        "locales": { "default": { "sms": { "body": "{{ data.n | number(2) }}|{{ data.c | plural(one='# file', few='# pliki', many='# plików', other='# files') }}|{{ data.at | datetime('%Y-%m-%d %H:%M %Z') }}" } } }
    }))
    .unwrap();
    let render = stage(spec, RenderConfig::default());
    let body = |locale: &'static str, tz: &'static str, c: i64| {
        let d = Delivery {
            channel: Channel::Sms,
            template: "t".into(),
            locale: Some(locale.into()),
            timezone: Some(tz.into()),
            data: json!({ "n": 1234567.891, "c": c, "at": 1_767_225_600 }).as_object().cloned().unwrap(),
            ..herald_stage::memory::delivery(3)
        };
        let render = &render;
        async move { content(render, d).await.parts["body"].clone() }
    };
    assert_eq!(body("en", "UTC", 1).await, "1,234,567.89|1 file|2026-01-01 00:00 UTC");
    assert_eq!(body("de", "Europe/Berlin", 5).await, "1.234.567,89|5 files|2026-01-01 01:00 CET");
    assert_eq!(body("pl", "Europe/Warsaw", 3).await, "1\u{a0}234\u{a0}567,89|3 pliki|2026-01-01 01:00 CET");
    assert_eq!(body("pl", "Europe/Warsaw", 5).await, "1\u{a0}234\u{a0}567,89|5 plików|2026-01-01 01:00 CET");
    assert_eq!(body("ko", "Asia/Seoul", 1).await, "1,234,567.89|1 files|2026-01-01 09:00 KST");
}

#[tokio::test]
async fn apns_payload_over_the_limit_fails_without_retry_unless_truncation_is_allowed() {
    let mut spec = order_shipped();
    let default = spec.locales.get_mut("default").unwrap();
    default.get_mut(&Channel::Push).unwrap().insert("body".into(), "{{ 'Lorem ipsum. ' * 400 }}".into());
    let render = stage(spec.clone(), RenderConfig::default());
    let (reason, detail) = failure(&render, delivery(Channel::Push, None, None, Some(Platform::Ios))).await;
    assert_eq!(reason, "payload_too_large");
    assert!(detail.contains("over the 4096-byte limit"), "{detail}");

    spec.truncate = true;
    let render = stage(spec, RenderConfig::default());
    let c = content(&render, delivery(Channel::Push, None, None, Some(Platform::Ios))).await;
    assert!(c.truncated);
    let payload = limits::apns_payload(&c.parts).unwrap();
    assert!(serde_json::to_vec(&payload).unwrap().len() <= limits::APNS_MAX_BYTES);
}

#[tokio::test]
async fn failures_name_their_cause() {
    let render = stage(order_shipped(), RenderConfig::default());
    let (reason, detail) = failure(&render, Delivery { template: "nope".into(), ..delivery(Channel::Sms, None, None, None) }).await;
    assert_eq!((reason.as_str(), detail.contains("herald templates push")), ("unknown_template", true));
    let (reason, _) = failure(&render, Delivery { template_version: Some(9), ..delivery(Channel::Sms, None, None, None) }).await;
    assert_eq!(reason, "unknown_template");
    let mut d = delivery(Channel::Sms, None, None, None);
    d.data.remove("order_id");
    let (reason, detail) = failure(&render, d).await;
    assert_eq!(reason, "render_error");
    assert!(detail.contains("undefined"), "{detail}");
    let spec: TemplateSpec =
        serde_json::from_value(json!({ "id": "order_shipped", "locales": { "default": { "sms": { "body": "x" } } } })).unwrap();
    let render = stage(spec, RenderConfig::default());
    let (reason, _) = failure(&render, delivery(Channel::Email, None, None, None)).await;
    assert_eq!(reason, "no_channel_content");
}

#[tokio::test]
async fn deliveries_render_from_the_version_enrich_pinned() {
    let templates = MemoryTemplates::new();
    let v = |body: &str| -> TemplateSpec {
        serde_json::from_value(json!({ "id": "t", "locales": { "default": { "sms": { "body": body } } } })).unwrap()
    };
    let t0 = jiff::Timestamp::from_second(1_000).unwrap();
    templates.publish("acme", v("one"), t0);
    templates.publish("acme", v("two"), t0 + Duration::from_secs(60));
    let render = Render::new(templates, RenderConfig::default(), Arc::new(NoTracking));
    let base = Delivery { channel: Channel::Sms, template: "t".into(), ..herald_stage::memory::delivery(1) };
    let at = |secs: i64| jiff::Timestamp::from_second(secs).unwrap();
    let pinned = content(&render, Delivery { template_version: Some(1), accepted_at: at(5_000), ..base.clone() }).await;
    assert_eq!((pinned.parts["body"].as_str(), pinned.template_version), ("one", Some(1)));
    let before_v2 = content(&render, Delivery { accepted_at: at(1_030), ..base.clone() }).await;
    assert_eq!(before_v2.parts["body"], "one");
    let after_v2 = content(&render, Delivery { accepted_at: at(1_061), ..base.clone() }).await;
    assert_eq!(after_v2.parts["body"], "two");
    let before_any = content(&render, Delivery { accepted_at: at(10), ..base }).await;
    assert_eq!(before_any.parts["body"], "one", "a notification sent just before its template was published gets the first version");
}

/// Endless loops and exploding output stop with a clear error, in bounded time, and do not hold
/// up the normal messages rendered beside them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_templates_stop_and_do_not_slow_their_neighbours() {
    let hostile: TemplateSpec = serde_json::from_value(json!({ "id": "hostile", "locales": { "default": {
        "sms": { "body": "{% for a in range(100000) %}{% for b in range(100000) %}{{ a }}{% endfor %}{% endfor %}" },
        "email": { "subject": "x", "text": "{{ 'boom' * 1000000000 }}" },
        "push": { "title": "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}" }
    } } }))
    .unwrap();
    let templates = MemoryTemplates::new();
    templates.publish("acme", hostile, jiff::Timestamp::UNIX_EPOCH);
    templates.publish("acme", order_shipped(), jiff::Timestamp::UNIX_EPOCH);
    let render = Arc::new(Render::new(templates, RenderConfig::default(), Arc::new(NoTracking)));

    let bad = |channel| Delivery { template: "hostile".into(), channel, ..herald_stage::memory::delivery(9) };
    for (channel, expect) in [(Channel::Sms, "fuel"), (Channel::Email, "fuel"), (Channel::Push, "recursion")] {
        let started = Instant::now();
        let (reason, detail) = failure(&render, bad(channel)).await;
        assert_eq!(reason, "render_error");
        assert!(detail.to_lowercase().contains(expect), "{channel}: {detail}");
        assert!(started.elapsed() < Duration::from_secs(2), "{channel} took {:?}", started.elapsed());
    }

    // Baseline: normal renders alone.
    let normal = || delivery(Channel::Sms, None, None, None);
    let started = Instant::now();
    for _ in 0..50 {
        content(&render, normal()).await;
    }
    let alone = started.elapsed();
    // The same renders while hostile ones burn their budgets on the blocking pool.
    let mut hostile_tasks = Vec::new();
    for _ in 0..4 {
        let render = render.clone();
        hostile_tasks.push(tokio::spawn(async move {
            let started = Instant::now();
            for _ in 0..5 {
                render.process(bad(Channel::Sms), &Meta::for_tests()).await.unwrap();
            }
            started.elapsed()
        }));
    }
    let started = Instant::now();
    for _ in 0..50 {
        content(&render, normal()).await;
    }
    let beside = started.elapsed();
    let mut hostile_time = Duration::ZERO;
    for task in hostile_tasks {
        hostile_time = hostile_time.max(task.await.unwrap());
    }
    eprintln!("50 normal renders: {alone:?} alone, {beside:?} beside hostile ones (which took {hostile_time:?})");
    assert!(beside < alone * 5 + Duration::from_millis(250), "normal renders slowed from {alone:?} to {beside:?}");
}

#[test]
fn uploads_report_syntax_errors_with_line_and_column_and_sample_gaps() {
    let engine = Engine::new(RenderConfig::default(), Arc::new(NoTracking));
    let spec: TemplateSpec = serde_json::from_value(json!({ "id": "t", "sample": { "name": "Ada" }, "locales": { "default": {
        "sms": { "body": "Hi\n{{ data.name | nope }}" },
        "email": { "subject": "ok", "text": "line one\n  {% for x in %}" }
    } } }))
    .unwrap();
    let errors = engine.check(&spec).unwrap_err();
    assert!(errors.iter().any(|e| e.starts_with("default/email/text:2:") && e.contains("syntax error")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("default/sms: with the sample data: part `body` line 2: unknown filter")), "{errors:?}");

    let ok: TemplateSpec = serde_json::from_value(json!({ "id": "t", "sample": { "name": "Ada" }, "locales": { "default": {
        "sms": { "body": "Hi {{ data.name }}{% if data.vip is defined %} (VIP){% endif %}" }
    } } }))
    .unwrap();
    let warnings = engine.check(&ok).unwrap();
    assert_eq!(warnings, ["default/sms/body: uses data.vip which the sample data does not have"]);

    let unguarded: TemplateSpec = serde_json::from_value(json!({ "id": "t", "sample": { "name": "Ada" }, "locales": { "default": {
        "sms": { "body": "Hi {{ data.nickname }}" }
    } } }))
    .unwrap();
    let errors = engine.check(&unguarded).unwrap_err();
    assert!(errors[0].contains("undefined") && errors[0].contains("sample data"), "{errors:?}");
}

#[derive(Debug)]
struct FakeTracking;

impl LinkHook for FakeTracking {
    fn click_url(&self, c: &LinkContext, url: &str) -> String {
        format!("https://t.example/c/{}?u={}", c.delivery_id, url.len())
    }

    fn open_pixel_url(&self, c: &LinkContext) -> Option<String> {
        Some(format!("https://t.example/o/{}", c.delivery_id))
    }

    fn unsubscribe_url(&self, c: &LinkContext) -> Option<String> {
        Some(format!("https://t.example/u/{}", c.delivery_id))
    }
}

#[tokio::test]
async fn the_link_hook_fills_tracked_links_the_pixel_and_list_unsubscribe() {
    let templates = MemoryTemplates::new();
    templates.publish("acme", order_shipped(), jiff::Timestamp::UNIX_EPOCH);
    let render = Render::new(templates, RenderConfig::default(), Arc::new(FakeTracking));
    let c = content(&render, delivery(Channel::Email, None, None, None)).await;
    let id = herald_stage::memory::delivery(7).delivery_id;
    assert!(c.parts["html"].contains(&format!(r#"<a href="https://t.example/c/{id}?u=29">"#)), "{}", c.parts["html"]);
    assert!(c.parts["html"].contains(&format!(r#"<img src="https://t.example/o/{id}""#)));
    assert!(c.parts["html"].contains(&format!(r#"<a href="https://t.example/u/{id}">Unsubscribe"#)));
    assert_eq!(c.headers["List-Unsubscribe"], format!("<https://t.example/u/{id}>"));
    assert_eq!(c.headers["List-Unsubscribe-Post"], "List-Unsubscribe=One-Click");
}

#[tokio::test]
async fn html_is_escaped_and_json_parts_encode_values() {
    let render = stage(order_shipped(), RenderConfig::default());
    let mut d = delivery(Channel::Email, None, None, None);
    d.data.insert("name".into(), json!("<script>x</script>"));
    let c = content(&render, d).await;
    assert!(c.parts["html"].contains("Hi &lt;script&gt;x&lt;&#x2f;script&gt;"), "{}", c.parts["html"]);
    assert!(c.parts["text"].contains("Hi <script>x</script>"));
    let mut d = delivery(Channel::Webhook, None, None, None);
    d.data.insert("order_id".into(), json!("A\"}, \"admin\": true, \"x\": {\""));
    let c = content(&render, d).await;
    let body: serde_json::Value = serde_json::from_str(&c.parts["body"]).unwrap();
    assert_eq!(body["order"], "A\"}, \"admin\": true, \"x\": {\"");
    assert!(body.get("admin").is_none());
}

#[tokio::test]
async fn compiled_templates_are_cached_per_version_locale_and_channel() {
    let render = stage(order_shipped(), RenderConfig { cache_capacity: 2, ..RenderConfig::default() });
    content(&render, delivery(Channel::Sms, None, None, None)).await;
    content(&render, delivery(Channel::Sms, Some("en"), None, None)).await; // same entry: en falls back to default
    assert_eq!(render.engine().cached(), 1);
    content(&render, delivery(Channel::Sms, Some("ko"), None, None)).await;
    content(&render, delivery(Channel::Voice, None, None, None)).await;
    assert_eq!(render.engine().cached(), 2, "bounded by cache_capacity");
}
