// Small helpers for the pages: select-all and the selection count on the search results.
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
})();
