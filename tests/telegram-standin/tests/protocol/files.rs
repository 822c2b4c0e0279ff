//! Files: uploads as multipart, `getFile` and downloads, a file ID sent again, and the
//! refusals for a bad image, a missing file and a file of the wrong type.

use super::*;

#[tokio::test]
async fn files_upload_and_download() {
    let api = Api::start().await;
    let ann = api.tg.user(1001, "Ann", None);
    let png = tiny_png();

    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .text("caption", "<b>look</b>")
        .text("parse_mode", "HTML")
        .text(
            "reply_markup",
            r#"{"inline_keyboard":[[{"text":"ok","callback_data":"ok"}]]}"#,
        )
        .part(
            "photo",
            reqwest::multipart::Part::bytes(png.clone()).file_name("p.png"),
        );
    let response = api
        .http
        .post(api.url("sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    let message = response.json::<Value>().await.unwrap()["result"].clone();
    let photo = &message["photo"][0];
    assert_eq!(
        (photo["width"].as_u64(), photo["height"].as_u64()),
        (Some(4), Some(3))
    );
    assert_eq!(message["caption"], "look");
    assert_eq!(
        message["caption_entities"],
        json!([{"offset": 0, "length": 4, "type": "bold"}])
    );
    assert_eq!(
        message["reply_markup"]["inline_keyboard"][0][0]["callback_data"],
        "ok"
    );
    let sent = api.tg.sent(1001);
    assert_eq!(
        (sent[0].kind.as_str(), sent[0].file_bytes.as_ref()),
        ("photo", Some(&png))
    );

    let file = api
        .ok("getFile", json!({"file_id": photo["file_id"]}))
        .await;
    assert_eq!(file["file_size"], png.len());
    let path = file["file_path"].as_str().unwrap();
    let download = format!("{}file/bot{}/{}", api.tg.api_url(), TOKEN, path);
    assert_eq!(
        api.http
            .get(&download)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );
    // teloxide sends the '/' in file_path percent-encoded.
    let encoded = format!(
        "{}file/bot{}/{}",
        api.tg.api_url(),
        TOKEN,
        path.replace('/', "%2F")
    );
    assert_eq!(
        api.http
            .get(&encoded)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );

    // A document through attach://, then re-sent by file_id.
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .text("document", "attach://blob")
        .part(
            "blob",
            reqwest::multipart::Part::bytes(b"transcript".to_vec()).file_name("log.txt"),
        );
    let response = api
        .http
        .post(api.url("sendDocument"))
        .multipart(form)
        .send()
        .await
        .unwrap();
    let document = response.json::<Value>().await.unwrap()["result"]["document"].clone();
    assert_eq!(document["file_name"], "log.txt");
    let again = api
        .ok(
            "sendDocument",
            json!({"chat_id": 1001, "document": document["file_id"]}),
        )
        .await;
    assert_eq!(again["document"]["file_id"], document["file_id"]);

    // Refusals.
    let form = reqwest::multipart::Form::new()
        .text("chat_id", "1001")
        .part(
            "photo",
            reqwest::multipart::Part::bytes(b"not an image".to_vec()).file_name("x.png"),
        );
    let body: Value = api
        .http
        .post(api.url("sendPhoto"))
        .multipart(form)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["description"], "Bad Request: IMAGE_PROCESS_FAILED");
    let (_, description) = api.err("sendPhoto", json!({"chat_id": 1001})).await;
    assert_eq!(description, "Bad Request: there is no photo in the request");
    let (_, description) = api
        .err(
            "sendPhoto",
            json!({"chat_id": 1001, "photo": document["file_id"]}),
        )
        .await;
    assert_eq!(description, "Bad Request: type of file mismatch");

    // A user's photo can be fetched too.
    api.tg.user_sends_photo(&ann, png.clone(), Some("from Ann"));
    let updates = api.ok("getUpdates", json!({})).await;
    let user_photo = &updates[0]["message"]["photo"][0];
    let file = api
        .ok("getFile", json!({"file_id": user_photo["file_id"]}))
        .await;
    let url = format!(
        "{}file/bot{}/{}",
        api.tg.api_url(),
        TOKEN,
        file["file_path"].as_str().unwrap()
    );
    assert_eq!(
        api.http
            .get(url)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap()
            .to_vec(),
        png
    );
}
