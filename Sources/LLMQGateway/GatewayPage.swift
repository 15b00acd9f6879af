/// The page served at `/`: a prompt box, a model picker filled from /v1/models, and the answer
/// streamed with EventSource from /v1/requests/{id}/events. The request id, the last event id and
/// the text so far live in sessionStorage, so a reload picks the stream up where it was
/// (`last_event_id`) without repeating text. A gateway with API keys takes one from the
/// address (`/#key=KEY`); it is sent as a Bearer header, and as `api_key` to EventSource,
/// which cannot send headers.
enum GatewayPage {
    static let html = #"""
    <!doctype html>
    <html lang="en">
    <head>
    <meta charset="utf-8">
    <title>llmq gateway</title>
    <style>
      body { font: 15px/1.5 system-ui, sans-serif; max-width: 46rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
      textarea { width: 100%; height: 5rem; font: inherit; }
      #answer { white-space: pre-wrap; border: 1px solid #ccc; border-radius: 6px; padding: .75rem; min-height: 6rem; background: #fafafa; }
      #status { color: #666; font-size: 13px; }
    </style>
    </head>
    <body>
    <h1>llmq gateway</h1>
    <form id="form">
      <label>Model <select id="model"></select></label>
      <textarea id="prompt" placeholder="Ask something">Tell me about Redis streams.</textarea>
      <button id="send" type="submit">Send</button>
    </form>
    <p id="status">idle</p>
    <div id="answer"></div>
    <script>
    const $ = (id) => document.getElementById(id);
    const store = window.sessionStorage;
    const key = new URLSearchParams(location.hash.slice(1)).get("key") || "";
    const auth = key ? { "Authorization": "Bearer " + key } : {};
    function setStatus(s) { $("status").textContent = s; $("status").dataset.state = s; }
    async function loadModels() {
      const r = await fetch("/v1/models", { headers: auth });
      if (!r.ok) { setStatus("error: " + (await r.json()).error.message); return; }
      const list = await r.json();
      for (const m of list.data) {
        const o = document.createElement("option");
        o.value = m.id; o.textContent = m.id; $("model").appendChild(o);
      }
      $("model").dataset.loaded = "true";
    }
    function follow(id) {
      const last = store.getItem("llmq.last") || "";
      const url = "/v1/requests/" + encodeURIComponent(id) + "/events" + "?last_event_id=" + encodeURIComponent(last) + (key ? "&api_key=" + encodeURIComponent(key) : "");
      const es = new EventSource(url);
      setStatus("streaming");
      es.onmessage = (m) => {
        const e = JSON.parse(m.data);
        if (e.type === "retry") { store.setItem("llmq.text", ""); $("answer").textContent = ""; }
        if (e.type === "chunk") {
          $("answer").textContent += e.text;
          store.setItem("llmq.text", $("answer").textContent);
        }
        store.setItem("llmq.last", m.lastEventId);
        if (e.type === "done" || e.type === "error") {
          es.close();
          store.removeItem("llmq.id");
          setStatus(e.type === "done" ? "done" : "error: " + e.message);
        }
      };
      es.onerror = () => { if (es.readyState === EventSource.CLOSED) setStatus("disconnected"); };
    }
    $("form").onsubmit = async (ev) => {
      ev.preventDefault();
      $("answer").textContent = "";
      store.setItem("llmq.text", ""); store.setItem("llmq.last", "");
      const job = { model: $("model").value, messages: [{ role: "user", content: $("prompt").value }], metadata: { source: "browser" } };
      const r = await fetch("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json", ...auth }, body: JSON.stringify(job) });
      const body = await r.json();
      if (!r.ok) { setStatus("error: " + body.error.message); return; }
      store.setItem("llmq.id", body.id);
      $("answer").dataset.request = body.id;
      follow(body.id);
    };
    loadModels();
    const pending = store.getItem("llmq.id");
    if (pending) {
      $("answer").textContent = store.getItem("llmq.text") || "";
      $("answer").dataset.request = pending;
      follow(pending);
    }
    </script>
    </body>
    </html>
    """#
}
