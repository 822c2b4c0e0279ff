//! The visitor API against its OpenAPI document, end to end on a real Synapse (guest access
//! off, so visitor accounts are handed out): every operation the served document describes is
//! called, on its way to success and to each refusal a widget can meet, and every request and
//! answer is checked against that document (`bridge/tests/common/openapi.rs`). The admin
//! document served by the same process is held to a real conversation's transcript too.

mod common;
#[path = "../bridge/tests/common/openapi.rs"]
mod openapi;

use anyhow::Context;
use common::*;
use openapi::{Contract, Exchange};
use serde_json::Value;

/// Noguest slot 0 (binaries run one at a time; e2e_visitor_accounts uses it too).
const SLOT: u32 = 0;
const ADMIN_TOKEN: &str = "openapi-admin-token";

/// Calls the running Switchboard and checks the exchange against `contract`.
struct Checked {
    http: reqwest::Client,
    base: String,
    contract: Contract,
}

impl Checked {
    async fn fetch(base: &str, path: &str) -> anyhow::Result<(Value, Contract)> {
        let r = reqwest::get(format!("{base}{path}")).await?;
        anyhow::ensure!(r.status() == 200, "{path}: {}", r.status());
        let document: Value = r.json().await?;
        Ok((document.clone(), Contract::new(document)))
    }

