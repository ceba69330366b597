// The rater's page of a scorekit HYPE study: instructions, a tutorial with feedback, then the study.
// All state lives on the server: reloading the page (or a restarted server) resumes where the rater was.
"use strict";
const token = location.pathname.split("/").pop();
const $ = (id) => document.getElementById(id);
let current = null;      // the server's state
let busy = false;        // an answer is on its way (double clicks and key repeats are ignored)
let view = "";           // which section is shown

function show(section) {
  for (const id of ["intro", "trial", "between", "done"]) $(id).hidden = id !== section;
  view = section;
}

function bar(s) {
  $("bar-fill").style.width = `${(100 * s.answered) / Math.max(s.tutorial_total + s.test_total, 1)}%`;
}

function progress(s) {
  bar(s);
  if (s.phase === "tutorial") $("progress").textContent = `Tutorial: image ${s.position + 1} of ${s.tutorial_total}`;
  else if (s.phase === "test") $("progress").textContent = `Image ${s.position + 1} of ${s.test_total}`;
  else $("progress").textContent = `Finished: ${s.test_total} images judged`;
}

function showTrial(s) {
  $("phase-label").textContent = s.phase === "tutorial" ? "Tutorial (with feedback)" : "";
  $("image").src = s.image.url;
  $("feedback").hidden = true;
  for (const b of document.querySelectorAll("button.answer")) b.disabled = false;
  show("trial");
}

function render(s, fromAnswer) {
  current = s;
  progress(s);
  if (s.phase === "done") return show("done");
  if (s.phase === "test" && s.position === 0 && s.tutorial_total > 0 && (fromAnswer || view === "")) {
    $("between-text").textContent = `Tutorial finished: ${s.tutorial_correct} of ${s.tutorial_total} correct.`;
    return show("between");
  }
  if (view === "" && s.answered === 0) {
    const tutorial = s.tutorial_total ? `a tutorial of ${s.tutorial_total} images, then ` : "";
    $("progress").textContent = `Ahead: ${tutorial}${s.test_total} images`;
    return show("intro");
  }
  showTrial(s);
}

async function call(method, path, body) {
  for (let attempt = 0; ; attempt++) {
    try {
      const r = await fetch(path, {method, headers: {"Content-Type": "application/json"},
                                   body: body ? JSON.stringify(body) : undefined});
      const data = await r.json();
      if (!r.ok) throw Object.assign(new Error(data.error || r.statusText), {fatal: r.status < 500});
      $("error").hidden = true;
      return data;
    } catch (e) {  // the server may be restarting: retry (answers are idempotent)
      if (e.fatal || attempt >= 20) { $("error").textContent = `Error: ${e.message}`; $("error").hidden = false; throw e; }
      $("error").textContent = "Connection lost, retrying..."; $("error").hidden = false;
      await new Promise((ok) => setTimeout(ok, 500));
    }
  }
}

async function submit(value) {
  if (busy || view !== "trial" || !current || !current.image || !$("feedback").hidden) return;
  busy = true;
  for (const b of document.querySelectorAll("button.answer")) b.disabled = true;
  try {
    const res = await call("POST", `/api/${token}/answer`, {image: current.image.id, answer: value});
    if (current.phase === "tutorial") {
      const ok = res.correct;
      $("feedback-text").className = ok ? "right" : "wrong";
      $("feedback-text").textContent = `${ok ? "Correct" : "Not quite"}: this image is ${res.truth}.`;
      $("feedback").hidden = false;
      current = res.state;
      bar(res.state);  // the label keeps naming the image the feedback is about until Continue
    } else {
      render(res.state, true);
    }
  } finally {
    busy = false;
  }
}

function advance() {
  if (view === "intro") return showTrial(current);
  if (view === "between") return showTrial(current);
  if (view === "trial" && !$("feedback").hidden) return render(current, true);
}

$("fake").onclick = () => submit("fake");
$("real").onclick = () => submit("real");
$("start").onclick = advance;
$("begin").onclick = advance;
$("continue").onclick = advance;
document.addEventListener("keydown", (e) => {
  if (e.repeat || e.ctrlKey || e.metaKey || e.altKey) return;
  const k = e.key.toLowerCase();
  if (k === "f") submit("fake");
  else if (k === "j") submit("real");
  else if (k === " " || k === "enter") { e.preventDefault(); advance(); }
});

call("GET", `/api/${token}/state`).then((s) => render(s, false)).catch(() => {});
