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
