//! The gateway's health endpoints (`/live`, `/ready`, `/metrics` on the telemetry port) as a
//! supervisor or an operator reads them.

use std::time::{Duration, Instant};

use serde_json::Value;

/// GET `http://127.0.0.1:port/path`: the status and the JSON body.
pub fn get(port: u16, path: &str) -> (u16, Value) {
    try_get(port, path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// [`get`], or why nothing answered (the endpoint is not up yet while the gateway starts).
pub fn try_get(port: u16, path: &str) -> Result<(u16, Value), ureq::Error> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent.get(format!("http://127.0.0.1:{port}{path}")).call()?;
    let status = response.status().as_u16();
    let body = response.body_mut().read_to_string()?;
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    Ok((status, json))
}

/// Polls `path` (off the runtime's workers) until `until` holds for its status and body, or
/// fails after 30 s naming `what` was awaited.
pub async fn until(
    port: u16,
    path: &str,
    what: &str,
    until: impl Fn(u16, &Value) -> bool,
) -> (u16, Value) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = tokio::task::block_in_place(|| try_get(port, path));
        if let Ok((status, body)) = &answer
            && until(*status, body)
        {
            return (*status, body.clone());
        }
        assert!(
            Instant::now() < deadline,
            "{path} never showed {what}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A broker link as `/ready` lists it.
pub fn link<'a>(ready: &'a Value, broker: &str, role: &str) -> &'a Value {
    ready["links"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["broker"] == broker && l["role"] == role)
        .unwrap_or_else(|| panic!("no link {broker}/{role} in {ready}"))
}
