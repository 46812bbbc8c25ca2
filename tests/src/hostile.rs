//! A pipeline of the hostile test guest on a real broker: tansu, a `sluice serve` process, and
//! the guest deployed on a one-partition input (so offsets are the order records were produced
//! in), dead-lettering its failures. The function log's and the console's tests start from it.

use serde_json::json;
use sluice::api::AdminClient;

use crate::guests;
use crate::kafka::{TansuBroker, produce, unique_suffix};
use crate::process::ServeProcess;

/// The broker, the runtime and the pipeline `name` reading `input`.
pub struct HostilePipeline {
    /// The broker.
    pub broker: TansuBroker,
    /// The runtime.
    pub serve: ServeProcess,
    /// The pipeline.
    pub name: String,
    /// Its one-partition input topic.
    pub input: String,
    /// The token [`HostilePipeline::client`] sends: the admin token when the runtime has tokens.
    pub token: Option<String>,
    _dir: tempfile::TempDir,
}

impl HostilePipeline {
    /// Starts everything, the pipeline named `<prefix>-<unique suffix>`. With `tokens` (read,
    /// admin) the runtime requires them.
    pub async fn start(prefix: &str, tokens: Option<(&str, &str)>) -> HostilePipeline {
        let broker = TansuBroker::start();
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = match tokens {
            Some((read, admin)) => vec![("SLUICE_READ_TOKEN", read), ("SLUICE_ADMIN_TOKEN", admin)],
            None => Vec::new(),
        };
        let serve = ServeProcess::start_with_env(&broker.bootstrap(), &dir.path().join("data"), &[], &env);
        let token = tokens.map(|(_, admin)| admin.to_owned());
        let id = unique_suffix();
        let (name, input, output) = (format!("{prefix}-{id}"), format!("in-{id}"), format!("out-{id}"));
        broker.create_topic(&input, 1);
        broker.create_topic(&output, 1);
        broker.create_topic(&format!("{name}.dlq"), 1);
        let spec = json!({
            "name": name,
            "inputs": [input],
            "outputs": { "default": output },
            "processing": { "linger_ms": 5, "batch_size": 100, "max_retries": 0 }
        });
        let module = guests::component("hostile");
        let client = serve.client(token.as_deref());
        tokio::task::spawn_blocking(move || client.deploy(&spec, &module, &mut |_, _| {}))
            .await
            .unwrap()
            .expect("deploy");
        HostilePipeline { broker, serve, name, input, token, _dir: dir }
    }

    /// Produces `values` to the input, in order.
    pub async fn produce(&self, values: &[String]) {
        let records: Vec<_> = values.iter().map(|v| (0, None, v.as_bytes(), &[][..])).collect();
        produce(&self.broker.bootstrap(), &self.input, &records).await;
    }

    /// A client of the runtime's API, with [`HostilePipeline::token`].
    pub fn client(&self) -> AdminClient {
        self.serve.client(self.token.as_deref())
    }
}
