// The labelling page: fetch a pair, answer by button or key, load the next one at once.
// No framework, no CDN. Every POST carries the session's CSRF token header.
(function () {
  "use strict";
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const root = document.getElementById("app");
  const undoWindowMs = 1000 * Number(root.dataset.undoWindow || 30);
  const $ = (id) => document.getElementById(id);
  const LABELS = { "1": "left is better", "0": "right is better", "0.5": "equally good", "null": "can't tell" };

  let current = null;      // the query shown now
  let busy = false;        // one request at a time: no double answers
  let lastAnswer = null;   // {id, at} of the last stored comparison, for undo
  let pollTimer = null;
  let toastTimer = null;
  let count = Number(sessionStorage.getItem("prefrl-count") || 0);

  function setCount(n) {
    count = Math.max(0, n);
    sessionStorage.setItem("prefrl-count", String(count));
    $("counter").textContent = String(count);
  }

  async function post(url, body) {
    const res = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrf },
      body: JSON.stringify(body || {}),
    });
    let data = null;
    try { data = await res.json(); } catch (e) { data = null; }
    if (res.status === 401) { window.location.href = "/"; throw new Error("logged out"); }
    if (!res.ok) { throw new Error((data && data.detail) || ("HTTP " + res.status)); }
    return data;
  }

  function showError(msg) {
    const el = $("error");
    el.textContent = msg || "";
    el.hidden = !msg;
  }

  // A clip is fetched, not pointed at: the server answers 202 while the render worker is still
  // rendering it, and the page asks again after Retry-After; the video plays from memory. Clips
  // are kept by URL (the pair shown and the one loaded ahead), so the next pair plays at once.
  const clips = new Map();   // clip URL → Promise of an object URL (null: it failed)
  const preloaded = new Map();  // clip URL → a detached <video> already decoding it, swapped in when shown
  let upcoming = null;       // {id, clips}: the pair the server suggests loading ahead
  const AHEAD_DELAY_MS = 250;  // after the pair shown has started playing, not competing with it

  async function fetchClip(url) {
    for (let attempt = 0; attempt < 300; attempt++) {
      let res = null;
      try { res = await fetch(url, { credentials: "same-origin" }); } catch (e) { res = null; }
      if (res && res.status === 200) { return URL.createObjectURL(await res.blob()); }
      if (res && res.status === 401) { window.location.href = "/"; return null; }
      if (res && res.status !== 202) return null;     // a real failure: say so, don't spin
      if (!clips.has(url)) return null;               // nobody wants it any more
      const wait = 1000 * Number((res && res.headers.get("Retry-After")) || 1);
      await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(wait, 250), 2000)));
    }
    return null;
  }

  function clip(url) {
    if (!clips.has(url)) {
      const p = fetchClip(url);
      clips.set(url, p);
      p.then((obj) => { if (obj === null && clips.get(url) === p) clips.delete(url); });  // retried when shown
    }
    return clips.get(url);
  }

  function keepOnly(urls) {
    for (const [url, video] of preloaded) {
      if (!urls.includes(url)) { preloaded.delete(url); clearVideo(video); }
    }
    for (const [url, p] of clips) {
      if (!urls.includes(url)) {
        clips.delete(url);
        p.then((obj) => { if (obj) URL.revokeObjectURL(obj); });
      }
    }
  }

  function watch(video) {
    video.addEventListener("loadeddata", () => {
      if (video.parentElement) video.parentElement.classList.remove("loading");
    });
    video.addEventListener("error", () => {
      if (!video.parentElement || !video.getAttribute("src")) return;
      video.parentElement.classList.remove("loading");
      video.parentElement.classList.add("failed");
    });
  }

  // A clip of the pair loaded ahead is decoded in a detached <video>, so showing it is a swap.
  function preload(url) {
    const p = clip(url);
    p.then((obj) => {
      // clips.get(url) !== p: dropped by keepOnly meanwhile (obj is revoked), perhaps asked for again since
      if (!obj || clips.get(url) !== p || preloaded.has(url)) return;
      const video = document.createElement("video");
      for (const attr of ["autoplay", "loop", "muted", "playsinline"]) video.setAttribute(attr, "");
      video.muted = true;
      video.preload = "auto";
      watch(video);
      video.dataset.clip = url;
      video.setAttribute("src", obj);
      video.load();
      preloaded.set(url, video);
    });
  }

  // Removing src alone does not stop a media element (the spec runs no load algorithm for it): it
  // would go on reading, looping, from an object URL that keepOnly then revokes, and the browser
  // logs ERR_FILE_NOT_FOUND. load() with no src aborts the fetch and lets go of the resource.
  function clearVideo(el) {
    if (!el.hasAttribute("src")) { delete el.dataset.clip; return; }
    el.removeAttribute("src");
    el.load();
    delete el.dataset.clip;
  }

  async function setVideo(el, url) {
    el.hidden = false;
    if (el.dataset.clip === url) {
      const p = el.play(); if (p && p.catch) { p.catch(() => {}); }
      return;
    }
    const ready = preloaded.get(url);
    if (ready) {
      preloaded.delete(url);
      ready.id = el.id;
      el.replaceWith(ready);
      clearVideo(el);
      ready.parentElement.classList.remove("failed");
      ready.parentElement.classList.toggle("loading", ready.readyState < 2);
      const p = ready.play(); if (p && p.catch) { p.catch(() => {}); }
      return;
    }
    clearVideo(el);
    el.dataset.clip = url;
    el.parentElement.classList.add("loading");
    el.parentElement.classList.remove("failed");
    let p = clip(url), obj = await p;
    while (obj && el.dataset.clip === url && clips.get(url) !== p) {  // dropped meanwhile: obj is revoked
      p = clip(url); obj = await p;
    }
    if (el.dataset.clip !== url) return;              // another pair is shown by now
    if (obj) {
      el.setAttribute("src", obj);
      const p = el.play(); if (p && p.catch) { p.catch(() => {}); }
      return;
    }
    el.parentElement.classList.remove("loading");
    el.parentElement.classList.add("failed");
  }

  // After a pair is shown, ask which pair to load next and fetch its clips in the background.
  async function loadAhead(query) {
    let data = null;
    try { data = await post("/api/upcoming", { current_query_id: query ? query.id : null }); }
    catch (e) { data = null; }
    if (current !== query) return;                   // answered meanwhile: the next pair asks again
    upcoming = data && data.upcoming;
    const shown = query && query.kind !== "text" ? [query.left.clip_url, query.right.clip_url] : [];
    keepOnly(shown.concat(upcoming ? upcoming.clips : []));
    if (upcoming) { upcoming.clips.forEach(preload); }
  }

  function render(query) {
    current = query;
    const pair = $("pair"), answers = $("answers"), empty = $("empty"), prompt = $("prompt");
    if (!query) {
      pair.hidden = true; answers.hidden = true; prompt.hidden = true; empty.hidden = false;
      root.dataset.queryId = "";
      if (!pollTimer) { pollTimer = setTimeout(() => { pollTimer = null; loadNext(); }, 2000); }
      return;
    }
    empty.hidden = true; pair.hidden = false; answers.hidden = false;
    root.dataset.queryId = String(query.id);
    for (const side of ["left", "right"]) {
      const video = $("video-" + side), text = $("text-" + side);
      if (query.kind === "text") {
        video.hidden = true; clearVideo(video);
        video.parentElement.classList.remove("loading", "failed");
        text.textContent = query[side].text; text.hidden = false;
      } else {
        text.hidden = true;
        setVideo(video, query[side].clip_url);
      }
    }
    if (query.kind === "text") { prompt.textContent = query.prompt; prompt.hidden = false; keepOnly([]); }
    else { prompt.hidden = true; setTimeout(() => loadAhead(query), AHEAD_DELAY_MS); }
    $("question").textContent = query.kind === "text"
      ? "Which response is better?" : "Which clip shows better behaviour?";
  }

  async function loadNext() {
    if (busy) return;
    busy = true;
    try { const data = await post("/api/next"); showError(""); render(data.query); }
    catch (e) { showError(e.message); }
    finally { busy = false; }
  }

  function toast(text) {
    $("toast-text").textContent = text;
    $("toast").hidden = false;
    clearTimeout(toastTimer);
    toastTimer = setTimeout(() => { $("toast").hidden = true; lastAnswer = null; }, undoWindowMs);
  }

  function flash(mu) {
    const id = { "1": "btn-left", "0": "btn-right", "0.5": "btn-equal", "null": "btn-skip" }[String(mu)];
    const btn = $(id);
    btn.classList.add("pressed");
    setTimeout(() => btn.classList.remove("pressed"), 180);
  }

  async function answer(mu) {
    if (busy || !current) return;
    busy = true;
    flash(mu);
    try {
      const body = { query_id: current.id, mu: mu };
      if (upcoming) { body.next_query_id = upcoming.id; }
      upcoming = null;
      const data = await post("/api/answer", body);
      lastAnswer = { id: data.comparison.id, at: Date.now() };
      setCount(count + 1);
      toast("Saved: " + LABELS[String(mu)] + ".");
      showError("");
      render(data.next);
    } catch (e) {
      showError(e.message);
      busy = false;
      await loadNext();   // e.g. the lease expired: fetch a fresh pair
      return;
    } finally { busy = false; }
  }

  async function undo() {
    if (busy || !lastAnswer || Date.now() - lastAnswer.at > undoWindowMs) return;
    busy = true;
    try {
      const data = await post("/api/undo", {
        comparison_id: lastAnswer.id, current_query_id: current ? current.id : null });
      lastAnswer = null;
      setCount(count - 1);
      $("toast").hidden = true;
      showError("");
      render(data.next);
    } catch (e) { showError(e.message); }
    finally { busy = false; }
  }

  document.querySelectorAll("video").forEach(watch);

  document.querySelectorAll("button.answer").forEach((btn) => {
    btn.addEventListener("click", () => {
      const raw = btn.dataset.mu;
      answer(raw === "null" ? null : Number(raw));
      btn.blur();
    });
  });
  $("undo").addEventListener("click", undo);
  $("logout").addEventListener("click", async () => {
    try { await post("/logout"); } catch (e) { /* already out */ }
    sessionStorage.removeItem("prefrl-count");
    window.location.href = "/";
  });

  const KEYS = {
    ArrowLeft: 1, "1": 1,
    ArrowRight: 0, "2": 0,
    ArrowUp: 0.5, "=": 0.5, "3": 0.5,
    ArrowDown: null, "4": null,
  };
  document.addEventListener("keydown", (ev) => {
    if (ev.altKey || ev.ctrlKey || ev.metaKey || ev.target.tagName === "INPUT") return;
    if (ev.key === "u" || ev.key === "U") { ev.preventDefault(); undo(); return; }
    if (Object.prototype.hasOwnProperty.call(KEYS, ev.key)) {
      ev.preventDefault();
      if (!ev.repeat) answer(KEYS[ev.key]);
    }
  });

  setCount(count);
  loadNext();
})();
