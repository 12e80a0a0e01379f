/* common.js: what the overview (dashboard.js) and the job page (job.js)
 * share: building elements, formatting times, the session (role, CSRF
 * token) with its login/logout forms, and the JSON POST of the actions.
 *
 * Every job field shown comes from the queue and is untrusted: text goes
 * in with textContent and createElement only, never as markup. The CSP
 * forbids inline scripts and styles, so nothing here sets a style
 * attribute; classes and the `hidden` property do the work. */
"use strict";

const JQ = (() => {
  const STATUSES = ["queued", "waiting", "running", "canceling",
                    "success", "error", "canceled"];
  const FINAL = new Set(["success", "error", "canceled"]);

  /* el("td", {className: "x", href: ...}, "text", child...): children are
   * strings (text nodes) or nodes; null and undefined children are skipped. */
  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    if (props)
      for (const [k, v] of Object.entries(props)) {
        if (k === "dataset")
          Object.assign(e.dataset, v);
        else
          e[k] = v;
      }
    for (const c of children)
      if (c !== null && c !== undefined)
        e.append(typeof c === "string" ? document.createTextNode(c) : c);
    return e;
  }

  function pad(n, w) {
    return String(n).padStart(w, "0");
  }

  /* A jobq timestamp [seconds, microseconds] as local time with
   * milliseconds; "—" for null. */
  function fmtTs(ts) {
    if (!Array.isArray(ts) || ts.length !== 2)
      return "—";
    const d = new Date(ts[0] * 1000 + Math.floor(ts[1] / 1000));
    return `${d.getFullYear()}-${pad(d.getMonth() + 1, 2)}-${pad(d.getDate(), 2)} ` +
           `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}.` +
           pad(d.getMilliseconds(), 3);
  }

  /* Unix seconds (a float) as local HH:MM:SS, for chart axes. */
  function fmtClock(t) {
    const d = new Date(t * 1000);
    return `${pad(d.getHours(), 2)}:${pad(d.getMinutes(), 2)}:${pad(d.getSeconds(), 2)}`;
  }

  function tsSeconds(ts) {
    return Array.isArray(ts) && ts.length === 2 ? ts[0] + ts[1] / 1e6 : null;
  }

  /* Seconds between two timestamps as "1.234 s"; "" when either is null. */
  function fmtSpan(from, to) {
    const a = tsSeconds(from), b = tsSeconds(to);
    if (a === null || b === null)
      return "";
    return `${(b - a).toFixed(3)} s`;
  }

  function statusBadge(status) {
    const known = STATUSES.includes(status) ? status : "unknown";
    return el("span", {className: `badge st-${known}`}, String(status));
  }

  /* The session: {role, owner, csrf, authenticated}. Fetched once per page
   * load (a login or logout reloads the page). */
  let sessionPromise = null;
  function session() {
    if (!sessionPromise)
      sessionPromise = fetch("/api/session", {credentials: "same-origin",
                                              cache: "no-store"})
        .then(r => r.ok ? r.json() : Promise.reject(new Error(`session: HTTP ${r.status}`)));
    return sessionPromise;
  }

  /* Whether the session may cancel, reprioritize or archive a job of
   * `owner` (docs/security.md, "Roles"): admin any job, submit its own. */
  function mayAct(s, owner) {
    if (!s)
      return false;
    if (s.role === "admin")
      return true;
    return s.role === "submit" && typeof owner === "string" && owner !== "" &&
           owner === s.owner;
  }

  /* Fills the header's session area: the role and owner, the login form
   * (token + CSRF field) or the logout button. */
  function renderSession(s) {
    const role = document.getElementById("session-role");
    const owner = document.getElementById("session-owner");
    const login = document.getElementById("login-form");
    const logout = document.getElementById("logout-form");
    role.textContent = s.role;
    role.className = `role role-${s.role}`;
    owner.textContent = s.owner ? s.owner : "";
    for (const f of [login, logout]) {
      const csrf = f.querySelector("input[name=csrf]");
      if (csrf)
        csrf.value = s.csrf;
    }
    /* POST /login sends a refused token back to /?login=failed; a cookie
     * whose token no longer holds (expired, its key removed) counts as
     * none, and the server says so. */
    const note = document.getElementById("login-note");
    const failed = new URLSearchParams(location.search).get("login") === "failed";
    note.hidden = !failed && !s.token_refused && !s.login_required;
    note.textContent = failed ? "that token was refused"
      : s.token_refused ? "your token is no longer accepted (expired, or its key was removed): log in again"
      : s.login_required ? "this address needs a token: log in to see the queue"
      : "";
    login.hidden = !!s.authenticated;
    logout.hidden = !s.authenticated && !s.token_refused;
    document.body.dataset.role = s.role;
  }

  /* The JSON of an API answer; rejects with an Error "CODE: message" when
   * it is an error (or not JSON). */
  async function answerOf(r) {
    let data = null;
    try {
      data = await r.json();
    } catch (e) {
      data = null;
    }
    if (!r.ok || !data || data.error) {
      const code = data && data.error ? data.error : `HTTP ${r.status}`;
      const msg = data && data.message ? `: ${data.message}` : "";
      throw new Error(`${code}${msg}`);
    }
    return data;
  }

  /* POST `body` as JSON with the CSRF header; resolves to the answer's
   * `result`, rejects with an Error whose message is the server's
   * "CODE: message". */
  async function post(path, body) {
    const s = await session();
    let r;
    try {
      r = await fetch(path, {
        method: "POST",
        credentials: "same-origin",
        cache: "no-store",
        headers: {"Content-Type": "application/json", "X-CSRF-Token": s.csrf},
        body: JSON.stringify(body),
      });
    } catch (e) {
      throw new Error(`request failed: ${e.message}`);
    }
    return (await answerOf(r)).result;
  }

  /* GET a JSON API; rejects with "CODE: message" on an error answer. */
  async function getJSON(path) {
    const r = await fetch(path, {credentials: "same-origin", cache: "no-store"});
    return answerOf(r);
  }

  /* The connection indicator of the header: "live", "connecting" or
   * "disconnected" with a class for its colour. */
  function setLink(state, text) {
    const e = document.getElementById("link-state");
    if (!e)
      return;
    e.textContent = text;
    e.className = `link link-${state}`;
  }

  function startSession() {
    session().then(renderSession).catch(e => {
      const role = document.getElementById("session-role");
      role.textContent = `unknown (${e.message})`;
    });
  }

  return {STATUSES, FINAL, el, fmtTs, fmtClock, fmtSpan, tsSeconds, statusBadge,
          session, mayAct, renderSession, startSession, post, getJSON, setLink};
})();
