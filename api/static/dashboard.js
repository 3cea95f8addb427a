// The dashboard's only script: reads POST /schedule (status, list, runs, output) on this
// origin every few seconds and renders it. It holds no data of its own and changes nothing.
// Every value from the server is inserted with textContent, never parsed as HTML.
"use strict";

(() => {
  const REFRESH_MS = 5000;
  const RUNS_SHOWN = 50;
  // Enough recent runs to find most tasks' last outcome in one request.
  const RUNS_FETCHED = 500;
  const TOKEN_KEY = "task-scheduler-token";

  // Each status: a symbol and a word, so the outcome reads without colour too.
  const OUTCOMES = {
    succeeded: "✓", failed: "✗", timed_out: "◷", killed: "✖", rejected: "⊘",
    skipped: "↷", interrupted: "‖", error: "⚠", running: "●", queued: "○",
  };

  const $ = (id) => document.getElementById(id);
  let selectedRun = null;
  let timer = null;

  class Unauthorized extends Error {}

  // A table cell; its label heads it where narrow screens show rows as cards.
  function cell(label, props, children) {
    return el("td", { ...props, "data-label": label }, children);
  }

  function el(tag, props, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(props || {})) {
      if (key === "text") node.textContent = value == null ? "" : String(value);
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  function outcome(status) {
    if (!status) return el("span", { class: "muted", text: "—" });
    const word = status.replace("_", " ");
    return el("span", { class: `badge s-${status}` }, [
      el("span", { class: "sym", "aria-hidden": "true", text: OUTCOMES[status] || "?" }),
      word,
    ]);
  }

  function stateBadge(state) {
    return el("span", { class: `state st-${state}`, text: state });
  }

  async function api(action, fields) {
    const headers = { "Content-Type": "application/json" };
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    const response = await fetch("/schedule", {
      method: "POST", headers, credentials: "omit", cache: "no-store",
      body: JSON.stringify({ action, ...fields }),
    });
    if (response.status === 401) throw new Unauthorized();
    const body = await response.json();
    if (body.status === "error") throw new Error(body.message || `HTTP ${response.status}`);
    return body;
  }

  function duration(ms) {
    if (ms == null) return "—";
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
    return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
  }

  function fill(tbody, rows) {
    tbody.replaceChildren(...rows);
  }

  function renderStatus(st) {
    $("facts").hidden = false;
    const state = $("fact-state");
    state.replaceChildren(stateBadge(st.running ? "running" : "stopped"));
    const workers = $("fact-workers");
    workers.textContent = `${st.workers.alive} / ${st.workers.configured} alive`;
    workers.className = st.workers.alive < st.workers.configured ? "warn" : "";
    $("fact-runs").textContent = `${st.runs.active} active · ${st.runs.queued} queued`;
    const layers = (st.isolation || []).join(", ");
    $("fact-isolation").textContent = st.isolation_level || "unknown";
    $("fact-isolation").title = layers ? `layers: ${layers}` : "";
    $("fact-tasks").textContent = String(st.tasks);
    const broken = st.policy && st.policy.error;
    $("policy-banner").hidden = !broken;
    $("policy-error").textContent = broken ? `${st.policy.path}: ${st.policy.error}` : "";
  }

  function renderTasks(tasks, lastRuns) {
    $("tasks-count").textContent = `${tasks.length} task${tasks.length === 1 ? "" : "s"}`;
    $("tasks-empty").hidden = tasks.length > 0;
    $("tasks").hidden = tasks.length === 0;
    fill($("tasks").tBodies[0], tasks.map((task) => {
      const d = task.details;
      const parameter = d.command || d.file_path || d.custom_script || "";
      const last = lastRuns.get(task.id);
      const schedule = cell("Schedule", { class: "schedule", text: d.interval });
      if (d.schedule && d.schedule !== d.interval) schedule.title = d.schedule;
      return el("tr", {}, [
        cell("Task", { class: "head" }, [
          el("div", { class: "id", text: task.id }),
          el("div", { class: "sub mono", text: parameter, title: parameter }),
        ]),
        cell("Type", { text: d.type }),
        schedule,
        cell("Next run", { class: "time", text: d.next_run || "—" }),
        cell("Last outcome", {}, [outcome(last && last.status)]),
        cell("State", {}, [stateBadge(d.state || (d.paused ? "paused" : "scheduled"))]),
        cell("Fired", { class: "num", text: d.runs_fired ?? "" }),
      ]);
    }));
  }

  function renderRuns(runs) {
    $("runs-empty").hidden = runs.length > 0;
    $("runs").hidden = runs.length === 0;
    fill($("runs").tBodies[0], runs.slice(0, RUNS_SHOWN).map((run) => {
      const row = el("tr", {
        class: "pick", tabindex: "0", "data-run": run.run_id,
        "aria-label": `run ${run.run_id} of ${run.task_id}: ${run.status}`,
      }, [
        cell("Run", { class: "num", text: run.run_id }),
        cell("Task", { class: "id", text: run.task_id }),
        cell("Outcome", {}, [outcome(run.status)]),
        cell("Trigger", { text: run.trigger }),
        cell("Started", { class: "time", text: run.started_at || run.scheduled_for || "—" }),
        cell("Duration", { class: "num", text: duration(run.duration_ms) }),
        cell("Exit", { class: "num", text: run.exit_code ?? "—" }),
      ]);
      if (run.run_id === selectedRun) row.classList.add("selected");
      row.addEventListener("click", () => showOutput(run.run_id));
      row.addEventListener("keydown", (event) => {
        if (event.key === "Enter" || event.key === " ") {
          event.preventDefault();
          showOutput(run.run_id);
        }
      });
      return row;
    }));
  }

  async function showOutput(runId) {
    selectedRun = runId;
    // The address names the run, so a link or a reload shows the same output.
    history.replaceState(null, "", `#run-${runId}`);
    for (const row of $("runs").tBodies[0].rows) {
      row.classList.toggle("selected", Number(row.dataset.run) === runId);
    }
    try {
      const { run } = await api("output", { run_id: runId });
      if (selectedRun !== runId) return;
      $("output-empty").hidden = true;
      $("output-body").hidden = false;
      $("output-meta").replaceChildren(
        `run ${run.run_id} · ${run.task_id} · `, outcome(run.status),
        run.truncated ? " · truncated" : "");
      $("output-reason").hidden = !run.reason;
      $("output-reason").textContent = run.reason || "";
      $("output-stdout").textContent = run.stdout || "(empty)";
      $("output-stderr").textContent = run.stderr || "(empty)";
    } catch (error) {
      handle(error);
    }
  }

  function showData(visible) {
    $("data").hidden = !visible;
    $("facts").hidden = !visible;
    if (!visible) {
      // Nothing of the server's stays on screen once it refuses us.
      for (const id of ["tasks", "runs"]) $(id).tBodies[0].replaceChildren();
      $("output-stdout").textContent = "";
      $("output-stderr").textContent = "";
      $("output-body").hidden = true;
      $("output-empty").hidden = false;
      $("output-meta").replaceChildren();
      $("policy-banner").hidden = true;
    }
  }

  function askToken(hint) {
    showData(false);
    $("token-form").hidden = false;
    $("token-hint").textContent = hint;
    $("refresh").textContent = "Waiting for the token";
    $("token-input").focus();
  }

  function handle(error) {
    if (error instanceof Unauthorized) {
      const had = sessionStorage.getItem(TOKEN_KEY);
      sessionStorage.removeItem(TOKEN_KEY);
      askToken(had ? "The server refused that token." : "");
      return;
    }
    $("api-error").hidden = false;
    $("api-error").textContent = `Could not reach the scheduler: ${error.message}`;
    $("refresh").textContent = "Connection problem; retrying";
  }

  async function refresh() {
    clearTimeout(timer);
    if (document.hidden) {  // a background tab polls nothing; visibilitychange resumes
      return;
    }
    try {
      const [st, list, recent] = await Promise.all([
        api("status"), api("list"), api("runs", { limit: RUNS_FETCHED })]);
      const lastRuns = new Map();
      for (const run of recent.runs) {
        if (!lastRuns.has(run.task_id) && run.status !== "queued" && run.status !== "running") {
          lastRuns.set(run.task_id, run);
        }
      }
      $("token-form").hidden = true;
      $("api-error").hidden = true;
      renderStatus(st);
      renderTasks(list.tasks, lastRuns);
      renderRuns(recent.runs);
      showData(true);
      if (selectedRun !== null && !recent.runs.some((r) => r.run_id === selectedRun)) {
        selectedRun = null;
      }
      $("refresh").textContent = `Updated ${new Date().toLocaleTimeString()}`;
    } catch (error) {
      handle(error);
      if (error instanceof Unauthorized) return;
    }
    timer = setTimeout(refresh, REFRESH_MS);
  }

  function start() {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const token = $("token-input").value.trim();
      if (!token) return;
      sessionStorage.setItem(TOKEN_KEY, token);
      $("token-input").value = "";
      $("token-form").hidden = true;
      refresh();
    });
    document.addEventListener("visibilitychange", () => {
      if (!document.hidden && $("token-form").hidden) refresh();
    });
    const linked = /^#run-(\d+)$/.exec(location.hash);
    refresh().then(() => {
      if (linked && !$("data").hidden) showOutput(Number(linked[1]));
    });
  }

  start();
})();
