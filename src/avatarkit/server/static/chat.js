/* avatarkit chat page: talks to the server over a WebSocket and plays each reply sentence
 * as soon as it is rendered, on two <video> elements that take turns (one plays while the
 * next loads), so segments follow each other without a visible gap.
 * No configuration and no secret lives here: the server says what it allows in "hello". */
"use strict";
(() => {
  const $ = (id) => document.getElementById(id);
  const ui = {
    log: $("log"), text: $("text"), form: $("composer"), send: $("send"), stop: $("stop"),
    mic: $("mic"), reset: $("reset"), subtitle: $("subtitle"), still: $("still"),
    stage: $("stage"), thinking: $("thinking"), unmute: $("unmute"), dot: $("dot"),
    title: $("title"), note: $("note"), idle: $("idle"),
  };
  const clips = [$("clip0"), $("clip1")];
  const base = new URL(".", location.href);
  if (location.pathname.endsWith("/embed")) document.body.classList.add("embedded");
  const accent = /^#?accent=([0-9a-f]{3}|[0-9a-f]{6})$/i.exec(location.hash);
  if (accent) { // the widget's colour, passed by widget.js
    for (const name of ["--accent", "--accent-dark", "--user"]) {
      document.documentElement.style.setProperty(name, `#${accent[1]}`);
    }
  }

  /* What happened when, for people debugging and for the browser test. */
  const trace = { events: [], subtitles: [], firstPlay: {}, final: {} };
  window.avatarkitChat = trace;
  const mark = (kind, data) => trace.events.push(Object.assign({ kind, at: Date.now() }, data));

  let ws = null;
  let retry = 0;
  let maxChars = 4000;
  let turn = null;
  let lastSent = "";
  let blocked = null;

  // ------------------------------------------------------------------ connection

  function connect() {
    const url = new URL("ws", base);
    url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
    ws = new WebSocket(url);
    ws.addEventListener("open", () => online(true)); // retries back off until a hello
    ws.addEventListener("message", (e) => {
      let m;
      try { m = JSON.parse(e.data); } catch { return; }
      handle(m);
    });
    ws.addEventListener("close", () => {
      online(false);
      if (turn && !turn.done) endTurn(false);
      setTimeout(connect, Math.min(10000, 500 * 2 ** retry++));
    });
  }

  function online(yes) {
    ui.dot.classList.toggle("online", yes);
    ui.dot.classList.toggle("offline", !yes);
    ui.dot.title = yes ? "connected" : "reconnecting…";
    ui.send.disabled = !yes;
  }

  function send(message) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(message));
      return true;
    }
    showError("Not connected to the server; retrying…");
    return false;
  }

  // ------------------------------------------------------------------ messages

  function handle(m) {
    if (m.turn && m.type !== "turn" && (!turn || m.turn !== turn.id)) return; // an old reply
    switch (m.type) {
      case "hello": return hello(m);
      case "turn": return startTurn(m);
      case "text": // the server says what to show (its shown_text): no tag pattern here
        turn.shown = turn.shown.slice(0, m.shown_at) + m.shown;
        if (!turn.done) setText(turn.bubble, turn.shown);
        return scrollDown();
      case "audio": {
        const s = segment(m.index);
        Object.assign(s, { text: m.text, offset: m.offset, duration: m.duration, words: m.words });
        return pump();
      }
      case "clip": {
        const s = segment(m.index);
        Object.assign(s, { url: m.url, hasVideo: m.has_video, clipDuration: m.duration });
        mark("clip", { turn: m.turn, index: m.index, serverTime: m.server_time * 1000 });
        return pump();
      }
      case "idle":
        return idleLoop(m);
      case "final":
        turn.done = true;
        turn.text = m.text;
        trace.final[m.turn] = { text: m.text, serverTime: m.server_time * 1000, at: Date.now() };
        setText(turn.bubble, m.text);
        return pump();
      case "interrupted":
        return;
      case "reset":
        ui.log.replaceChildren();
        return emptyHint();
      case "error":
        return failed(m);
      default:
        return undefined;
    }
  }

  function hello(m) {
    retry = 0; // accepted (a refused one, too_many_sessions or _connections, gets no hello)
    ui.title.textContent = m.title || "avatarkit";
    document.title = `${m.title || "avatarkit"} chat`;
    maxChars = m.max_chars || maxChars;
    ui.text.maxLength = maxChars;
    ui.stage.classList.toggle("audio-only", !m.video);
    if (m.avatar && !ui.still.getAttribute("src")) { // only when there is a still to show
      ui.still.src = new URL("avatar.png", base).href;
      ui.still.hidden = false;
      ui.stage.classList.add("has-avatar"); // and its blurred backdrop
    }
    ui.log.replaceChildren();
    for (const t of m.history || []) {
      addMessage("user", t.user).classList.add("past");
      addMessage("bot", t.assistant || "…").classList.add("past");
    }
    if (!(m.history || []).length) emptyHint();
    ui.note.textContent = m.persistent ? "" :
      "This conversation ends when the page closes (no cookie is kept for this embedded chat).";
    setupSpeech(Boolean(m.speech_input));
    scrollDown();
  }

  /* The avatar at rest, looping muted under the clips: what shows while the next clip renders.
   * It starts and ends in the rest pose every clip starts and ends in, so switching is seamless. */
  function idleLoop(m) {
    const url = new URL(m.url, base).href;
    if (ui.idle.dataset.src === url) return;
    ui.idle.dataset.src = url;
    ui.idle.src = url;
    ui.idle.addEventListener("playing", () => ui.idle.classList.add("on"), { once: true });
    const started = ui.idle.play();
    if (started) started.catch(() => {}); // muted autoplay may still be refused: the still stays
    mark("idle", { url: m.url });
  }

  function failed(m) {
    let text = m.message || "Something went wrong.";
    if (m.code === "rate_limited") {
      text = `Slow down a little: try again in ${Math.ceil(m.retry_after || 1)} s.`;
      if (!ui.text.value) ui.text.value = lastSent;
    }
    showError(text);
    if (m.turn && turn && m.turn === turn.id) endTurn(false);
  }

  // ------------------------------------------------------------------ turns

  function startTurn(m) {
    ui.log.querySelector(".empty")?.remove();
    addMessage("user", m.user);
    const bubble = addMessage("bot", "");
    bubble.classList.add("pending");
    turn = { id: m.turn, bubble, segs: new Map(), next: 0, current: null, heard: 0,
             done: false, shown: "", text: "" };
    ui.stop.hidden = false;
    thinking(true);
    mark("turn", { turn: m.turn });
  }

  function segment(index) {
    let s = turn.segs.get(index);
    if (!s) { s = { index }; turn.segs.set(index, s); }
    return s;
  }

  const ready = (s) => Boolean(s && s.url && s.text !== undefined);

  /* Start the next segment when nothing plays; otherwise load the one after it. */
  function pump() {
    if (!turn) return;
    if (turn.current) return preload();
    const s = turn.segs.get(turn.next);
    if (ready(s)) return play(s);
    if (turn.done && !s) return endTurn(true);
    thinking(true);
  }

  function play(s) {
    const el = clips.find((c) => c.dataset.src === s.url) ||
               clips.find((c) => !c.classList.contains("front")) || clips[0];
    load(el, s);
    turn.current = { el, seg: s };
    el.muted = false;
    ui.stage.classList.toggle("audio-only", !s.hasVideo);
    const started = el.play();
    if (started) {
      started.catch((err) => {
        if (err && err.name === "NotAllowedError") { blocked = el; ui.unmute.hidden = false; }
      });
    }
    preload();
  }

  function load(el, s) {
    if (el.dataset.src === s.url) return;
    el.dataset.src = s.url;
    el.src = new URL(s.url, base).href;
    el.load();
  }

  function preload() {
    if (!turn || !turn.current) return;
    const s = turn.segs.get(turn.next + 1);
    if (!ready(s)) return;
    const spare = clips.find((c) => c !== turn.current.el && !c.classList.contains("front"));
    if (spare) load(spare, s);
  }

  for (const el of clips) {
    el.addEventListener("playing", () => {
      if (!turn || !turn.current || turn.current.el !== el) return;
      for (const c of clips) c.classList.toggle("front", c === el);
      thinking(false);
      const s = turn.current.seg;
      if (!s.shown) {
        s.shown = true;
        showSubtitle(s);
        trace.subtitles.push(s.text);
        if (!(turn.id in trace.firstPlay)) trace.firstPlay[turn.id] = Date.now();
        mark("playing", { turn: turn.id, index: s.index });
      }
      preload();
    });
    el.addEventListener("ended", () => next(el));
    el.addEventListener("error", () => { if (el.getAttribute("src")) next(el); });
  }

  function next(el) {
    if (!turn || !turn.current || turn.current.el !== el) return;
    const s = turn.current.seg;
    turn.heard = s.offset + s.duration;
    turn.current = null;
    turn.next += 1;
    mark("ended", { turn: turn.id, index: s.index });
    const following = turn.segs.get(turn.next);
    if (!ready(following) && !(turn.done && !following)) {
      mark("gap", { turn: turn.id, index: turn.next }); // next clip not rendered yet
      for (const c of clips) c.classList.remove("front"); // rest on the still meanwhile
    }
    pump();
  }

  /* Seconds of the reply heard so far, on the reply's clock. */
  function clock() {
    if (!turn) return 0;
    if (turn.current) return turn.current.seg.offset + (turn.current.el.currentTime || 0);
    return turn.heard;
  }

  function interrupt() {
    if (!turn) return;
    const played = Math.round(clock() * 1000) / 1000;
    const id = turn.id;
    send({ type: "interrupt", turn: id, played });
    mark("interrupt", { turn: id, played });
    const heard = heardText(played);
    setText(turn.bubble, heard || "…");
    turn.bubble.classList.add("cut");
    endTurn(false);
  }

  function heardText(played) {
    const out = [];
    for (const s of [...turn.segs.values()].sort((a, b) => a.index - b.index)) {
      if (s.text === undefined) break;
      if (played + 1e-6 >= s.offset + s.duration) { out.push(s.text); continue; }
      if (played > s.offset && s.words) {
        const words = s.words.filter((w) => s.offset + w[2] <= played + 1e-6).map((w) => w[0]);
        if (words.length) out.push(words.join(" "));
      }
      break;
    }
    return out.join(" ");
  }

  function endTurn(complete) {
    if (!turn) return;
    turn.bubble.classList.remove("pending");
    if (complete) mark("finished", { turn: turn.id });
    for (const c of clips) {
      c.pause();
      c.classList.remove("front");
      if (!complete) { c.removeAttribute("src"); delete c.dataset.src; c.load(); }
    }
    turn = null;
    if (document.activeElement === ui.stop) ui.text.focus(); // keyboard users stay in the chat
    ui.stop.hidden = true;
    ui.unmute.hidden = true;
    thinking(false);
    setTimeout(() => { if (!turn) ui.subtitle.replaceChildren(); }, complete ? 700 : 0);
  }

  // ------------------------------------------------------------------ subtitles

  let subtitleSeg = null;
  function showSubtitle(s) {
    subtitleSeg = s;
    const tokens = s.text.split(/\s+/).filter(Boolean);
    const timed = s.words && s.words.length === tokens.length;
    ui.subtitle.replaceChildren(...tokens.map((t, i) => {
      const span = document.createElement("span");
      span.className = "w";
      span.textContent = t;
      if (timed) span.dataset.start = s.words[i][1];
      else span.classList.add("said");
      return i === tokens.length - 1 ? span : [span, document.createTextNode(" ")];
    }).flat());
  }

  function tick() {
    if (turn && turn.current && turn.current.seg === subtitleSeg) {
      const t = turn.current.el.currentTime || 0;
      for (const span of ui.subtitle.children) {
        if (span.dataset.start !== undefined) span.classList.toggle("said", Number(span.dataset.start) <= t);
      }
    }
    requestAnimationFrame(tick);
  }
  requestAnimationFrame(tick);

  // ------------------------------------------------------------------ page

  function addMessage(who, text) {
    const li = document.createElement("li");
    li.className = `msg ${who}`;
    li.textContent = text;
    ui.log.append(li);
    scrollDown();
    return li;
  }

  function setText(el, text) { el.textContent = text; scrollDown(); }
  function scrollDown() { ui.log.scrollTop = ui.log.scrollHeight; }
  function thinking(on) { ui.thinking.hidden = !on; }

  function emptyHint() {
    const li = document.createElement("li");
    li.className = "empty";
    li.textContent = "Say hello: the avatar answers out loud.";
    ui.log.append(li);
  }

  function showError(text) {
    const li = addMessage("error", text);
    li.setAttribute("role", "alert");
  }

  ui.form.addEventListener("submit", (e) => {
    e.preventDefault();
    const text = ui.text.value.trim();
    if (!text) { ui.text.focus(); return; }
    if (text.length > maxChars) { showError(`Messages are limited to ${maxChars} characters.`); return; }
    if (turn) interrupt(); // a new message stops the reply still playing
    if (send({ type: "say", text })) { lastSent = text; ui.text.value = ""; }
  });
  ui.stop.addEventListener("click", () => interrupt());
  ui.reset.addEventListener("click", () => { if (turn) interrupt(); send({ type: "reset" }); });
  ui.unmute.addEventListener("click", () => {
    ui.unmute.hidden = true;
    if (blocked) blocked.play().catch(() => {});
  });
  ui.still.addEventListener("error", () => { ui.still.hidden = true; });

  // ------------------------------------------------------------------ speech input

  let recognition = null;
  function setupSpeech(allowed) {
    const SR = window.SpeechRecognition || window.webkitSpeechRecognition;
    ui.mic.hidden = !(allowed && SR);
    if (ui.mic.hidden || ui.mic.dataset.ready) return;
    ui.mic.dataset.ready = "1";
    ui.mic.addEventListener("click", () => {
      if (recognition) { recognition.stop(); return; }
      recognition = new SR();
      recognition.lang = navigator.language || "en-US";
      recognition.interimResults = true;
      recognition.addEventListener("speechstart", () => { if (turn) interrupt(); });
      recognition.addEventListener("result", (e) => {
        const results = Array.from(e.results);
        ui.text.value = results.map((r) => r[0].transcript).join("");
        if (results.length && results[results.length - 1].isFinal) ui.form.requestSubmit();
      });
      recognition.addEventListener("error", (e) => showError(`Speech input stopped: ${e.error}.`));
      recognition.addEventListener("end", () => { recognition = null; ui.mic.classList.remove("listening"); });
      ui.mic.classList.add("listening");
      recognition.start();
    });
  }

  connect();
  ui.text.focus();
})();
