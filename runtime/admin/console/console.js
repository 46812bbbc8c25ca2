// The Sluice console: a page over the admin API, nothing else. Every number it shows is read
// from the API every REFRESH_MS, and every change it makes is one API call, confirmed first,
// whose answer (or error, with the API's code and message) is shown as it came.
//
// Everything a pipeline, a function or a node wrote is put in the page as text, never as markup.
"use strict";

const REFRESH_MS = 2000;
// The throughput chart keeps this much history, from the samples this page took.
const HISTORY_MS = 5 * 60 * 1000;
const LOG_LINES = 100;
const FAILURE_LINES = 20;
const TOKEN_KEY = "sluice-token";

const $ = (id) => document.getElementById(id);
const view = {
  token: sessionStorage.getItem(TOKEN_KEY),
  selected: new URLSearchParams(location.hash.slice(1)).get("pipeline"),
  // Samples of each pipeline's counters, { t, records_in, records_out }, oldest first.
  history: new Map(),
  timer: null,
  // A read is under way; another was asked for meanwhile.
  refreshing: false,
  again: false,
};

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
  toString() {
    return `${this.status} ${this.code}: ${this.message}`;
  }
}

/** One call of the admin API; throws an ApiError carrying the API's code and message. */
async function api(method, path, body, contentType) {
  const headers = {};
  if (view.token) headers.Authorization = `Bearer ${view.token}`;
  if (contentType) headers["Content-Type"] = contentType;
  let response;
  try {
    response = await fetch(path, { method, headers, body, cache: "no-store" });
  } catch (e) {
    throw new ApiError(0, "unreachable", `the runtime did not answer (${e.message})`);
  }
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch (_) {
    data = null;
  }
  if (!response.ok) {
    const error = data && data.error;
    throw new ApiError(response.status, error ? error.code : "http", error ? error.message : text);
  }
  return data;
}

const enc = encodeURIComponent;

// ---- building the page, as text only ----

function el(tag, text, attributes) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes || {})) node.setAttribute(name, value);
  return node;
}

function row(cells, attributes) {
  const tr = el("tr", null, attributes);
  for (const cell of cells) {
    if (cell instanceof Node) {
      const td = el("td");
      td.append(cell);
      tr.append(td);
    } else if (Array.isArray(cell)) {
      tr.append(el("td", cell[1], { "data-field": cell[0] }));
    } else {
      tr.append(el("td", cell));
    }
  }
  return tr;
}

function fill(tbody, rows) {
  tbody.replaceChildren(...rows);
}

function definitions(dl, pairs) {
  const nodes = [];
  for (const [term, value, field] of pairs) {
    nodes.push(el("dt", term), el("dd", value, field ? { "data-field": field } : {}));
  }
  dl.replaceChildren(...nodes);
}

const number = (n) => (n === null || n === undefined ? "–" : Number(n).toLocaleString("en-US"));
const rate = (r) => (r === null ? "–" : r < 10 ? r.toFixed(1) : Math.round(r).toLocaleString("en-US"));
const shortDigest = (d) => (d || "").replace(/^sha256:/, "").slice(0, 12);

function duration(nanos) {
  if (nanos === null) return "–";
  if (nanos < 1e3) return `${nanos} ns`;
  if (nanos < 1e6) return `${(nanos / 1e3).toFixed(1)} µs`;
  return `${(nanos / 1e6).toFixed(2)} ms`;
}

function say(text, isError) {
  const message = $("message");
  message.textContent = text;
  message.className = isError ? "error" : "ok";
}

// ---- throughput ----

function sample(pipelines) {
  const now = Date.now();
  for (const p of pipelines) {
    const samples = view.history.get(p.name) || [];
    samples.push({ t: now, records_in: p.records_in, records_out: p.records_out });
    while (samples.length > 2 && now - samples[0].t > HISTORY_MS) samples.shift();
    view.history.set(p.name, samples);
  }
  for (const name of view.history.keys()) {
    if (!pipelines.some((p) => p.name === name)) view.history.delete(name);
  }
}

