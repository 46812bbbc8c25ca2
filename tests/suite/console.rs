//! The web console in a real browser (headless Chromium over WebDriver) against a `sluice
//! serve` process on a real Kafka-protocol broker (tansu): what the page shows is what
//! `/v1/pipelines` answers, its throughput chart moves while records flow, and a reload, a
//! rollback, a pause, a resume and a deploy made from the page reach the runtime. With tokens, the page
//! asks for one, and a change the token may not make is refused with the API's own message.
//! Screenshots are kept under `target/test-artifacts/console/`.

use std::time::Duration;

use serde_json::json;
use sluice::api::{ClientError, PipelineState, PipelineSummary};
use sluice_tests::browser::{Browser, PAGE_WAIT};
use sluice_tests::guests;
use sluice_tests::hostile::HostilePipeline;
use sluice_tests::kafka::unique_suffix;

/// The hostile guest's pipeline, with what the API lists of it.
struct World(HostilePipeline);

impl std::ops::Deref for World {
    type Target = HostilePipeline;
    fn deref(&self) -> &HostilePipeline {
        &self.0
    }
}

impl World {
    /// With `tokens` (read, admin) the runtime requires them, and the test's calls send the admin one.
    async fn start(tokens: Option<(&str, &str)>) -> World {
        World(HostilePipeline::start("console", tokens).await)
    }

    /// The pipeline as `GET /v1/pipelines` lists it.
    async fn listed(&self) -> PipelineSummary {
        let (client, name) = (self.client(), self.name.clone());
        let list = blocking(move || client.list_pipelines()).await.unwrap();
        list.into_iter().find(|p| p.name == self.name).unwrap_or_else(|| panic!("{name} is not listed"))
    }

