// The page speaks the native API: POST /v1/translate, GET /health. Nothing is fetched from elsewhere.
"use strict";

const $ = (id) => document.getElementById(id);
let attentionAvailable = false;
let noAttentionBecause = "";

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function describeServer() {
  try {
    const response = await fetch("/health");
    const health = await response.json();
    $("pair").textContent = `${health.source} → ${health.target}`;
    $("model").textContent = `${health.model}, checkpoint ${health.checkpoint}, ${health.engine} (${health.status})`;
    attentionAvailable = health.attention;
    noAttentionBecause = health.no_attention_because || "";
    $("key-label").hidden = !health.api_key_required;
  } catch (error) {
    showError(`The server does not answer: ${error.message}`);
  }
}

function candidateItem(candidate) {
  const item = document.createElement("li");
  item.textContent = candidate.text;
  const score = document.createElement("span");
  score.className = "score";
  score.textContent = candidate.score.toFixed(3);
  item.append(score);
  return item;
}

function drawHeatmap(attention) {
  const table = $("heatmap");
  table.replaceChildren();
  const head = table.createTHead().insertRow();
  head.append(document.createElement("th"));
  for (const piece of attention.source) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = piece;
    head.append(th);
  }
  const body = table.createTBody();
  attention.target.forEach((targetPiece, row) => {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = targetPiece;
    tr.append(th);
    attention.weights[row].forEach((weight, column) => {
      const td = tr.insertCell();
      const described = `${targetPiece} ← ${attention.source[column]}: ${weight.toFixed(3)}`;
      td.style.background = `rgba(31, 95, 191, ${Math.min(1, Math.max(0, weight))})`;
      td.title = described;
      td.setAttribute("aria-label", described);
      td.addEventListener("mouseenter", () => { $("cell").textContent = described; });
    });
  });
  table.hidden = false;
}

async function translate(event) {
  event.preventDefault();
  const text = $("source").value;
  if (!text.trim()) {
    showError("Type something to translate.");
    return;
  }
  $("error").hidden = true;
  $("translate").disabled = true;
  const headers = { "Content-Type": "application/json" };
  if ($("key").value) headers["X-API-Key"] = $("key").value;
  const beamSize = Number($("beam").value);
  const request = {
    text: text.replace(/\n+$/, ""),
    beam_size: beamSize,
    n_best: Math.min(Number($("nbest").value), beamSize),
    attention: attentionAvailable,
  };
  try {
    let answer = await ask(headers, request);
    if (answer.error && request.attention) {
      // A model may refuse attention only once it translates (weights saved without it): translate
      // without, and say why there is no heat-map.
      const without = await ask(headers, { ...request, attention: false });
      if (!without.error) [attentionAvailable, noAttentionBecause, answer] = [false, answer.error, without];
    }
    if (answer.error) throw new Error(answer.error);
    showResult(answer);
  } catch (error) {
    $("result").hidden = true;
    showError(error.message);
  } finally {
    $("translate").disabled = false;
  }
}

async function ask(headers, request) {
  const response = await fetch("/v1/translate", { method: "POST", headers, body: JSON.stringify(request) });
  const answer = await response.json().catch(() => ({}));
  return response.ok ? answer : { error: answer.error || `the server answered ${response.status}` };
}

function showResult(answer) {
  const lines = answer.translations;
  $("translation").textContent = lines.map((line) => line.text).join("\n");
  $("candidates").replaceChildren(...lines[0].candidates.map(candidateItem));
  $("cell").textContent = "";
  const attention = lines[0].attention;
  if (attention) {
    $("attention-note").hidden = true;
    drawHeatmap(attention);
  } else {
    $("heatmap").hidden = true;
    $("attention-note").textContent = attentionAvailable
      ? "There is no attention to show for an empty line."
      : `No heat-map: ${noAttentionBecause}.`;
    $("attention-note").hidden = false;
  }
  $("result").hidden = false;
}

$("form").addEventListener("submit", translate);
$("source").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("form").requestSubmit();
});
describeServer();
