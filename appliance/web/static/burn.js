// A burn job's live progress, from server-sent events.
(function () {
  "use strict";
  var box = document.getElementById("burnlive");
  if (!box) return;
  var words = {};
  Array.prototype.forEach.call(document.querySelectorAll("#words")[0].content.querySelectorAll("i"), function (i) {
    words[i.dataset.k] = i.textContent;
  });
  function w(k, fallback) { return words[k] || fallback || ""; }
  function set(id, value) { var el = document.getElementById(id); if (el && el.textContent !== value) el.textContent = value; }
  function show(s) {
    box.dataset.state = s.state;
    var st = document.getElementById("jobstate");
    st.className = "badge big st-" + s.state;
    set("jobstate", w("state." + s.state, s.state));
    set("jobphase", s.phase ? w("phase." + s.phase, s.phase) + (s.disc ? " · " + s.disc : "") : "");
    document.getElementById("jobprogress").value = s.state === "done" ? 100 : (s.percent || 0);
    set("jobpct", s.state === "done" ? "100%" : (s.percent || 0) + "%");
    set("jobspeed", s.speed || "");
    set("jobmsg", s.message || "");
    document.getElementById("continueform").classList.toggle("hidden", s.state !== "waiting_media");
    Object.keys(s.discs || {}).forEach(function (label) {
      var row = document.querySelector('tr[data-label="' + CSS.escape(label) + '"] .discstate');
      if (row) { row.className = "badge discstate st-" + s.discs[label]; row.textContent = w("disc." + s.discs[label], s.discs[label]); }
    });
  }
  var source = new EventSource("/burn/jobs/" + box.dataset.job + "/events");
  source.addEventListener("job", function (e) {
    var s = JSON.parse(e.data);
    if (s.state) show(s);
    if (s.state === "done" || s.state === "failed") {
      source.close();
      setTimeout(function () { location.reload(); }, 1500);   // the register's final figures
    }
  });
})();
