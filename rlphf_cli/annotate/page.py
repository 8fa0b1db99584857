"""The study page: static HTML and one inline script. Every text from the run (prompts, responses,
preference texts) arrives as JSON and is put in with textContent, so none of it is ever read as HTML."""

STUDY_PAGE = r"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>Which response is better?</title>
<style>
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f4f5f7;color:#1d2433}
main{max-width:1100px;margin:0 auto;padding:16px 20px 40px}
header{display:flex;align-items:center;gap:16px;margin-bottom:12px}
h1{font-size:20px;margin:0;flex:1}
#progress{font-size:14px;color:#4a5568;white-space:nowrap}
.bar{height:6px;background:#dde1e7;border-radius:3px;margin-bottom:14px;overflow:hidden}
.bar>div{height:100%;background:#3b6fd8;width:0}
.box{background:#fff;border:1px solid #dde1e7;border-radius:8px;padding:12px 14px;margin-bottom:12px}
.label{font-size:12px;text-transform:uppercase;letter-spacing:.05em;color:#6b7280;margin-bottom:4px}
#preference{margin:0;padding-left:18px}
.pair{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.response{white-space:pre-wrap;word-wrap:break-word;line-height:1.45;min-height:60px}
table{border-collapse:collapse;width:100%}
td{padding:6px 8px;border-top:1px solid #eef0f3;vertical-align:middle}
tr.active td{background:#eef3fd}
td.crit{width:60%}
button.choice{min-width:64px;padding:6px 10px;margin-right:6px;border:1px solid #b8c0cc;background:#fff;border-radius:6px;cursor:pointer;font-size:14px}
button.choice.on{background:#3b6fd8;color:#fff;border-color:#3b6fd8}
.row{display:flex;gap:16px;align-items:center;flex-wrap:wrap}
#rationale{flex:1;min-width:240px;padding:6px 8px;border:1px solid #b8c0cc;border-radius:6px;font-size:14px}
#submit{padding:8px 18px;font-size:15px;border-radius:6px;border:0;background:#1f7a4d;color:#fff;cursor:pointer}
#submit:disabled{background:#9bb5a8;cursor:default}
.keys{font-size:12px;color:#6b7280;margin-top:8px}
kbd{border:1px solid #c5cbd3;border-bottom-width:2px;border-radius:3px;padding:0 4px;font-size:11px;background:#fafafa}
#error{color:#b42318;min-height:1em;margin:6px 0}
.hidden{display:none}
</style></head>
<body><main>
<header><h1>Which response is better?</h1><div id="progress"></div></header>
<div class="bar"><div id="bar"></div></div>
<div id="error" role="alert"></div>
<section id="login" class="box hidden">
  <div class="label">Your rater id</div>
  <div class="row"><input id="rater-input" maxlength="64" autocomplete="off"><button id="start" class="choice">Start</button></div>
</section>
<section id="study" class="hidden">
  <div class="box"><div class="label">The user wants a response that</div><ul id="preference"></ul></div>
  <div class="box"><div class="label">Prompt</div><div id="prompt" class="response"></div></div>
  <div class="pair">
    <div class="box"><div class="label">Response A</div><div id="response-a" class="response"></div></div>
    <div class="box"><div class="label">Response B</div><div id="response-b" class="response"></div></div>
  </div>
  <div class="box"><div class="label">Which response better meets each criterion?</div><table id="criteria"></table></div>
  <div class="box"><div class="row">
    <label><input type="checkbox" id="both-bad"> Both responses are bad</label>
    <input id="rationale" maxlength="300" placeholder="Why? (optional, one line)" autocomplete="off">
    <button id="submit" disabled>Submit</button>
  </div>
  <div class="keys"><kbd>A</kbd> <kbd>T</kbd> <kbd>B</kbd> answer the highlighted row and move on ·
  <kbd>1</kbd>–<kbd>9</kbd> or <kbd>↑</kbd><kbd>↓</kbd> pick a row · <kbd>X</kbd> both bad ·
  <kbd>R</kbd> rationale · <kbd>Enter</kbd> submit</div></div>
</section>
<section id="done" class="box hidden"><h2>Thank you!</h2><p id="done-text"></p><p><a id="completion" class="hidden">Finish the study</a></p></section>
</main>
<script>
"use strict";
const params = new URLSearchParams(location.search);
const token = params.get("token") || "";
const prolific = {};
for (const k of ["PROLIFIC_PID", "STUDY_ID", "SESSION_ID"]) if (params.get(k)) prolific[k] = params.get(k);
let rater = params.get("rater") || params.get("PROLIFIC_PID") || "";
let item = null, rows = [], answers = {}, active = 0, shownMs = 0, busy = false;
const $ = (id) => document.getElementById(id);
const CHOICES = [["A", "A"], ["TIE", "Tie"], ["B", "B"]];

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

function show(state) {
  $("error").textContent = "";
  $("progress").textContent = state.done + " of " + state.total + " answered";
  $("bar").style.width = (100 * state.done / Math.max(1, state.total)) + "%";
  $("login").classList.add("hidden");
  if (!state.item) {
    $("study").classList.add("hidden");
    $("done").classList.remove("hidden");
    $("done-text").textContent = "All " + state.total + " items are answered. You can close this page.";
    if (state.completion_url && /^https?:\/\//.test(state.completion_url)) {
      $("completion").href = state.completion_url;
      $("completion").classList.remove("hidden");
    }
    item = null;
    return;
  }
  item = state.item;
  $("study").classList.remove("hidden");
  $("done").classList.add("hidden");
  const pref = $("preference");
  pref.replaceChildren();
  for (const text of item.preference) {
    const li = document.createElement("li");
    li.textContent = text;
    pref.appendChild(li);
  }
  $("prompt").textContent = item.prompt;
  $("response-a").textContent = item.a;
  $("response-b").textContent = item.b;
  rows = item.criteria.map((c) => ({key: c.pole, text: c.text, required: true}));
  rows.push({key: "overall", text: "Overall (optional)", required: false});
  answers = {};
  active = 0;
  const table = $("criteria");
  table.replaceChildren();
  rows.forEach((row, i) => {
    const tr = document.createElement("tr");
    tr.id = "row-" + row.key;
    const name = document.createElement("td");
    name.className = "crit";
    name.textContent = (i + 1) + ". " + row.text;
    const cell = document.createElement("td");
    for (const [value, label] of CHOICES) {
      const b = document.createElement("button");
      b.className = "choice";
      b.id = "btn-" + row.key + "-" + value;
      b.textContent = label;
      b.addEventListener("click", () => { active = i; choose(value); });
      cell.appendChild(b);
    }
    tr.append(name, cell);
    tr.addEventListener("click", () => { active = i; paint(); });
    table.appendChild(tr);
  });
  $("both-bad").checked = false;
  $("rationale").value = "";
  shownMs = Date.now();
  paint();
  window.scrollTo(0, 0);
}

function complete() { return rows.every((r) => !r.required || answers[r.key]); }

function paint() {
  rows.forEach((row, i) => {
    $("row-" + row.key).classList.toggle("active", i === active);
    for (const [value] of CHOICES) $("btn-" + row.key + "-" + value).classList.toggle("on", answers[row.key] === value);
  });
  $("submit").disabled = busy || !complete();
}

function choose(value) {
  answers[rows[active].key] = value;
  const next = rows.findIndex((r, i) => i > active && !answers[r.key]);
  if (next >= 0) active = next;
  paint();
}

async function submit() {
  if (!item || busy || !complete()) return;
  busy = true;
  paint();
  const criteria = {};
  for (const r of rows) if (r.required) criteria[r.key] = answers[r.key];
  const body = Object.assign({
    rater: rater, item_id: item.id, criteria: criteria, overall: answers.overall || null,
    both_bad: $("both-bad").checked, rationale: $("rationale").value, shown_ms: shownMs, answered_ms: Date.now(),
  }, prolific);
  try {
    show(await api("/api/answer", body));
  } catch (e) {
    $("error").textContent = e.message;
  } finally {
    busy = false;
    if (item) paint();
  }
}

document.addEventListener("keydown", (e) => {
  if (!item || e.ctrlKey || e.metaKey || e.altKey) return;
  if (e.target && e.target.id === "rationale") {
    if (e.key === "Enter") { e.preventDefault(); submit(); }
    if (e.key === "Escape") e.target.blur();
    return;
  }
  if (e.target && e.target.id === "rater-input") return;
  const k = e.key.toLowerCase();
  if (k === "a") choose("A");
  else if (k === "b") choose("B");
  else if (k === "t") choose("TIE");
  else if (k === "x") $("both-bad").checked = !$("both-bad").checked;
  else if (k === "r") { e.preventDefault(); $("rationale").focus(); }
  else if (k === "enter") { e.preventDefault(); submit(); }
  else if (k === "arrowdown") { e.preventDefault(); active = Math.min(rows.length - 1, active + 1); paint(); }
  else if (k === "arrowup") { e.preventDefault(); active = Math.max(0, active - 1); paint(); }
  else if (/^[1-9]$/.test(k) && Number(k) <= rows.length) { active = Number(k) - 1; paint(); }
});
$("submit").addEventListener("click", submit);

async function start() {
  try {
    show(await api("/api/state?rater=" + encodeURIComponent(rater)));
  } catch (e) {
    $("error").textContent = e.message;
  }
}
$("start").addEventListener("click", () => {
  rater = $("rater-input").value.trim();
  if (!rater) return;
  params.set("rater", rater);
  history.replaceState(null, "", "?" + params.toString());
  start();
});
if (rater) start(); else $("login").classList.remove("hidden");
</script>
</body></html>
"""
