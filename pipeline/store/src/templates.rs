//! The templates aggregate: immutable versions per (tenant, template), and which is latest.
//! The render and enrich stages read it through [`crate::CachedTemplates`], which implements
//! their `TemplateSource` port.

use herald_schemas::api::{Published, TemplateSummary};
use herald_schemas::directory::check_tenant;
use herald_schemas::{TemplateSpec, TemplateVersion, Timestamp};
use serde::Deserialize;
use serde_json::json;

use crate::{Store, StoreError};

#[derive(Deserialize)]
struct VersionRow {
    version: u32,
    published_at: String,
    spec: String,
}

impl VersionRow {
    fn parse(self) -> Result<TemplateVersion, StoreError> {
        let published_at = self.published_at.parse().map_err(|e| StoreError::decode("read template", e))?;
        let spec = serde_json::from_str(&self.spec).map_err(|e| StoreError::decode("read template", e))?;
        Ok(TemplateVersion { version: self.version, published_at, spec })
    }
}

impl Store {
    /// Publishes `spec` as a new version of its template, unless it equals the latest version.
    /// The caller has checked it (see `herald_render::Engine::check`).
    pub async fn publish_template(&self, tenant: &str, spec: &TemplateSpec) -> Result<Published, StoreError> {
        check_tenant(tenant)?;
        spec.validate()?;
        let latest = self.template_versions(tenant, &spec.id).await?.pop();
        if let Some(latest) = &latest
            && latest.spec == *spec
        {
            return Ok(Published { id: spec.id.clone(), version: latest.version, created: false });
        }
        let version = latest.map_or(1, |l| l.version + 1);
        let now = jiff::Timestamp::now().to_string();
        // CREATE fails when the version exists: two concurrent publishers cannot both win.
        let sql = "BEGIN TRANSACTION;
            CREATE type::record('template_version', [$t, $id, $v]) SET tenant = $t, template_id = $id, version = $v,
                published_at = $now, spec = $spec RETURN NONE;
            UPSERT type::record('template', [$t, $id]) SET tenant = $t, template_id = $id, latest = $v,
                description = $description, updated_at = $now RETURN NONE;
            COMMIT TRANSACTION;";
        let spec_json = serde_json::to_string(spec).map_err(|e| StoreError::query("publish template", e))?;
        let mut vars = json!({ "t": tenant, "id": spec.id, "v": version, "now": now, "spec": spec_json });
        if let Some(description) = &spec.description {
            vars["description"] = json!(description);
        }
        self.run("publish template", sql, vars).await?;
        Ok(Published { id: spec.id.clone(), version, created: true })
    }

    /// Every version of a template, oldest first.
    pub async fn template_versions(&self, tenant: &str, id: &str) -> Result<Vec<TemplateVersion>, StoreError> {
        let sql = "SELECT version, published_at, spec FROM template_version:[$t, $id, 0]..=[$t, $id, 2147483647] ORDER BY version";
        let rows: Vec<VersionRow> = self.rows("read template versions", sql, json!({ "t": tenant, "id": id })).await?;
        rows.into_iter().map(VersionRow::parse).collect()
    }

    /// When each version of a template was published, oldest first.
    pub async fn template_index(&self, tenant: &str, id: &str) -> Result<Vec<(u32, Timestamp)>, StoreError> {
        #[derive(Deserialize)]
        struct IndexRow {
            version: u32,
            published_at: String,
        }
        let sql = "SELECT version, published_at FROM template_version:[$t, $id, 0]..=[$t, $id, 2147483647] ORDER BY version";
        let rows: Vec<IndexRow> = self.rows("read template index", sql, json!({ "t": tenant, "id": id })).await?;
        rows.into_iter()
            .map(|r| Ok((r.version, r.published_at.parse().map_err(|e| StoreError::decode("read template index", e))?)))
            .collect()
    }

    /// One version of a template.
    pub async fn template_version(&self, tenant: &str, id: &str, version: u32) -> Result<Option<TemplateVersion>, StoreError> {
        let sql = "SELECT version, published_at, spec FROM type::record('template_version', [$t, $id, $v])";
        let rows: Vec<VersionRow> = self.rows("read template version", sql, json!({ "t": tenant, "id": id, "v": version })).await?;
        rows.into_iter().next().map(VersionRow::parse).transpose()
    }

    /// The tenant's templates, by id.
    pub async fn templates(&self, tenant: &str) -> Result<Vec<TemplateSummary>, StoreError> {
        let sql = "SELECT template_id AS id, latest, description, updated_at FROM template:[$t, '']..[$t, {}] ORDER BY id";
        self.rows("list templates", sql, json!({ "t": tenant })).await
    }
}
