//! JSON Schema generation for the committed files under `schemas/json/`.

use schemars::{JsonSchema, schema_for};

use crate::caps::TenantCaps;
use crate::directory::ImportLine;
use crate::{
    Alert, CancelRequest, Credentials, Delivery, FanoutPage, Notification, NotificationRequest, Receipt, TemplateSpec, TrackEvent,
};

/// One generated schema file.
#[derive(Debug, Clone)]
pub struct SchemaFile {
    /// File name under `schemas/json/`.
    pub name: &'static str,
    /// Pretty-printed JSON, with a trailing newline.
    pub contents: String,
}

fn file<T: JsonSchema>(name: &'static str) -> SchemaFile {
    let schema = schema_for!(T);
    let mut contents = serde_json::to_string_pretty(&schema).unwrap_or_else(|e| format!("schema serialization failed: {e}"));
    contents.push('\n');
    SchemaFile { name, contents }
}

/// Every wire type's schema.
pub fn schema_files() -> Vec<SchemaFile> {
    vec![
        file::<NotificationRequest>("notification-request.v1.schema.json"),
        file::<Notification>("notification.v1.schema.json"),
        file::<Delivery>("delivery.v1.schema.json"),
        file::<TrackEvent>("track-event.v1.schema.json"),
        file::<FanoutPage>("fanout-page.v1.schema.json"),
        file::<ImportLine>("import-line.v1.schema.json"),
        file::<TemplateSpec>("template-spec.v1.schema.json"),
        file::<CancelRequest>("cancel-request.v1.schema.json"),
        file::<TenantCaps>("tenant-caps.v1.schema.json"),
        file::<Alert>("alert.v1.schema.json"),
        file::<Credentials>("provider-credentials.v1.schema.json"),
        file::<Receipt>("receipt.v1.schema.json"),
    ]
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    /// Fails when a committed schema differs from the generated one. `HERALD_BLESS=1` (what
    /// `make schemas` sets) rewrites the files instead.
    #[test]
    fn committed_schemas_are_current() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("json");
        let bless = std::env::var_os("HERALD_BLESS").is_some();
        let mut stale = Vec::new();
        for SchemaFile { name, contents } in schema_files() {
            let path = dir.join(name);
            let committed = std::fs::read_to_string(&path).unwrap_or_default();
            if committed != contents {
                if bless {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&path, &contents).unwrap();
                } else {
                    stale.push(name);
                }
            }
        }
        assert!(stale.is_empty(), "stale JSON Schema files {stale:?}: run `make schemas` and commit the result");
    }

    #[test]
    fn sample_request_round_trips() {
        let body = br#"{"template":"welcome","recipients":[{"user_id":"alice"}],"priority":"high","send_at":"2030-01-01T00:00:00Z"}"#;
        let request = NotificationRequest::parse(body).unwrap();
        let again: NotificationRequest = serde_json::from_str(&serde_json::to_string(&request).unwrap()).unwrap();
        assert_eq!(request, again);
    }
}
