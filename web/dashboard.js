/* dashboard.js: the overview page (index.html).
 *
 * Everything live comes from one EventSource on /events: `hello` carries
 * the last 10 minutes of ticks (the charts are rebuilt from it, also after
 * a reconnect), then a `tick` every 500 ms with the counts, the running
 * jobs (at most 100) and the worker totals. The server aggregates: the
 * page does a fixed amount of work per tick whatever the queue's rate, so
 * it cannot fall behind. /api/workers is asked every 3 s; the jobs table
 * is read a page (50 jobs) at a time, only when asked.
 *
 * For tests: body[data-seq] is the last rendered tick's seq, body[data-ready]
 * is "1" once a tick has been rendered. */
"use strict";

(() => {
  const WINDOW_S = 600;          /* the charts' span: 10 minutes */
  const TICK_S = 0.5;            /* the server's tick period */
  const WORKERS_EVERY_MS = 3000;
  const WORKERS_SHOWN = 200;     /* rows of the workers table at most */
  const PAGE = 50;               /* jobs per page of the jobs table */
  const el = JQ.el;

  /* ------------------------------------------------------------ counts */

  const countCells = new Map();
  function buildCounts() {
    const box = document.getElementById("counts");
    const names = [...JQ.STATUSES, "live", "archived", "workers", "busy / capacity", "missed"];
    for (const name of names) {
      const value = el("div", {className: "value"}, "–");
      const label = el("div", {className: "label"}, name);
      const cls = JQ.STATUSES.includes(name) ? `card st-${name}` : "card";
      box.append(el("div", {className: cls, id: `count-${name.replace(/[^a-z]+/g, "-")}`},
                    value, label));
      countCells.set(name, value);
    }
    countCells.get("workers").parentNode.title = "workers connected";
    countCells.get("busy / capacity").parentNode.title =
      "opcodes the workers are running / how many they can run at once";
    countCells.get("missed").parentNode.title =
      "events the dashboard's server missed from the daemon's stream (gaps)";
  }

  function setCount(name, text) {
    const c = countCells.get(name);
    if (c && c.textContent !== text)
      c.textContent = text;
  }

  function renderCounts(tick) {
    const jobs = tick.jobs || {};
    for (const s of JQ.STATUSES)
      setCount(s, String(jobs[s] ?? 0));
    setCount("live", String(tick.live ?? 0));
    setCount("archived", String(tick.archived ?? 0));
    const w = tick.workers || {};
    setCount("workers", String(w.connected ?? 0));
    setCount("busy / capacity", `${w.busy ?? 0} / ${w.capacity ?? 0}`);
    setCount("missed", String(tick.missed ?? 0));
  }

  /* ------------------------------------------------------------ charts */

  let throughput = null, depth = null;

  /* Marks on whole 2-minute steps of the clock, not on the window's edges. */
  function clockTicks(axis) {
    const step = 120, ticks = [];
    if (!(axis.max > axis.min))
      return;
    for (let v = Math.ceil(axis.min / step) * step; v <= axis.max; v += step)
      ticks.push({value: v});
    axis.ticks = ticks;
  }

  function makeChart(canvas, labels, colors) {
    const datasets = labels.map((label, i) => ({
      label, data: [], borderColor: colors[i], backgroundColor: colors[i],
      borderWidth: 1.5, pointRadius: 0, tension: 0, fill: false,
    }));
    return new Chart(canvas, {
      type: "line",
      data: {datasets},
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        spanGaps: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: {mode: "index", intersect: false},
        scales: {
          x: {type: "linear", afterBuildTicks: clockTicks,
              ticks: {autoSkip: false, maxRotation: 0, callback: v => JQ.fmtClock(v)}},
          y: {beginAtZero: true, ticks: {precision: 0}},
        },
        plugins: {
          legend: {position: "bottom"},
          tooltip: {callbacks: {title: items => items.length ? JQ.fmtClock(items[0].parsed.x) : ""}},
        },
      },
    });
  }

  function buildCharts() {
    if (typeof Chart === "undefined") {
      document.getElementById("stream-note").textContent = "charts unavailable (/static/chart.js did not load)";
      return;
    }
    throughput = makeChart(document.getElementById("chart-throughput"),
                           ["submitted/s", "finished/s"], ["#3366cc", "#109618"]);
    depth = makeChart(document.getElementById("chart-depth"),
                      ["queue depth", "running"], ["#ff9900", "#990099"]);
  }

  let lastT = null;

  /* Appends one tick's points (rates per second over the time since the
   * previous tick) without redrawing. */
  function pushPoints(tick) {
    if (!throughput || typeof tick.t !== "number")
      return;
    let dt = lastT === null ? TICK_S : tick.t - lastT;
    if (!(dt > 0.05 && dt < 5))
      dt = TICK_S;
    lastT = tick.t;
    const fin = tick.finished || {};
    const finished = (fin.success || 0) + (fin.error || 0) + (fin.canceled || 0);
    const t = tick.t;
    throughput.data.datasets[0].data.push({x: t, y: (tick.submitted || 0) / dt});
    throughput.data.datasets[1].data.push({x: t, y: finished / dt});
    depth.data.datasets[0].data.push({x: t, y: tick.queue_depth || 0});
    depth.data.datasets[1].data.push({x: t, y: tick.running_count || 0});
  }

  /* Drops the points older than the window, sets the x range, redraws
   * once, without animation. */
  function redraw() {
    if (!throughput || lastT === null)
      return;
    const min = lastT - WINDOW_S;
    for (const chart of [throughput, depth]) {
      for (const ds of chart.data.datasets) {
        let drop = 0;
        while (drop < ds.data.length && ds.data[drop].x < min)
          drop++;
        if (drop)
          ds.data.splice(0, drop);
      }
      chart.options.scales.x.min = min;
      chart.options.scales.x.max = lastT;
      chart.update("none");
    }
  }

  function resetCharts(history) {
    if (!throughput)
      return;
    for (const chart of [throughput, depth])
      for (const ds of chart.data.datasets)
        ds.data.length = 0;
    lastT = null;
    for (const tick of history)
      pushPoints(tick);
    redraw();
  }

  /* ----------------------------------------------------- running table */

  const runningBody = document.querySelector("#running tbody");
  const runningRows = new Map(); /* job id -> {tr, cells} */

  function setText(node, text) {
    if (node.textContent !== text)
      node.textContent = text;
  }

  function runningRow(id) {
    const link = el("a", {href: `/job.html?id=${id}`}, String(id));
    const cells = [el("td", null, link), el("td"), el("td"), el("td"), el("td", {className: "logline"})];
    const tr = el("tr", {dataset: {id: String(id)}}, ...cells);
    return {tr, cells};
  }

  /* Updates the rows in place: a row per job kept while the job runs, its
   * cells rewritten only when they change. */
  function renderRunning(tick) {
    const list = Array.isArray(tick.running) ? tick.running : [];
    const seen = new Set();
    let prev = null;
    for (const r of list) {
      const id = Number(r.id);
      /* A job the table shows finished while the server's list, made from
       * the event stream, still has it (its last records on their way). */
      if (!Number.isSafeInteger(id) || seen.has(id) || JQ.FINAL.has(r.status))
        continue;
      seen.add(id);
      let row = runningRows.get(id);
      if (!row) {
        row = runningRow(id);
        runningRows.set(id, row);
      }
      const [, st, op, worker, log] = row.cells;
      if (st.dataset.status !== r.status) {
        st.replaceChildren(JQ.statusBadge(r.status));
        st.dataset.status = String(r.status);
      }
      const opText = r.op === null || r.op === undefined ? "" :
        (typeof r.op_index === "number" ? `${r.op_index}: ${r.op}` : String(r.op));
      setText(op, opText);
      setText(worker, r.worker === null || r.worker === undefined ? "" : String(r.worker));
      setText(log, r.log === null || r.log === undefined ? "" : String(r.log));
      /* Keep the rows in the order of the list (ascending id). */
      const want = prev ? prev.nextSibling : runningBody.firstChild;
      if (want !== row.tr)
        runningBody.insertBefore(row.tr, want);
      prev = row.tr;
    }
    for (const [id, row] of runningRows)
      if (!seen.has(id)) {
        row.tr.remove();
        runningRows.delete(id);
      }
    /* The server lists at most 100 (waiting, running or canceling). */
    setText(document.getElementById("running-note"),
            list.length >= 100 ? `(${seen.size} shown; ${tick.running_count ?? "?"} running in all)`
                               : `(${seen.size})`);
  }

  /* --------------------------------------------------------- the ticks */

  let ready = false;

  function renderTick(tick) {
    renderCounts(tick);
    renderRunning(tick);
    pushPoints(tick);
    redraw();
    if (typeof tick.seq === "number")
      document.body.dataset.seq = String(tick.seq);
    if (!ready) {
      ready = true;
      document.body.dataset.ready = "1";
    }
  }

  function parse(ev) {
    try {
      return JSON.parse(ev.data);
    } catch (e) {
      return null;
    }
  }

  function connect() {
    const es = new EventSource("/events");
    es.addEventListener("open", () => JQ.setLink("live", "live"));
    es.addEventListener("error", () => {
      if (es.readyState === EventSource.CLOSED) {
        JQ.setLink("down", "disconnected (reload the page)");
      } else {
        JQ.setLink("connecting", "reconnecting…");
      }
    });
    es.addEventListener("hello", ev => {
      const hello = parse(ev);
      if (!hello)
        return;
      JQ.setLink("live", "live");
      const history = Array.isArray(hello.history) ? hello.history : [];
      resetCharts(history);
      /* Counts at once from the newest tick of the history, when it has
       * them; the running rows are from before the (re)connection: gone
       * until the next tick lists them. */
      const last = history.length ? history[history.length - 1] : null;
      if (last && last.jobs)
        renderCounts(last);
      renderRunning({running: [], running_count: last ? last.running_count : 0});
    });
    es.addEventListener("tick", ev => {
      const tick = parse(ev);
      if (tick)
        renderTick(tick);
    });
  }

  /* ----------------------------------------------------------- workers */

  const workersBody = document.querySelector("#workers tbody");
  const opcodesBody = document.querySelector("#opcodes tbody");
  let workersBusy = false;

  function renderWorkers(data) {
    const workers = Array.isArray(data.workers) ? data.workers : [];
    const rows = workers.slice(0, WORKERS_SHOWN).map(w => el("tr", null,
      el("td", null, String(w.name ?? "")),
      el("td", null, String(w.id ?? "")),
      el("td", null, Array.isArray(w.opcodes) ? w.opcodes.join(", ") : ""),
      el("td", {className: "num"}, String(w.capacity ?? "")),
      el("td", {className: "num"}, String(w.running ?? "")),
      el("td", null, JQ.fmtTs(w.since))));
    workersBody.replaceChildren(...rows);
    const opcodes = Array.isArray(data.opcodes) ? data.opcodes : [];
    opcodesBody.replaceChildren(...opcodes.map(o => el("tr", null,
      el("td", null, String(o.name ?? "")),
      el("td", {className: "num"}, String(o.workers ?? "")),
      el("td", {className: "num"}, String(o.capacity ?? "")),
      el("td", {className: "num"}, String(o.busy ?? "")),
      el("td", {className: "num"}, String(o.waiting ?? "")))));
    setText(document.getElementById("workers-note"),
            workers.length > WORKERS_SHOWN ? `(${workers.length}; the first ${WORKERS_SHOWN} shown)`
                                           : `(${workers.length})`);
  }

  async function refreshWorkers() {
    if (workersBusy || document.hidden)
      return;
    workersBusy = true;
    try {
      renderWorkers(await JQ.getJSON("/api/workers"));
    } catch (e) {
      setText(document.getElementById("workers-note"), `(${e.message})`);
    } finally {
      workersBusy = false;
    }
  }

  /* ------------------------------------------------------- jobs, paged */

  const jobsBody = document.querySelector("#jobs tbody");
  const jobsStatus = document.getElementById("jobs-status");
  const jobsArchived = document.getElementById("jobs-archived");
  const jobsNext = document.getElementById("jobs-next");
  const jobsPrev = document.getElementById("jobs-prev");
  const jobsNote = document.getElementById("jobs-note");
  /* The after_id of each page shown so far (null: the first), for "previous". */
  let pages = [null];
  let nextAfter = null;
  let jobsSerial = 0;

  async function loadJobs(afterId) {
    const serial = ++jobsSerial;
    const q = new URLSearchParams();
    if (jobsStatus.value)
      q.set("status", jobsStatus.value);
    if (afterId !== null)
      q.set("after_id", String(afterId));
    q.set("limit", String(PAGE));
    q.set("archived", jobsArchived.checked ? "1" : "0");
    jobsNote.textContent = "loading…";
    jobsNext.disabled = true;
    try {
      const data = await JQ.getJSON(`/api/jobs?${q}`);
      if (serial !== jobsSerial)
        return; /* a newer request was made meanwhile */
      const jobs = Array.isArray(data.jobs) ? data.jobs.slice(0, PAGE) : [];
      jobsBody.replaceChildren(...jobs.map(j => el("tr", {dataset: {id: String(j.id)}},
        el("td", null, el("a", {href: `/job.html?id=${Number(j.id)}`}, String(j.id))),
        el("td", null, JQ.statusBadge(j.status)),
        el("td", {className: "num"}, String(j.priority ?? "")),
        el("td", null, Array.isArray(j.summary) ? j.summary.join(", ") : ""),
        el("td", null, String(j.owner ?? "")),
        el("td", null, JQ.fmtTs(j.received_ts)),
        el("td", null, JQ.fmtTs(j.start_ts)),
        el("td", null, JQ.fmtTs(j.end_ts)),
        el("td", null, j.worker === null || j.worker === undefined ? "" : String(j.worker)))));
      nextAfter = typeof data.next_after_id === "number" ? data.next_after_id : null;
      jobsNext.disabled = nextAfter === null;
      jobsPrev.disabled = pages.length < 2;
      const from = jobs.length ? jobs[0].id : null, to = jobs.length ? jobs[jobs.length - 1].id : null;
      jobsNote.textContent = jobs.length ? `page ${pages.length}: ids ${from} to ${to}` :
                                           `page ${pages.length}: no jobs`;
    } catch (e) {
      if (serial === jobsSerial)
        jobsNote.textContent = e.message;
    }
  }

  function setupJobs() {
    document.getElementById("jobs-form").addEventListener("submit", ev => {
      ev.preventDefault();
      pages = [null];
      loadJobs(null);
    });
    jobsStatus.addEventListener("change", () => { pages = [null]; loadJobs(null); });
    jobsArchived.addEventListener("change", () => { pages = [null]; loadJobs(null); });
    jobsNext.addEventListener("click", () => {
      if (nextAfter === null)
        return;
      pages.push(nextAfter);
      loadJobs(nextAfter);
    });
    jobsPrev.addEventListener("click", () => {
      if (pages.length < 2)
        return;
      pages.pop();
      loadJobs(pages[pages.length - 1]);
    });
    loadJobs(null);
  }

  /* -------------------------------------------------------------- start */

  buildCounts();
  buildCharts();
  JQ.startSession();
  connect();
  refreshWorkers();
  setInterval(refreshWorkers, WORKERS_EVERY_MS);
  setupJobs();
})();
