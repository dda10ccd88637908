"use strict";
// Dashboard: signs in through the API, then polls the tenant's recent records.
const state = { token: sessionStorage.getItem("a2z_token"), type: "", timer: null };

function $(sel) { return document.querySelector(sel); }

async function api(path, options = {}) {
  const headers = Object.assign({ "Content-Type": "application/json" }, options.headers || {});
  if (state.token) headers.Authorization = "Bearer " + state.token;
  const resp = await fetch(path, Object.assign({}, options, { headers }));
  if (resp.status === 401 && state.token) { signOut(); throw new Error("signed out"); }
  if (!resp.ok) throw new Error((await resp.json()).detail || resp.statusText);
  return resp.json();
}

function summary(r) {
  switch (r._path) {
    case "conn": return `${r.proto} ${r.conn_state} ${r.history || ""} ${r.orig_pkts}/${r.resp_pkts} pkts`;
    case "dns": return `${r.qtype_name || ""} ${r.query || ""} → ${r.rcode_name || "-"} ${(r.answers || []).join(", ")}`;
    case "http": return `${r.method || ""} ${r.host || ""}${r.uri || ""} ${r.status_code || ""} ${r.user_agent || ""}`;
    case "ssl": return `${r.version || ""} ${r.server_name || ""} ja3=${r.ja3 || "-"}`;
    case "ftp": return `${r.user || "-"} ${r.command} ${r.arg || ""} → ${r.reply_code || "-"}`;
    case "alert": return `[${r.severity}] ${r.title} ${(r.attack || []).join(" ")}${r.count > 1 ? ` ×${r.count}` : ""} ${r.msg || ""}`;
    case "weird": return `${r.name} ${r.addl || ""}`;
    default: return "";
  }
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;  // textContent, never innerHTML: records carry attacker-chosen strings
  if (cls) td.className = cls;
  return td;
}

async function refresh() {
  try {
    const q = state.type ? `&type=${encodeURIComponent(state.type)}` : "";
    const page = await api(`/api/v1/events?limit=200${q}`);
    const body = $("#records");
    body.replaceChildren(...page.items.map((r) => {
      const tr = document.createElement("tr");
      if (r._path === "alert") tr.className = "alert";
      tr.append(
        cell(new Date(r.ts * 1000).toISOString().replace("T", " ").slice(0, 23)),
        cell(r._path), cell(r.uid),
        cell(`${r["id.orig_h"]}:${r["id.orig_p"]}`), cell(`${r["id.resp_h"]}:${r["id.resp_p"]}`),
        cell(summary(r), "summary"));
      return tr;
    }));
    $("#status").textContent = `${page.items.length} most recent records · refreshed ${new Date().toLocaleTimeString()}`;
    const agents = await api("/api/v1/agents");
    $("#agents").textContent = "Agents: " + agents.items.map(
      (a) => `${a.name} — ${a.status}` +
        (a.health ? ` (v${a.version}, ${a.health.records_acked} records, spool ${a.health.spool_bytes} B)` : "") +
        (a.clone_suspected_at ? " — CLONE SUSPECTED" : "")).join("; ");
  } catch (err) {
    $("#status").textContent = "Could not refresh: " + err.message;
  }
}

function show() {
  const signedIn = Boolean(state.token);
  $("#login").hidden = signedIn;
  $("#dashboard").hidden = !signedIn;
  $("#logout").hidden = !signedIn;
  clearInterval(state.timer);
  if (signedIn) { refresh(); state.timer = setInterval(refresh, 3000); }
}

function signOut() {
  state.token = null;
  sessionStorage.removeItem("a2z_token");
  show();
}

document.addEventListener("DOMContentLoaded", () => {
  $("#login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const form = new FormData(ev.target);
    try {
      const tok = await api("/api/v1/auth/login", {
        method: "POST",
        body: JSON.stringify({ email: form.get("email"), password: form.get("password") }),
      });
      state.token = tok.access_token;
      sessionStorage.setItem("a2z_token", state.token);
      $("#login-error").textContent = "";
      show();
    } catch (err) {
      $("#login-error").textContent = "Sign-in failed: " + err.message;
    }
  });
  $("#logout").addEventListener("click", signOut);
  for (const b of document.querySelectorAll("nav#types button")) {
    b.addEventListener("click", () => {
      document.querySelectorAll("nav#types button").forEach((x) => x.classList.remove("active"));
      b.classList.add("active");
      state.type = b.dataset.type;
      refresh();
    });
  }
  show();
});
