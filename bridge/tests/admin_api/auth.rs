//! The admin token: every route refuses a missing or wrong one, an address that keeps presenting
//! wrong ones is locked out, and an empty one is refused when the API is built.

use super::*;

#[tokio::test]
async fn every_route_refuses_a_missing_or_wrong_token() -> anyhow::Result<()> {
    let admin = admin().await?;
    admin
        .store
        .insert_responder(&responder("alex"), SOURCE_ADMIN)
        .await?;
    // Every route the document describes, so a route added later is held to this too.
    let routes: Vec<(Method, String)> = admin
        .contract
        .operations()
        .into_iter()
        .map(|(method, template)| {
            let id = if template.contains("dead-letters") {
                "1"
            } else {
                "alex"
            };
            let uri = template.replace("{id}", id).replace("{room_id}", "!room:x");
            (method.parse().expect("a method"), uri)
        })
        .collect();
    assert_eq!(routes.len(), 15, "{routes:?}");
    let body = || Some(json!({"display_name": "Mallory", "status": "offline"}).to_string());
    for (i, (method, uri)) in routes.iter().enumerate() {
        let uri = uri.as_str();
        // Each route's wrong tokens from an address of their own: the lock-out after five
        // from one address is tested below.
        let peer = SocketAddr::from(([192, 0, 2, i as u8 + 1], 40000));
        for missing in [None, Some("Basic YWRtaW46YWRtaW4="), Some(TOKEN)] {
            let (status, json) = admin.call_as(missing, method.clone(), uri, body()).await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::UNAUTHORIZED, Some("M_MISSING_TOKEN")),
                "{method} {uri} with authorization {missing:?}"
            );
        }
        for wrong in [
            "Bearer wrong",
            "Bearer ",
            "Bearer admin-secret-token2",
            "Bearer admin-secret-toke",
        ] {
            let (status, _, json) = admin
                .call_from(Some(peer), Some(wrong), method.clone(), uri, body())
                .await;
            assert_eq!(
                (status, json["errcode"].as_str()),
                (StatusCode::FORBIDDEN, Some("M_FORBIDDEN")),
                "{method} {uri} with {wrong:?}"
            );
            // The refusal says nothing about the token.
            assert_eq!(json["error"], "Invalid admin token");
        }
    }
    // Nothing got through: the responder is unchanged and nobody was woken.
    assert_eq!(
        admin.store.responder("alex").await?,
        Some(responder("alex"))
    );
    assert!(!admin.was_notified().await);
    assert_eq!(admin.woken.load(Ordering::SeqCst), 0);
    Ok(())
}

#[tokio::test]
async fn an_address_presenting_wrong_tokens_is_locked_out_whatever_it_sends_next()
-> anyhow::Result<()> {
    let admin = admin().await?;
    let guesser = SocketAddr::from(([198, 51, 100, 7], 50000));
    let operator = SocketAddr::from(([198, 51, 100, 8], 50000));
    let list = |peer, token: &'static str| {
        let admin = &admin;
        async move {
            admin
                .call_from(
                    Some(peer),
                    Some(token),
                    Method::GET,
                    "/admin/v1/responders",
                    None,
                )
                .await
        }
    };
    for _ in 0..5 {
        assert_eq!(list(guesser, "Bearer guess").await.0, StatusCode::FORBIDDEN);
    }
    let (status, headers, json) = list(guesser, "Bearer guess").await;
    assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(json["errcode"], "M_LIMIT_EXCEEDED");
    let after: u64 = headers[header::RETRY_AFTER].to_str()?.parse()?;
    assert!((1..=12).contains(&after), "Retry-After {after}");
    // Locked out: even the right token is refused from there, so a guess that happens to be
    // right is not told apart from the wrong ones.
    let right = "Bearer admin-secret-token";
    assert_eq!(list(guesser, right).await.0, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(list(operator, right).await.0, StatusCode::OK);
    // A missing token is a client set up wrong, not a guess: it never locks anyone out.
    for _ in 0..10 {
        let (status, _, _) = admin
            .call_from(
                Some(operator),
                None,
                Method::GET,
                "/admin/v1/responders",
                None,
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(list(operator, right).await.0, StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn an_empty_token_is_refused_at_construction() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let store = Store::connect(&format!("sqlite://{}", dir.path().join("db").display())).await?;
    for token in ["", "   "] {
        let err = AdminState::new(store.clone(), token, Arc::new(Notify::new()), vec![])
            .err()
            .expect("an empty token must be refused");
        assert!(err.to_string().contains("[admin]"), "{err}");
    }
    Ok(())
}
