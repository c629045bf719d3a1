// wsqueue console: vanilla JS (ES2020), no dependencies, no build step.
//
// The page is served with a strict Content-Security-Policy (script-src 'self',
// style-src 'self', no 'unsafe-inline', no 'unsafe-eval'). So everything here
// goes through addEventListener, createElement, textContent and the `hidden`
// attribute: no inline handlers, no style attributes, no innerHTML, no eval.
// textContent is also what keeps message contents (arbitrary strings from any
// publisher) from ever becoming markup.
"use strict";

const MAX_MESSAGES = 500;    // items kept in #messages
const MAX_QUEUE = 100;       // publishes waiting for the publish socket
const BACKOFF_MIN = 0.5;     // seconds, doubled per failed attempt...
const BACKOFF_MAX = 10;      // ...up to this cap
const JITTER = 0.2;          // +-20 %, so many consoles do not reconnect in lockstep
const STORAGE_KEY = "wsqueue.console.topics";

const $ = (id) => document.getElementById(id);
const show = (id, visible) => { $(id).hidden = !visible; };

let user = null;              // signed-in user name, null when signed out
let publisherURL = null;      // from /config.json, fetched lazily
let nextId = 1;               // frame ids, unique across both sockets
let messageCount = 0;
const topics = new Map();     // topic -> {li, id}: the subscription list, survives reconnects
const subRequests = new Map(); // Id -> {op: "sub" | "unsub", topic}, waiting for Ack/Error
const pubPending = new Map(); // Id -> topic, sent and waiting for Ack
const pubQueue = [];          // frames waiting for the publish socket to open

// ---- HTTP --------------------------------------------------------------------

// Calls an endpoint on the page's own origin; resolves to the JSON answer, or
// rejects with an Error carrying the server's {"Error": ...} and the status.
async function api(method, path, body) {
  const options = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
  if (body) options.body = body; // URLSearchParams: sent form-urlencoded
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new Error(`cannot reach the server (${err.message})`);
  }
  let data = {};
  try { data = await response.json(); } catch { /* not JSON: keep {} */ }
  if (!response.ok) {
    const err = new Error(data.Error || `${response.status} ${response.statusText}`);
    err.status = response.status;
    throw err;
  }
  return data;
}

// ---- banners -------------------------------------------------------------------

function showError(text) {
  $("error").textContent = text;
  show("error", Boolean(text));
}

function setLoginError(text) {
  $("login-error").textContent = text;
  show("login-error", Boolean(text));
}

function setResult(state, text) {
  const el = $("publish-result");
  el.dataset.state = state;
  el.textContent = text;
}

// ---- sockets ---------------------------------------------------------------------

