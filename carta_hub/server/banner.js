// carta-hub's clock in CARTA's tab (carta_hub/server/clock.py serves it and its JSON).
// A quiet "time left" in the free end of CARTA's menu bar; at each of the site's lead times
// (c.CartaBackend.warn_before_end) a banner in a band of its own between the menu bar and
// CARTA's panels (the panels move down: it covers none of CARTA's controls), with
// "Extend by N h" where the Hub allows it. After a session that ended with a workspace saved
// by the server (carta_hub/server/autosave.py), the same band offers to restore it (CARTA's
// ?workspace=). Same origin only (CartaBackend.offline's CSP).
(() => {
  "use strict";
  const here = document.currentScript.src;
  const SESSION = new URL("session", here).href;
  const EXTEND = new URL("session/extend", here).href;
  const POLL_MS = 30000;
  const SAVE_POLL_MS = 5000; // once the server saves before the end: see the save, the new end
  const NOTICE_MS = 20000; // how long the outcome of an extend stays
  const BAND = 40; // px: the banner's band

  let state = null; // the last answer of GET session
  let offset = 0; // server clock - this browser's clock, in seconds
  let closedAt = null; // the lead time whose banner the student closed
  let restoreClosed = false; // the student closed the offer to restore
  let notice = null; // {text, until, bad}: the outcome of an extend
  let extending = false;
  let recheck = null;
  let refreshedAt = 0;

  const style = document.createElement("style");
  style.textContent = `
    #carta-hub-clock { position: fixed; top: 12px; right: 36px; z-index: 20; font: 12px/16px sans-serif;
      color: #5f6b7c; pointer-events: none; white-space: nowrap; }
    #carta-hub-banner { position: fixed; top: ${BAND}px; left: 5px; right: 5px; height: ${BAND - 6}px;
      z-index: 20; display: none; align-items: center; gap: 12px; padding: 0 10px; box-sizing: border-box;
      border: 1px solid #d9a400; border-radius: 3px; background: #fff3c4; color: #3d2e00;
      font: 14px/18px sans-serif; }
    #carta-hub-banner.carta-hub-last { border-color: #cd4246; background: #fbe3e4; color: #4d0f11; }
    #carta-hub-banner.carta-hub-good { border-color: #238551; background: #e2f3e9; color: #0d3b22; }
    #carta-hub-banner.carta-hub-info { border-color: #2d72d2; background: #e5eefb; color: #10294d; }
    #carta-hub-restore { font: 13px sans-serif; font-weight: bold; color: inherit; }
    #carta-hub-banner-text { flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
    #carta-hub-banner button { font: 13px sans-serif; padding: 3px 10px; cursor: pointer; }
    body.carta-hub-banner-on .layout-container { top: ${48 + BAND}px !important; }`;
  document.head.appendChild(style);

  const indicator = element("div", "carta-hub-clock", {role: "status"});
  const banner = element("div", "carta-hub-banner", {role: "alert"});
  const text = element("span", "carta-hub-banner-text");
  const extend = element("button", "carta-hub-extend", {type: "button"});
  const close = element("button", "carta-hub-banner-close", {type: "button", title: "Hide until the next warning"});
  const restore = element("a", "carta-hub-restore");
  restore.textContent = "Restore";
  close.textContent = "\u00d7";
  banner.append(text, restore, extend, close);
  document.body.append(indicator, banner);

  function element(tag, id, attributes = {}) {
    const node = document.createElement(tag);
    node.id = id;
    for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
    return node;
  }

  function xsrf() {
    const found = document.cookie.match(/(?:^|;\s*)_xsrf=([^;]*)/);
    return found ? decodeURIComponent(found[1]) : "";
  }

  async function call(url, method) {
    const response = await fetch(url, {method, credentials: "same-origin", headers: {"X-XSRFToken": xsrf()}});
    let body = {};
    try {
      body = await response.json();
    } catch (e) {
      // not JSON: an error page
    }
    return [response.status, body];
  }

  async function refresh() {
    refreshedAt = Date.now();
    try {
      const [status, body] = await call(SESSION, "GET");
      if (status === 200) {
        state = body;
        offset = body.now - Date.now() / 1000;
      }
    } catch (e) {
      // the server is restarting or gone: keep what we know
    }
    render();
  }

  function secondsLeft() {
    return state && state.ends_at ? state.ends_at - (Date.now() / 1000 + offset) : null;
  }

  function duration(seconds) {
    seconds = Math.max(0, Math.round(seconds));
    if (seconds < 120) return `${seconds} s`;
    const minutes = Math.ceil(seconds / 60);
    const hours = Math.floor(minutes / 60);
    if (!hours) return `${minutes} min`;
    return minutes % 60 ? `${hours} h ${minutes % 60} min` : `${hours} h`;
  }

  function at(epoch) {
    return new Date(epoch * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  function steps() {
    const minutes = state.step_minutes || 0;
    return minutes % 60 ? `${minutes} min` : `${minutes / 60} h`;
  }

  // the lead time the banner is shown for now (the smallest one reached), or null
  function lead(left) {
    const reached = (state.warn_before || []).filter(w => left <= w);
    return reached.length ? Math.min(...reached) : null;
  }

  function warning(left) {
    const saved = (state.autosave && state.autosave.saved) || [];
    const note = saved.length ? ` Your work was saved as workspace ${saved[saved.length - 1]}.` : "";
    if (state.reason === "idle") return `CARTA will close in ${duration(left)} unless you use it.${note}`;
    return `Your CARTA session ends at ${at(state.ends_at)} (in ${duration(left)}): the wall time of ` +
      `its Slurm job. Save your work (File \u25b8 Save Workspace) before then.${note}`;
  }

  // the earlier session's autosave, unless this page opened it or the student closed the offer
  function offer() {
    const saved = state && state.restore;
    if (!saved || restoreClosed) return null;
    const opened = new URLSearchParams(location.search).get("workspace");
    return saved.workspaces.includes(opened) ? null : saved;
  }

  function offerText(saved) {
    const why = saved.reason === "idle" ? "before it closed for being idle" : "before its wall time ended";
    return `Your last CARTA session was saved at ${at(saved.saved_at)}, ${why}, as workspace ` +
      `${saved.workspaces.join(", ")} (File \u25b8 Open Workspace).`;
  }

  function render() {
    const left = secondsLeft();
    const saveLead = (state && state.autosave && state.autosave.lead) || 0;
    if (left !== null && left <= saveLead && Date.now() - refreshedAt >= SAVE_POLL_MS) refresh();
    indicator.textContent = left === null ? "" : `${duration(left)} left`;
    indicator.title = left === null ? "" : `CARTA ends at ${at(state.ends_at)} (${state.reason})`;
    fitIndicator();
    const now = Date.now();
    if (notice && now < notice.until) return show(notice.text, notice.bad ? "carta-hub-last" : "carta-hub-good", false);
    notice = null;
    const reached = left === null ? null : lead(left);
    if (reached === null) closedAt = null; // used again (idle), or extended
    if (reached === null || reached === closedAt) {
      const saved = offer();
      return saved ? show(offerText(saved), "carta-hub-info", false, saved.url) : hide();
    }
    const last = reached === Math.min(...state.warn_before);
    show(warning(left), last ? "carta-hub-last" : "", state.reason === "wall time" && state.can_extend);
  }

  // only where CARTA's menu bar is free (its toolbars end left of it)
  function fitIndicator() {
    const left = indicator.getBoundingClientRect().left;
    let right = 0;
    for (const bar of document.querySelectorAll(".root-menu > *")) {
      const box = bar.getBoundingClientRect();
      if (box.width && box.left < left) right = Math.max(right, box.right);
    }
    indicator.style.visibility = right + 8 < left ? "visible" : "hidden";
  }

  function show(message, tone, offerExtend, restoreUrl = null) {
    text.textContent = message;
    banner.className = tone;
    restore.style.display = restoreUrl ? "" : "none";
    if (restoreUrl) restore.href = restoreUrl;
    extend.style.display = offerExtend ? "" : "none";
    extend.textContent = extending ? "Extending\u2026" : `Extend by ${steps()}`;
    extend.disabled = extending;
    if (banner.style.display !== "flex") {
      banner.style.display = "flex";
      document.body.classList.add("carta-hub-banner-on");
      window.dispatchEvent(new Event("resize"));
    }
  }

  function hide() {
    if (banner.style.display !== "none") {
      banner.style.display = "none";
      document.body.classList.remove("carta-hub-banner-on");
      window.dispatchEvent(new Event("resize"));
    }
  }

  close.addEventListener("click", () => {
    const left = secondsLeft();
    closedAt = left === null ? null : lead(left);
    restoreClosed = restoreClosed || (closedAt === null && offer() !== null);
    notice = null;
    render();
  });

  extend.addEventListener("click", async () => {
    extending = true;
    render();
    let status = 0;
    let body = {};
    try {
      [status, body] = await call(EXTEND, "POST");
    } catch (e) {
      body = {message: "The server could not be reached: try again shortly."};
    }
    extending = false;
    if (status === 200 && body.ends_at) {
      state = body;
      offset = body.now - Date.now() / 1000;
      closedAt = null;
      notice = {text: `Extended: your CARTA session now ends at ${at(body.ends_at)} (in ${duration(secondsLeft())}).`, until: Date.now() + NOTICE_MS, bad: false};
    } else {
      notice = {text: `Not extended: ${body.message || `the server answered ${status}`}`, until: Date.now() + NOTICE_MS, bad: true};
    }
    render();
  });

  // using CARTA moves the idle end: look again shortly after (CARTA's message comes first)
  for (const type of ["pointerdown", "keydown", "wheel"]) {
    window.addEventListener(type, event => {
      if (!state || state.reason !== "idle" || banner.contains(event.target)) return;
      clearTimeout(recheck);
      recheck = setTimeout(refresh, 1000);
    }, {capture: true, passive: true});
  }

  refresh();
  setInterval(refresh, POLL_MS);
  setInterval(render, 1000);
})();