/** Records per second between consecutive samples: [{ t, in, out }]. */
function rates(name) {
  const samples = view.history.get(name) || [];
  const points = [];
  for (let i = 1; i < samples.length; i++) {
    const seconds = (samples[i].t - samples[i - 1].t) / 1000;
    if (seconds <= 0) continue;
    points.push({
      t: samples[i].t,
      in: Math.max(0, samples[i].records_in - samples[i - 1].records_in) / seconds,
      out: Math.max(0, samples[i].records_out - samples[i - 1].records_out) / seconds,
    });
  }
  return points;
}

function latestRates(name) {
  const points = rates(name);
  return points.length ? points[points.length - 1] : { in: null, out: null };
}

function drawChart(name) {
  const svg = $("chart");
  const points = rates(name);
  const max = Math.max(1, ...points.map((p) => Math.max(p.in, p.out)));
  const now = Date.now();
  const line = (key, cls) => {
    const polyline = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
    const coordinates = points.map((p) => {
      const x = 600 - ((now - p.t) / HISTORY_MS) * 600;
      const y = 115 - (p[key] / max) * 110;
      return `${x.toFixed(1)},${y.toFixed(1)}`;
    });
    polyline.setAttribute("points", coordinates.join(" "));
    polyline.setAttribute("class", cls);
    return polyline;
  };
  svg.replaceChildren(line("in", "in"), line("out", "out"));
  svg.setAttribute("data-points", String(points.length));
  svg.setAttribute("data-peak", String(Math.max(0, ...points.map((p) => Math.max(p.in, p.out)))));
  $("chart-max").textContent = points.length ? `top of the chart: ${rate(max)}/s` : "collecting samples…";
}

// ---- the pipelines' table ----

function renderPipelines(pipelines) {
  $("no-pipelines").hidden = pipelines.length > 0;
  const rows = pipelines.map((p) => {
    const latest = latestRates(p.name);
    const link = el("a", p.name, { href: `#pipeline=${enc(p.name)}` });
    const tr = row(
      [
        link,
        ["state", p.state],
        ["revision", p.revision],
        ["records_in", number(p.records_in)],
        ["records_out", number(p.records_out)],
        ["in_per_second", rate(latest.in)],
        ["out_per_second", rate(latest.out)],
        ["lag", number(p.lag)],
        ["failed", number(p.failed)],
        ["partitions", p.partitions],
      ],
      { "data-pipeline": p.name, class: p.name === view.selected ? "selected" : "" },
    );
    tr.cells[1].className = `state ${p.state}`;
    return tr;
  });
  fill($("pipelines").tBodies[0], rows);
}

// ---- one pipeline ----