// A WebSocket that reconnects with exponential backoff until stop() is called.
// getURL() is async (the publish socket needs a fresh ticket for each attempt);
// handlers: open(), frame(object), lost() (an open or opening socket closed).
function makeChannel(name, stateEl, getURL, handlers) {
  const ch = { ws: null, wanted: false, attempt: 0, gen: 0, timer: null, tick: null };

  function setState(state, due) {
    clearInterval(ch.tick);
    ch.tick = null;
    stateEl.dataset.state = state;
    const render = () => {
      stateEl.textContent = due
        ? `reconnecting in ${Math.max(0, (due - Date.now()) / 1000).toFixed(1)} s`
        : state;
    };
    render();
    if (due) ch.tick = setInterval(render, 100);
  }

  function retry() {
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** ch.attempt);
    ch.attempt += 1;
    const delay = base * (1 - JITTER + Math.random() * 2 * JITTER);
    setState("reconnecting", Date.now() + delay * 1000);
    ch.timer = setTimeout(connect, delay * 1000);
  }

  // `gen` tells a stale attempt (stopped, or overtaken while awaiting getURL)
  // from the current one, so it never touches the channel again.
  const stale = (gen) => gen !== ch.gen || !ch.wanted;

  async function connect() {
    clearTimeout(ch.timer);
    ch.timer = null;
    const gen = ++ch.gen;
    setState("connecting");
    let url, ws;
    try {
      url = await getURL();
      if (stale(gen)) return;
      ws = new WebSocket(url);
    } catch (err) {
      if (stale(gen)) return;
      if (err.status === 401) { sessionExpired(); return; }
      showError(`${name}: ${err.message}`);
      retry();
      return;
    }
    ch.ws = ws;
    let opened = false;
    ws.addEventListener("open", () => {
      if (ch.ws !== ws) return;
      opened = true;
      ch.attempt = 0; // the connection works again: next failure starts at 0.5 s
      setState("open");
      handlers.open();
    });
    ws.addEventListener("message", (event) => {
      if (ch.ws !== ws) return;
      let frame;
      try { frame = JSON.parse(event.data); } catch { frame = null; }
      if (frame && typeof frame === "object") handlers.frame(frame);
      else showError(`${name}: unreadable frame`);
    });
    ws.addEventListener("close", () => {
      if (ch.ws !== ws) return; // stopped on purpose, or replaced
      ch.ws = null;
      handlers.lost();
      if (opened) { retry(); return; }
      // A refused handshake (401 once the session expired, 403) is only a
      // close to a browser script: ask /session whether we are still signed in.
      api("GET", "/session").then(
        () => { if (!stale(gen)) retry(); },
        (err) => {
          if (stale(gen)) return;
          if (err.status === 401) sessionExpired();
          else retry();
        });
    });
  }

  ch.start = () => {
    if (ch.wanted) return;
    ch.wanted = true;
    ch.attempt = 0;
    connect();
  };
  ch.stop = () => {
    ch.wanted = false;
    ch.gen += 1;
    clearTimeout(ch.timer);
    ch.timer = null;
    const ws = ch.ws;
    ch.ws = null; // before close(): its close event must not schedule a retry
    if (ws) ws.close(1000, "signed out");
    setState("closed");
  };
  // Waiting for a retry and the network is back: try now.
  ch.kick = () => { if (ch.wanted && ch.timer) { ch.attempt = 0; connect(); } };
  ch.isOpen = () => Boolean(ch.ws) && ch.ws.readyState === WebSocket.OPEN;
  ch.send = (frame) => {
    if (!ch.isOpen()) return false;
    ch.ws.send(JSON.stringify(frame));
    return true;
  };
  return ch;
}

// The cookie authenticates the subscribe socket (same origin).
const sub = makeChannel("subscribe", $("state"),
  async () => `${location.protocol === "http:" ? "ws:" : "wss:"}//${location.host}/subscribe`,
  {
    // The server forgets a connection's subscriptions when it closes, so every
    // (re)open re-sends `sub` for the whole list.
    open() { for (const topic of topics.keys()) sendSub(topic); },
    frame: onSubFrame,
    lost() {
      subRequests.clear();
      for (const entry of topics.values()) markTopic(entry, "pending");
    },
  });

// The publisher is another origin, which the cookie does not reach: it takes a
// ticket instead. Tickets are single-use (and live 60 s), so every connection
// attempt, reconnects included, asks POST /ticket for a fresh one.
const pub = makeChannel("publish", $("publish-state"),
  async () => {
    if (!publisherURL) publisherURL = (await api("GET", "/config.json")).Publisher;
    const { Ticket } = await api("POST", "/ticket");
    const url = new URL(publisherURL);
    url.searchParams.set("ticket", Ticket);
    return url.href;
  },
  {
    open() {
      let sent = 0;
      while (pubQueue.length && pub.send(pubQueue[0])) {
        const frame = pubQueue.shift();
        pubPending.set(frame.Id, frame.Topic);
        sent += 1;
      }
      if (sent) setResult("pending", `Sent ${sent} queued message(s), waiting for Ack…`);
    },
    frame: onPubFrame,
    lost() {
      // Whether those were stored is unknown; resending could duplicate them.
      if (pubPending.size) {
        const text = `publish connection lost before ${pubPending.size} message(s) were acknowledged`;
        setResult("error", text);
        showError(text);
      }
      pubPending.clear();
    },
  });