    /// Waits until the API lists the pipeline in a state `check` accepts.
    async fn wait_listed(&self, what: &str, check: impl Fn(&PipelineSummary) -> bool) -> PipelineSummary {
        let deadline = tokio::time::Instant::now() + PAGE_WAIT;
        loop {
            let listed = self.listed().await;
            if check(&listed) {
                return listed;
            }
            assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {listed:?}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

async fn blocking<T: Send + 'static>(call: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(call).await.unwrap()
}

/// A number as the page shows it (`1,234`), as a number.
fn shown_number(text: &str) -> i64 {
    text.replace(',', "").parse().unwrap_or_else(|e| panic!("{text:?} is not a number: {e}"))
}

/// The text of the cell `field` in the pipelines table's row of `name`.
fn cell(name: &str, field: &str) -> String {
    format!(r#"#pipelines tr[data-pipeline="{name}"] td[data-field="{field}"]"#)
}

/// Confirms the change the page asks about (its confirmation names `expected`) and waits for
/// its answer, which must contain every one of `answer`.
async fn confirm(browser: &Browser, expected: &str, answer: &[&str]) -> String {
    let question = browser.wait_for_text("the confirmation", "#confirm-text", |t| t.contains(expected)).await;
    assert!(question.contains(expected), "{question}");
    browser.click("#confirm-yes").await;
    browser.wait_for_text(answer[0], "#message", |t| answer.iter().all(|a| t.contains(a))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_shows_what_the_api_answers_and_reloads_rolls_back_pauses_resumes_and_deploys() {
    let world = World::start(None).await;
    let name = world.name.clone();
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui#pipeline={name}", world.serve.url())).await;
    browser.wait_for_text("the pipeline's row", &cell(&name, "state"), |t| t == "running").await;
    browser.wait_for_text("the pipeline's detail", "#detail-name", |t| t == name).await;

    // Records flow while the page watches: the chart moves.
    let marker = format!("hello from the function {}", unique_suffix());
    let mut values: Vec<String> = (0..200).map(|i| format!("record-{i}")).collect();
    values.push(format!("log warn {marker}"));
    values.push("fail".into());
    for chunk in values.chunks(20) {
        world.produce(chunk).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let total = values.len() as u64;
    // Records are counted in when a batch is taken and out when delivered: wait for both. Every
    // record comes out but the one that fails (the `log` one too: the guest passes it through).
    let listed = world
        .wait_listed("every record processed", |p| {
            p.records_in == total && p.lag == 0 && p.records_out + p.failed == total
        })
        .await;
    browser.wait_for_text("the records counted", &cell(&name, "records_in"), |t| shown_number(t) == total as i64).await;
    let peak = browser.attribute("#chart", "data-peak").await.unwrap_or_default();
    assert!(peak.parse::<f64>().unwrap_or(0.0) > 0.0, "the chart shows records per second above 0: peak {peak:?}");

    // Every number of the row is the API's.
    let listed_again = world.listed().await;
    assert_eq!(
        (listed.records_in, listed.records_out, listed.failed),
        (listed_again.records_in, listed_again.records_out, listed_again.failed)
    );
    let row = [
        ("state", "running".to_string()),
        ("revision", listed.revision.to_string()),
        ("records_in", listed.records_in.to_string()),
        ("records_out", listed.records_out.to_string()),
        ("lag", listed.lag.to_string()),
        ("failed", listed.failed.to_string()),
        ("partitions", listed.partitions.to_string()),
    ];
    for (field, expected) in row {
        let shown = browser.text(&cell(&name, field)).await.unwrap_or_default();
        assert_eq!(shown.replace(',', ""), expected, "{field} on the page and in GET /v1/pipelines");
    }
    assert_eq!(listed.failed, 1, "{listed:?}");

    // The function's own line, and why a record was dead-lettered.
    browser.wait_for_text("the function's log line", "#logs", |t| t.contains(&marker)).await;
    browser.wait_for_text("the failure's reason", "#failures", |t| t.contains("rejected record at offset")).await;
    browser.wait_for_text("the dead letter counted", r#"#errors dd[data-field="dead_letters"]"#, |t| t == "1").await;
    browser.screenshot("overview").await;

    // A reload from the page.
    let passthrough = guests::component("passthrough");
    browser.type_into("#reload-file", &passthrough.display().to_string()).await;
    browser.click("#reload-button").await;
    confirm(&browser, &format!("Reload {name} with passthrough.wasm"), &["reloaded", "revision 2"]).await;
    browser.wait_for_text("revision 2 in the detail", "#detail-revision", |t| t == "2").await;
    browser.wait_for_text("revision 2 in the table", &cell(&name, "revision"), |t| t == "2").await;
    let reloaded = world.listed().await;
    assert_eq!(reloaded.revision, 2, "{reloaded:?}");
    assert_ne!(reloaded.module, listed.module, "the new module runs: {reloaded:?}");
    browser.screenshot("reloaded").await;

    // A rollback to revision 1's module, from the page.
    browser.wait_for_text("revision 1's rollback", r#"button[data-rollback="1"]"#, |t| t.contains("Roll back")).await;
    browser.click(r#"button[data-rollback="1"]"#).await;
    confirm(&browser, "back to the module of revision 1", &["rolled back", "revision 3"]).await;
    browser.wait_for_text("revision 3 in the detail", "#detail-revision", |t| t == "3").await;
    let rolled_back = world.listed().await;
    assert_eq!((rolled_back.revision, &rolled_back.module), (3, &listed.module), "{rolled_back:?}");
    browser.screenshot("rolled-back").await;

    // A pause and a resume.
    browser.click("#pause-button").await;
    confirm(&browser, &format!("Pause {name}"), &["paused"]).await;
    world.wait_listed("paused", |p| p.state == PipelineState::Paused).await;
    browser.wait_for_text("paused in the table", &cell(&name, "state"), |t| t == "paused").await;
    // The detail (and which of its buttons is enabled) is drawn after the table: a click on a
    // button still disabled would do nothing.
    browser.wait_for_text("paused in the detail", "#detail-state", |t| t == "paused").await;
    browser.click("#resume-button").await;
    confirm(&browser, &format!("Resume {name}"), &["resumed"]).await;
    world.wait_listed("running again", |p| p.state == PipelineState::Running).await;
    browser.wait_for_text("running in the table", &cell(&name, "state"), |t| t == "running").await;
    browser.wait_for_text("running in the detail", "#detail-state", |t| t == "running").await;

    // A cancelled change changes nothing.
    browser.click("#pause-button").await;
    browser.wait_for_text("the confirmation", "#confirm-text", |t| t.contains("Pause")).await;
    browser.click("#confirm-no").await;
    browser.wait_for_text("the cancellation", "#message", |t| t == "nothing changed").await;
    assert_eq!(world.listed().await.state, PipelineState::Running);
    browser.screenshot("resumed").await;

    // A deploy from the page: a spec and a module file.
    let second = format!("{name}-b");
    let output = format!("{}-b", world.input);
    world.broker.create_topic(&output, 1);
    world.broker.create_topic(&format!("{second}.dlq"), 1);
    let spec = json!({"name": second, "inputs": [world.input], "outputs": {"default": output}});
    let textarea = browser.client().find(fantoccini::Locator::Id("deploy-spec")).await.unwrap();
    textarea.clear().await.unwrap();
    textarea.send_keys(&spec.to_string()).await.unwrap();
    browser.type_into("#deploy-file", &passthrough.display().to_string()).await;
    browser.click("#deploy-form button[type=submit]").await;
    confirm(&browser, &format!("Deploy {second} with passthrough.wasm"), &["created", &second]).await;
    browser.wait_for_text("the new pipeline's row", &cell(&second, "state"), |t| t == "running").await;
    let (client, deployed) = (world.client(), second.clone());
    let report = blocking(move || client.get_pipeline(&deployed)).await.unwrap();
    assert_eq!((report.revision, report.spec.inputs.clone()), (1, vec![world.input.clone()]), "{report:?}");
    assert_eq!(report.spec.module.to_string(), reloaded.module, "the uploaded module runs");
    browser.screenshot("deployed").await;
    browser.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_asks_for_a_token_and_shows_the_apis_refusal_of_a_read_token() {
    let (read, admin) = (format!("read-{}", unique_suffix()), format!("admin-{}", unique_suffix()));
    let world = World::start(Some((&read, &admin))).await;
    let name = world.name.clone();
    let browser = Browser::start().await;
    browser.open(&format!("{}/ui#pipeline={name}", world.serve.url())).await;

    // No token yet: the page asks for one, and shows nothing else.
    browser.wait_for_text("the sign-in form", "#login h2", |t| t == "Sign in").await;
    browser.type_into("#token", "not-a-token").await;
    browser.click("#login-form button").await;
    browser.wait_for_text("the refusal", "#login-error", |t| t.contains("the token was refused")).await;
    browser.screenshot("sign-in-refused").await;

    // The read token shows the pipeline.
    browser.type_into("#token", &read).await;
    browser.click("#login-form button").await;
    browser.wait_for_text("the pipeline's row", &cell(&name, "state"), |t| t == "running").await;

    // A pause with it is refused, with the API's own code and message, and changes nothing.
    let client = world.serve.client(Some(&read));
    let refusal = {
        let name = name.clone();
        match blocking(move || client.pause(&name)).await {
            Err(ClientError::Api(failure)) => failure,
            other => panic!("a read token may not pause: {other:?}"),
        }
    };
    assert_eq!(refusal.status, 403, "{refusal:?}");
    browser.wait_for_text("the detail", "#detail-name", |t| t == name).await;
    browser.click("#pause-button").await;
    let shown = confirm(&browser, &format!("Pause {name}"), &["refused", "403", &refusal.code]).await;
    assert!(shown.contains(&refusal.message), "the API's message {:?} on the page: {shown:?}", refusal.message);
    assert_eq!(world.listed().await.state, PipelineState::Running);
    browser.screenshot("read-token-refused").await;

    // Signing out forgets the token.
    browser.click("#sign-out").await;
    browser.wait_for_text("the sign-in form again", "#login h2", |t| t == "Sign in").await;
    browser.close().await;
}
