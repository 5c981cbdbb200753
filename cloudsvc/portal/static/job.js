// Live progress of a job page: polls the job's JSON every second while it runs and
// reloads the page when its state changes (so the page shows the result and any buttons).
"use strict";
(function () {
  var box = document.getElementById("job");
  if (!box) { return; }
  var url = box.getAttribute("data-progress-url");
  var shown = box.getAttribute("data-state");
  var done = ["Succeeded", "Failed", "Cancelled"];
  if (done.indexOf(shown) >= 0) { return; }
  function render(job) {
    document.getElementById("job-progress").value = job.progress;
    document.getElementById("job-percent").textContent = Math.round(job.progress * 100) + "%";
    var rows = document.getElementById("tasks");
    rows.textContent = "";
    job.tasks.forEach(function (t) {
      var tr = document.createElement("tr");
      [t.name, t.state, t.output].forEach(function (text, i) {
        var td = document.createElement("td");
        if (i === 1) { var s = document.createElement("span"); s.className = "state " + text.toLowerCase(); s.textContent = text; td.appendChild(s); }
        else { td.textContent = text; }
        tr.appendChild(td);
      });
      rows.appendChild(tr);
    });
  }
  function poll() {
    fetch(url, { credentials: "same-origin", headers: { "Accept": "application/json" } })
      .then(function (r) { return r.json(); })
      .then(function (job) {
        if (job.state !== shown) { window.location.reload(); return; }
        render(job);
        window.setTimeout(poll, 1000);
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  window.setTimeout(poll, 1000);
})();
