// The slot board: live tiles from server-sent events. No framework, no build step.
(function () {
  "use strict";
  var board = document.getElementById("board");
  var live = document.getElementById("live");
  if (!board) return;
  var lang = board.dataset.lang;
  var ACTIVE = ["copying", "verifying", "committing"];

  function text(el, value) { if (el && el.textContent !== value) el.textContent = value; }

  function tileFor(slot) {
    var el = board.querySelector('[data-slot="' + CSS.escape(slot) + '"]');
    if (el) return el;
    el = board.firstElementChild ? board.firstElementChild.cloneNode(true) : null;
    if (!el) return null;
    el.dataset.slot = slot;
    board.appendChild(el);
    return el;
  }

  function render(s) {
    var el = tileFor(s.slot);
    if (!el) return;
    if (s.slot.indexOf("port:") === 0 && s.state === "empty") { el.remove(); return; }
    el.className = "tile state-" + s.state + (s.problem ? " problem" : "") + (s.quarantined ? " quarantined" : "");
    text(el.querySelector(".slotno"), s.slot.indexOf("port:") === 0 ? "?" : s.slot);
    text(el.querySelector(".tile-state"), lang === "zh" ? s.state_zh : s.state_en);
    var officer = "";
    if (s.quarantined) officer = board.dataset.unknown;
    else if (s.officer) officer = s.officer;
    else if (s.state !== "empty") officer = board.dataset.noOfficer;
    text(el.querySelector(".tile-officer"), officer);
    var bar = el.querySelector("progress");
    if (bar) bar.value = s.percent;
    text(el.querySelector(".pct"), ACTIVE.indexOf(s.state) >= 0 ? s.percent + "%" : "");
    text(el.querySelector(".rate"), s.state === "copying" ? (s.rate_bytes_per_s / 1e6).toFixed(1) + " MB/s" : "");
    text(el.querySelector(".files"), s.files_total ? s.files_done + "/" + s.files_total + " " + board.dataset.files : "");
    text(el.querySelector(".tile-message"), (lang === "zh" ? s.message_zh : s.message_en) || "");
  }

  function connect() {
    var source = new EventSource("/board/events");
    source.addEventListener("open", function () { live.className = "live on"; text(live, live.dataset.on); });
    source.addEventListener("board", function (e) { JSON.parse(e.data).slots.forEach(render); });
    source.addEventListener("slot", function (e) { render(JSON.parse(e.data)); });
    source.addEventListener("error", function () { live.className = "live off"; text(live, live.dataset.off); });
  }
  connect();
})();
