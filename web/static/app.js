// Optional touches for the status page; every form works without this file.
// A submitted form's buttons are disabled so that a slow sync is not sent twice.
document.addEventListener("submit", function (ev) {
  var form = ev.target;
  if (!(form instanceof HTMLFormElement) || form.method.toLowerCase() !== "post") {
    return;
  }
  // Disable after the submission has been collected, so the button's own value still goes.
  setTimeout(function () {
    form.querySelectorAll("button").forEach(function (b) {
      b.disabled = true;
      if (b.dataset.busy) {
        b.textContent = b.dataset.busy;
      }
    });
  }, 0);
});