// ---- subscriptions -------------------------------------------------------------

function markTopic(entry, state) {
  entry.li.classList.toggle("pending", state === "pending");
  entry.li.classList.toggle("active", state === "active");
}

function sendSub(topic) {
  const entry = topics.get(topic);
  entry.id = nextId++;
  markTopic(entry, "pending");
  subRequests.set(entry.id, { op: "sub", topic });
  sub.send({ Topic: topic, Content: "sub", Id: entry.id });
}

function addTopic(topic) {
  const li = document.createElement("li");
  li.dataset.topic = topic;
  const name = document.createElement("span");
  name.className = "name";
  name.textContent = topic;
  const button = document.createElement("button");
  button.type = "button";
  button.className = "unsubscribe";
  button.textContent = "unsubscribe";
  button.addEventListener("click", () => unsubscribe(topic));
  li.append(name, button);
  $("subscriptions").append(li);
  const entry = { li, id: 0 };
  topics.set(topic, entry);
  markTopic(entry, "pending"); // until the Ack; sent by sub's open() if not open yet
  if (sub.isOpen()) sendSub(topic);
}

function removeTopic(topic) {
  const entry = topics.get(topic);
  if (!entry) return;
  entry.li.remove();
  topics.delete(topic);
  saveTopics();
}

function unsubscribe(topic) {
  removeTopic(topic);
  if (sub.isOpen()) {
    const id = nextId++;
    subRequests.set(id, { op: "unsub", topic });
    sub.send({ Topic: topic, Content: "unsub", Id: id });
  }
}

// sessionStorage keeps the list across reloads of this tab, for the same user.
function saveTopics() {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify({ user, topics: [...topics.keys()] }));
  } catch { /* storage disabled or full: the list still lives in the page */ }
}

function loadTopics() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) || "null");
    if (saved && saved.user === user && Array.isArray(saved.topics)) {
      for (const topic of saved.topics) if (typeof topic === "string" && !topics.has(topic)) addTopic(topic);
    }
  } catch { /* unreadable: start empty */ }
}

function onSubFrame(frame) {
  if ("Ack" in frame) {
    const request = subRequests.get(frame.Ack);
    subRequests.delete(frame.Ack);
    const entry = request && request.op === "sub" && topics.get(request.topic);
    if (entry && entry.id === frame.Ack) markTopic(entry, "active");
  } else if ("Error" in frame) {
    const request = frame.Id == null ? undefined : subRequests.get(frame.Id);
    if (!request) { showError(`subscribe: ${frame.Error}`); return; }
    subRequests.delete(frame.Id);
    if (request.op === "sub") {
      const entry = topics.get(request.topic);
      if (entry && entry.id === frame.Id) removeTopic(request.topic);
      showError(`cannot subscribe to ${request.topic}: ${frame.Error}`);
    } else {
      showError(`cannot unsubscribe from ${request.topic}: ${frame.Error}`);
    }
  } else if ("Topic" in frame) {
    addMessage(frame);
  }
}

// ---- messages ------------------------------------------------------------------

