// resq-web: live refresh and the overview chart (embedded in the binary).
// A page whose <main> has data-live is refetched as a fragment every 2 s
// (the same URL with partial=1; a slow page less often, see refresh) and
// swapped in place, unless the user is typing in it or has ticked a
// checkbox. The overview's #totals carries
// the processed and failed counters; their differences between refreshes
// draw the chart.
(function () {
  "use strict";
  var main = document.getElementById("main");
  var history = [];
  var last = null;

  function sample() {
    var t = document.getElementById("totals");
    if (!t) return;
    var now = Date.now();
    var p = Number(t.getAttribute("data-processed"));
    var f = Number(t.getAttribute("data-failed"));
    if (last) {
      var dt = Math.max((now - last.at) / 1000, 0.001);
      history.push({ p: Math.max(p - last.p, 0) / dt, f: Math.max(f - last.f, 0) / dt });
      if (history.length > 60) history.shift();
    }
    last = { at: now, p: p, f: f };
    draw();
  }

  function line(svg, key, max, cls) {
    var ns = "http://www.w3.org/2000/svg";
    var pts = history.map(function (h, i) {
      var x = history.length > 1 ? (i * 300) / (history.length - 1) : 0;
      return x.toFixed(1) + "," + (58 - (h[key] / max) * 56).toFixed(1);
    });
    var el = document.createElementNS(ns, "polyline");
    el.setAttribute("points", pts.join(" "));
    el.setAttribute("fill", "none");
    el.setAttribute("stroke", cls === "processed" ? "#1b7f3b" : "#b3261e");
    el.setAttribute("stroke-width", "1.5");
    el.setAttribute("vector-effect", "non-scaling-stroke");
    svg.appendChild(el);
  }

  function draw() {
    var svg = document.getElementById("chart");
    if (!svg || history.length === 0) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var max = 1;
    history.forEach(function (h) { max = Math.max(max, h.p, h.f); });
    line(svg, "p", max, "processed");
    line(svg, "f", max, "failed");
  }

  function busy() {
    var active = document.activeElement;
    if (active && main.contains(active) && /^(INPUT|TEXTAREA|SELECT)$/.test(active.tagName)) return true;
    return main.querySelector("input[type=checkbox]:checked") !== null;
  }

  // One refresh at a time: the next is scheduled when this one ends, after
  // the page's interval or four times as long as this refresh took,
  // whichever is longer, so a slow page (a search over a long failed list)
  // never has requests piling up on the server.
  function refresh(interval) {
    var started = Date.now();
    var next = function () {
      setTimeout(function () { refresh(interval); }, Math.max(interval, 4 * (Date.now() - started)));
    };
    if (document.hidden || busy()) return next();
    var url = new URL(window.location.href);
    url.searchParams.set("partial", "1");
    fetch(url.toString(), { credentials: "same-origin", headers: { Accept: "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (html === null || busy()) return;
        main.innerHTML = html;
        sample();
      })
      .catch(function () {})
      .then(next);
  }

  document.addEventListener("submit", function (e) {
    var q = e.target.getAttribute("data-confirm");
    if (q && !window.confirm(q)) e.preventDefault();
  });

  if (main && main.hasAttribute("data-live")) {
    sample();
    var interval = Number(main.getAttribute("data-live")) || 2000;
    setTimeout(function () { refresh(interval); }, interval);
  }
})();