function renderDetail(report, logs, failures) {
  const status = report.status;
  $("detail").hidden = false;
  $("detail").setAttribute("data-pipeline", report.name);
  $("detail-name").textContent = report.name;
  $("detail-state").textContent = report.state;
  $("detail-state").className = `state ${report.state}`;
  $("detail-revision").textContent = report.revision;
  $("detail-error").textContent = [report.error, status.stalled, report.offsets_error].filter(Boolean).join("; ");
  $("pause-button").disabled = report.state === "paused";
  $("resume-button").disabled = report.state === "running";

  drawChart(report.name);

  definitions($("errors"), [
    ["failed records", number(status.failed), "failed"],
    ["dead letters", number(status.dead_letters), "dead_letters"],
    ["skipped", number(status.skipped), "skipped"],
    ["broker outages", number(status.broker_outages), "broker_outages"],
    ["failed produce attempts", number(status.delivery_failures), "delivery_failures"],
    ["consume errors", number(status.consume_errors), "consume_errors"],
    ["failed partition setups", number(status.setup_failures), "setup_failures"],
    ["worker crashes", number(status.worker_crashes), "worker_crashes"],
    ["failed commits", number(status.commit_failures) + (status.last_commit_error ? ` (${status.last_commit_error})` : ""), "commit_failures"],
    ["last error", status.last_error || "none", "last_error"],
  ]);
  fill($("failures"), failures.map(logLine));

  const cache = status.cache;
  const stats = cache.stats;
  const lookups = stats.hits + stats.misses;
  const latency = stats.latency.count ? Math.round(stats.latency.total_nanos / stats.latency.count) : null;
  definitions($("cache"), [
    ["backend", `${cache.backend} (namespace ${cache.namespace})`],
    ["hit ratio", lookups ? `${((100 * stats.hits) / lookups).toFixed(1)} % of ${number(lookups)}` : "no lookups yet", "hit_ratio"],
    ["mean latency", duration(latency), "latency"],
    ["writes", number(stats.writes)],
    ["unavailable / timeouts / errors", `${number(stats.unavailable)} / ${number(stats.timeouts)} / ${number(stats.errors)}`],
    ["outages", number(stats.outages) + (stats.unavailable_for_ms ? `, down for ${Math.round(stats.unavailable_for_ms / 1000)} s` : "")],
  ]);

  fill(
    $("partitions").tBodies[0],
    status.partitions.map((p) =>
      row(
        [p.topic, p.partition, number(p.next_offset), ["lag", number(p.lag)], ["revision", p.revision ?? "–"], ["state", p.state === "blocked" ? `blocked at offset ${p.offset}` : p.state]],
        { "data-partition": `${p.topic}/${p.partition}` },
      ),
    ),
  );

  fill(
    $("nodes").tBodies[0],
    (report.nodes || []).map((n) =>
      row(
        [
          n.node,
          n.state,
          ["revision", n.revision],
          n.pipeline_state,
          n.partitions.map((p) => `${p.topic}/${p.partition}` + (p.revision != null ? ` (revision ${p.revision})` : "")).join(", ") || "none",
          number(n.records_in),
          number(n.lag),
        ],
        { "data-node": n.node },
      ),
    ),
  );

  fill(
    $("revisions").tBodies[0],
    report.revisions
      .slice()
      .reverse()
      .map((r) => {
        const current = r.revision === report.revision;
        const action = current
          ? el("span", "running", { class: "muted" })
          : el("button", `Roll back to ${r.revision}`, { type: "button", "data-rollback": String(r.revision) });
        return row(
          [r.revision, r.cause + (r.superseded ? " (superseded)" : ""), el("code", shortDigest(r.module), { title: r.module }),
            new Date(r.deployed_at * 1000).toLocaleString(), action],
          { "data-revision": String(r.revision) },
        );
      }),
  );

  fill($("logs"), logs.map(logLine));
}

function logLine(entry) {
  const where = entry.partition !== undefined ? ` ${entry.topic}/${entry.partition}` : "";
  const at = entry.offset !== undefined ? `@${entry.offset}` : "";
  const li = el("li", null, { class: entry.level });
  li.append(
    el("time", entry.time.replace("T", " ").replace(/\.\d+Z$/, "Z")),
    el("span", ` ${entry.level} ${entry.source}${where}${at} `, { class: "muted" }),
    el("span", entry.message),
  );
  return li;
}

// ---- the refresh loop ----

/** Reads everything shown, then again every REFRESH_MS; one read at a time. */
async function refresh() {
  if (view.refreshing) {
    view.again = true;
    return;
  }
  view.refreshing = true;
  clearTimeout(view.timer);
  const polling = await load().finally(() => {
    view.refreshing = false;
  });
  if (view.again) {
    view.again = false;
    refresh();
  } else if (polling) {
    view.timer = setTimeout(refresh, REFRESH_MS);
  }
}

/** One read of what the page shows; false when the page waits for a token instead. */
async function load() {
  try {
    const [list, cluster] = await Promise.all([api("GET", "/v1/pipelines"), api("GET", "/v1/cluster")]);
    showConsole();
    const pipelines = list.pipelines;
    sample(pipelines);
    renderPipelines(pipelines);
    const nodes = cluster.nodes.filter((n) => n.state === "up").length;
    $("node").textContent = cluster.cluster ? `node ${cluster.node}, one of ${nodes} up` : `node ${cluster.node}`;
    if (view.selected && pipelines.some((p) => p.name === view.selected)) {
      const path = `/v1/pipelines/${enc(view.selected)}`;
      const [report, logs, failures] = await Promise.all([
        api("GET", path),
        api("GET", `${path}/logs?limit=${LOG_LINES}`),
        api("GET", `${path}/logs?level=warn&limit=${FAILURE_LINES}`),
      ]);
      renderDetail(report, logs.entries, failures.entries.filter((e) => e.source === "failure"));
    } else {
      $("detail").hidden = true;
    }
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    if (e.status === 401) {
      showLogin(view.token ? `the token was refused: ${e.message}` : "");
      return false;
    }
    $("updated").textContent = `not updated: ${e}`;
  }
  return true;
}

