//! The workflow methods of the typed sidecar client.

use super::lifecycle::WorkflowDeletion;
use super::routes::{ListRuns, NewWorkflow, RunList, StartRun, VersionList, WorkflowList};
use super::store::{WorkflowRun, WorkflowVersion};
use crate::client::{PlatformClient, segment};
use crate::error::PlatformError;
use reqwest::Method;
use serde_json::Value;

impl PlatformClient {
    /// Defines workflow `definition.name` (a new version when it exists).
    pub async fn workflow_define(
        &self,
        definition: &NewWorkflow,
    ) -> Result<WorkflowVersion, PlatformError> {
        self.post("/v1/workflows", definition).await
    }

    /// The caller's workflows, latest versions.
    pub async fn workflow_list(&self) -> Result<WorkflowList, PlatformError> {
        self.send(self.request(Method::GET, "/v1/workflows")).await
    }

    /// The latest version of workflow `name`, or version `version`.
    pub async fn workflow_get(
        &self,
        name: &str,
        version: Option<i64>,
    ) -> Result<WorkflowVersion, PlatformError> {
        let path = match version {
            Some(v) => format!("/v1/workflows/{}/versions/{v}", segment(name)),
            None => format!("/v1/workflows/{}", segment(name)),
        };
        self.send(self.request(Method::GET, &path)).await
    }

    /// Deletes workflow `name`: its unfinished runs are cancelled (and compensate), then its
    /// versions, runs and steps go.
    pub async fn workflow_delete(&self, name: &str) -> Result<WorkflowDeletion, PlatformError> {
        self.send(self.request(Method::DELETE, &format!("/v1/workflows/{}", segment(name))))
            .await
    }

    /// Every version of workflow `name`.
    pub async fn workflow_versions(&self, name: &str) -> Result<VersionList, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/workflows/{}/versions", segment(name)),
        ))
        .await
    }

    /// Starts a run of workflow `name` with `input` (the latest version unless `version`).
    pub async fn workflow_start(
        &self,
        name: &str,
        input: Value,
        version: Option<i64>,
        idempotency_key: Option<&str>,
    ) -> Result<WorkflowRun, PlatformError> {
        self.post(
            &format!("/v1/workflows/{}/runs", segment(name)),
            &StartRun {
                input: Some(input),
                version,
                idempotency_key: idempotency_key.map(str::to_string),
            },
        )
        .await
    }

    /// Run `run_id` of workflow `name`, with its steps.
    pub async fn workflow_run(
        &self,
        name: &str,
        run_id: &str,
    ) -> Result<WorkflowRun, PlatformError> {
        self.send(self.request(
            Method::GET,
            &format!("/v1/workflows/{}/runs/{}", segment(name), segment(run_id)),
        ))
        .await
    }

    /// A page of the runs of workflow `name`, newest first.
    pub async fn workflow_runs(
        &self,
        name: &str,
        query: &ListRuns,
    ) -> Result<RunList, PlatformError> {
        let mut params = Vec::new();
        if let Some(status) = &query.status {
            params.push(format!("status={}", segment(status)));
        }
        if let Some(before) = &query.before {
            params.push(format!("before={}", segment(before)));
        }
        if let Some(limit) = query.limit {
            params.push(format!("limit={limit}"));
        }
        let mut path = format!("/v1/workflows/{}/runs", segment(name));
        if !params.is_empty() {
            path = format!("{path}?{}", params.join("&"));
        }
        self.send(self.request(Method::GET, &path)).await
    }

    /// Cancels run `run_id` of workflow `name` (it is `cancelling` while the compensations of
    /// its completed steps run).
    pub async fn workflow_cancel(
        &self,
        name: &str,
        run_id: &str,
    ) -> Result<WorkflowRun, PlatformError> {
        self.send(self.request(
            Method::POST,
            &format!(
                "/v1/workflows/{}/runs/{}/cancel",
                segment(name),
                segment(run_id)
            ),
        ))
        .await
    }
}
