"""The personalization page: static HTML and one inline script. Prompts and responses arrive as JSON and are
put in with textContent; the only markup inserted is the bar chart, an SVG the server builds from numbers
and escaped pole labels."""

PERSONALIZE_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Your preferences</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
main{max-width:1100px;margin:0 auto;padding:16px 20px 40px}
header{display:flex;align-items:center;gap:16px;margin-bottom:12px}
h1{font-size:20px;margin:0;flex:1}
#progress{font-size:14px;color:#4a5568}
.box{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 14px;margin-bottom:12px}
.label{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7280;margin-bottom:4px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.text{white-space:pre-wrap;word-wrap:break-word;line-height:1.45}
button{padding:7px 16px;margin-right:8px;border:1px solid #b8c0cc;background:#fff;border-radius:6px;cursor:pointer;font-size:14px}
button.primary{background:#3b6fd8;color:#fff;border-color:#3b6fd8}
table{border-collapse:collapse}td,th{padding:4px 10px;border-top:1px solid #eef0f3;text-align:left}
#error{color:#b42318;min-height:1em;margin:6px 0}
.hidden{display:none}
.keys{font-size:12px;color:#6b7280;margin-top:8px}
</style></head>
<body><main>
<header><h1>Which answer do you prefer?</h1><div id="progress"></div></header>
<div id="error" role="alert"></div>
<section id="ask" class="hidden">
  <div class="box"><div class="label">Prompt</div><div id="prompt" class="text"></div></div>
  <div class="pair">
    <div class="box"><div class="label">Answer A</div><div id="answer-a" class="text"></div></div>
    <div class="box"><div class="label">Answer B</div><div id="answer-b" class="text"></div></div>
  </div>
  <div class="box">
    <button id="choose-A" class="primary">A is better</button><button id="choose-TIE">About the same</button>
    <button id="choose-B" class="primary">B is better</button><button id="stop">Stop here and see my result</button>
    <div class="keys">Keys: A, T (same), B; S stops.</div>
  </div>
</section>
<section id="working" class="box hidden">Fitting your weights and writing a response with them…</section>
<section id="result" class="hidden">
  <div class="box"><div class="label">Your inferred weights (from <span id="n-answers"></span> answers)</div>
    <div id="chart"></div>
    <table id="weights"><thead><tr><th>pole</th><th>what it asks for</th><th>weight</th><th>± sd</th></tr></thead><tbody></tbody></table>
    <p>Saved to <code id="user-file"></code>: <code id="generate-cmd"></code></p></div>
  <div class="box"><div class="label">A response decoded with your weights (<span id="method"></span>)</div>
    <div class="label">Prompt</div><div id="result-prompt" class="text"></div>
    <div class="label" style="margin-top:8px">Response</div><div id="response" class="text"></div></div>
</section>
</main>
<script>
"use strict";
const token = new URLSearchParams(location.search).get("token") || "";
const $ = (id) => document.getElementById(id);
let question = null, busy = false;

async function api(path, body) {
  const opts = {headers: {"X-Study-Token": token}};
  if (body !== undefined) {
    opts.method = "POST";
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  const data = await r.json().catch(() => ({error: "the server answered " + r.status}));
  if (!r.ok) throw new Error(data.error || data.detail || ("error " + r.status));
  return data;
}

function show(s) {
  $("error").textContent = "";
  $("progress").textContent = s.answered + " of " + s.questions + " answered";
  question = s.question;
  $("ask").classList.toggle("hidden", !question);
  if (question) {
    $("prompt").textContent = question.prompt;
    $("answer-a").textContent = question.a;
    $("answer-b").textContent = question.b;
    return;
  }
  if (!s.result) { finish(); return; }
  const r = s.result;
  $("working").classList.add("hidden");
  $("result").classList.remove("hidden");
  $("chart").innerHTML = r.chart;  // built by the server from numbers and escaped labels
  $("n-answers").textContent = r.n_answers;
  const body = $("weights").querySelector("tbody");
  body.replaceChildren();
  for (const [pole, w] of Object.entries(r.mixture)) {
    const tr = document.createElement("tr");
    for (const v of [pole, r.pole_texts[pole] || "", w.toFixed(2), r.mixture_sd[pole].toFixed(2)]) {
      const td = document.createElement("td");
      td.textContent = v;
      tr.appendChild(td);
    }
    body.appendChild(tr);
  }
  $("user-file").textContent = r.user_file;
  $("generate-cmd").textContent = "rlphf generate preference=@" + r.user_file;
  const resp = r.response || {};
  $("method").textContent = resp.method || "none";
  $("result-prompt").textContent = resp.prompt || "";
  $("response").textContent = resp.error ? ("No response: " + resp.error) : resp.text;
}

async function act(fn) {
  if (busy) return;
  busy = true;
  try { show(await fn()); } catch (e) { $("error").textContent = e.message; } finally { busy = false; }
}
function choose(choice) {
  if (!question) return;
  const id = question.id;
  act(() => api("/api/answer", {question: id, choice: choice}));
}
async function finish() {
  $("ask").classList.add("hidden");
  $("working").classList.remove("hidden");
  busy = false;
  act(() => api("/api/finish", {}));
}
for (const c of ["A", "B", "TIE"]) $("choose-" + c).addEventListener("click", () => choose(c));
$("stop").addEventListener("click", () => { if (!busy) finish(); });
document.addEventListener("keydown", (e) => {
  if (!question || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === "a") choose("A"); else if (k === "b") choose("B"); else if (k === "t") choose("TIE");
  else if (k === "s") finish();
});
act(() => api("/api/state"));
</script>
</body></html>
"""
