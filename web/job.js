/* job.js: the job page (job.html?id=N).
 *
 * One EventSource on /events?job=N: `snapshot` gives the whole job (again
 * after every reconnect: the page is rebuilt from it), then each `record`
 * is one change of the job (docs/protocol.md, "Events"): its status,
 * priority and times, the opcodes that changed, the log entries it added.
 * Records are applied in serial order; one already in the snapshot is
 * skipped, and a gap (a record the server's stream lost) makes the page
 * read the job again from /api/job.
 *
 * The log keeps the newest MAX_LOG lines in the page (a job may have
 * 100,000); older ones are counted, not shown.
 *
 * For tests: body[data-change-serial] is the serial of the last change
 * applied, body[data-ready] is "1" once the snapshot is rendered. */
"use strict";

(() => {
  const MAX_LOG = 5000;
  const MAX_RESULT_CHARS = 20000;
  const el = JQ.el;

  const params = new URLSearchParams(location.search);
  const idText = params.get("id") || "";
  const jobId = /^[0-9]{1,15}$/.test(idText) ? Number(idText) : null;

  let job = null;        /* the job as /api/job gives it, kept current */
  let session = null;
  let resyncing = false;
  let pending = [];      /* records that arrived while resyncing */
  let generation = 0;    /* +1 per snapshot: a resync older than one is dropped */

  function setText(id, text) {
    const e = document.getElementById(id);
    if (e.textContent !== text)
      e.textContent = text;
  }

  function showError(text) {
    const e = document.getElementById("job-error");
    e.textContent = text;
    e.hidden = !text;
  }

  /* ------------------------------------------------------------ header */

  function renderHeader() {
    setText("job-id", String(job.id));
    document.getElementById("job-status").replaceChildren(JQ.statusBadge(job.status));
    document.body.dataset.status = String(job.status);
    setText("job-priority", String(job.priority));
    setText("job-owner", job.owner ? String(job.owner) : "—");
    setText("job-archived", job.archived ? "yes" : "no");
    setText("job-received", JQ.fmtTs(job.received_ts));
    setText("job-start", JQ.fmtTs(job.start_ts));
    setText("job-end", JQ.fmtTs(job.end_ts));
    setText("job-serial", String(job.change_serial));
    document.title = `jobq job ${job.id}: ${job.status}`;
  }

  /* ----------------------------------------------------------- opcodes */

  const opsBody = document.querySelector("#ops tbody");
  let opRows = [];

  function at(list, i) {
    return Array.isArray(list) && i < list.length ? list[i] : null;
  }

  function resultText(v) {
    if (v === null || v === undefined)
      return "";
    let s = JSON.stringify(v, null, 2);
    if (s === undefined)
      return "";
    if (s.length > MAX_RESULT_CHARS)
      s = `${s.slice(0, MAX_RESULT_CHARS)}\n… (${s.length - MAX_RESULT_CHARS} more characters)`;
    return s;
  }

  function buildOps() {
    const n = Array.isArray(job.opstatus) ? job.opstatus.length :
              Array.isArray(job.ops) ? job.ops.length : 0;
    opRows = [];
    const rows = [];
    for (let i = 0; i < n; i++) {
      const cells = {
        index: el("td", {className: "num"}, String(i)),
        summary: el("td"),
        status: el("td"),
        start: el("td"),
        end: el("td"),
        span: el("td", {className: "num"}),
        worker: el("td"),
        attempt: el("td", {className: "num"}),
        result: el("td", null),
      };
      cells.resultPre = el("pre", {className: "json"});
      cells.result.append(cells.resultPre);
      const tr = el("tr", {dataset: {index: String(i)}}, cells.index, cells.summary, cells.status,
                    cells.start, cells.end, cells.span, cells.worker, cells.attempt, cells.result);
      opRows.push(cells);
      rows.push(tr);
    }
    opsBody.replaceChildren(...rows);
    for (let i = 0; i < n; i++)
      renderOp(i);
  }

  function renderOp(i) {
    const c = opRows[i];
    if (!c)
      return;
    const summary = at(job.summary, i) ?? (at(job.ops, i) && job.ops[i].op) ?? "";
    c.summary.textContent = String(summary);
    const st = String(at(job.opstatus, i) ?? "");
    if (c.status.dataset.status !== st) {
      c.status.replaceChildren(JQ.statusBadge(st));
      c.status.dataset.status = st;
    }
    c.start.textContent = JQ.fmtTs(at(job.opstart, i));
    c.end.textContent = JQ.fmtTs(at(job.opend, i));
    c.span.textContent = JQ.fmtSpan(at(job.opexec, i) ?? at(job.opstart, i), at(job.opend, i));
    const w = at(job.opworker, i);
    c.worker.textContent = w === null ? "" : String(w);
    const a = at(job.opattempt, i);
    c.attempt.textContent = a === null ? "" : String(a);
    c.resultPre.textContent = resultText(at(job.opresult, i));
  }

  /* --------------------------------------------------------------- log */

  const logBox = document.getElementById("log");
  let logShown = 0;     /* lines in the page */
  let logHidden = 0;    /* older lines dropped from the page */

  function logLine(op, entry) {
    /* entry: [serial, ts, type, message] */
    const [serial, ts, type, msg] = Array.isArray(entry) ? entry : [null, null, "", ""];
    return el("div", {className: "line", dataset: {serial: String(serial), op: String(op)}},
              el("span", {className: "ts"}, JQ.fmtTs(ts)),
              el("span", {className: "op"}, `#${op}`),
              el("span", {className: "type"}, String(type ?? "")),
              el("span", {className: "msg"}, typeof msg === "string" ? msg : JSON.stringify(msg)));
  }

  function logNote() {
    const note = logHidden ? `(${logShown + logHidden} lines; the last ${logShown} shown)` :
                             `(${logShown} lines)`;
    setText("log-note", note);
  }

  function atBottom() {
    return logBox.scrollHeight - logBox.scrollTop - logBox.clientHeight < 4;
  }

  /* Appends [op, entry] pairs, dropping the oldest lines beyond MAX_LOG;
   * follows the end when the view was at the end. */
  function appendLog(pairs) {
    if (!pairs.length)
      return;
    const follow = atBottom();
    let start = 0;
    if (pairs.length > MAX_LOG) {
      start = pairs.length - MAX_LOG;
      logHidden += start;
    }
    const frag = document.createDocumentFragment();
    for (let i = start; i < pairs.length; i++)
      frag.append(logLine(pairs[i][0], pairs[i][1]));
    logBox.append(frag);
    logShown += pairs.length - start;
    while (logShown > MAX_LOG && logBox.firstChild) {
      logBox.firstChild.remove();
      logShown--;
      logHidden++;
    }
    logNote();
    if (follow)
      logBox.scrollTop = logBox.scrollHeight;
  }

  function renderLog() {
    logBox.replaceChildren();
    logShown = 0;
    logHidden = 0;
    const pairs = [];
    if (Array.isArray(job.oplog))
      job.oplog.forEach((entries, op) => {
        if (Array.isArray(entries))
          for (const e of entries)
            pairs.push([op, e]);
      });
    pairs.sort((a, b) => Number(a[1][0]) - Number(b[1][0]));
    appendLog(pairs);
    logNote();
  }

  /* ------------------------------------------------------------ changes */

  function setSerial() {
    document.body.dataset.changeSerial = String(job.change_serial);
  }

  function renderAll() {
    showError("");
    renderHeader();
    buildOps();
    renderLog();
    renderActions();
    setSerial();
    document.body.dataset.ready = "1";
  }

  function ensure(list, i) {
    while (list.length <= i)
      list.push(null);
  }

  function applyRecord(rec) {
    if (typeof rec.serial !== "number" || rec.serial <= job.change_serial)
      return; /* in the snapshot already */
    if (rec.serial > job.change_serial + 1 && !resyncing) {
      resync(rec);
      return;
    }
    for (const k of ["status", "priority", "received_ts", "start_ts", "end_ts"])
      if (k in rec)
        job[k] = rec[k];
    if (rec.kind === "archive")
      job.archived = true;
    const changed = new Set();
    if (Array.isArray(rec.ops))
      for (const op of rec.ops) {
        const i = op.index;
        if (!Number.isInteger(i) || i < 0 || i >= opRows.length)
          continue;
        for (const [list, key] of [["opstatus", "status"], ["opstart", "start_ts"],
                                   ["opexec", "exec_ts"], ["opend", "end_ts"],
                                   ["opresult", "result"], ["opattempt", "attempt"],
                                   ["opworker", "worker"]]) {
          if (!(key in op))
            continue;
          if (!Array.isArray(job[list]))
            job[list] = [];
          ensure(job[list], i);
          job[list][i] = op[key];
        }
        changed.add(i);
      }
    if (Array.isArray(rec.log) && rec.log.length) {
      const pairs = [];
      if (Array.isArray(rec.log_ops)) {
        let k = 0;
        for (const [op, count] of rec.log_ops)
          for (let j = 0; j < count && k < rec.log.length; j++)
            pairs.push([op, rec.log[k++]]);
        for (; k < rec.log.length; k++)
          pairs.push([rec.log_op ?? 0, rec.log[k]]);
      } else {
        for (const e of rec.log)
          pairs.push([rec.log_op ?? 0, e]);
      }
      appendLog(pairs);
      const last = rec.log[rec.log.length - 1];
      if (Array.isArray(last) && typeof last[0] === "number")
        job.log_serial = last[0];
    }
    job.change_serial = rec.serial;
    renderHeader();
    for (const i of changed)
      renderOp(i);
    renderActions();
    setSerial();
  }

  /* A record past a gap: read the whole job again, then apply what came
   * meanwhile. */
  async function resync(rec) {
    resyncing = true;
    pending = [rec];
    const gen = generation;
    try {
      const data = await JQ.getJSON(`/api/job?id=${jobId}`);
      if (gen !== generation)
        return; /* a new snapshot came meanwhile: it is newer */
      job = data.job;
      renderAll();
    } catch (e) {
      if (gen !== generation)
        return;
      showError(`could not read the job again: ${e.message}`);
    }
    const queued = pending;
    pending = [];
    for (const r of queued)
      applyRecord(r);
    resyncing = false;
  }

  /* ------------------------------------------------------------ actions */

  const buttons = ["action-cancel", "action-priority", "action-archive"]
    .map(id => document.getElementById(id));
  let acting = false;

  function renderActions() {
    if (!job)
      return;
    const may = JQ.mayAct(session, job.owner);
    for (const b of buttons)
      b.disabled = !may || acting;
    document.getElementById("action-priority-value").disabled = !may || acting;
    let note = "";
    if (!session)
      note = "checking your role…";
    else if (!may)
      note = session.role === "submit"
        ? `Your role (submit, as ${session.owner}) may act only on its own jobs; this one is ${job.owner || "nobody's"}. Log in with an admin token.`
        : `Your role (${session.role}) cannot cancel, reprioritize or archive jobs. Log in with an admin token.`;
    setText("action-note", note);
  }

  /* outcome: "ok" (done), "not-done" (accepted, but the daemon declined:
   * the job was already finished...), "error" (refused). */
  function showResult(outcome, text) {
    const e = document.getElementById("action-result");
    e.textContent = text;
    e.className = `result ${outcome}`;
    e.dataset.outcome = outcome;
    e.hidden = false;
  }

  /* cancel_job and change_job_priority answer [done, message],
   * archive_job true or false. */
  function show(action, result) {
    if (Array.isArray(result) && result.length === 2 && typeof result[0] === "boolean")
      showResult(result[0] ? "ok" : "not-done", `${action}: ${result[1]}`);
    else if (result === true)
      showResult("ok", `${action}: done`);
    else if (result === false)
      showResult("not-done", `${action}: not done (the job is not finished, or archived already)`);
    else
      showResult("ok", `${action}: ${JSON.stringify(result)}`);
  }

  async function act(action, path, body) {
    if (acting)
      return;
    acting = true;
    renderActions();
    try {
      show(action, await JQ.post(path, body));
    } catch (e) {
      showResult("error", `${action} refused: ${e.message}`);
    } finally {
      acting = false;
      renderActions();
    }
  }

  function setupActions() {
    document.getElementById("action-cancel").addEventListener("click",
      () => act("cancel", "/api/cancel", {id: jobId}));
    document.getElementById("action-priority").addEventListener("click", () => {
      const p = Number(document.getElementById("action-priority-value").value);
      act(`priority ${p}`, "/api/priority", {id: jobId, priority: p});
    });
    document.getElementById("action-archive").addEventListener("click",
      () => act("archive", "/api/archive", {id: jobId}));
  }

  /* ------------------------------------------------------------- stream */

  function parse(ev) {
    try {
      return JSON.parse(ev.data);
    } catch (e) {
      return null;
    }
  }

  /* The stream ended before its snapshot (the server cuts a stream whose
   * snapshot it cannot hold, e.g. a job with a huge log): show the job as
   * /api/job reads it meanwhile, once, so the page is not empty. */
  let fallbackTried = false;
  function fallback() {
    if (job || fallbackTried)
      return;
    fallbackTried = true;
    JQ.getJSON(`/api/job?id=${jobId}`).then(data => {
      if (job)
        return; /* the stream's snapshot came meanwhile */
      job = data.job;
      renderAll();
      showError("live updates did not start: the job is shown as read once; still trying");
    }).catch(e => showError(e.message));
  }

  function connect() {
    const es = new EventSource(`/events?job=${jobId}`);
    let snapshotSeen = false;
    es.addEventListener("open", () => {
      snapshotSeen = false;
      JQ.setLink("live", "live");
    });
    es.addEventListener("snapshot", () => { snapshotSeen = true; });
    es.addEventListener("error", () => {
      if (es.readyState !== EventSource.CLOSED) {
        JQ.setLink("connecting", "reconnecting…");
        if (!snapshotSeen)
          fallback();
        return;
      }
      /* Refused (not an event stream): say why, from the JSON API. */
      JQ.setLink("down", "disconnected");
      JQ.getJSON(`/api/job?id=${jobId}`)
        .then(() => showError("the job's event stream closed: reload the page"))
        .catch(e => showError(e.message));
    });
    es.addEventListener("snapshot", ev => {
      const snap = parse(ev);
      if (!snap)
        return;
      JQ.setLink("live", "live");
      job = snap;
      generation++;
      resyncing = false;
      pending = [];
      renderAll();
    });
    es.addEventListener("record", ev => {
      const rec = parse(ev);
      if (!rec || !job)
        return;
      if (resyncing)
        pending.push(rec);
      else
        applyRecord(rec);
    });
  }

  /* -------------------------------------------------------------- start */

  JQ.startSession();
  JQ.session().then(s => { session = s; renderActions(); }).catch(() => {});
  setupActions();
  if (jobId === null) {
    showError(`no job: the address needs ?id=N (got "${idText}")`);
    JQ.setLink("down", "no job");
  } else {
    setText("job-id", String(jobId));
    connect();
  }
})();