    async fn call(
        &self,
        method: &str,
        uri: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> anyhow::Result<(u16, Value)> {
        let mut request = self
            .http
            .request(method.parse()?, format!("{}{uri}", self.base));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        let response = request.send().await?;
        let status = response.status().as_u16();
        let headers = response
            .headers()
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_str().unwrap_or_default().to_owned()))
            .collect();
        let bytes = response.bytes().await?;
        self.contract.check(&Exchange {
            method,
            uri,
            authorization: token.is_some(),
            request_body: body.map(str::as_bytes),
            status,
            response_headers: headers,
            response_body: &bytes,
        });
        let json = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, json))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_visitor_route_answers_as_its_openapi_document_says() -> anyhow::Result<()> {
    let env = TestEnv::noguest_from_env();
    let slot = Slot::load(&env, SLOT)?;
    let sb = Switchboard::start(
        &env,
        &slot,
        &format!(
            "[visitors]\nmode = \"accounts\"\naccounts_per_minute = 1\naccounts_burst = 2\n\
             conversations_per_minute = 1\nburst = 4\n\n\
             [admin]\ntoken = {ADMIN_TOKEN:?}\n\n\
             [[topics]]\nid = \"support\"\nname = \"General support\"\n"
        ),
    )
    .await?;

    // The document the process serves is the one the code generates.
    let (document, contract) = Checked::fetch(&sb.base, "/api/v1/openapi.json").await?;
    assert_eq!(
        document,
        serde_json::to_value(switchboard_bridge::visitor_api::openapi())?
    );
    let api = Checked {
        http: reqwest::Client::new(),
        base: sb.base.clone(),
        contract,
    };

    // --- what the widget asks first ---------------------------------------------------------------
    let (status, config) = api.call("GET", "/api/v1/config", None, None).await?;
    assert_eq!(status, 200);
    assert_eq!(config["visitor_mode"], "accounts");
    assert_eq!(config["topics"][0]["id"], "support");

    // --- two visitor identities, then the per-address limit -------------------------------------------
    let mut visitors = Vec::new();
    for _ in 0..2 {
        let (status, session) = api.call("POST", "/api/v1/visitors", None, None).await?;
        assert_eq!(status, 201, "{session}");
        visitors.push((
            session["user_id"].as_str().context("user_id")?.to_owned(),
            session["access_token"]
                .as_str()
                .context("access_token")?
                .to_owned(),
        ));
    }
    let (status, refused) = api.call("POST", "/api/v1/visitors", None, None).await?;
    assert_eq!(
        (status, refused["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );
    let (ann, ann_token) = &visitors[0];
    let (_, bob_token) = &visitors[1];

    // --- starting a conversation: each refusal, then success, then the limit (burst 4) --------------
    let (status, e) = api
        .call(
            "POST",
            "/api/v1/conversations",
            None,
            Some(r#"{"topic":"support"}"#),
        )
        .await?;
    assert_eq!(
        (status, e["errcode"].as_str()),
        (401, Some("M_MISSING_TOKEN"))
    );
    let (status, e) = api
        .call(
            "POST",
            "/api/v1/conversations",
            Some(ann_token),
            Some("{nope"),
        )
        .await?;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_NOT_JSON")));
    let (status, e) = api
        .call(
            "POST",
            "/api/v1/conversations",
            Some(ann_token),
            Some(r#"{"topic":"no-such-topic"}"#),
        )
        .await?;
    assert_eq!(
        (status, e["errcode"].as_str()),
        (400, Some("M_INVALID_PARAM"))
    );
    let (status, started) = api
        .call(
            "POST",
            "/api/v1/conversations",
            Some(ann_token),
            Some(r#"{"topic":"support","language":"de"}"#),
        )
        .await?;
    assert_eq!(status, 201, "{started}");
    let room = started["room_id"].as_str().context("room_id")?.to_owned();
    let (status, e) = api
        .call(
            "POST",
            "/api/v1/conversations",
            Some(bob_token),
            Some(r#"{"topic":"support"}"#),
        )
        .await?;
    assert_eq!(
        (status, e["errcode"].as_str()),
        (429, Some("M_LIMIT_EXCEEDED"))
    );

    // Ann writes, as the widget would, so the transcript below holds a real event.
    let mut visitor = Visitor::signed_in(&env, &sb.base, ann, ann_token);
    let (status, joined) = visitor.join(&room).await?;
    assert_eq!(status, 200, "{joined}");
    visitor.room_id = Some(room.clone());
    visitor.send("Hello, is anybody there?").await?;

    // --- typing, and ending: only in one's own conversation --------------------------------------------
    let room_path = urlencode(&room);
    let typing = format!("/api/v1/conversations/{room_path}/typing");
    let (status, _) = api
        .call("POST", &typing, Some(ann_token), Some(r#"{"typing":true}"#))
        .await?;
    assert_eq!(status, 204);
    let (status, e) = api
        .call(
            "POST",
            &typing,
            Some(ann_token),
            Some(r#"{"typing":"yes"}"#),
        )
        .await?;
    assert_eq!((status, e["errcode"].as_str()), (400, Some("M_BAD_JSON")));
    let (status, e) = api
        .call("POST", &typing, Some(bob_token), Some(r#"{"typing":true}"#))
        .await?;
    assert_eq!((status, e["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, e) = api
        .call(
            "POST",
            &typing,
            Some("not-a-token-anyone-has"),
            Some(r#"{"typing":false}"#),
        )
        .await?;
    assert_eq!(
        (status, e["errcode"].as_str()),
        (401, Some("M_UNKNOWN_TOKEN"))
    );

    // The admin document of the same process holds the real conversation, transcript included.
    let (_, admin_contract) = Checked::fetch(&sb.base, "/admin/v1/openapi.json").await?;
    let admin = Checked {
        http: reqwest::Client::new(),
        base: sb.base.clone(),
        contract: admin_contract,
    };
    let detail = wait_for("the visitor's message in the transcript", || async {
        let (status, detail) = admin
            .call(
                "GET",
                &format!("/admin/v1/conversations/{room_path}"),
                Some(ADMIN_TOKEN),
                None,
            )
            .await?;
        anyhow::ensure!(status == 200, "{status}: {detail}");
        let found = detail["transcript"]
            .as_array()
            .is_some_and(|t| t.iter().any(|m| m["body"] == "Hello, is anybody there?"));
        Ok(found.then_some(detail))
    })
    .await?;
    assert_eq!(detail["conversation"]["language"], "de");
    let (status, _) = admin
        .call("GET", "/admin/v1/conversations", Some(ADMIN_TOKEN), None)
        .await?;
    assert_eq!(status, 200);

    let end = format!("/api/v1/conversations/{room_path}/end");
    let (status, e) = api.call("POST", &end, Some(bob_token), None).await?;
    assert_eq!((status, e["errcode"].as_str()), (404, Some("M_NOT_FOUND")));
    let (status, _) = api.call("POST", &end, Some(ann_token), None).await?;
    assert_eq!(status, 204);

    assert_eq!(
        api.contract.never_called(),
        Vec::<(String, String)>::new(),
        "every visitor operation was called"
    );
    assert_eq!(api.contract.successes_never_seen(), Vec::<String>::new());
    Ok(())
}