function clock(date) {
  const pad = (n, width = 2) => String(n).padStart(width, "0");
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

function span(className, text) {
  const el = document.createElement("span");
  el.className = className;
  el.textContent = text;
  return el;
}

function addMessage(frame) {
  const li = document.createElement("li");
  li.className = "message";
  const content = typeof frame.Content === "string" ? frame.Content : JSON.stringify(frame.Content);
  const offset = span("offset", frame.Offset == null ? "" : String(frame.Offset));
  if (frame.Epoch != null) offset.title = `Epoch ${frame.Epoch}`;
  li.append(span("time", clock(new Date())), span("topic", String(frame.Topic)), offset,
    span("content", content ?? ""));
  const list = $("messages");
  list.prepend(li);
  while (list.childElementCount > MAX_MESSAGES) list.lastElementChild.remove();
  messageCount += 1;
  $("message-count").textContent = String(messageCount);
}

// ---- publishing ----------------------------------------------------------------

function onPubFrame(frame) {
  if ("Ack" in frame) {
    if (pubPending.delete(frame.Ack)) setResult("acked", `Acked ${frame.Ack}`);
  } else if ("Error" in frame) {
    const topic = frame.Id == null ? undefined : pubPending.get(frame.Id);
    pubPending.delete(frame.Id);
    const text = topic === undefined ? `publish: ${frame.Error}` : `cannot publish to ${topic}: ${frame.Error}`;
    setResult("error", text);
    showError(text);
  }
}

function publish(topic, content) {
  const frame = { Topic: topic, Content: content, Id: nextId++ };
  if (pub.send(frame)) {
    pubPending.set(frame.Id, topic);
    setResult("pending", `Sent ${frame.Id}, waiting for Ack…`);
  } else if (pubQueue.length < MAX_QUEUE) {
    pubQueue.push(frame);
    setResult("queued", `Queued ${frame.Id} until the publish connection opens (${pubQueue.length} waiting)`);
  } else {
    const text = `publish queue full (${MAX_QUEUE} messages waiting): not sent`;
    setResult("error", text);
    showError(text);
  }
}

// ---- signing in and out --------------------------------------------------------

function showView(signedIn) {
  show("loading", false);
  show("login-form", !signedIn);
  show("signed-in", signedIn);
  show("console", signedIn);
}

function signedIn(session) {
  user = session.User;
  $("signed-in-user").textContent = user;
  $("signed-in-user").title = session.Expires
    ? `session valid until ${new Date(session.Expires * 1000).toLocaleString()}` : "";
  showView(true);
  setLoginError("");
  loadTopics();
  sub.start();
  pub.start();
}

// Drops all local state and shows the form. `reason` goes under the form.
function signedOut(reason) {
  user = null;
  sub.stop();
  pub.stop();
  topics.clear();
  subRequests.clear();
  pubPending.clear();
  pubQueue.length = 0;
  $("subscriptions").replaceChildren();
  $("messages").replaceChildren();
  messageCount = 0;
  $("message-count").textContent = "0";
  setResult("", "");
  showError("");
  showView(false);
  setLoginError(reason);
}

// Keeps the saved topics: signing in again as the same user restores them.
function sessionExpired() {
  if (user !== null) signedOut("Your session has expired: please sign in again.");
}

$("login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const button = $("signin-button");
  button.disabled = true;
  setLoginError("");
  try {
    const body = new URLSearchParams({ user: $("user").value, password: $("password").value });
    const session = await api("POST", "/login", body);
    $("password").value = "";
    signedIn(session);
  } catch (err) {
    setLoginError(err.message);
    $("password").select();
  } finally {
    button.disabled = false;
  }
});

$("signout").addEventListener("click", async () => {
  try { sessionStorage.removeItem(STORAGE_KEY); } catch { /* ignore */ }
  // Local sign-out first, so the sockets the server is about to close are not
  // reconnected (and do not report an "expired" session).
  signedOut("");
  try {
    await api("POST", "/logout");
  } catch (err) {
    setLoginError(`sign-out failed: ${err.message}`);
  }
});

// ---- the rest of the page --------------------------------------------------------

$("subscribe-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const topic = $("topic").value.trim();
  if (!topic) return;
  if (topics.has(topic)) {
    showError(`already subscribed to ${topic}`);
  } else {
    addTopic(topic);
    saveTopics();
  }
  $("topic").value = "";
});

$("publish-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const topic = $("publish-topic").value.trim();
  if (!topic) { setResult("error", "the topic is empty"); return; }
  publish(topic, $("publish-content").value);
});

$("error").addEventListener("click", () => showError(""));
$("clear-messages").addEventListener("click", () => $("messages").replaceChildren());
window.addEventListener("online", () => { sub.kick(); pub.kick(); });

// On load, the (HttpOnly) session cookie decides which view to show.
api("GET", "/session").then(
  (session) => signedIn(session),
  (err) => signedOut(err.status === 401 ? "" : `cannot check the session: ${err.message}`));
