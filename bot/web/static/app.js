// Live board: refresh the rows when the server says an incident changed (server-sent events),
// and every 15 s anyway, for changes made by other Tocsin processes.
(function () {
  var body = document.getElementById("board-rows");
  if (!body) return;
  var live = document.getElementById("live");
  function refresh() {
    fetch(body.dataset.live, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { body.innerHTML = html; })
      .catch(function () { if (live) live.classList.add("stale"); });
  }
  if (window.EventSource) {
    var es = new EventSource("/events");
    es.addEventListener("incident", refresh);
    es.onopen = function () { if (live) live.classList.remove("stale"); };
    es.onerror = function () { if (live) live.classList.add("stale"); };
  }
  setInterval(refresh, 15000);
})();

// The bell: the signed-in user's recent pages and the news of the incidents they follow, with an unread count, refreshed live over the same
// server-sent events as the board; opening it marks them read. From here a user turns on browser push.
(function () {
  var button = document.getElementById("bell-button");
  if (!button) return;
  var panel = document.getElementById("bell-panel");
  var count = document.getElementById("bell-count");
  var list = document.getElementById("bell-list");
  var toggle = document.getElementById("push-toggle");
  var status = document.getElementById("push-status");
  var csrf = (document.querySelector('meta[name="csrf"]') || {}).content || "";
  function post(url, body) {
    return fetch(url, {method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRF-Token": csrf}, body: JSON.stringify(body || {})});
  }
  function show(data) {
    count.textContent = String(data.unread);
    count.hidden = !data.unread;
    list.textContent = "";
    if (!data.items.length) {
      var none = document.createElement("li"); none.className = "muted"; none.textContent = "No pages or followed news yet.";
      list.appendChild(none);
    }
    data.items.forEach(function (item) {
      var li = document.createElement("li");
      if (item.unread) li.className = "unread";
      var a = document.createElement(item.incident_id ? "a" : "span");
      if (item.incident_id) a.href = "/incidents/" + item.incident_id;
      a.textContent = item.title;
      var when = document.createElement("small");
      // A followed incident's news says so (it may have reached no channel of yours); a page names its channels.
      when.textContent = " " + (item.at || "").replace("T", " ").slice(0, 16) + " · " + (item.kind || "") + " · " +
        (item.channels.length ? item.channels.join(", ") : "following");
      if (item.followed) li.classList.add("followed");
      li.appendChild(a); li.appendChild(when);
      if (item.text) {  // a followed incident's message: what it said
        var said = document.createElement("div"); said.className = "muted"; said.textContent = item.text;
        li.appendChild(said);
      }
      list.appendChild(li);
    });
  }
  function refresh() {
    fetch("/bell", {credentials: "same-origin"}).then(function (r) { return r.json(); }).then(show)
      .catch(function () {});
  }
  button.addEventListener("click", function () {
    var open = panel.hidden;
    panel.hidden = !open;
    button.setAttribute("aria-expanded", String(open));
    if (open) post("/bell/read").then(function () { count.hidden = true; });
  });
  if (window.EventSource) {
    new EventSource("/events").addEventListener("incident", function () { setTimeout(refresh, 500); });
  }
  refresh();

  function b64ToBytes(s) {
    var raw = atob((s + "===".slice((s.length + 3) % 4)).replace(/-/g, "+").replace(/_/g, "/"));
    var out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }
  if (!("serviceWorker" in navigator) || !("PushManager" in window)) {
    status.textContent = "This browser cannot receive push notifications.";
    return;
  }
  toggle.hidden = false;
  navigator.serviceWorker.register("/sw.js").then(function (reg) {
    return reg.pushManager.getSubscription().then(function (sub) {
      toggle.textContent = sub ? "Turn off browser notifications" : "Turn on browser notifications";
      toggle.addEventListener("click", function () {
        reg.pushManager.getSubscription().then(function (current) {
          if (current) {
            return post("/push/unsubscribe", {endpoint: current.endpoint}).then(function () {
              return current.unsubscribe();
            }).then(function () { toggle.textContent = "Turn on browser notifications"; status.textContent = ""; });
          }
          return fetch("/push/key", {credentials: "same-origin"}).then(function (r) { return r.json(); })
            .then(function (k) {
              return reg.pushManager.subscribe({userVisibleOnly: true,
                                                applicationServerKey: b64ToBytes(k.public_key)});
            }).then(function (s) { return post("/push/subscribe", s.toJSON()); })
            .then(function (r) {
              status.textContent = r.ok ? "Notifications are on in this browser." : "Could not turn them on.";
              if (r.ok) toggle.textContent = "Turn off browser notifications";
            });
        }).catch(function (e) { status.textContent = "Notifications are blocked: " + e; });
      });
    });
  }).catch(function () { status.textContent = "Push needs https (or localhost)."; });
})();
