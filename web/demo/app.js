// The demo page: everything goes through the gateway's public API with a browser token
// taken from the URL fragment (#token=ept_…), which a backend minted (`make dev` prints one).
const params = new URLSearchParams(location.hash.slice(1));
const token = params.get("token") ?? "";
const gateway = params.get("gateway") ?? location.origin;
const model = params.get("model") ?? "demo";
const base = `${gateway}/models/${model}/production`;
const TERMINAL = new Set(["SUCCEEDED", "FAILED", "EXPIRED", "CANCELED", "WEBHOOK_FAILED"]);
const $ = (id) => document.getElementById(id);
document.getElementById("model").textContent = model;

async function call(method, url, body) {
  const response = await fetch(url, {
    method,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* a model may answer non-JSON */ }
  return { status: response.status, ok: response.ok, json, text };
}

function showError(what, answer) {
  const detail = answer.json?.message ?? answer.text ?? String(answer);
  $("error").textContent = `${what}: ${answer.status ?? ""} ${detail}`;
}

function input() {
  try { return JSON.parse($("input").value); } catch (e) { $("error").textContent = `input is not JSON: ${e.message}`; throw e; }
}

async function wake() {
  try {
    const answer = await call("POST", `${base}/wake`);
    $("wake-status").textContent = answer.status === 202 ? "requested (202)" : `refused (${answer.status})`;
    if (!answer.ok) showError("wake", answer);
  } catch (e) { $("wake-status").textContent = "unreachable"; $("error").textContent = `wake: ${e.message}`; }
}

$("predict").addEventListener("click", async () => {
  $("error").textContent = "";
  $("predict-output").textContent = "…";
  try {
    const answer = await call("POST", `${base}/predict`, input());
    $("predict-output").textContent = answer.text;
    if (!answer.ok) showError("predict", answer);
  } catch (e) { $("predict-output").textContent = "–"; $("error").textContent ||= `predict: ${e.message}`; }
});

$("submit").addEventListener("click", async () => {
  $("error").textContent = "";
  try {
    const answer = await call("POST", `${base}/async_predict`, { model_input: input() });
    if (answer.status !== 201) return showError("submit", answer);
    addJob(answer.json.request_id);
  } catch (e) { $("error").textContent ||= `submit: ${e.message}`; }
});

// The chat panel: `stream: true`, and the Server-Sent Events read as they arrive, each
// `data:` event's delta appended at once (no waiting for the end of the answer).
$("chat-send").addEventListener("click", async () => {
  $("error").textContent = "";
  $("chat-output").textContent = "";
  $("chat-status").textContent = "streaming…";
  try {
    const body = { model, stream: true, messages: [{ role: "user", content: $("chat-input").value }],
      ...JSON.parse($("chat-extra").value || "{}") };
    const response = await fetch(`${base}/sync/v1/chat/completions`, {
      method: "POST",
      headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
      body: JSON.stringify(body),
    });
    if (!response.ok) {
      const text = await response.text();
      let json = null;
      try { json = JSON.parse(text); } catch { /* not JSON */ }
      $("chat-status").textContent = "failed";
      return showError("chat", { status: response.status, json, text });
    }
    const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += value;
      const events = pending.split("\n\n");
      pending = events.pop();
      for (const event of events) {
        const data = event.split("\n").filter((l) => l.startsWith("data: ")).map((l) => l.slice(6)).join("\n");
        if (!data) continue;
        if (data === "[DONE]") { $("chat-status").textContent = "done"; continue; }
        const delta = JSON.parse(data).choices?.[0]?.delta?.content;
        if (delta) $("chat-output").textContent += delta;
      }
    }
    if ($("chat-status").textContent !== "done") $("chat-status").textContent = "ended early";
  } catch (e) { $("chat-status").textContent = "failed"; $("error").textContent ||= `chat: ${e.message}`; }
});

function addJob(id) {
  const row = document.createElement("tr");
  row.id = `job-${id}`;
  row.innerHTML = `<td><code>${id}</code></td><td class="status">QUEUED</td><td class="result"></td>
    <td class="usage"></td><td><button class="cancel">Cancel</button></td>`;
  row.querySelector(".cancel").addEventListener("click", () => cancel(id, row));
  $("jobs").prepend(row);
  poll(id, row);
}

function render(row, job) {
  const status = row.querySelector(".status");
  status.textContent = job.status + (job.cancel_requested && !TERMINAL.has(job.status) ? " (cancel requested)" : "");
  status.className = `status status-${job.status}`;
  const errors = job.errors?.map((e) => `${e.code}: ${e.message}`).join("; ");
  row.querySelector(".result").textContent = job.output !== undefined ? JSON.stringify(job.output)
    : errors || (job.status === "CANCELED" ? "canceled before it ran" : "");
  const u = job.usage;
  row.querySelector(".usage").textContent = u
    ? `queued ${u.time_queued_ms} ms, ran ${u.time_in_progress_ms} ms, cost ≈ ${u.cost_estimate}` : "";
  row.querySelector(".cancel").disabled = TERMINAL.has(job.status);
}

// The result channel: a long-poll (`?wait=2`: the gateway answers as soon as the job ends,
// or after 2 s with its current state, so the page shows QUEUED → IN_PROGRESS live).
async function poll(id, row) {
  while (true) {
    const answer = await call("GET", `${gateway}/async_request/${id}?wait=2`);
    if (!answer.ok) return showError("status", answer);
    render(row, answer.json);
    if (TERMINAL.has(answer.json.status)) return;
  }
}

async function cancel(id, row) {
  const answer = await call("DELETE", `${gateway}/async_request/${id}`);
  if (!answer.ok) return showError("cancel", answer);
  row.dataset.canceled = String(answer.json.canceled);
  row.querySelector(".result").textContent = answer.json.message;
}

if (!token) $("error").textContent = "no browser token: open this page as …/demo/#token=ept_… (make dev prints the link)";
else wake();
