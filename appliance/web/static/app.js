// Small helpers for the pages (no inline scripts: the CSP forbids them).
// Select-all and the selection count on the search results; print buttons; a confirmation
// before forms marked data-confirm (purges, exports) are sent.
(function () {
  "use strict";
  var all = document.getElementById("checkall");
  var count = document.getElementById("selcount");
  var boxes = Array.prototype.slice.call(document.querySelectorAll('input[name="rid"][type="checkbox"]'));
  function update() {
    if (!count) return;
    var n = boxes.filter(function (b) { return b.checked; }).length;
    if (n) count.textContent = count.dataset.template.replace("{n}", n);
  }
  if (all) all.addEventListener("change", function () { boxes.forEach(function (b) { b.checked = all.checked; }); update(); });
  boxes.forEach(function (b) { b.addEventListener("change", update); });
  Array.prototype.forEach.call(document.querySelectorAll("[data-print]"), function (b) {
    b.addEventListener("click", function () { window.print(); });
  });
  Array.prototype.forEach.call(document.querySelectorAll("form[data-confirm]"), function (f) {
    f.addEventListener("submit", function (e) {
      if (!window.confirm(f.dataset.confirm)) e.preventDefault();
    });
  });
})();