function showConsole() {
  $("login").hidden = true;
  $("console").hidden = false;
  $("sign-out").hidden = !view.token;
}

function showLogin(error) {
  $("console").hidden = true;
  $("login").hidden = false;
  $("sign-out").hidden = true;
  $("login-error").textContent = error;
  $("token").focus();
}

// ---- changes: each confirmed, then one call ----

function confirmThen(text, change) {
  const dialog = $("confirm");
  $("confirm-text").textContent = text;
  const yes = $("confirm-yes");
  const no = $("confirm-no");
  const done = () => {
    yes.onclick = null;
    no.onclick = null;
    dialog.close();
  };
  yes.onclick = async () => {
    done();
    try {
      say(await change(), false);
    } catch (e) {
      say(e instanceof ApiError ? `refused: ${e}` : String(e), true);
    }
    refresh();
  };
  no.onclick = () => {
    done();
    say("nothing changed", false);
  };
  dialog.showModal();
}

function changed(name, summary, what) {
  return `${name}: ${what}; now ${summary.state} at revision ${summary.revision} (module ${shortDigest(summary.module)})`;
}

function wire() {
  window.addEventListener("hashchange", () => {
    view.selected = new URLSearchParams(location.hash.slice(1)).get("pipeline");
    refresh();
  });

  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    view.token = $("token").value.trim();
    sessionStorage.setItem(TOKEN_KEY, view.token);
    $("token").value = "";
    refresh();
  });
  $("sign-out").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    view.token = null;
    refresh();
  });

  $("pause-button").addEventListener("click", () => {
    const name = view.selected;
    confirmThen(`Pause ${name}? It stops consuming and commits what it processed; resume starts it from there.`, async () =>
      changed(name, await api("POST", `/v1/pipelines/${enc(name)}/pause`), "paused"),
    );
  });
  $("resume-button").addEventListener("click", () => {
    const name = view.selected;
    confirmThen(`Resume ${name} from its committed offsets?`, async () =>
      changed(name, await api("POST", `/v1/pipelines/${enc(name)}/resume`), "resumed"),
    );
  });
  $("reload-button").addEventListener("click", () => {
    const name = view.selected;
    const file = $("reload-file").files[0];
    if (!file) {
      say("choose the new module's .wasm file first", true);
      return;
    }
    confirmThen(
      `Reload ${name} with ${file.name} (${number(file.size)} bytes)? Each partition switches between two batches: no record is lost or processed twice.`,
      async () => {
        const answer = await api("POST", `/v1/pipelines/${enc(name)}/reload`, file, "application/wasm");
        $("reload-file").value = "";
        const superseded = answer.superseded ? `, superseding revision ${answer.superseded}` : "";
        return changed(name, answer, answer.applied + superseded);
      },
    );
  });
  $("revisions").addEventListener("click", (event) => {
    const revision = event.target.getAttribute && event.target.getAttribute("data-rollback");
    if (!revision) return;
    const name = view.selected;
    confirmThen(`Roll ${name} back to the module of revision ${revision}? It runs as a new revision, switched between two batches.`, async () => {
      const answer = await api("POST", `/v1/pipelines/${enc(name)}/rollback`, JSON.stringify({ revision: Number(revision) }), "application/json");
      return changed(name, answer, `rolled back to the module of revision ${revision}`);
    });
  });
  $("deploy-form").addEventListener("submit", (event) => {
    event.preventDefault();
    let spec;
    try {
      spec = JSON.parse($("deploy-spec").value);
    } catch (e) {
      say(`the spec is not JSON: ${e.message}`, true);
      return;
    }
    const file = $("deploy-file").files[0];
    confirmThen(`Deploy ${spec.name || "(no name)"} with ${file.name} (${number(file.size)} bytes)?`, async () => {
      const form = new FormData();
      form.append("spec", new Blob([JSON.stringify(spec)], { type: "application/json" }));
      form.append("module", file);
      const answer = await api("POST", "/v1/deploy", form);
      location.hash = `pipeline=${enc(answer.pipeline.name)}`;
      return changed(answer.pipeline.name, answer.pipeline, answer.result);
    });
  });
}

wire();
refresh();
